// contrastive.cu: RSA's interaction-level contrastive loss (paper eqs. 6 to 9, spec §3.4, A8 to
// A10), forward and backward fused in one pass per sequence.
//
// What it computes, per sequence b over its valid positions t, u < L_b (x_t = E_X[s_t], the raw
// item-ID embedding; a_t = Σ_j A_j[t], the summed attribute embedding; eq. 6):
//   x̃_t = x_t / max(‖x_t‖, ε), ã_t = a_t / max(‖a_t‖, ε), ε = 1e-8 (torch's F.normalize: a zero
//     vector gives 0, never NaN)
//   S_tu = κ · x̃_t·ã_u, κ = min(exp(s), 100) (eq. 7, CLIP's logit scale, τ = 1/κ)
//   ℓ_X(t) = lse_u S_t· − S_tt,  ℓ_A(u) = lse_t S_·u − S_uu (eq. 8, both directions), where the
//     log-sum-exp runs over valid entries: t, u < L_b and, with group ids (the dedup switch),
//     u = t or group[u] ≠ group[t] (the mask is symmetric, so one rule serves both directions)
//   L_co = Σ_b w_b Σ_t (ℓ_X(t) + ℓ_A(t)) (eq. 9), w_b = 1/(2·B·L_b) (mean per sequence, A8's
//     default) or 1/(2·B) (the literal sum); B counts every sequence, L_b = 0 adds nothing.
// Backward, with g the upstream scalar gradient, P/Q the row/column softmaxes of S over valid
// entries and G_tu = g·w_b·(P_tu + Q_tu − 2δ_tu) (0 where masked):
//   dX̃ = κ·G·Ã, dÃ = κ·Gᵀ·X̃, c_t = Σ_u G_tu S_tu (= x̃_t·dX̃_t), r_u = Σ_t G_tu S_tu
//   dx_t = (dX̃_t − x̃_t c_t) / ‖x_t‖ (just dX̃_t / ε where ‖x_t‖ ≤ ε), da_u likewise with r_u
//   ds = Σ_tu G_tu S_tu = Σ_t c_t, and 0 where the clamp is active (exp(s) > 100).
//
// Launch shapes (src/ops/contrastive/cuda.rs):
//   contrastive_forward_backward: one block of 256 threads per sequence, grid.x = B, n ≤ 64.
//     The block computes S (64×64 tile in shared memory, never in device memory), both
//     log-sum-exps, the loss, G, dx, da and its share of ds in one pass. Phase A streams x and a
//     through shared memory in 32-column chunks, each thread accumulating a 4×4 register tile of
//     x·a (rows ty+16i, columns tx+16j: conflict-free, the two rows of a warp broadcast) and
//     threads 0..127 the squared norms; phase B turns S into κ·G in place (one warp per row or
//     column, lanes across it); phase C streams Ã, then X̃, in 64-column chunks and forms
//     dX̃ = (κG)·Ã and dÃ = (κG)ᵀ·X̃ with the same 4×4 register tiling. Rows t ≥ L_b are written
//     as zeros, so dx and da need no memset. Work scales with ⌈L_b/16⌉²: short sequences are
//     cheaper.
//   contrastive_reduce: one block of 256 threads sums the per-sequence partial losses and ds in a
//     fixed order (thread i takes b = i, i+256, ... then a block tree): deterministic, no float
//     atomics anywhere.
//   contrastive_scale: grid-stride out = in · scale[0] (the tape's backward scales the saved
//     gradients by the upstream gradient, which stays on the device).
//
// Traffic and floor at the paper's sizes (B = 2048, n = 50, d = 256, fp32): read x and a once,
// write dx and da once: 4 · 2048·50·256·4 B = 419 MB, about 140 µs at 3.0 TB/s on an H100
// (98 µs on an H200). Phase C re-reads x and a twice each (tile, then the norm backward's
// projection): L2/L1 hits while the block's 100 KB is still there.
// Arithmetic: 3 · 64²·256 FMAs per sequence at n = 50 padded to 64 (x·a, G·Ã, Gᵀ·X̃), 3.2 GFMA
// in all: under the memory floor only if the FMA pipes stay above half busy, so the 4×4 register
// tiles (8 shared loads per 16 FMAs) matter.
//
// Versions:
//   1. one block per sequence, S and then κ·G in one 64×65 shared tile, x and a streamed twice
//      (S needs the norms before G exists, so the gradient pass cannot share the first read).
//
// Gates (docs/kernels-sass.md): block and dynamic shared bytes are the launch shape at the
// paper's sizes (d = 256, h = 4, n = 50, r = 16) as the launcher in src/ops/ computes it.
//   asif-gate: contrastive_forward_backward block=256 occupancy>=50%
//   asif-gate: contrastive_reduce block=256 occupancy>=100%
//   asif-gate: contrastive_scale block=256 occupancy>=100%
#include "common.cuh"

#define CONTRASTIVE_MAX_N 64
#define CONTRASTIVE_THREADS 256
// Shared tiles are padded to an odd row stride: column walks (lse over t, Gᵀ) stay conflict-free.
#define CONTRASTIVE_SCORE_STRIDE 65
#define CONTRASTIVE_SCORE_CHUNK 32
#define CONTRASTIVE_SCORE_TILE_STRIDE 33
#define CONTRASTIVE_GRAD_CHUNK 64
#define CONTRASTIVE_GRAD_TILE_STRIDE 65
#define CONTRASTIVE_LOGIT_SCALE_MAX 100.0f
#define CONTRASTIVE_NORM_EPS 1e-8f

// Whether (t, u) takes part in the softmaxes: the positive always, negatives unless the dedup
// switch finds the same group id. Symmetric in t and u.
__device__ __forceinline__ bool contrastive_allowed(const int* group, int use_groups, int t, int u) {
    return t == u || !use_groups || group[t] != group[u];
}

extern "C" __global__ void contrastive_forward_backward(const float* __restrict__ x,
                                                        const float* __restrict__ a,
                                                        const int* __restrict__ lengths,
                                                        const int* __restrict__ groups,
                                                        const float* __restrict__ logit_scale_param,
                                                        float* __restrict__ dx,
                                                        float* __restrict__ da,
                                                        float* __restrict__ loss_partial,
                                                        float* __restrict__ ds_partial,
                                                        int batch, int n, int d, int use_groups,
                                                        int literal_sum, float upstream) {
    // S, then κ·G, for t, u < 64.
    __shared__ float scores[CONTRASTIVE_MAX_N * CONTRASTIVE_SCORE_STRIDE];
    // Phase A: x and a chunks (64 × 33 each); phase C: one Ã or X̃ chunk (64 × 65 ≤ 2 · 64 × 33).
    __shared__ float tiles[2 * CONTRASTIVE_MAX_N * CONTRASTIVE_SCORE_TILE_STRIDE];
    __shared__ float inv_norm_x[CONTRASTIVE_MAX_N], inv_norm_a[CONTRASTIVE_MAX_N];
    __shared__ float project_x[CONTRASTIVE_MAX_N], project_a[CONTRASTIVE_MAX_N];
    __shared__ float lse_row[CONTRASTIVE_MAX_N], lse_col[CONTRASTIVE_MAX_N];
    __shared__ float row_dot[CONTRASTIVE_MAX_N], col_dot[CONTRASTIVE_MAX_N];
    __shared__ int group[CONTRASTIVE_MAX_N];
    __shared__ float scratch[32];

    const int b = blockIdx.x;
    if (b >= batch) return;  // uniform across the block
    const int tid = threadIdx.x;
    const int lane = tid % ASIF_WARP_SIZE;
    const int warp = tid / ASIF_WARP_SIZE;
    const int warps = CONTRASTIVE_THREADS / ASIF_WARP_SIZE;
    const int tx = tid % 16;
    const int ty = tid / 16;
    const int len = max(0, min(lengths[b], n));
    const size_t base = (size_t)b * n * d;
    const float* x_seq = x + base;
    const float* a_seq = a + base;
    float* dx_seq = dx + base;
    float* da_seq = da + base;

    if (len == 0) {  // contributes nothing; its gradients are zero
        for (int i = tid; i < n * d; i += CONTRASTIVE_THREADS) {
            dx_seq[i] = 0.0f;
            da_seq[i] = 0.0f;
        }
        if (tid == 0) {
            loss_partial[b] = 0.0f;
            ds_partial[b] = 0.0f;
        }
        return;
    }

    const float exp_s = expf(logit_scale_param[0]);
    const bool clamped = exp_s > CONTRASTIVE_LOGIT_SCALE_MAX;
    const float kappa = clamped ? CONTRASTIVE_LOGIT_SCALE_MAX : exp_s;
    // w_b · g: A8's mean over valid positions by default, eq. 9's literal sum as the switch.
    const float weight = literal_sum ? 0.5f / (float)batch : 0.5f / ((float)batch * (float)len);
    const float grad_weight = weight * upstream;
    // Rows (and columns) in use, rounded up to the 16-row groups of the register tiles.
    const int row_groups = (len + 15) / 16;
    const int padded = row_groups * 16;

    if (tid < len) group[tid] = use_groups ? groups[(size_t)b * n + tid] : 0;

    // ---- Phase A: x·a for t, u < len and the squared norms, 32 columns at a time.
    float* x_tile = tiles;
    float* a_tile = tiles + CONTRASTIVE_MAX_N * CONTRASTIVE_SCORE_TILE_STRIDE;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    float sum_sq = 0.0f;  // threads 0..63: ‖x_tid‖², 64..127: ‖a_(tid−64)‖²
    for (int c0 = 0; c0 < d; c0 += CONTRASTIVE_SCORE_CHUNK) {
        const int col = c0 + lane;
        for (int r = warp; r < padded; r += warps) {  // a warp reads 32 consecutive floats of a row
            const bool inside = r < len && col < d;
            x_tile[r * CONTRASTIVE_SCORE_TILE_STRIDE + lane] = inside ? x_seq[(size_t)r * d + col] : 0.0f;
            a_tile[r * CONTRASTIVE_SCORE_TILE_STRIDE + lane] = inside ? a_seq[(size_t)r * d + col] : 0.0f;
        }
        __syncthreads();
        if (tid < 2 * CONTRASTIVE_MAX_N && (tid % CONTRASTIVE_MAX_N) < len) {
            const float* row = (tid < CONTRASTIVE_MAX_N ? x_tile + tid * CONTRASTIVE_SCORE_TILE_STRIDE
                                                        : a_tile + (tid - CONTRASTIVE_MAX_N) * CONTRASTIVE_SCORE_TILE_STRIDE);
            for (int k = 0; k < CONTRASTIVE_SCORE_CHUNK; ++k) sum_sq += row[k] * row[k];
        }
        for (int k = 0; k < CONTRASTIVE_SCORE_CHUNK; ++k) {
            float xv[4], av[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                xv[i] = i < row_groups ? x_tile[(ty + 16 * i) * CONTRASTIVE_SCORE_TILE_STRIDE + k] : 0.0f;
                av[i] = i < row_groups ? a_tile[(tx + 16 * i) * CONTRASTIVE_SCORE_TILE_STRIDE + k] : 0.0f;
            }
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += xv[i] * av[j];
        }
        __syncthreads();  // the tiles are overwritten by the next chunk
    }
    if (tid < 2 * CONTRASTIVE_MAX_N && (tid % CONTRASTIVE_MAX_N) < len) {
        const float norm = sqrtf(sum_sq);
        const bool above = norm > CONTRASTIVE_NORM_EPS;
        const float inv = 1.0f / (above ? norm : CONTRASTIVE_NORM_EPS);
        if (tid < CONTRASTIVE_MAX_N) {
            inv_norm_x[tid] = inv;
            project_x[tid] = above ? 1.0f : 0.0f;
        } else {
            inv_norm_a[tid - CONTRASTIVE_MAX_N] = inv;
            project_a[tid - CONTRASTIVE_MAX_N] = above ? 1.0f : 0.0f;
        }
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int t = ty + 16 * i;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int u = tx + 16 * j;
            if (t < len && u < len) {
                scores[t * CONTRASTIVE_SCORE_STRIDE + u] = kappa * acc[i][j] * inv_norm_x[t] * inv_norm_a[u];
            }
        }
    }
    __syncthreads();

    // ---- Phase B1: log-sum-exp of row t (ℓ_X) and of column t (ℓ_A), one warp each, lanes
    // across u (two entries per lane: n ≤ 64).
    for (int t = warp; t < len; t += warps) {
        float row[2], column[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int u = lane + 32 * h;
            const bool valid = u < len && contrastive_allowed(group, use_groups, t, u);
            row[h] = valid ? scores[t * CONTRASTIVE_SCORE_STRIDE + u] : -asif_infinity();
            column[h] = valid ? scores[u * CONTRASTIVE_SCORE_STRIDE + t] : -asif_infinity();
        }
        // The diagonal is always valid, so both maxima are finite for finite scores.
        const float row_max = warp_reduce_max(fmaxf(row[0], row[1]));
        const float column_max = warp_reduce_max(fmaxf(column[0], column[1]));
        const float row_sum = warp_reduce_sum(expf(row[0] - row_max) + expf(row[1] - row_max));
        const float column_sum = warp_reduce_sum(expf(column[0] - column_max) + expf(column[1] - column_max));
        if (lane == 0) {
            lse_row[t] = row_max + logf(row_sum);
            lse_col[t] = column_max + logf(column_sum);
        }
    }
    __syncthreads();

    // ---- Phase B2: r_u = Σ_t G_tu S_tu (column walk) and the sequence's loss Σ_t (ℓ_X + ℓ_A).
    float loss_part = 0.0f;
    for (int u = warp; u < len; u += warps) {
        float dot = 0.0f;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int t = lane + 32 * h;
            if (t < len && contrastive_allowed(group, use_groups, t, u)) {
                const float s_tu = scores[t * CONTRASTIVE_SCORE_STRIDE + u];
                const float p = expf(s_tu - lse_row[t]);
                const float q = expf(s_tu - lse_col[u]);
                const float g = grad_weight * (p + q - (t == u ? 2.0f : 0.0f));
                dot += g * s_tu;
            }
        }
        dot = warp_reduce_sum(dot);
        if (lane == 0) {
            col_dot[u] = dot;
            loss_part += lse_row[u] + lse_col[u] - 2.0f * scores[u * CONTRASTIVE_SCORE_STRIDE + u];
        }
    }
    __syncthreads();  // every read of S by the column walk is done before B3 overwrites it

    // ---- Phase B3: c_t = Σ_u G_tu S_tu (row walk) and S → κ·G in place; zeros fill the padded
    // rows and columns, so phase C reads only finite values.
    for (int t = warp; t < padded; t += warps) {
        float dot = 0.0f;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int u = lane + 32 * h;
            if (u < padded) {
                float g = 0.0f;
                if (t < len && u < len && contrastive_allowed(group, use_groups, t, u)) {
                    const float s_tu = scores[t * CONTRASTIVE_SCORE_STRIDE + u];
                    const float p = expf(s_tu - lse_row[t]);
                    const float q = expf(s_tu - lse_col[u]);
                    g = grad_weight * (p + q - (t == u ? 2.0f : 0.0f));
                    dot += g * s_tu;
                }
                scores[t * CONTRASTIVE_SCORE_STRIDE + u] = kappa * g;
            }
        }
        dot = warp_reduce_sum(dot);
        if (lane == 0 && t < len) row_dot[t] = dot;
    }
    __syncthreads();

    // Deterministic per-sequence sums: block trees over fixed thread positions.
    const float ds_seq = block_reduce_sum(tid < len ? row_dot[tid] : 0.0f, scratch);
    const float loss_seq = block_reduce_sum(loss_part, scratch);
    if (tid == 0) {
        loss_partial[b] = weight * loss_seq;
        ds_partial[b] = clamped ? 0.0f : ds_seq;
    }

    // ---- Phase C: dX̃ = (κG)·Ã and dÃ = (κG)ᵀ·X̃, 64 columns at a time, then the norm backward.
    float* tile = tiles;
    for (int c0 = 0; c0 < d; c0 += CONTRASTIVE_GRAD_CHUNK) {
#pragma unroll
        for (int pass = 0; pass < 2; ++pass) {
            // pass 0: tile = Ã chunk, output dx; pass 1: tile = X̃ chunk, output da.
            const float* source = pass == 0 ? a_seq : x_seq;
            const float* inv_source = pass == 0 ? inv_norm_a : inv_norm_x;
            for (int e = tid; e < padded * CONTRASTIVE_GRAD_CHUNK; e += CONTRASTIVE_THREADS) {
                const int v = e / CONTRASTIVE_GRAD_CHUNK;
                const int k = e % CONTRASTIVE_GRAD_CHUNK;
                const int col = c0 + k;
                tile[v * CONTRASTIVE_GRAD_TILE_STRIDE + k] =
                    (v < len && col < d) ? source[(size_t)v * d + col] * inv_source[v] : 0.0f;
            }
            __syncthreads();
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
            for (int v = 0; v < len; ++v) {
                float gv[4], tv[4];
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const int row = ty + 16 * i;
                    // pass 0 walks row t of κG, pass 1 column u (Gᵀ).
                    gv[i] = i < row_groups ? (pass == 0 ? scores[row * CONTRASTIVE_SCORE_STRIDE + v]
                                                        : scores[v * CONTRASTIVE_SCORE_STRIDE + row])
                                           : 0.0f;
                    tv[i] = tile[v * CONTRASTIVE_GRAD_TILE_STRIDE + tx + 16 * i];
                }
#pragma unroll
                for (int i = 0; i < 4; ++i)
#pragma unroll
                    for (int j = 0; j < 4; ++j) acc[i][j] += gv[i] * tv[j];
            }
            const float* own = pass == 0 ? x_seq : a_seq;
            const float* inv_own = pass == 0 ? inv_norm_x : inv_norm_a;
            const float* project = pass == 0 ? project_x : project_a;
            const float* dot = pass == 0 ? row_dot : col_dot;
            float* out = pass == 0 ? dx_seq : da_seq;
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int row = ty + 16 * i;
                if (row >= n) continue;
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const int col = c0 + tx + 16 * j;
                    if (col >= d) continue;
                    float value = 0.0f;
                    if (row < len) {
                        const size_t at = (size_t)row * d + col;
                        const float inv = inv_own[row];
                        // (dṽ − ṽ (ṽ·dṽ)) / ‖v‖, with ṽ·dṽ = c_t (or r_u); no projection below ε.
                        value = inv * (acc[i][j] - project[row] * own[at] * inv * dot[row]);
                    }
                    out[(size_t)row * d + col] = value;
                }
            }
            __syncthreads();  // the tile is overwritten by the next pass
        }
    }
}

extern "C" __global__ void contrastive_reduce(const float* __restrict__ loss_partial,
                                              const float* __restrict__ ds_partial,
                                              float* __restrict__ loss,
                                              float* __restrict__ ds,
                                              int batch) {
    __shared__ float scratch[32];
    float loss_sum = 0.0f, ds_sum = 0.0f;
    for (int b = threadIdx.x; b < batch; b += blockDim.x) {
        loss_sum += loss_partial[b];
        ds_sum += ds_partial[b];
    }
    loss_sum = block_reduce_sum(loss_sum, scratch);
    ds_sum = block_reduce_sum(ds_sum, scratch);
    if (threadIdx.x == 0) {
        loss[0] = loss_sum;
        ds[0] = ds_sum;
    }
}

extern "C" __global__ void contrastive_scale(const float* __restrict__ in,
                                             const float* __restrict__ scale,
                                             float* __restrict__ out,
                                             int len) {
    const float factor = scale[0];
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) {
        out[i] = in[i] * factor;
    }
}
