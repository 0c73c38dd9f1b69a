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
// The two bias-gradient passes are column_sum.cuh's, shared with bias_gelu.cu (the FFN's bias add
// fused with GELU, whose backward sums db as it writes dz).
//
// Traffic and floor at the paper's sizes (B·n = 102400 rows, d_out = 256, fp32): the bias add reads
// and writes y once (210 MB, about 70 µs at 3.0 TB/s on an H100); the bias gradient reads dy once
// (105 MB, 35 µs). cuBLAS' epilogue could fold the bias add into the GEMM (cublasLt); not done yet.
// Where GELU follows (the FFN's first linear layer), bias_gelu.cu folds the bias add into the
// activation instead (family `bias_gelu`, v2).
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
#include "column_sum.cuh"

extern "C" __global__ void linear_bias_add(float* __restrict__ y, const float* __restrict__ bias,
                                           int len, int cols) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) {
        y[i] += bias[i % cols];
    }
}

extern "C" __global__ void linear_bias_grad_partial(const float* __restrict__ dy,
                                                    float* __restrict__ partial, int rows, int cols) {
    __shared__ float tile[8][33];
    asif_column_partial(tile, partial, rows, cols, [dy](size_t at, int) { return dy[at]; });
}

extern "C" __global__ void linear_bias_grad_finish(const float* __restrict__ partial,
                                                   float* __restrict__ dbias, int chunks, int cols) {
    asif_column_finish(partial, dbias, chunks, cols);
}
