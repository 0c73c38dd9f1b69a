// linear.cu: the bias pieces of the linear layer y = x W + b (spec §2: every projection, W_q..W_o,
// the FFN's W_1 and W_2). The matrix products themselves go to cuBLAS on the GPU and to the
// `matrixmultiply` crate on the host (src/ops/linear/gemm.rs); only the bias needs kernels.
//
// What it computes (x: rows × d_in, W: d_in × d_out, b: d_out, y: rows × d_out, row-major):
//   linear_bias_add            y[r, c] += b[c]
//   linear_bias_grad_partial   partial[chunk, c] = Σ_{r in chunk} dy[r, c]
//   linear_bias_grad_finish    db[c] = Σ_chunk partial[chunk, c]
//   (db = Σ_rows dy in two deterministic passes, no atomics, as layer norm's dβ.)
//
// Launch shapes (src/ops/linear/cuda.rs):
//   linear_bias_add: 1-D grid-stride over rows·d_out, 256 threads.
//   linear_bias_grad_partial: block (32, 8), grid (ceil(d_out/32), chunks of 64 rows).
//   linear_bias_grad_finish: one thread per column.
//
// Traffic and floor at the paper's sizes (B·n = 102400 rows, d_out = 256, fp32): the bias add reads
// and writes y once (210 MB, about 70 µs at 3.0 TB/s on an H100); the bias gradient reads dy once
// (105 MB, 35 µs). cuBLAS' epilogue could fold the bias add into the GEMM (cublasLt); not done yet.
//
// Versions:
//   1. separate bias add after the GEMM; two-pass column sum for db.
//
// Gates (docs/kernels-sass.md): block and dynamic shared bytes are the launch shape at the
// paper's sizes (d = 256, h = 4, n = 50, r = 16) as the launcher in src/ops/ computes it.
//   asif-gate: linear_bias_add block=256 occupancy>=100%
//   asif-gate: linear_bias_grad_partial block=256 occupancy>=100%
//   asif-gate: linear_bias_grad_finish block=256 occupancy>=100%
#include "common.cuh"

#define LINEAR_ROWS_PER_CHUNK 64

extern "C" __global__ void linear_bias_add(float* __restrict__ y, const float* __restrict__ bias,
                                           int len, int cols) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) {
        y[i] += bias[i % cols];
    }
}

extern "C" __global__ void linear_bias_grad_partial(const float* __restrict__ dy,
                                                    float* __restrict__ partial, int rows, int cols) {
    // 8 row-lanes × 32 columns; +1 column of padding avoids bank conflicts on the transposed read.
    __shared__ float tile[8][33];
    const int col = blockIdx.x * 32 + threadIdx.x;
    const int chunk = blockIdx.y;
    const int row_begin = chunk * LINEAR_ROWS_PER_CHUNK;
    const int row_end = min(rows, row_begin + LINEAR_ROWS_PER_CHUNK);
    float sum = 0.0f;
    if (col < cols) {
        for (int row = row_begin + threadIdx.y; row < row_end; row += blockDim.y) {
            sum += dy[(size_t)row * cols + col];
        }
    }
    tile[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && col < cols) {
        float total = 0.0f;
        for (int lane = 0; lane < (int)blockDim.y; ++lane) total += tile[lane][threadIdx.x];
        partial[(size_t)chunk * cols + col] = total;
    }
}

extern "C" __global__ void linear_bias_grad_finish(const float* __restrict__ partial,
                                                   float* __restrict__ dbias, int chunks, int cols) {
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= cols) return;
    float total = 0.0f;
    for (int chunk = 0; chunk < chunks; ++chunk) total += partial[(size_t)chunk * cols + col];
    dbias[col] = total;
}
