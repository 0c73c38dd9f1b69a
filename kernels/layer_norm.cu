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
//   layer_norm_forward_v2: block 256 (8 warps, a row each), grid.x = ceil(rows / 8).
//   layer_norm_backward_v2: block 256 (8 warps), grid.x = chunks = ceil(rows / 64); writes dx and
//     the chunk partials that layer_norm_backward_params_finish sums.
//
// Traffic and floor at the paper's sizes (B·n = 102400 rows, d = 256, fp32): the forward reads x
// once and writes y once (210 MB, about 70 µs at 3.0 TB/s on an H100); the row is re-read from L1/L2
// for the variance and the output pass. The backward reads x and dy twice (input and parameter
// passes) and writes dx: about 525 MB, 175 µs.
//
// Versions (kernel_version family "layer_norm"):
//   1. two-pass mean then variance per block (numerically safe for eps = 1e-12; the one-pass
//      E[x²] - E[x]² cancels catastrophically when |μ| ≫ σ). One 256-thread block per row, one
//      value per thread, four barriers; the backward reads x and dy twice (3 launches).
//   2. (issue 19) layer_norm_forward_v2: a warp per row, 8 rows per 256-thread block, the row in
//      registers through 128-bit loads (layer_norm_row.cuh: d % 4 == 0, d <= 256, aligned; else a
//      scalar warp path that re-reads the row from L1), shuffles only, no barrier; the same two-pass
//      statistics. layer_norm_backward_v2: one fused pass, a warp per row over a chunk of
//      LAYER_NORM_ROWS_PER_CHUNK rows per block: dx from the row in registers, and dγ, dβ summed in
//      registers per warp, then over the 8 warps in warp order through shared memory into one
//      partial per block (deterministic, no atomics); layer_norm_backward_params_finish then sums
//      the partials in chunk order (2 launches instead of 3). Scalar path (other d): dx per warp as
//      above, and the block's dγ, dβ partial by a column pass over its chunk (re-read from L2).
//      Floors at the paper's sizes: forward 8 B/element (210 MB, 70 µs at 3.0 TB/s), backward
//      12 B/element (x, dy read once, dx written: 315 MB, 105 µs; v1 moves 525 MB) plus 2 × 1600 ×
//      256 × 4 B of partials. Expected ≥ 80 % / ≥ 70 % of copy bandwidth: each lane has 2 (forward)
//      or 4 (backward) 128-bit loads in flight per row and 8 warps per block, and the reductions are
//      10 (forward) or 10 (backward) shuffles per row, far under the row's memory time.
//      Occupancy (docs/kernels-sass.md): forward 40 registers, 75 %; backward 64 registers and
//      16 KiB of static shared memory (the per-warp dγ, dβ), 50 %: 32 warps per SM, each lane
//      with four 128-bit loads in flight per row (64 KB per SM, over the ~22 KB an H200 needs in
//      flight, vector_io.cuh). v1 stays the default until a GPU run shows v2 faster.
//
// Gates (docs/kernels-sass.md): block and dynamic shared bytes are the launch shape at the
// paper's sizes (d = 256, h = 4, n = 50, r = 16) as the launcher in src/ops/ computes it;
// d = 256: 8 warps per row; the parameter passes use 256 threads.
//   asif-gate: layer_norm_forward block=256 occupancy>=100%
//   asif-gate: layer_norm_backward_input block=256 occupancy>=100%
//   asif-gate: layer_norm_backward_params_partial block=256 occupancy>=100%
//   asif-gate: layer_norm_backward_params_finish block=256 occupancy>=100%
//   asif-gate: layer_norm_forward_v2 block=256 occupancy>=75% vector_io
//   asif-gate: layer_norm_backward_v2 block=256 occupancy>=50% vector_io
#include "common.cuh"
#include "layer_norm_row.cuh"

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

extern "C" __global__ void layer_norm_forward_v2(const float* __restrict__ x, const float* __restrict__ gamma,
                                                 const float* __restrict__ beta, float* __restrict__ y,
                                                 float* __restrict__ mean_out, float* __restrict__ rstd_out,
                                                 int rows, int cols, float eps) {
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    const int row = blockIdx.x * (blockDim.x / ASIF_WARP_SIZE) + threadIdx.x / ASIF_WARP_SIZE;
    if (row >= rows) return;  // uniform across the warp; no block barrier in this kernel
    const float* x_row = x + (size_t)row * cols;
    float* y_row = y + (size_t)row * cols;
    float mean, rstd;
    const bool aligned = asif_aligned16(x) && asif_aligned16(y) && asif_aligned16(gamma) && asif_aligned16(beta);
    if (layer_norm_v2_in_registers(cols, aligned)) {
        asif_float4 v[LAYER_NORM_V2_VECTORS];
#pragma unroll
        for (int k = 0; k < LAYER_NORM_V2_VECTORS; ++k) {
            if (layer_norm_v2_active(k, lane, cols)) v[k] = asif_load4(x_row + layer_norm_v2_column(k, lane));
        }
        layer_norm_v2_statistics(v, lane, cols, eps, mean, rstd);
        layer_norm_v2_store_output(v, gamma, beta, y_row, lane, cols, mean, rstd);
    } else {
        layer_norm_v2_statistics_scalar(x_row, lane, cols, eps, mean, rstd);
        layer_norm_v2_store_output_scalar(x_row, gamma, beta, y_row, lane, cols, mean, rstd);
    }
    if (lane == 0) {
        mean_out[row] = mean;
        rstd_out[row] = rstd;
    }
}

// dx of one row from per-lane partial sums: g = dy ⊙ γ rounded once (__fmul_rn, see v1),
// dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂)).
__device__ __forceinline__ float layer_norm_v2_dx(float g, float x_hat, float rstd, float mean_g,
                                                  float mean_g_xhat) {
    return rstd * (g - mean_g - x_hat * mean_g_xhat);
}

extern "C" __global__ void layer_norm_backward_v2(const float* __restrict__ x, const float* __restrict__ gamma,
                                                  const float* __restrict__ mean, const float* __restrict__ rstd,
                                                  const float* __restrict__ dy, float* __restrict__ dx,
                                                  float* __restrict__ dgamma_partial,
                                                  float* __restrict__ dbeta_partial, int rows, int cols) {
    // Per-warp dγ, dβ of the register path, summed over the warps in warp order after the barrier.
    __shared__ __align__(16) float warp_dgamma[LAYER_NORM_V2_WARPS][LAYER_NORM_V2_MAX_REGISTER_COLS];
    __shared__ __align__(16) float warp_dbeta[LAYER_NORM_V2_WARPS][LAYER_NORM_V2_MAX_REGISTER_COLS];
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    const int warp = threadIdx.x / ASIF_WARP_SIZE;
    const int warps = blockDim.x / ASIF_WARP_SIZE;
    const int chunk = blockIdx.x;
    const int row_begin = chunk * LAYER_NORM_ROWS_PER_CHUNK;
    const int row_end = min(rows, row_begin + LAYER_NORM_ROWS_PER_CHUNK);
    const bool aligned = asif_aligned16(x) && asif_aligned16(gamma) && asif_aligned16(dy) && asif_aligned16(dx);
    // Uniform across the block: every thread takes the same branch, so the barrier below is safe.
    const bool in_registers = layer_norm_v2_in_registers(cols, aligned) && warps <= LAYER_NORM_V2_WARPS;

    if (in_registers) {
        // γ is re-read per row (1 KiB, an L1 hit) rather than held: it would take the kernel past
        // the 64-register budget (tests/nvrtc.rs).
        asif_float4 acc_gamma[LAYER_NORM_V2_VECTORS], acc_beta[LAYER_NORM_V2_VECTORS];
#pragma unroll
        for (int k = 0; k < LAYER_NORM_V2_VECTORS; ++k) {
            acc_gamma[k] = asif_float4{0.0f, 0.0f, 0.0f, 0.0f};
            acc_beta[k] = asif_float4{0.0f, 0.0f, 0.0f, 0.0f};
        }
        for (int row = row_begin + warp; row < row_end; row += warps) {
            const size_t base = (size_t)row * cols;
            const float row_mean = mean[row], row_rstd = rstd[row];
            asif_float4 xv[LAYER_NORM_V2_VECTORS], dyv[LAYER_NORM_V2_VECTORS];
#pragma unroll
            for (int k = 0; k < LAYER_NORM_V2_VECTORS; ++k) {
                if (layer_norm_v2_active(k, lane, cols)) {
                    xv[k] = asif_load4(x + base + layer_norm_v2_column(k, lane));
                    dyv[k] = asif_load4(dy + base + layer_norm_v2_column(k, lane));
                }
            }
            // x̂ overwrites x in registers; g is recomputed from dy (one rounded multiply).
            float sum_g = 0.0f, sum_g_xhat = 0.0f;
#pragma unroll
            for (int k = 0; k < LAYER_NORM_V2_VECTORS; ++k) {
                if (layer_norm_v2_active(k, lane, cols)) {
                    const asif_float4 gv = asif_load4(gamma + layer_norm_v2_column(k, lane));
                    float* xs = &xv[k].x;
                    const float* ds = &dyv[k].x;
                    const float* gs = &gv.x;
                    float* ag = &acc_gamma[k].x;
                    float* ab = &acc_beta[k].x;
#pragma unroll
                    for (int j = 0; j < 4; ++j) {
                        xs[j] = (xs[j] - row_mean) * row_rstd;
                        const float g = __fmul_rn(ds[j], gs[j]);
                        sum_g += g;
                        sum_g_xhat += g * xs[j];
                        ag[j] += ds[j] * xs[j];
                        ab[j] += ds[j];
                    }
                }
            }
            const float mean_g = warp_reduce_sum(sum_g) / (float)cols;
            const float mean_g_xhat = warp_reduce_sum(sum_g_xhat) / (float)cols;
#pragma unroll
            for (int k = 0; k < LAYER_NORM_V2_VECTORS; ++k) {
                if (layer_norm_v2_active(k, lane, cols)) {
                    const asif_float4 gv = asif_load4(gamma + layer_norm_v2_column(k, lane));
                    asif_float4 out;
                    float* os = &out.x;
                    const float* xs = &xv[k].x;
                    const float* ds = &dyv[k].x;
                    const float* gs = &gv.x;
#pragma unroll
                    for (int j = 0; j < 4; ++j) {
                        os[j] = layer_norm_v2_dx(__fmul_rn(ds[j], gs[j]), xs[j], row_rstd, mean_g, mean_g_xhat);
                    }
                    asif_store4(dx + base + layer_norm_v2_column(k, lane), out);
                }
            }
        }
#pragma unroll
        for (int k = 0; k < LAYER_NORM_V2_VECTORS; ++k) {
            if (layer_norm_v2_active(k, lane, cols)) {
                const int c = layer_norm_v2_column(k, lane);
                *reinterpret_cast<asif_float4*>(&warp_dgamma[warp][c]) = acc_gamma[k];
                *reinterpret_cast<asif_float4*>(&warp_dbeta[warp][c]) = acc_beta[k];
            }
        }
    } else {
        for (int row = row_begin + warp; row < row_end; row += warps) {
            const size_t base = (size_t)row * cols;
            const float row_mean = mean[row], row_rstd = rstd[row];
            float sum_g = 0.0f, sum_g_xhat = 0.0f;
            for (int c = lane; c < cols; c += ASIF_WARP_SIZE) {
                const float g = __fmul_rn(dy[base + c], gamma[c]);
                const float x_hat = (x[base + c] - row_mean) * row_rstd;
                sum_g += g;
                sum_g_xhat += g * x_hat;
            }
            const float mean_g = warp_reduce_sum(sum_g) / (float)cols;
            const float mean_g_xhat = warp_reduce_sum(sum_g_xhat) / (float)cols;
            for (int c = lane; c < cols; c += ASIF_WARP_SIZE) {
                const float g = __fmul_rn(dy[base + c], gamma[c]);
                const float x_hat = (x[base + c] - row_mean) * row_rstd;
                dx[base + c] = layer_norm_v2_dx(g, x_hat, row_rstd, mean_g, mean_g_xhat);
            }
        }
    }
    __syncthreads();
    // The block's partial of dγ and dβ, one thread per column, in a fixed order.
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float total_gamma = 0.0f, total_beta = 0.0f;
        if (in_registers) {
            for (int w = 0; w < warps; ++w) {
                // A warp with no row of this chunk never wrote its slots: its sums are zero.
                if (row_begin + w < row_end) {
                    total_gamma += warp_dgamma[w][c];
                    total_beta += warp_dbeta[w][c];
                }
            }
        } else {
            for (int row = row_begin; row < row_end; ++row) {
                const size_t at = (size_t)row * cols + c;
                const float x_hat = (x[at] - mean[row]) * rstd[row];
                total_gamma += dy[at] * x_hat;
                total_beta += dy[at];
            }
        }
        dgamma_partial[(size_t)chunk * cols + c] = total_gamma;
        dbeta_partial[(size_t)chunk * cols + c] = total_beta;
    }
}
