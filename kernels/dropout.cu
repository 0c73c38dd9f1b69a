// dropout.cu: inverted dropout with a counter-based mask, forward and backward.
//
// What it computes (spec §2: hidden dropout, input dropout; p = hidden_dropout_prob):
//   dropout_apply   y[i] = keep(seed, i) ? x[i] · scale : 0,  scale = 1/(1 − p)
//   keep(seed, i) = asif_dropout_keep(seed, i, p) (hash_rng.cuh; src/rng.rs mirrors it bit for bit).
// The forward applies it to x, the backward to dy with the same seed: the mask is regenerated, not
// stored, and it is the same on every device. At evaluation the op is the identity (no launch).
//
// Launch shape (src/ops/dropout/cuda.rs): 1-D grid-stride, 256 threads; v2 grid.x =
// min(ceil(len/4096), 65535) (4 float4 per thread and step, vector_io.cuh).
// Traffic at the paper's sizes (B·n·d = 26.2 M fp32): reads and writes once, 210 MB, about 70 µs
// at 3.0 TB/s on an H100; the hash is ~10 integer multiply-adds per element, far under the
// memory time.
//
// Versions:
//   1. one hash per element.
//   2. dropout_apply_v2 (issue 19, kernel_version family "dropout"): 128-bit loads and stores, 4
//      vectors in flight per thread, scalar tail (vector_io.cuh); the same hash of the same global
//      element index, so the mask is bit-identical to v1 and src/rng.rs. Expected ≥ 80 % of copy
//      bandwidth: the hash (~10 integer multiply-adds per element) stays under the memory time.
//      v1 stays the default until a GPU run shows v2 faster.
//
// Step counter (issue 20): dropout_apply_stepped(_v2) take (step counter, stream, site) in place
// of the seed and derive it on the device (asif_step_seed, hash_rng.cuh), so a replayed CUDA graph
// draws each step's mask; the by-value kernels stay the API.
//
// Gates (docs/kernels-sass.md): block and dynamic shared bytes are the launch shape at the
// paper's sizes (d = 256, h = 4, n = 50, r = 16) as the launcher in src/ops/ computes it.
//   asif-gate: dropout_apply block=256 occupancy>=100%
//   asif-gate: dropout_apply_v2 block=256 occupancy>=62% vector_io
//   asif-gate: dropout_apply_stepped block=256 occupancy>=100%
//   asif-gate: dropout_apply_stepped_v2 block=256 occupancy>=62% vector_io
#include "common.cuh"
#include "vector_io.cuh"

// Both versions' element loops, shared by the by-value and step-counter entry points.
__device__ __forceinline__ void dropout_apply_elements(const float* __restrict__ x, float* __restrict__ y, int len,
                                                       float p, float scale, unsigned long long seed) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) {
        y[i] = asif_dropout_keep(seed, (unsigned long long)i, p) ? x[i] * scale : 0.0f;
    }
}

__device__ __forceinline__ void dropout_apply_elements_v2(const float* __restrict__ x, float* __restrict__ y, int len,
                                                          float p, float scale, unsigned long long seed) {
    asif_map_v2(x, y, len, [=](float v, float, long long i) {
        return asif_dropout_keep(seed, (unsigned long long)i, p) ? v * scale : 0.0f;
    });
}

extern "C" __global__ void dropout_apply(const float* __restrict__ x, float* __restrict__ y, int len,
                                         float p, float scale, unsigned long long seed) {
    dropout_apply_elements(x, y, len, p, scale, seed);
}

extern "C" __global__ void dropout_apply_v2(const float* __restrict__ x, float* __restrict__ y, int len, float p, float scale,
                     unsigned long long seed) {
    dropout_apply_elements_v2(x, y, len, p, scale, seed);
}

// Step counter (issue 20): the seed asif_step_seed(step, stream, site) derived on the device from
// the step counter (hash_rng.cuh), the same mask as the by-value kernels given that seed.
extern "C" __global__ void dropout_apply_stepped(const float* __restrict__ x, float* __restrict__ y, int len,
                                                 float p, float scale, const unsigned long long* __restrict__ step,
                                                 unsigned long long stream, unsigned long long site) {
    dropout_apply_elements(x, y, len, p, scale, asif_step_seed(step, stream, site));
}

extern "C" __global__ void dropout_apply_stepped_v2(const float* __restrict__ x, float* __restrict__ y, int len,
                                                    float p, float scale, const unsigned long long* __restrict__ step,
                                                    unsigned long long stream, unsigned long long site) {
    dropout_apply_elements_v2(x, y, len, p, scale, asif_step_seed(step, stream, site));
}
