// layer_norm.cu: layer normalisation over the last axis, forward and backward.
//
// What it computes (RecBole's LayerNorm, spec §2, eps 1e-12 must work):
//   forward   y = (x - μ) · rstd · γ + β,  μ = mean(x_row), rstd = 1/sqrt(var(x_row) + eps)
//             (biased variance, as torch.nn.LayerNorm); saves μ and rstd per row for the backward.
//   backward  x̂ = (x - μ)·rstd, g = dy ⊙ γ
//             dx = rstd · (g - mean(g) - x̂ · mean(g ⊙ x̂))
//             dγ = Σ_rows dy ⊙ x̂,  dβ = Σ_rows dy  (two deterministic passes, no atomics)
//
// Launch shapes (src/ops/layer_norm/cuda.rs):
//   layer_norm_forward, layer_norm_backward_input: one block per row, blockDim.x a multiple of 32
//     (32..256, about the row length), grid.x = rows.
//   layer_norm_backward_params_partial: block (32, 8), grid (ceil(cols/32), chunks); each block sums
//     LAYER_NORM_ROWS_PER_CHUNK rows for 32 columns into partial[chunk][col].
//   layer_norm_backward_params_finish: one thread per column sums the chunk partials.
//
// Traffic and floor at the paper's sizes (B·n = 102400 rows, d = 256, fp32): the forward reads x
// once and writes y once (210 MB, about 70 µs at 3.0 TB/s on an H100); the row is re-read from L1/L2
// for the variance and the output pass. The backward reads x and dy twice (input and parameter
// passes) and writes dx: about 525 MB, 175 µs.
//
// Versions:
//   1. two-pass mean then variance per block (numerically safe for eps = 1e-12; the one-pass
//      E[x²] - E[x]² cancels catastrophically when |μ| ≫ σ).
//
// Gates (docs/kernels-sass.md): block and dynamic shared bytes are the launch shape at the
// paper's sizes (d = 256, h = 4, n = 50, r = 16) as the launcher in src/ops/ computes it;
// d = 256: 8 warps per row; the parameter passes use 256 threads.
//   asif-gate: layer_norm_forward block=256 occupancy>=100%
//   asif-gate: layer_norm_backward_input block=256 occupancy>=100%
//   asif-gate: layer_norm_backward_params_partial block=256 occupancy>=100%
//   asif-gate: layer_norm_backward_params_finish block=256 occupancy>=100%
#include "common.cuh"

#define LAYER_NORM_ROWS_PER_CHUNK 64

extern "C" __global__ void layer_norm_forward(const float* __restrict__ x,
                                              const float* __restrict__ gamma,
                                              const float* __restrict__ beta,
                                              float* __restrict__ y,
                                              float* __restrict__ mean_out,
                                              float* __restrict__ rstd_out,
                                              int rows, int cols, float eps) {
    __shared__ float scratch[32];
    const int row = blockIdx.x;
    if (row >= rows) return;  // uniform across the block
    const float* x_row = x + (size_t)row * cols;
    float* y_row = y + (size_t)row * cols;

    float sum = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) sum += x_row[c];
    const float mean = block_reduce_sum(sum, scratch) / (float)cols;

    float sum_sq = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float centered = x_row[c] - mean;
        sum_sq += centered * centered;
    }
    const float variance = block_reduce_sum(sum_sq, scratch) / (float)cols;
    const float rstd = rsqrtf(variance + eps);

    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        y_row[c] = (x_row[c] - mean) * rstd * gamma[c] + beta[c];
    }
    if (threadIdx.x == 0) {
        mean_out[row] = mean;
        rstd_out[row] = rstd;
    }
}

extern "C" __global__ void layer_norm_backward_input(const float* __restrict__ x,
                                                     const float* __restrict__ gamma,
                                                     const float* __restrict__ mean,
                                                     const float* __restrict__ rstd,
                                                     const float* __restrict__ dy,
                                                     float* __restrict__ dx,
                                                     int rows, int cols) {
    __shared__ float scratch[32];
    const int row = blockIdx.x;
    if (row >= rows) return;
    const float* x_row = x + (size_t)row * cols;
    const float* dy_row = dy + (size_t)row * cols;
    float* dx_row = dx + (size_t)row * cols;
    const float row_mean = mean[row];
    const float row_rstd = rstd[row];

    // g is rounded once (__fmul_rn) so that the sum and the second loop see the same value:
    // left to itself the compiler fuses `sum_g += dy·γ` (and `g - mean_g`) into an FMA with the
    // unrounded product, and rstd (up to 1/sqrt(eps) = 1e6) amplifies that rounding. At cols = 1
    // the true dx is exactly 0 and the GPU gave 6.7e-4 (H200, 2026-11-27).
    float sum_g = 0.0f, sum_g_xhat = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float g = __fmul_rn(dy_row[c], gamma[c]);
        const float x_hat = (x_row[c] - row_mean) * row_rstd;
        sum_g += g;
        sum_g_xhat += g * x_hat;
    }
    const float mean_g = block_reduce_sum(sum_g, scratch) / (float)cols;
    const float mean_g_xhat = block_reduce_sum(sum_g_xhat, scratch) / (float)cols;

    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float g = __fmul_rn(dy_row[c], gamma[c]);
        const float x_hat = (x_row[c] - row_mean) * row_rstd;
        dx_row[c] = row_rstd * (g - mean_g - x_hat * mean_g_xhat);
    }
}

extern "C" __global__ void layer_norm_backward_params_partial(const float* __restrict__ x,
                                                              const float* __restrict__ mean,
                                                              const float* __restrict__ rstd,
                                                              const float* __restrict__ dy,
                                                              float* __restrict__ dgamma_partial,
                                                              float* __restrict__ dbeta_partial,
                                                              int rows, int cols) {
    // 8 row-lanes × 32 columns; +1 column of padding avoids shared-memory bank conflicts on the
    // transposed read below.
    __shared__ float dgamma_tile[8][33];
    __shared__ float dbeta_tile[8][33];
    const int col = blockIdx.x * 32 + threadIdx.x;
    const int chunk = blockIdx.y;
    const int row_begin = chunk * LAYER_NORM_ROWS_PER_CHUNK;
    const int row_end = min(rows, row_begin + LAYER_NORM_ROWS_PER_CHUNK);

    float dgamma = 0.0f, dbeta = 0.0f;
    if (col < cols) {
        for (int row = row_begin + threadIdx.y; row < row_end; row += blockDim.y) {
            const size_t at = (size_t)row * cols + col;
            const float x_hat = (x[at] - mean[row]) * rstd[row];
            dgamma += dy[at] * x_hat;
            dbeta += dy[at];
        }
    }
    dgamma_tile[threadIdx.y][threadIdx.x] = dgamma;
    dbeta_tile[threadIdx.y][threadIdx.x] = dbeta;
    __syncthreads();
    if (threadIdx.y == 0 && col < cols) {
        float total_gamma = 0.0f, total_beta = 0.0f;
        for (int lane = 0; lane < (int)blockDim.y; ++lane) {
            total_gamma += dgamma_tile[lane][threadIdx.x];
            total_beta += dbeta_tile[lane][threadIdx.x];
        }
        dgamma_partial[(size_t)chunk * cols + col] = total_gamma;
        dbeta_partial[(size_t)chunk * cols + col] = total_beta;
    }
}

extern "C" __global__ void layer_norm_backward_params_finish(const float* __restrict__ dgamma_partial,
                                                             const float* __restrict__ dbeta_partial,
                                                             float* __restrict__ dgamma,
                                                             float* __restrict__ dbeta,
                                                             int chunks, int cols) {
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= cols) return;
    float total_gamma = 0.0f, total_beta = 0.0f;
    for (int chunk = 0; chunk < chunks; ++chunk) {
        total_gamma += dgamma_partial[(size_t)chunk * cols + col];
        total_beta += dbeta_partial[(size_t)chunk * cols + col];
    }
    dgamma[col] = total_gamma;
    dbeta[col] = total_beta;
}
