// gather.cu: the hidden state at one position of each sequence, and its backward.
//
// What it computes (spec §2 "Prediction": u_b = H_X^{(L)}[b, L_b − 1], RecBole's gather_indexes):
//   gather_rows_forward   out[b, c] = h[b, index[b] + offset, c]      (offset −1 with index = L_b)
//   gather_rows_backward  dh[b, index[b] + offset, c] = dout[b, c]; every other row of dh stays 0
// A position outside [0, n) gives a zero row and no gradient (the host devices reject it first).
//
// Launch shape (src/ops/gather/cuda.rs): 1-D grid-stride over B·d, 256 threads.
// Traffic at the paper's sizes (B = 2048, d = 256): 2 MB each way, launch-bound (a few µs). The
// backward's zero fill of dh (B·n·d, 105 MB) is the device allocation's memset.
//
// Versions:
//   1. grid-stride copy.
//
// Gates (docs/kernels-sass.md): block and dynamic shared bytes are the launch shape at the
// paper's sizes (d = 256, h = 4, n = 50, r = 16) as the launcher in src/ops/ computes it.
//   asif-gate: gather_rows_forward block=256 occupancy>=100%
//   asif-gate: gather_rows_backward block=256 occupancy>=100%
#include "common.cuh"

extern "C" __global__ void gather_rows_forward(const float* __restrict__ h, const int* __restrict__ index,
                                               float* __restrict__ out, int batch, int n, int dim, int offset) {
    const int len = batch * dim;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) {
        const int b = i / dim;
        const int position = index[b] + offset;
        out[i] = (position >= 0 && position < n) ? h[((size_t)b * n + position) * dim + i % dim] : 0.0f;
    }
}

extern "C" __global__ void gather_rows_backward(const int* __restrict__ index, const float* __restrict__ dout,
                                                float* __restrict__ dh, int batch, int n, int dim, int offset) {
    const int len = batch * dim;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) {
        const int b = i / dim;
        const int position = index[b] + offset;
        if (position >= 0 && position < n) dh[((size_t)b * n + position) * dim + i % dim] = dout[i];
    }
}
