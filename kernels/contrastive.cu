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
// Versions (src/kernel_version.rs selects, family "contrastive"; ASIF_KERNEL_CONTRASTIVE=v1|v2; v1
// stays the default until a GPU run shows v2 faster on every benchmark row):
//   1. contrastive_forward_backward: one block per sequence, S and then κ·G in one 64×65 shared
//      tile, x and a streamed twice (S needs the norms before G exists, so the gradient pass
//      cannot share the first read), the three products as 4×4 register tiles on CUDA cores with
//      two 32-bit shared loads per four FMAs; phase C reads each input twice more (the chunk, then
//      the norm backward's own row). 0.917 ms on an H200 against the ~100 µs floor (issue 19).
//   2. contrastive_forward_backward_v2 (issue 19): the same block per sequence, phase B shared
//      with v1 (contrastive_gradient_of_scores), the three products (X·Aᵀ, κG·Ã, (κG)ᵀ·X̃) on
//      m16n8k8 tensor-core mma by 3xTF32 (fp32-level accuracy, v1's tolerances), rows padded to
//      16, the u and k tiles to 8, tiles at or beyond L_b skipped; x and a staged ONCE in dynamic
//      shared memory by 16-byte cp.async (the kernel opts in to more than 48 KB,
//      KernelRef::with_large_shared), serving phase A, both products of phase C and both norm
//      epilogues: x and a are read once, as the floor assumes. Where d is too wide to stage at
//      once (2 · ⌈n/16⌉·16 · (⌈d/32⌉·32 + 4) · 4 B beyond the opt-in limit less 24 KB for the
//      static arrays: d > 384 at n 64 on an H200) the launcher passes a narrower width and x and a
//      are streamed twice in chunks of it, as v1 does. The learnable scale, the clamp, the
//      reductions and the dedup switch are v1's code. No atomics in either version (v1 has
//      none): deterministic. See the section above the kernel for the layout.
//      Shared memory and occupancy at the paper's sizes (n 50 → 64 staged rows, d 256): x and a
//      take 2 · 64 · 260 · 4 = 133,120 dynamic bytes, S and the per-row vectors 19.8 KB static:
//      152.9 KB a block, so ONE block of 256 threads per SM (12.5 % occupancy; the chunked
//      version fitted 4 blocks, 50 %). One block per SM serialises each block's copy, mma and
//      epilogue phases with nothing to overlap them; what it buys is no second read of x and a.
//      Floor and expectation at the paper's sizes (B = 2048, n = 50, d = 256, all valid): the
//      floor moves 419 MB (x and a read once, dx and da written once), 100 µs at the H200's
//      measured 4171 GB/s; v2 moves exactly that. Tensor-core work per sequence: phase A 4 row
//      tiles × 7 column tiles × 32 k steps, phase C 2 products × 4 row tiles × 32 column tiles ×
//      7 k steps, 3 mma each: 8064 mma of 2048 FLOP, 34 GFLOP of TF32 for the batch, about 70 to
//      110 µs at the rate mma.sync reaches on an H200. With one block per SM the phases add up
//      rather than overlap: 2048 blocks in 16 waves of 132; per wave the staging of 102 KB a block
//      (13.5 MB: 3.2 µs at 4171 GB/s), the mma (2.2 GFLOP a wave: 5 to 10 µs with 8 warps per
//      SM), phase B's latency (2 to 3 µs) and the stores (3.2 µs): 14 to 20 µs a wave, expected
//      0.22 to 0.32 ms, 30 to 45 % of the floor, which may be slower than the chunked layout's
//      0.15 to 0.25 ms estimate at 4 blocks per SM; the GPU run decides between them (the
//      launcher's width is the one switch: width 32 is the chunked layout at 4 blocks per SM).
//      Next, if it falls short: split a sequence's phase C over two blocks, or double-buffer
//      the chunked layout.
//
// Gates (docs/kernels-sass.md): block and dynamic shared bytes are the launch shape at the
// paper's sizes (d = 256, h = 4, n = 50, r = 16) as the launcher in src/ops/ computes it.
//   asif-gate: contrastive_forward_backward block=256 occupancy>=50%
// v2 at the paper's sizes stages x and a once in 133,120 dynamic bytes (see Versions, 2).
//   asif-gate: contrastive_forward_backward_v2 block=256 dynamic_shared=133120 occupancy>=12% tensor_core vector_io
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

// What the logit-scale parameter s and the reduction make of one sequence's terms.
struct ContrastiveWeights {
    float kappa;        // κ = min(exp(s), 100)
    bool clamped;       // exp(s) > 100: ds = 0
    float weight;       // w_b
    float grad_weight;  // w_b · g
};

__device__ __forceinline__ ContrastiveWeights contrastive_weights(const float* logit_scale_param, int batch, int len,
                                                                  int literal_sum, float upstream) {
    ContrastiveWeights w;
    const float exp_s = expf(logit_scale_param[0]);
    w.clamped = exp_s > CONTRASTIVE_LOGIT_SCALE_MAX;
    w.kappa = w.clamped ? CONTRASTIVE_LOGIT_SCALE_MAX : exp_s;
    // w_b · g: A8's mean over valid positions by default, eq. 9's literal sum as the switch.
    w.weight = literal_sum ? 0.5f / (float)batch : 0.5f / ((float)batch * (float)len);
    w.grad_weight = w.weight * upstream;
    return w;
}

// A sequence with L_b = 0 contributes nothing and its gradients are zero (the whole block).
__device__ __forceinline__ void contrastive_empty_sequence(float* dx_seq, float* da_seq, int n, int d,
                                                           float* loss_partial_b, float* ds_partial_b) {
    for (int i = threadIdx.x; i < n * d; i += blockDim.x) {
        dx_seq[i] = 0.0f;
        da_seq[i] = 0.0f;
    }
    if (threadIdx.x == 0) {
        *loss_partial_b = 0.0f;
        *ds_partial_b = 0.0f;
    }
}

// Phase B of both versions, the whole block (CONTRASTIVE_THREADS) calls it: from S (t, u < len,
// row stride `stride`) the log-sum-exps of every row and column, r_u (col_dot), c_t (row_dot),
// S → κ·G in place with zeros over the rest of the padded × padded square, and the sequence's
// partial loss and ds (deterministic block trees over fixed thread positions).
__device__ __forceinline__ void contrastive_gradient_of_scores(float* scores, int stride, const int* group,
                                                               int use_groups, int len, int padded,
                                                               const ContrastiveWeights& w, float* lse_row,
                                                               float* lse_col, float* row_dot, float* col_dot,
                                                               float* scratch, float* loss_partial_b,
                                                               float* ds_partial_b) {
    const int tid = threadIdx.x;
    const int lane = tid % ASIF_WARP_SIZE;
    const int warp = tid / ASIF_WARP_SIZE;
    const int warps = CONTRASTIVE_THREADS / ASIF_WARP_SIZE;
    const float grad_weight = w.grad_weight;
    // ---- Phase B1: log-sum-exp of row t (ℓ_X) and of column t (ℓ_A), one warp each, lanes
    // across u (two entries per lane: n ≤ 64).
    for (int t = warp; t < len; t += warps) {
        float row[2], column[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int u = lane + 32 * h;
            const bool valid = u < len && contrastive_allowed(group, use_groups, t, u);
            row[h] = valid ? scores[t * stride + u] : -asif_infinity();
            column[h] = valid ? scores[u * stride + t] : -asif_infinity();
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
                const float s_tu = scores[t * stride + u];
                const float p = expf(s_tu - lse_row[t]);
                const float q = expf(s_tu - lse_col[u]);
                const float g = grad_weight * (p + q - (t == u ? 2.0f : 0.0f));
                dot += g * s_tu;
            }
        }
        dot = warp_reduce_sum(dot);
        if (lane == 0) {
            col_dot[u] = dot;
            loss_part += lse_row[u] + lse_col[u] - 2.0f * scores[u * stride + u];
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
                    const float s_tu = scores[t * stride + u];
                    const float p = expf(s_tu - lse_row[t]);
                    const float q = expf(s_tu - lse_col[u]);
                    g = grad_weight * (p + q - (t == u ? 2.0f : 0.0f));
                    dot += g * s_tu;
                }
                scores[t * stride + u] = w.kappa * g;
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
        *loss_partial_b = w.weight * loss_seq;
        *ds_partial_b = w.clamped ? 0.0f : ds_seq;
    }
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
        contrastive_empty_sequence(dx_seq, da_seq, n, d, loss_partial + b, ds_partial + b);
        return;
    }
    const ContrastiveWeights w = contrastive_weights(logit_scale_param, batch, len, literal_sum, upstream);
    const float kappa = w.kappa;
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

    contrastive_gradient_of_scores(scores, CONTRASTIVE_SCORE_STRIDE, group, use_groups, len, padded, w, lse_row,
                                   lse_col, row_dot, col_dot, scratch, loss_partial + b, ds_partial + b);

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

// ---- version 2: the three products on tensor cores (3xTF32) ----
//
// One block of 8 warps per sequence, as v1. The score tile S (and then κ·G) lives in static
// shared memory, x and a (raw values, `width` columns of rows 0 .. ⌈n/16⌉·16 − 1, stride
// width + 4) in dynamic shared memory: staged once by 16-byte cp.async copies when width covers
// d, else chunk by chunk in both phases. Rows are padded to the next multiple of 16 (the m16 tiles), the
// u (n8) and k8 tiles of L_b to the next multiple of 8; tiles at or beyond L_b are skipped.
//   Phase A, per staged chunk: warp w forms rows 16·(w % 4) .. +15 and column tiles 4·(w / 4) .. +3 of
//     X·Aᵀ (raw x and a; fragments accumulate over the chunks), and every thread adds 16 squares
//     of one row of x or a to its norm (two threads per row, rotated so a warp hits 32 banks).
//   Phase B: v1's (contrastive_gradient_of_scores), on the tile of stride 68.
//   Phase C, per 32 staged columns: warps 0..3 form dX̃ = (κG)·diag(1/‖a‖)·A (rows t), warps 4..7
//     dÃ = (κG)ᵀ·diag(1/‖x‖)·X (rows u), 16 rows × 32 columns each, the norm scale folded into
//     the G fragment; then the norm backward (x_t and a_u from the same staged chunk) and the
//     stores, zeros for rows t ≥ L_b. The k steps run over u (or t) < ⌈L_b/8⌉·8 with the k index
//     of a fragment register paired (register i of lane (g, t) takes k = 2t + (i >> 1) for A and
//     2t + i for B instead of t + 4·(i >> 1) and t + 4i: a permutation of k, the same for A and B,
//     so the product is unchanged), which makes the B loads from the chunk conflict-free.
#include "mma.cuh"
#include "vector_io.cuh"

// Columns of the m16 × 32 output tiles of phase C (one warp's four n8 tiles).
#define CONTRASTIVE_V2_CHUNK 32
// Row stride of S (and κ·G) ≡ 4 (mod 32 banks), as the staged rows below.
#define CONTRASTIVE_V2_SCORE_STRIDE 68
// 4 blocks of 256 per SM where shared memory allows (the staged width sets it): at most 64
// registers a thread.
#define CONTRASTIVE_V2_MIN_BLOCKS 4

// Row stride of the staged x and a for `width` staged columns (a multiple of 32): ≡ 4 (mod 32
// banks), so fragment loads of rows g = 0..7 and columns t = 0..3 (and of the paired k rows
// 2t + i) hit 32 distinct banks; rows stay 16-byte aligned for cp.async. The launcher
// (src/ops/contrastive/cuda.rs) sizes the dynamic shared memory with the same rule.
__device__ __forceinline__ int contrastive_v2_stride(int width) { return width + 4; }

// Rows 0 .. padded − 1 and columns c0 .. c0 + width − 1 of one sequence's [n, d] rows into `tile`
// (stride contrastive_v2_stride(width)): zeros for rows ≥ len and columns ≥ d. With `vector`
// (d % 4 == 0, 16-byte aligned base) as cp.async 16-byte copies, committed as one group: the
// caller waits and then synchronises the block.
__device__ __forceinline__ void contrastive_v2_stage(float* tile, const float* seq, int len, int padded, int d,
                                                     int c0, int width, bool vector) {
    const int stride = contrastive_v2_stride(width);
    if (vector) {
        const int quads = width / 4;
        for (int e = threadIdx.x; e < padded * quads; e += blockDim.x) {
            const int r = e / quads, c = 4 * (e % quads);
            float* destination = tile + r * stride + c;
            if (r < len && c0 + c < d) {
                cp_async_16(destination, seq + (size_t)r * d + c0 + c);
            } else {
                asif_float4 zero = {0.0f, 0.0f, 0.0f, 0.0f};
                asif_store4(destination, zero);
            }
        }
        cp_async_commit();
    } else {
        for (int e = threadIdx.x; e < padded * width; e += blockDim.x) {
            const int r = e / width, c = e % width;
            tile[r * stride + c] = r < len && c0 + c < d ? seq[(size_t)r * d + c0 + c] : 0.0f;
        }
    }
}

// 4 blocks of 256 per SM, declared apart so the definition keeps the entry-point form build.rs and
// the emulator scan for.
extern "C" {
__global__ void __launch_bounds__(CONTRASTIVE_THREADS, CONTRASTIVE_V2_MIN_BLOCKS) contrastive_forward_backward_v2(
    const float* __restrict__, const float* __restrict__, const int* __restrict__, const int* __restrict__,
    const float* __restrict__, float* __restrict__, float* __restrict__, float* __restrict__, float* __restrict__, int,
    int, int, int, int, float, int);
}

// The arguments and outputs of contrastive_forward_backward (v1), then `width`: the columns of x
// and a staged at a time, a multiple of 32 (d rounded up to 32: each staged once; less when that
// does not fit, then both are streamed twice in chunks of `width` as in v1). Dynamic shared
// memory: 2 · ⌈n/16⌉·16 · contrastive_v2_stride(width) floats (x, then a).
extern "C" __global__ void contrastive_forward_backward_v2(const float* __restrict__ x,
                                                           const float* __restrict__ a,
                                                           const int* __restrict__ lengths,
                                                           const int* __restrict__ groups,
                                                           const float* __restrict__ logit_scale_param,
                                                           float* __restrict__ dx,
                                                           float* __restrict__ da,
                                                           float* __restrict__ loss_partial,
                                                           float* __restrict__ ds_partial,
                                                           int batch, int n, int d, int use_groups,
                                                           int literal_sum, float upstream, int width) {
    // x (rows 0 .. ⌈n/16⌉·16 − 1), then a: `width` columns each (raw values).
    ASIF_DYNAMIC_SHARED(float, tiles);
    // S, then κ·G, for t, u < 64.
    __shared__ __align__(16) float scores[CONTRASTIVE_MAX_N * CONTRASTIVE_V2_SCORE_STRIDE];
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
    const int len = max(0, min(lengths[b], n));
    const size_t base = (size_t)b * n * d;
    const float* x_seq = x + base;
    const float* a_seq = a + base;
    float* dx_seq = dx + base;
    float* da_seq = da + base;
    if (len == 0) {
        contrastive_empty_sequence(dx_seq, da_seq, n, d, loss_partial + b, ds_partial + b);
        return;
    }
    const ContrastiveWeights w = contrastive_weights(logit_scale_param, batch, len, literal_sum, upstream);
    const int padded = (len + 15) / 16 * 16;  // rows of the m16 tiles
    const int len_tiles = (len + 7) / 8;      // n8 tiles (phase A) and k8 steps (phase C) in use
    const bool vector = d % 4 == 0 && asif_aligned16(x) && asif_aligned16(a);
    const int stride = contrastive_v2_stride(width);
    const bool staged_once = width >= d;  // phase C finds all of x and a still staged
    float* x_tile = tiles;
    float* a_tile = tiles + (n + 15) / 16 * 16 * stride;
    const int group_id = mma_group(lane), in_group = mma_thread_in_group(lane);
    const int row0 = 16 * (warp % 4);  // the warp's m16 tile, both phases
    const bool active = row0 < len;    // uniform across the warp

    if (tid < len) group[tid] = use_groups ? groups[(size_t)b * n + tid] : 0;

    // ---- Phase A: X·Aᵀ and the squared norms.
    const int column_tile0 = 4 * (warp / 4);
    float acc[4][4];
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
    const int norm_row = tid >> 1;  // 0..63: a row of x, 64..127: a row of a
    const int norm_half = tid & 1;  // columns 16·half .. +15 of each 32 staged columns
    float sum_sq = 0.0f;
    for (int c0 = 0; c0 < d; c0 += width) {
        contrastive_v2_stage(x_tile, x_seq, len, padded, d, c0, width, vector);
        contrastive_v2_stage(a_tile, a_seq, len, padded, d, c0, width, vector);
        cp_async_wait_all();
        __syncthreads();
        const int r = norm_row % CONTRASTIVE_MAX_N;
        if (r < len) {
            const float* row = (norm_row < CONTRASTIVE_MAX_N ? x_tile : a_tile) + r * stride + 16 * norm_half;
            for (int c1 = 0; c1 < width && c0 + c1 < d; c1 += CONTRASTIVE_V2_CHUNK) {
#pragma unroll
                for (int k = 0; k < 16; ++k) {
                    const float v = row[c1 + ((k + norm_row) & 15)];
                    sum_sq += v * v;
                }
            }
        }
        if (active) {
            const int k_steps = min(width, d - c0 + 7) / 8;
            for (int k = 0; k < k_steps; ++k) {
                float a_fragment[4];
                mma_load_a_tf32_values(a_fragment, x_tile + row0 * stride + 8 * k, stride, 1);
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    if (column_tile0 + j < len_tiles) {  // uniform across the warp
                        float b_fragment[2];
                        // B[k][u] = a_u[k]: the staged a read transposed in place.
                        mma_load_b_tf32_values(b_fragment, a_tile + 8 * (column_tile0 + j) * stride + 8 * k, 1,
                                               stride);
                        mma_m16n8k8_3xtf32(acc[j], a_fragment, b_fragment, acc[j]);
                    }
                }
            }
        }
        if (!staged_once) __syncthreads();  // the chunk is overwritten by the next one
    }
    sum_sq += __shfl_xor_sync(ASIF_FULL_MASK, sum_sq, 1);
    if (norm_half == 0) {
        const int r = norm_row % CONTRASTIVE_MAX_N;
        const float norm = sqrtf(sum_sq);
        const bool above = norm > CONTRASTIVE_NORM_EPS;
        // Rows ≥ L_b get 0: phase C multiplies their (zero) G entries by it.
        const float inv = r < len ? 1.0f / (above ? norm : CONTRASTIVE_NORM_EPS) : 0.0f;
        const float project = r < len && above ? 1.0f : 0.0f;
        if (norm_row < CONTRASTIVE_MAX_N) {
            inv_norm_x[r] = inv;
            project_x[r] = project;
        } else {
            inv_norm_a[r] = inv;
            project_a[r] = project;
        }
    }
    __syncthreads();
    if (active) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            if (column_tile0 + j < len_tiles) {
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const int t = row0 + mma_c_row(lane, i);
                    const int u = 8 * (column_tile0 + j) + mma_c_col(lane, i);
                    if (t < len && u < len) {
                        scores[t * CONTRASTIVE_V2_SCORE_STRIDE + u] = w.kappa * acc[j][i] * inv_norm_x[t] * inv_norm_a[u];
                    }
                }
            }
        }
    }
    __syncthreads();

    // ---- Phase B: S → κ·G, the log-sum-exps, c_t, r_u, the partial loss and ds.
    contrastive_gradient_of_scores(scores, CONTRASTIVE_V2_SCORE_STRIDE, group, use_groups, len, padded, w, lse_row,
                                   lse_col, row_dot, col_dot, scratch, loss_partial + b, ds_partial + b);

    // ---- Phase C: warps 0..3 dX̃ (product 0), warps 4..7 dÃ (product 1), then the norm backward.
    const int product = warp / 4;
    const float* inv_k = product == 0 ? inv_norm_a : inv_norm_x;  // 1/‖·‖ of the k rows
    const float* inv_own = product == 0 ? inv_norm_x : inv_norm_a;
    const float* project = product == 0 ? project_x : project_a;
    const float* dot = product == 0 ? row_dot : col_dot;
    float* out = product == 0 ? dx_seq : da_seq;
    const float* k_rows = product == 0 ? a_tile : x_tile;  // B: the rows k of the other input
    const float* own = product == 0 ? x_tile : a_tile;     // the warp's own rows
    const int last_row = min(row0 + 16, n);                // rows of the warp's tile that exist
    for (int c0 = 0; c0 < d; c0 += width) {
        if (!staged_once) {
            contrastive_v2_stage(x_tile, x_seq, len, padded, d, c0, width, vector);
            contrastive_v2_stage(a_tile, a_seq, len, padded, d, c0, width, vector);
            cp_async_wait_all();
            __syncthreads();
        }
        // 32 staged columns at a time: the warp's 16 × 32 output tile.
        for (int c1 = 0; c1 < width && c0 + c1 < d; c1 += CONTRASTIVE_V2_CHUNK) {
            const int column_tiles = min(CONTRASTIVE_V2_CHUNK, d - c0 - c1 + 7) / 8;
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
            if (active) {
                for (int k = 0; k < len_tiles; ++k) {
                    float a_fragment[4];
#pragma unroll
                    for (int i = 0; i < 4; ++i) {
                        const int m = row0 + group_id + 8 * (i & 1);
                        const int kk = 8 * k + 2 * in_group + (i >> 1);
                        // A = κG (rows t, k = u) or (κG)ᵀ (rows u, k = t), scaled by 1/‖·‖ of row kk.
                        const float g = product == 0 ? scores[m * CONTRASTIVE_V2_SCORE_STRIDE + kk]
                                                     : scores[kk * CONTRASTIVE_V2_SCORE_STRIDE + m];
                        a_fragment[i] = g * inv_k[kk];
                    }
#pragma unroll
                    for (int j = 0; j < 4; ++j) {
                        if (j < column_tiles) {  // uniform across the warp
                            float b_fragment[2];
#pragma unroll
                            for (int i = 0; i < 2; ++i) {
                                b_fragment[i] = k_rows[(8 * k + 2 * in_group + i) * stride + c1 + 8 * j + group_id];
                            }
                            mma_m16n8k8_3xtf32(acc[j], a_fragment, b_fragment, acc[j]);
                        }
                    }
                }
            }
            // Every row of the tile below n gets its value: zeros at and beyond L_b (acc is 0 there).
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                if (j < column_tiles) {
#pragma unroll
                    for (int i = 0; i < 4; ++i) {
                        const int row = row0 + mma_c_row(lane, i);
                        const int local = c1 + 8 * j + mma_c_col(lane, i);
                        if (row < last_row && c0 + local < d) {
                            float value = 0.0f;
                            if (row < len) {
                                const float inv = inv_own[row];
                                // (dṽ − ṽ (ṽ·dṽ)) / ‖v‖, with ṽ·dṽ = c_t (or r_u); no projection below ε.
                                value = inv * (acc[j][i] - project[row] * own[row * stride + local] * inv * dot[row]);
                            }
                            out[(size_t)row * d + c0 + local] = value;
                        }
                    }
                }
            }
        }
        if (!staged_once) __syncthreads();  // the chunk is overwritten by the next one
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
