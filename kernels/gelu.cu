// gelu.cu: GELU activation, exact erf form (RecBole's `gelu`, spec §1), forward and backward.
//
// What it computes, elementwise:
//   forward   y  = x · Φ(x) = 0.5 · x · (1 + erf(x / √2))
//   backward  dx = dy · (Φ(x) + x · φ(x)),  φ(x) = exp(-x²/2) / √(2π)
//
// Launch shape (src/ops/gelu/cuda.rs): 1-D grid-stride loop, 256 threads per block,
// grid.x = min(ceil(len/256), 65535).
//
// Traffic and floor at the paper's FFN size (B·n·inner = 102400 × 256 fp32): forward reads x and
// writes y (210 MB, about 70 µs at 3.0 TB/s on an H100); backward reads x and dy, writes dx
// (315 MB, about 105 µs). Fusing GELU into the FFN's GEMM epilogue is the later step.
//
// Gates (docs/kernels-sass.md): block and dynamic shared bytes are the launch shape at the
// paper's sizes (d = 256, h = 4, n = 50, r = 16) as the launcher in src/ops/ computes it.
//   asif-gate: gelu_forward block=256 occupancy>=100%
//   asif-gate: gelu_backward block=256 occupancy>=100%
#include "common.cuh"

#define GELU_INV_SQRT2 0.70710678118654752440f
#define GELU_INV_SQRT_2PI 0.39894228040143267794f

extern "C" __global__ void gelu_forward(const float* __restrict__ x, float* __restrict__ y, int len) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) {
        const float v = x[i];
        y[i] = 0.5f * v * (1.0f + erff(v * GELU_INV_SQRT2));
    }
}

extern "C" __global__ void gelu_backward(const float* __restrict__ x, const float* __restrict__ dy,
                                         float* __restrict__ dx, int len) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) {
        const float v = x[i];
        const float cdf = 0.5f * (1.0f + erff(v * GELU_INV_SQRT2));
        const float pdf = GELU_INV_SQRT_2PI * expf(-0.5f * v * v);
        dx[i] = dy[i] * (cdf + v * pdf);
    }
}
