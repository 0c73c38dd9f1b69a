// residual_norm.cu: the post-LN sublayer ending y = LN(Dropout(x) + residual), fused (spec §2:
// MHA step 5 and FFN, LN(Dropout_hid(O W_o + b_o) + res); spec §3.2 step 5, H_s = LN_s(Drop(O_s
// W_o) + s)).
//
// What it computes, per row of `cols` (element counter i = row·cols + c, as the unfused dropout):
//   z = (keep(seed, i) ? x · scale : 0) + residual        scale = 1/(1 − p); p = 0, scale = 1 at eval
//   y = (z − μ) · rstd · γ + β                            exactly layer_norm_forward's arithmetic
// It writes z (the layer-norm backward needs it), y, μ and rstd. The backward is the unfused one:
// layer_norm_backward on z gives dz; dresidual = dz; dx = dropout(dz) with the same mask.
//
// Why fuse: unfused, dropout reads x and writes x', the add reads x' and the residual and writes
// z, layer norm reads z and writes y: 4 reads and 3 writes of B·n·d floats. Fused: 2 reads (x,
// residual) and 2 writes (z, y); the row stays in L1 between the statistics and the output pass.
// At B·n = 102400, d = 256: 420 MB instead of 735 MB, about 140 µs instead of 245 µs at 3.0 TB/s.
//
// Launch shape (src/ops/residual_norm/cuda.rs): one block per row, blockDim.x = 32..256 (the same
// choice as layer_norm.cu, so the reductions add in the same order and fused == unfused); v2 a warp
// per row, block 256, grid.x = ceil(rows / 8), as layer_norm_forward_v2.
//
// Versions (kernel_version family "residual_norm"):
//   1. two-pass statistics over z as layer_norm_forward.
//   2. residual_dropout_layer_norm_forward_v2 (issue 19): a warp per row, 8 rows per 256-thread
//      block, as layer_norm_forward_v2 and through the same code (layer_norm_row.cuh), so fused v2
//      == unfused v2: x and the residual read with 128-bit loads, the dropout hash per element of
//      the same global counter i (bit-identical mask), z stored with 128-bit stores and kept in
//      registers for the statistics and y. Scalar path (d % 4 != 0, d > 256, misaligned): z
//      written, then re-read by the lane that wrote it. Floor as above (16 B/element, 420 MB, 140 µs
//      at 3.0 TB/s); expected ≥ 80 % of copy bandwidth (the hash is ~10 integer operations per
//      element, under the memory time). v1 stays the default until a GPU run shows v2 faster.
//
// Step counter (issue 20): the _stepped entry points of both versions take (step counter, stream,
// site) in place of the seed and derive it on the device, so a replayed CUDA graph draws each
// step's mask; the by-value kernels stay the API.
//
// Gates (docs/kernels-sass.md): block and dynamic shared bytes are the launch shape at the
// paper's sizes (d = 256, h = 4, n = 50, r = 16) as the launcher in src/ops/ computes it;
// d = 256: 8 warps per row, as layer_norm.
//   asif-gate: residual_dropout_layer_norm_forward block=256 occupancy>=100%
//   asif-gate: residual_dropout_layer_norm_forward_v2 block=256 occupancy>=75% vector_io
//   asif-gate: residual_dropout_layer_norm_forward_stepped block=256 occupancy>=100%
//   asif-gate: residual_dropout_layer_norm_forward_stepped_v2 block=256 occupancy>=75% vector_io
#include "common.cuh"
#include "layer_norm_row.cuh"

// The row loops of both versions, shared by the by-value and step-counter entry points (below).
__device__ __forceinline__ void residual_dropout_layer_norm_rows(
    const float* __restrict__ x, const float* __restrict__ residual, const float* __restrict__ gamma,
    const float* __restrict__ beta, float* __restrict__ z, float* __restrict__ y, float* __restrict__ mean_out,
    float* __restrict__ rstd_out, int rows, int cols, float eps, float p, float scale,
    unsigned long long seed) {
    __shared__ float scratch[32];
    const int row = blockIdx.x;
    if (row >= rows) return;  // uniform across the block
    const size_t base = (size_t)row * cols;

    float sum = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const size_t i = base + c;
        const float kept = asif_dropout_keep(seed, (unsigned long long)i, p) ? x[i] * scale : 0.0f;
        const float value = kept + residual[i];
        z[i] = value;  // each thread re-reads only the columns it wrote
        sum += value;
    }
    const float mean = block_reduce_sum(sum, scratch) / (float)cols;

    float sum_sq = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float centered = z[base + c] - mean;
        sum_sq += centered * centered;
    }
    const float variance = block_reduce_sum(sum_sq, scratch) / (float)cols;
    const float rstd = rsqrtf(variance + eps);

    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        y[base + c] = (z[base + c] - mean) * rstd * gamma[c] + beta[c];
    }
    if (threadIdx.x == 0) {
        mean_out[row] = mean;
        rstd_out[row] = rstd;
    }
}

__device__ __forceinline__ void residual_dropout_layer_norm_rows_v2(
    const float* __restrict__ x, const float* __restrict__ residual, const float* __restrict__ gamma,
    const float* __restrict__ beta, float* __restrict__ z, float* __restrict__ y, float* __restrict__ mean_out,
    float* __restrict__ rstd_out, int rows, int cols, float eps, float p, float scale,
    unsigned long long seed) {
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    const int row = blockIdx.x * (blockDim.x / ASIF_WARP_SIZE) + threadIdx.x / ASIF_WARP_SIZE;
    if (row >= rows) return;  // uniform across the warp; no block barrier in this kernel
    const size_t base = (size_t)row * cols;
    float mean, rstd;
    const bool aligned = asif_aligned16(x) && asif_aligned16(residual) && asif_aligned16(gamma) &&
                         asif_aligned16(beta) && asif_aligned16(z) && asif_aligned16(y);
    if (layer_norm_v2_in_registers(cols, aligned)) {
        asif_float4 v[LAYER_NORM_V2_VECTORS];
#pragma unroll
        for (int k = 0; k < LAYER_NORM_V2_VECTORS; ++k) {
            if (layer_norm_v2_active(k, lane, cols)) {
                const size_t i = base + layer_norm_v2_column(k, lane);
                const asif_float4 xv = asif_load4(x + i);
                const asif_float4 rv = asif_load4(residual + i);
                const unsigned long long at = (unsigned long long)i;
                v[k].x = (asif_dropout_keep(seed, at, p) ? xv.x * scale : 0.0f) + rv.x;
                v[k].y = (asif_dropout_keep(seed, at + 1, p) ? xv.y * scale : 0.0f) + rv.y;
                v[k].z = (asif_dropout_keep(seed, at + 2, p) ? xv.z * scale : 0.0f) + rv.z;
                v[k].w = (asif_dropout_keep(seed, at + 3, p) ? xv.w * scale : 0.0f) + rv.w;
                asif_store4(z + i, v[k]);
            }
        }
        layer_norm_v2_statistics(v, lane, cols, eps, mean, rstd);
        layer_norm_v2_store_output(v, gamma, beta, y + base, lane, cols, mean, rstd);
    } else {
        for (int c = lane; c < cols; c += ASIF_WARP_SIZE) {
            const size_t i = base + c;
            const float kept = asif_dropout_keep(seed, (unsigned long long)i, p) ? x[i] * scale : 0.0f;
            z[i] = kept + residual[i];  // re-read below only by this lane
        }
        layer_norm_v2_statistics_scalar(z + base, lane, cols, eps, mean, rstd);
        layer_norm_v2_store_output_scalar(z + base, gamma, beta, y + base, lane, cols, mean, rstd);
    }
    if (lane == 0) {
        mean_out[row] = mean;
        rstd_out[row] = rstd;
    }
}

extern "C" __global__ void residual_dropout_layer_norm_forward(
    const float* __restrict__ x, const float* __restrict__ residual, const float* __restrict__ gamma,
    const float* __restrict__ beta, float* __restrict__ z, float* __restrict__ y, float* __restrict__ mean_out,
    float* __restrict__ rstd_out, int rows, int cols, float eps, float p, float scale,
    unsigned long long seed) {
    residual_dropout_layer_norm_rows(x, residual, gamma, beta, z, y, mean_out, rstd_out, rows, cols, eps, p, scale, seed);
}

extern "C" __global__ void residual_dropout_layer_norm_forward_v2(
    const float* __restrict__ x, const float* __restrict__ residual, const float* __restrict__ gamma,
    const float* __restrict__ beta, float* __restrict__ z, float* __restrict__ y, float* __restrict__ mean_out,
    float* __restrict__ rstd_out, int rows, int cols, float eps, float p, float scale,
    unsigned long long seed) {
    residual_dropout_layer_norm_rows_v2(x, residual, gamma, beta, z, y, mean_out, rstd_out, rows, cols, eps, p, scale, seed);
}

// Step counter (issue 20): the seed derived on the device (asif_step_seed, hash_rng.cuh) from the
// step counter, the model's dropout stream and the site; the same mask as the by-value kernels.
extern "C" __global__ void residual_dropout_layer_norm_forward_stepped(
    const float* __restrict__ x, const float* __restrict__ residual, const float* __restrict__ gamma,
    const float* __restrict__ beta, float* __restrict__ z, float* __restrict__ y, float* __restrict__ mean_out,
    float* __restrict__ rstd_out, int rows, int cols, float eps, float p, float scale,
    const unsigned long long* __restrict__ step, unsigned long long stream, unsigned long long site) {
    residual_dropout_layer_norm_rows(x, residual, gamma, beta, z, y, mean_out, rstd_out, rows, cols, eps, p, scale, asif_step_seed(step, stream, site));
}

extern "C" __global__ void residual_dropout_layer_norm_forward_stepped_v2(
    const float* __restrict__ x, const float* __restrict__ residual, const float* __restrict__ gamma,
    const float* __restrict__ beta, float* __restrict__ z, float* __restrict__ y, float* __restrict__ mean_out,
    float* __restrict__ rstd_out, int rows, int cols, float eps, float p, float scale,
    const unsigned long long* __restrict__ step, unsigned long long stream, unsigned long long site) {
    residual_dropout_layer_norm_rows_v2(x, residual, gamma, beta, z, y, mean_out, rstd_out, rows, cols, eps, p, scale, asif_step_seed(step, stream, site));
}
