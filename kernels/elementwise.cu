// elementwise.cu: small elementwise pieces shared by the tape and the model.
//
// What it computes:
//   add_assign  y += x  (gradient accumulation on the tape)
//   add_out     out = a + b  (the residual add of spec §2)
//
// Launch shape (src/ops/add/cuda.rs): 1-D grid-stride loop, 256 threads per block.
// Floor: reads x and y, writes y: 12 bytes per element (at 102400 × 256 fp32, 315 MB, about
// 105 µs at 3.0 TB/s on an H100).
//
// Gates (docs/kernels-sass.md): block and dynamic shared bytes are the launch shape at the
// paper's sizes (d = 256, h = 4, n = 50, r = 16) as the launcher in src/ops/ computes it.
//   asif-gate: add_assign block=256 occupancy>=100%
//   asif-gate: add_out block=256 occupancy>=100%
#include "common.cuh"

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
