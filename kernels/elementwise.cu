// elementwise.cu: small elementwise pieces shared by the tape and the model.
//
// What it computes:
//   add_assign  y += x  (gradient accumulation on the tape)
//   add_out     out = a + b  (the residual add of spec §2)
//
// Launch shape (src/ops/add/cuda.rs): 1-D grid-stride loop, 256 threads per block; v2 grid.x =
// min(ceil(len/2048), 65535) (2 float4 of each input per thread and step, vector_io.cuh).
// Floor: reads x and y, writes y: 12 bytes per element (at 102400 × 256 fp32, 315 MB, about
// 105 µs at 3.0 TB/s on an H100).
//
// Versions (kernel_version family "elementwise"):
//   1. add_assign / add_out: one scalar element per thread per step.
//   2. add_assign_v2 / add_out_v2 (issue 19): 128-bit loads and stores, 4 vectors in flight per
//      thread, scalar tail (vector_io.cuh). Same bytes; expected ≥ 80 % of copy bandwidth. v1 stays
//      the default until a GPU run shows v2 faster.
//
// Gates (docs/kernels-sass.md): block and dynamic shared bytes are the launch shape at the
// paper's sizes (d = 256, h = 4, n = 50, r = 16) as the launcher in src/ops/ computes it.
//   asif-gate: add_assign block=256 occupancy>=100%
//   asif-gate: add_out block=256 occupancy>=100%
//   asif-gate: add_assign_v2 block=256 occupancy>=75% vector_io
//   asif-gate: add_out_v2 block=256 occupancy>=62% vector_io
#include "common.cuh"
#include "vector_io.cuh"

extern "C" __global__ void add_assign(float* __restrict__ y, const float* __restrict__ x, int len) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) {
        y[i] += x[i];
    }
}

// add_out  out = a + b  (the residual add of spec §2 as a new value: LN(Drop(O W_o) + X))
// Same launch shape; 12 bytes per element.
extern "C" __global__ void add_out(const float* __restrict__ a, const float* __restrict__ b,
                                   float* __restrict__ out, int len) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) {
        out[i] = a[i] + b[i];
    }
}

// y may not be __restrict__ here: asif_map_v2 reads it as `a` and writes it as `out`.
extern "C" __global__ void add_assign_v2(float* y, const float* __restrict__ x, int len) {
    asif_map_v2(y, x, y, len, [](float a, float b, long long) { return a + b; });
}

extern "C" __global__ void add_out_v2(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out,
               int len) {
    asif_map_v2(a, b, out, len, [](float u, float v, long long) { return u + v; });
}
