// relu.cu: ReLU activation, forward and backward (the fusion gate's activation, spec §3.1:
// e_k = w₂ᵀ ReLU(W₁ x_k + b₁), RecBole's VanillaAttention; `docs/source_attention.md`).
//
// What it computes, elementwise:
//   forward   y  = max(x, 0)
//   backward  dx = dy · 1[x > 0]    (0 at x = 0, as PyTorch)
//
// Launch shape (src/ops/mod.rs, Activation): v1 a 1-D grid-stride loop, 256 threads per block,
// grid.x = min(ceil(len/256), 65535); v2 256 threads, grid.x = min(ceil(len/4096), 65535) forward and
// min(ceil(len/2048), 65535) backward (4 float4 loads per thread and step, vector_io.cuh).
//
// Traffic and floor at the fusion gate's paper size (H = W₁ x + b₁ over R·K rows: B·n·K·d =
// 102400 × 2 × 256 fp32, 210 MB): forward reads x and writes y (420 MB, about 140 µs at 3.0 TB/s
// on an H100); backward reads x and dy, writes dx (630 MB, about 210 µs). Fusing the ReLU with the
// w₂ dot product (a GEMM epilogue or a row kernel) would save this round trip over H; not done,
// see docs/source_attention.md.
//
// Versions:
//   1. moved unchanged out of source_attention.cu (was source_attention_relu_forward/backward).
//   2. relu_forward_v2 / relu_backward_v2 (issue 19, kernel_version family "relu"): 128-bit loads
//      and stores, 4 vectors in flight per thread, scalar tail (vector_io.cuh). Same bytes as v1;
//      expected ≥ 80 % of copy bandwidth (one FMNMX or select per element). v1 stays the default
//      until a GPU run shows v2 faster.
//
// Gates (docs/kernels-sass.md): block and dynamic shared bytes are the launch shape at the
// paper's sizes (d = 256, h = 4, n = 50, r = 16) as the launcher in src/ops/ computes it.
//   asif-gate: relu_forward block=256 occupancy>=100%
//   asif-gate: relu_backward block=256 occupancy>=100%
//   asif-gate: relu_forward_v2 block=256 occupancy>=62% vector_io
//   asif-gate: relu_backward_v2 block=256 occupancy>=62% vector_io
#include "common.cuh"
#include "vector_io.cuh"

extern "C" __global__ void relu_forward(const float* __restrict__ x, float* __restrict__ y, int len) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) {
        y[i] = fmaxf(x[i], 0.0f);
    }
}

extern "C" __global__ void relu_backward(const float* __restrict__ x, const float* __restrict__ dy,
                                         float* __restrict__ dx, int len) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) {
        dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
    }
}

extern "C" __global__ void relu_forward_v2(const float* __restrict__ x, float* __restrict__ y, int len) {
    asif_map_v2(x, y, len, [](float v, float, long long) { return fmaxf(v, 0.0f); });
}

extern "C" __global__ void relu_backward_v2(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx,
                     int len) {
    asif_map_v2(x, dy, dx, len, [](float v, float g, long long) { return v > 0.0f ? g : 0.0f; });
}
