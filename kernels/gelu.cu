// gelu.cu: GELU activation, exact erf form (RecBole's `gelu`, spec §1), forward and backward.
//
// What it computes, elementwise:
//   forward   y  = x · Φ(x) = 0.5 · x · (1 + erf(x / √2))
//   backward  dx = dy · (Φ(x) + x · φ(x)),  φ(x) = exp(-x²/2) / √(2π)
//
// Launch shape (src/ops/mod.rs, Activation): v1 a 1-D grid-stride loop, 256 threads per block,
// grid.x = min(ceil(len/256), 65535); v2 256 threads, grid.x = min(ceil(len/4096), 65535) forward and
// min(ceil(len/2048), 65535) backward (4 float4 loads per thread and step, vector_io.cuh).
//
// Traffic and floor at the paper's FFN size (B·n·inner = 102400 × 256 fp32): forward reads x and
// writes y (210 MB, about 70 µs at 3.0 TB/s on an H100); backward reads x and dy, writes dx
// (315 MB, about 105 µs). The FFN's bias add fused with GELU is bias_gelu.cu (the same
// gelu_value/gelu_gradient, gelu.cuh); fusing GELU into the GEMM's epilogue is a later step.
//
// Versions (kernel_version family "gelu"):
//   1. gelu_forward / gelu_backward: one scalar element per thread per step.
//   2. gelu_forward_v2 / gelu_backward_v2 (issue 19): 128-bit loads and stores, 4 vectors in flight
//      per thread, scalar tail (vector_io.cuh). Floor as above (the same bytes); expected ≥ 80 % of
//      copy bandwidth: the erff/expf work (~30 FP32 instructions per element) stays under the
//      memory time at 4 B/element read. v1 stays the default until a GPU run shows v2 faster.
//
// Gates (docs/kernels-sass.md): block and dynamic shared bytes are the launch shape at the
// paper's sizes (d = 256, h = 4, n = 50, r = 16) as the launcher in src/ops/ computes it.
//   asif-gate: gelu_forward block=256 occupancy>=100%
//   asif-gate: gelu_backward block=256 occupancy>=100%
//   asif-gate: gelu_forward_v2 block=256 occupancy>=62% vector_io
//   asif-gate: gelu_backward_v2 block=256 occupancy>=62% vector_io
#include "common.cuh"
#include "vector_io.cuh"
#include "gelu.cuh"


extern "C" __global__ void gelu_forward(const float* __restrict__ x, float* __restrict__ y, int len) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) {
        y[i] = gelu_value(x[i]);
    }
}

extern "C" __global__ void gelu_backward(const float* __restrict__ x, const float* __restrict__ dy,
                                         float* __restrict__ dx, int len) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) {
        dx[i] = gelu_gradient(x[i], dy[i]);
    }
}

extern "C" __global__ void gelu_forward_v2(const float* __restrict__ x, float* __restrict__ y, int len) {
    asif_map_v2(x, y, len, [](float v, float, long long) { return gelu_value(v); });
}

extern "C" __global__ void gelu_backward_v2(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx,
                     int len) {
    asif_map_v2(x, dy, dx, len, [](float v, float g, long long) { return gelu_gradient(v, g); });
}
