// attention.cu: fused dual-score attention of ASIF (spec §3.2 steps 1 to 4, eqs. 1 to 5) and of
// the baselines and ablations that share its code path (spec §4), forward and backward.
//
// What it computes, per sequence b and head (h heads, d_h = d/h, scale 1/√d_h):
//   S_k = Q_k K_kᵀ for the score pairs k = 1..P (P = 1 SASRec, 2 ASIF: C_XA and C_P, 3 w/o FA);
//   Π_X = softmax(scale · Σ_k S_k + M)   (eq. 3; eq. 1 is S_1 = C_XA, eq. 2 is S_2 = C_P)
//   Π_A = softmax(scale · S_1 + M)       (eq. 4, optional output)
//   Π_P = softmax(scale · S_2 + M)       (eq. 5, optional output, needs P ≥ 2)
//   O_X = D(Π_X) V_1, O_A = D(Π_A) V_2, O_P = D(Π_P) V_3, D = attention dropout with one mask for
//   all three softmaxes: kept iff asif_dropout_keep(seed, ((b·h + head)·n + i)·n + j, p), scaled
//   by 1/(1 − p).
//   M: key j is valid for query i iff j ≤ i and j < L_b (left-aligned, right-padded sequences).
//   Masked keys are excluded (−∞), not RecBole's −10000 additive mask; for rows with at least one
//   valid key the two agree to float precision (exp(−10000) underflows to 0). Rows of padded
//   queries (i ≥ L_b) are written as zeros and get zero gradient (RecBole computes them from key
//   0, but they never reach the loss).
// Layout: every input is the linear layer's [B·n, d] rows (or one [n, d] shared by all
// sequences: bit k of `shared_mask`, batch stride 0), heads side by side in a row: head `hd`
// owns columns hd·d_h .. (hd+1)·d_h. Outputs and gradients are [B·n, d] in the same layout.
// Forward saves only the log-sum-exp of each softmax row (lse[softmax][b][head][i]; the row max is
// folded into it: P_ij = exp(s_ij − lse_i) exactly), never an n×n matrix.
//
// Backward (per softmax s with dropout multiplier m_ij = keep_ij/(1 − p)):
//   D_s,i = dO_s,i · O_s,i;  dP_s,ij = m_ij (dO_s,i · V_s,j);  dS_s,ij = P_s,ij (dP_s,ij − D_s,i)
//   dZ_1 = scale (dS_X + dS_A), dZ_2 = scale (dS_X + dS_P), dZ_3 = scale dS_X
//   dQ_k = dZ_k K_k,  dK_k = dZ_kᵀ Q_k,  dV_s = (m ⊙ P_s)ᵀ dO_s.
// It recomputes the scores in two kernels: a row pass (attention_backward_queries: warp per
// query, D_s,i and dQ) and a column pass (attention_backward_keys: warp per key, dK and dV), so
// every gradient row is owned by one warp: no atomics, deterministic. D_s,i goes through a small
// [3, B, h, n] buffer between them. Inputs shared by the batch get per-sequence partial gradients
// ([B·n, d]) that attention_sum_over_batch reduces in a fixed order.
//
// Launch shapes (src/ops/attention/cuda.rs):
//   attention_forward, attention_backward_queries, attention_backward_keys: one block per
//     (sequence, head), grid.x = B·h, ATTENTION_WARPS = 4 warps; warps stride over the L_b valid
//     rows (forward and row pass) or keys (column pass), then write zeros into the padded rows.
//     n ≤ 64 and d_h ≤ 64: a lane holds channels lane and lane + 32 of a row, and a row's keys
//     are at most two chunks of 32.
//   attention_sum_over_batch: grid-stride over n·d, each thread sums its column over B in order.
// Shared memory (static): per warp a 32×33 transpose scratch and 3×64 weights (6×64 in the column
//   pass): 20.0 KB per block (23.0 KB). Registers ≤ 64 (launch bounds: 8 blocks of 128 per SM).
//   Dot products of one query row with 32 key rows are formed lanes-over-channels (coalesced
//   global reads of the key rows, 2 FMAs per lane per row) and reduced through the padded
//   transpose scratch (conflict-free), so no n×d_h tile has to fit the 48 KB limit.
//
// Traffic and floor at the paper's sizes (B = 2048, n = 50, d = 256, h = 4, fp32; perf-floors.md):
// the forward reads Q1, K1, Q2, K2, V1, V2, V3 and writes three outputs, 1049 MB (629 MB with the
// position stream shared): 350 µs at 3.0 TB/s on an H100. The backward's floor reads the 7 inputs
// and 3 output gradients and writes 7 gradients: 1783 MB, 594 µs; this version also reads O_X,
// O_A, O_P for D (+315 MB) and, for inputs shared by the batch, writes and re-reads per-sequence
// partial gradients. Key and value rows are re-read per query row from L1 (12.8 KB per head).
//
// Versions (src/kernel_version.rs selects; ASIF_KERNEL_ATTENTION=v1|v2; v1 stays the default
// until a GPU run shows v2 faster on every benchmark row):
//   1. attention_forward, attention_backward_queries, attention_backward_keys: fp32 CUDA cores,
//      global (L1-cached) key/value reads, transpose-scratch dot products, lse-only saved state,
//      two-pass deterministic backward. Re-reads each key and value row once per query (about
//      18× the unique bytes), 32-bit loads, serial 32-long add chains: 3.32 ms forward on an
//      H200 against a 251 µs floor (bench/results/h200-2026-11-27.md).
//   2. attention_forward_v2 (issue 18): the rows of Q_k, K_k and V_s one block needs staged once
//      in shared memory (cp.async 16-byte copies), S_k and (m ⊙ P) V_s on m16n8k8 mma by 3xTF32
//      (fp32-level accuracy, v1's tolerances), causal tiles and tiles past L_b skipped, softmaxes
//      on the fragments, 16-byte stores, no memset. Same arguments and the same saved
//      log-sum-exp as v1 (either backward can follow either forward; the launcher pairs v2 with
//      v2). Why: v1's re-reads and CUDA-core arithmetic. Its last argument picks plain TF32
//      products (Precision::Tf32) or bf16 m16n8k16 products with fp32 accumulation, operands
//      converted as the fragments are loaded from the fp32 tiles (Precision::Bf16) instead:
//      opt-in, each at its own tolerance tier.
//      Floor and expectation at the paper's sizes (B = 2048, n = 50, d = 256, h = 4, all valid):
//      1049 MB moved (7 inputs read once, 3 outputs written once), 251 µs at the H200's measured
//      4171 GB/s. Tensor-core work: per (sequence, head) 2 score products over ≤ 36 of the 64
//      key-tile × row-tile pairs (causal skipping) and 3 value products, each 3 TF32 mmas:
//      about 8192 · 5 · (16·64·64·2 · 4 warps) · 0.6 · 3 ≈ 39 GFLOP of TF32, about 80 µs at the
//      H200's dense TF32 rate, so memory-bound. The stage → compute → stage sequence of one
//      block is serial (no double buffering) and each warp holds two 16 × 64 score fragments and
//      one output fragment in registers (128 registers: 4 blocks of 128 per SM, 25 % occupancy,
//      kernels-sass.md; HMMA, LDGSTS.128 and STG.128 in its SASS, no stack or spill): expected
//      40 to 60 % of the floor, 0.4 to 0.6 ms, until a GPU run says otherwise. Next, if it falls
//      short: double-buffer the stages (the next pair's cp.async under this pair's mma), and one
//      block per sequence for all heads to share the position stream's staging.
//      Version 2's backward, attention_backward_v2 (issue 18): the whole backward in one
//      launch, one block per (sequence, head) owning dQ, dK and dV of its rows (no atomics, the
//      same bits every run); D = rowsum(P ⊙ dP) formed on the fragments (O is not read); scores,
//      dP = dO Vᵀ, dV, dQ and dK on mma by 3xTF32 (fp32-level in every precision), tiles past
//      the causal diagonal and L_b skipped; inputs shared by the batch get per-sequence partials
//      that attention_sum_over_batch (v1's) reduces in batch order. Why: v1's two passes read
//      every input twice and O once more for D, on CUDA cores. The work is laid out below.
//      Floor and expectation at the paper's sizes (all valid): 1783 MB moved (7 inputs and
//      3 output gradients read once, 7 gradients written once), 428 µs at 4171 GB/s. This
//      version stages Q_k and K_k up to three times (S_X; S_A or S_P; dQ and dK) and dO_s, V_s
//      once each, the repeats within one block's life and so mostly from L2 (the unique DRAM
//      bytes stay near the floor; the per-sequence partials of shared inputs add a write and a
//      read of [B·n, d] each). Tensor work: about 16 products of 16 × 64 × 64 per warp (S_1..3,
//      S_A, S_P, 3 dP, 3 dV, 2 to 3 each of dQ and dK), about 60 % of them left by the causal
//      skip, 3 TF32 mmas each: about 124 GFLOP of TF32, 250 µs at the H200's dense TF32 rate,
//      so tensor and memory time are close, and the serial stage → compute → stage sequence adds
//      them rather than overlapping them: expected 30 to 50 % of the floor, 0.85 to 1.4 ms,
//      until a GPU run says otherwise. dS_X waits in shared memory (10 KB, 46 KB static in
//      all) between its softmax and the pairs, so a warp holds two 16 × 64 fragments at a time;
//      still 166 registers (3 blocks of 128 per SM, 18.75 % occupancy; at 128 registers ptxas
//      spills; kernels-sass.md), no stack or spill. Gradients are stored from the fragments (8-byte stores, full 32-byte
//      sectors); the 128-bit accesses are the cp.async stages. Next, if it falls short: bf16
//      products (Precision::Bf16), double-buffered stages.
//
// Gates (docs/kernels-sass.md): block and dynamic shared bytes are the launch shape at the
// paper's sizes (d = 256, h = 4, n = 50, r = 16) as the launcher in src/ops/ computes it;
// one block of ATTENTION_WARPS = 4 warps per (sequence, head), 256 threads in the sum.
//   asif-gate: attention_forward block=128 occupancy>=50% stack=24 why="v1 keeps each lane's
//     scores sx/sa/sp[2] (one per chunk of 32 keys) in a loop that is not unrolled, so they are
//     indexed at run time and live in a 24-byte stack frame; allow-listed until attention v2
//     replaces this kernel"
//   asif-gate: attention_backward_queries block=128 occupancy>=50%
//   asif-gate: attention_backward_keys block=128 occupancy>=50%
//   asif-gate: attention_sum_over_batch block=256 occupancy>=100%
//   asif-gate: attention_forward_v2 block=128 occupancy>=25% tensor_core vector_io
//   asif-gate: attention_backward_v2 block=128 occupancy>=18% tensor_core vector_io
//   asif-gate: attention_forward_stepped block=128 occupancy>=50% stack=24 why="as
//     attention_forward (the same body, the seed derived from the step counter)"
//   asif-gate: attention_backward_queries_stepped block=128 occupancy>=50%
//   asif-gate: attention_backward_keys_stepped block=128 occupancy>=50%
//   asif-gate: attention_forward_v2_stepped block=128 occupancy>=25% tensor_core vector_io
//   asif-gate: attention_backward_v2_stepped block=128 occupancy>=18% tensor_core vector_io
#include "common.cuh"

#define ATTENTION_MAX_LEN 64
#define ATTENTION_MAX_HEAD_DIM 64
#define ATTENTION_WARPS 4
#define ATTENTION_SCRATCH_STRIDE 33
// 8 blocks of 128 threads per SM: at most 64 registers per thread.
#define ATTENTION_MIN_BLOCKS 8

// Bits of `outputs_mask`: O_X is always computed.
#define ATTENTION_OUT_A 2
#define ATTENTION_OUT_P 4

// Bits of `shared_mask`: inputs given once for all sequences (batch stride 0).
#define ATTENTION_SHARED_Q1 (1 << 0)
#define ATTENTION_SHARED_K1 (1 << 1)
#define ATTENTION_SHARED_Q2 (1 << 2)
#define ATTENTION_SHARED_K2 (1 << 3)
#define ATTENTION_SHARED_Q3 (1 << 4)
#define ATTENTION_SHARED_K3 (1 << 5)
#define ATTENTION_SHARED_V1 (1 << 6)
#define ATTENTION_SHARED_V2 (1 << 7)
#define ATTENTION_SHARED_V3 (1 << 8)

// Where the geometry of one block lives.
struct AttentionBlock {
    int b, head, n, d, head_dim, col;
    unsigned long long counter_base;  // (b·h + head)·n
};

__device__ __forceinline__ const float* attention_row(const float* base, int shared, const AttentionBlock& g, int t) {
    return base + (shared ? (size_t)0 : (size_t)g.b * g.n * g.d) + (size_t)t * g.d + g.col;
}

__device__ __forceinline__ float* attention_row_out(float* base, const AttentionBlock& g, int t) {
    return base + (size_t)g.b * g.n * g.d + (size_t)t * g.d + g.col;
}

// Channels lane and lane + 32 of a row of one head (zero beyond d_h).
__device__ __forceinline__ void attention_load(const float* row, int head_dim, float& lo, float& hi) {
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    lo = lane < head_dim ? row[lane] : 0.0f;
    hi = lane + 32 < head_dim ? row[lane + 32] : 0.0f;
}

__device__ __forceinline__ void attention_store(float* row, int head_dim, float lo, float hi) {
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    if (lane < head_dim) row[lane] = lo;
    if (lane + 32 < head_dim) row[lane + 32] = hi;
}

// Lane r (< rows ≤ 32) gets dot(vector, M[first + r]) where the vector is held as (lo, hi) by
// every lane. Each lane multiplies its two channels of each row (coalesced reads), the partial
// products go through the padded transpose scratch, and lane r sums row r in a fixed order.
__device__ __forceinline__ float attention_dots(const float* matrix, int shared, const AttentionBlock& g, int first,
                                                int rows, float lo, float hi, float* scratch) {
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
#pragma unroll 4
    for (int r = 0; r < rows; ++r) {
        const float* row = attention_row(matrix, shared, g, first + r);
        float partial = 0.0f;
        if (lane < g.head_dim) partial = lo * row[lane];
        if (lane + 32 < g.head_dim) partial += hi * row[lane + 32];
        scratch[r * ATTENTION_SCRATCH_STRIDE + lane] = partial;
    }
    __syncwarp();
    float total = 0.0f;
    if (lane < rows) {
        for (int l = 0; l < ASIF_WARP_SIZE; ++l) total += scratch[lane * ATTENTION_SCRATCH_STRIDE + l];
    }
    __syncwarp();
    return total;
}

// (lo, hi) += Σ_{r < rows} weights[r] · M[first + r], channels lane and lane + 32.
__device__ __forceinline__ void attention_accumulate(const float* matrix, int shared, const AttentionBlock& g, int first,
                                                     int rows, const float* weights, float& lo, float& hi) {
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
#pragma unroll 4
    for (int r = 0; r < rows; ++r) {
        const float w = weights[r];
        const float* row = attention_row(matrix, shared, g, first + r);
        if (lane < g.head_dim) lo += w * row[lane];
        if (lane + 32 < g.head_dim) hi += w * row[lane + 32];
    }
}

// Dropout multiplier of entry (i, j): 1/(1 − p) if kept, 0 if dropped, 1 without dropout.
__device__ __forceinline__ float attention_dropout(const AttentionBlock& g, int i, int j, float dropout,
                                                   unsigned long long seed) {
    if (dropout <= 0.0f) return 1.0f;
    const unsigned long long counter = (g.counter_base + (unsigned long long)i) * (unsigned long long)g.n + (unsigned long long)j;
    return asif_dropout_keep(seed, counter, dropout) ? 1.0f / (1.0f - dropout) : 0.0f;
}

// Masked softmax over a row spread over two chunks of 32 keys (−∞ where masked). Returns the
// probabilities in p0/p1 and the row's log-sum-exp. At least one key is valid.
__device__ __forceinline__ float attention_softmax(float s0, float s1, float& p0, float& p1) {
    const float row_max = warp_reduce_max(fmaxf(s0, s1));
    const float e0 = expf(s0 - row_max);
    const float e1 = expf(s1 - row_max);
    const float sum = warp_reduce_sum(e0 + e1);
    p0 = e0 / sum;
    p1 = e1 / sum;
    return row_max + logf(sum);
}

__device__ __forceinline__ AttentionBlock attention_block(int n, int heads, int head_dim) {
    AttentionBlock g;
    g.b = blockIdx.x / heads;
    g.head = blockIdx.x % heads;
    g.n = n;
    g.d = heads * head_dim;
    g.head_dim = head_dim;
    g.col = g.head * head_dim;
    g.counter_base = (unsigned long long)blockIdx.x * (unsigned long long)n;
    return g;
}

__device__ __forceinline__ int attention_length(const int* lengths, int b, int n) {
    return min(max(lengths[b], 0), n);
}

__device__ __forceinline__ void attention_forward_body(const float* __restrict__ q1, const float* __restrict__ k1,
                                             const float* __restrict__ q2, const float* __restrict__ k2,
                                             const float* __restrict__ q3, const float* __restrict__ k3,
                                             const float* __restrict__ v1, const float* __restrict__ v2,
                                             const float* __restrict__ v3, const int* __restrict__ lengths,
                                             float* __restrict__ out_x, float* __restrict__ out_a,
                                             float* __restrict__ out_p, float* __restrict__ lse,
                                             int batch, int n, int heads, int head_dim, int pairs,
                                             int outputs_mask, int shared_mask, float dropout,
                                             unsigned long long seed) {
    __shared__ float scratch_all[ATTENTION_WARPS][32 * ATTENTION_SCRATCH_STRIDE];
    __shared__ float weights_all[ATTENTION_WARPS][3][ATTENTION_MAX_LEN];
    if ((int)blockIdx.x >= batch * heads) return;  // uniform across the block
    const AttentionBlock g = attention_block(n, heads, head_dim);
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    const int warp = threadIdx.x / ASIF_WARP_SIZE;
    const int warps = blockDim.x / ASIF_WARP_SIZE;
    float* scratch = scratch_all[warp];
    const bool want_a = (outputs_mask & ATTENTION_OUT_A) != 0;
    const bool want_p = (outputs_mask & ATTENTION_OUT_P) != 0;
    const float scale = 1.0f / sqrtf((float)head_dim);
    const float minus_inf = -asif_infinity();
    const int length = attention_length(lengths, g.b, n);
    const size_t lse_stride = (size_t)batch * heads * n;
    float* lse_row = lse + (size_t)blockIdx.x * n;

    for (int i = warp; i < length; i += warps) {
        const int count = i + 1;  // keys 0..i, all < L_b
        float q1_lo, q1_hi, q2_lo = 0.0f, q2_hi = 0.0f, q3_lo = 0.0f, q3_hi = 0.0f;
        attention_load(attention_row(q1, shared_mask & ATTENTION_SHARED_Q1, g, i), head_dim, q1_lo, q1_hi);
        if (pairs > 1) attention_load(attention_row(q2, shared_mask & ATTENTION_SHARED_Q2, g, i), head_dim, q2_lo, q2_hi);
        if (pairs > 2) attention_load(attention_row(q3, shared_mask & ATTENTION_SHARED_Q3, g, i), head_dim, q3_lo, q3_hi);

        float sx[2], sa[2], sp[2];
        for (int c = 0; c < 2; ++c) {
            const int first = c * 32;
            sx[c] = sa[c] = sp[c] = minus_inf;
            if (first >= count) continue;  // uniform across the warp
            const int rows = min(32, count - first);
            const float s1 = attention_dots(k1, shared_mask & ATTENTION_SHARED_K1, g, first, rows, q1_lo, q1_hi, scratch);
            const float s2 = pairs > 1 ? attention_dots(k2, shared_mask & ATTENTION_SHARED_K2, g, first, rows, q2_lo, q2_hi, scratch) : 0.0f;
            const float s3 = pairs > 2 ? attention_dots(k3, shared_mask & ATTENTION_SHARED_K3, g, first, rows, q3_lo, q3_hi, scratch) : 0.0f;
            if (lane < rows) {
                sx[c] = scale * (s1 + s2 + s3);
                sa[c] = scale * s1;
                sp[c] = scale * s2;
            }
        }

        float* w = &weights_all[warp][0][0];
        float multiplier[2];
        for (int c = 0; c < 2; ++c) {
            const int j = c * 32 + lane;
            multiplier[c] = j < count ? attention_dropout(g, i, j, dropout, seed) : 0.0f;
        }
        float p0, p1;
        const float lse_x = attention_softmax(sx[0], sx[1], p0, p1);
        w[lane] = p0 * multiplier[0];
        w[32 + lane] = p1 * multiplier[1];
        float lse_a = 0.0f, lse_p = 0.0f;
        if (want_a) {
            lse_a = attention_softmax(sa[0], sa[1], p0, p1);
            w[ATTENTION_MAX_LEN + lane] = p0 * multiplier[0];
            w[ATTENTION_MAX_LEN + 32 + lane] = p1 * multiplier[1];
        }
        if (want_p) {
            lse_p = attention_softmax(sp[0], sp[1], p0, p1);
            w[2 * ATTENTION_MAX_LEN + lane] = p0 * multiplier[0];
            w[2 * ATTENTION_MAX_LEN + 32 + lane] = p1 * multiplier[1];
        }
        __syncwarp();

        float lo = 0.0f, hi = 0.0f;
        attention_accumulate(v1, shared_mask & ATTENTION_SHARED_V1, g, 0, count, w, lo, hi);
        attention_store(attention_row_out(out_x, g, i), head_dim, lo, hi);
        if (want_a) {
            lo = hi = 0.0f;
            attention_accumulate(v2, shared_mask & ATTENTION_SHARED_V2, g, 0, count, w + ATTENTION_MAX_LEN, lo, hi);
            attention_store(attention_row_out(out_a, g, i), head_dim, lo, hi);
        }
        if (want_p) {
            lo = hi = 0.0f;
            attention_accumulate(v3, shared_mask & ATTENTION_SHARED_V3, g, 0, count, w + 2 * ATTENTION_MAX_LEN, lo, hi);
            attention_store(attention_row_out(out_p, g, i), head_dim, lo, hi);
        }
        if (lane == 0) {
            lse_row[i] = lse_x;
            lse_row[lse_stride + i] = lse_a;
            lse_row[2 * lse_stride + i] = lse_p;
        }
        __syncwarp();  // the weights are read by every lane before the next row overwrites them
    }

    // Padded query rows: zero outputs and statistics, no work.
    for (int i = length + warp; i < n; i += warps) {
        attention_store(attention_row_out(out_x, g, i), head_dim, 0.0f, 0.0f);
        if (want_a) attention_store(attention_row_out(out_a, g, i), head_dim, 0.0f, 0.0f);
        if (want_p) attention_store(attention_row_out(out_p, g, i), head_dim, 0.0f, 0.0f);
        if (lane == 0) {
            lse_row[i] = 0.0f;
            lse_row[lse_stride + i] = 0.0f;
            lse_row[2 * lse_stride + i] = 0.0f;
        }
    }
}

// Register budget (tests/nvrtc.rs: ≤ 64): the backward kernels hold many row pointers; the launch
// bounds let ptxas re-read them from the parameter bank instead of keeping them all live. Declared
// here so the definitions keep the one entry-point form that build.rs and the emulator scan for.
extern "C" {
__global__ void __launch_bounds__(ATTENTION_WARPS * 32, ATTENTION_MIN_BLOCKS) attention_backward_queries(
    const float* __restrict__, const float* __restrict__, const float* __restrict__, const float* __restrict__,
    const float* __restrict__, const float* __restrict__, const float* __restrict__, const float* __restrict__,
    const float* __restrict__, const int* __restrict__, const float* __restrict__, const float* __restrict__,
    const float* __restrict__, const float* __restrict__, const float* __restrict__, const float* __restrict__,
    const float* __restrict__, float* __restrict__, float* __restrict__, float* __restrict__, float* __restrict__,
    int, int, int, int, int, int, int, float, unsigned long long);
__global__ void __launch_bounds__(ATTENTION_WARPS * 32, ATTENTION_MIN_BLOCKS) attention_backward_queries_stepped(
    const float* __restrict__, const float* __restrict__, const float* __restrict__, const float* __restrict__,
    const float* __restrict__, const float* __restrict__, const float* __restrict__, const float* __restrict__,
    const float* __restrict__, const int* __restrict__, const float* __restrict__, const float* __restrict__,
    const float* __restrict__, const float* __restrict__, const float* __restrict__, const float* __restrict__,
    const float* __restrict__, float* __restrict__, float* __restrict__, float* __restrict__, float* __restrict__,
    int, int, int, int, int, int, int, float, const unsigned long long* __restrict__, unsigned long long, unsigned long long);
__global__ void __launch_bounds__(ATTENTION_WARPS * 32, ATTENTION_MIN_BLOCKS) attention_backward_keys(
    const float* __restrict__, const float* __restrict__, const float* __restrict__, const float* __restrict__,
    const float* __restrict__, const float* __restrict__, const float* __restrict__, const float* __restrict__,
    const float* __restrict__, const int* __restrict__, const float* __restrict__, const float* __restrict__,
    const float* __restrict__, const float* __restrict__, const float* __restrict__, float* __restrict__,
    float* __restrict__, float* __restrict__, float* __restrict__, float* __restrict__, float* __restrict__,
    int, int, int, int, int, int, int, float, unsigned long long);
__global__ void __launch_bounds__(ATTENTION_WARPS * 32, ATTENTION_MIN_BLOCKS) attention_backward_keys_stepped(
    const float* __restrict__, const float* __restrict__, const float* __restrict__, const float* __restrict__,
    const float* __restrict__, const float* __restrict__, const float* __restrict__, const float* __restrict__,
    const float* __restrict__, const int* __restrict__, const float* __restrict__, const float* __restrict__,
    const float* __restrict__, const float* __restrict__, const float* __restrict__, float* __restrict__,
    float* __restrict__, float* __restrict__, float* __restrict__, float* __restrict__, float* __restrict__,
    int, int, int, int, int, int, int, float, const unsigned long long* __restrict__, unsigned long long, unsigned long long);
}

// Row pass of the backward: warp per valid query row i; D_s,i = dO_s,i · O_s,i (saved to
// row_dot[s][b][head][i] for the column pass) and dQ_k,i. Padded rows get zero dQ.
__device__ __forceinline__ void attention_backward_queries_body(const float* __restrict__ q1, const float* __restrict__ k1,
                                                      const float* __restrict__ q2, const float* __restrict__ k2,
                                                      const float* __restrict__ q3, const float* __restrict__ k3,
                                                      const float* __restrict__ v1, const float* __restrict__ v2,
                                                      const float* __restrict__ v3, const int* __restrict__ lengths,
                                                      const float* __restrict__ out_x, const float* __restrict__ out_a,
                                                      const float* __restrict__ out_p, const float* __restrict__ grad_x,
                                                      const float* __restrict__ grad_a, const float* __restrict__ grad_p,
                                                      const float* __restrict__ lse, float* __restrict__ row_dot,
                                                      float* __restrict__ dq1, float* __restrict__ dq2,
                                                      float* __restrict__ dq3, int batch, int n, int heads,
                                                      int head_dim, int pairs, int outputs_mask, int shared_mask,
                                                      float dropout, unsigned long long seed) {
    __shared__ float scratch_all[ATTENTION_WARPS][32 * ATTENTION_SCRATCH_STRIDE];
    __shared__ float weights_all[ATTENTION_WARPS][3][ATTENTION_MAX_LEN];
    if ((int)blockIdx.x >= batch * heads) return;  // uniform across the block
    const AttentionBlock g = attention_block(n, heads, head_dim);
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    const int warp = threadIdx.x / ASIF_WARP_SIZE;
    const int warps = blockDim.x / ASIF_WARP_SIZE;
    float* scratch = scratch_all[warp];
    float* w = &weights_all[warp][0][0];
    const bool want_a = (outputs_mask & ATTENTION_OUT_A) != 0;
    const bool want_p = (outputs_mask & ATTENTION_OUT_P) != 0;
    const float scale = 1.0f / sqrtf((float)head_dim);
    const int length = attention_length(lengths, g.b, n);
    const size_t stats_stride = (size_t)batch * heads * n;
    const float* lse_x = lse + (size_t)blockIdx.x * n;
    float* dot_x = row_dot + (size_t)blockIdx.x * n;

    for (int i = warp; i < length; i += warps) {
        const int count = i + 1;
        float q_lo, q_hi, g_lo, g_hi, o_lo, o_hi;
        attention_load(attention_row(grad_x, 0, g, i), head_dim, g_lo, g_hi);
        attention_load(attention_row(out_x, 0, g, i), head_dim, o_lo, o_hi);
        const float d_x = warp_reduce_sum(g_lo * o_lo + g_hi * o_hi);
        float d_a = 0.0f, d_p = 0.0f;
        if (want_a) {
            attention_load(attention_row(grad_a, 0, g, i), head_dim, g_lo, g_hi);
            attention_load(attention_row(out_a, 0, g, i), head_dim, o_lo, o_hi);
            d_a = warp_reduce_sum(g_lo * o_lo + g_hi * o_hi);
        }
        if (want_p) {
            attention_load(attention_row(grad_p, 0, g, i), head_dim, g_lo, g_hi);
            attention_load(attention_row(out_p, 0, g, i), head_dim, o_lo, o_hi);
            d_p = warp_reduce_sum(g_lo * o_lo + g_hi * o_hi);
        }
        if (lane == 0) {
            dot_x[i] = d_x;
            dot_x[stats_stride + i] = d_a;
            dot_x[2 * stats_stride + i] = d_p;
        }

        for (int c = 0; c < 2; ++c) {
            const int first = c * 32;
            if (first >= count) break;  // uniform across the warp
            const int rows = min(32, count - first);
            // Raw scores of the three pairs, then the three dO · V products, one at a time to keep
            // few vectors live.
            attention_load(attention_row(q1, shared_mask & ATTENTION_SHARED_Q1, g, i), head_dim, q_lo, q_hi);
            const float s1 = attention_dots(k1, shared_mask & ATTENTION_SHARED_K1, g, first, rows, q_lo, q_hi, scratch);
            float s2 = 0.0f, s3 = 0.0f;
            if (pairs > 1) {
                attention_load(attention_row(q2, shared_mask & ATTENTION_SHARED_Q2, g, i), head_dim, q_lo, q_hi);
                s2 = attention_dots(k2, shared_mask & ATTENTION_SHARED_K2, g, first, rows, q_lo, q_hi, scratch);
            }
            if (pairs > 2) {
                attention_load(attention_row(q3, shared_mask & ATTENTION_SHARED_Q3, g, i), head_dim, q_lo, q_hi);
                s3 = attention_dots(k3, shared_mask & ATTENTION_SHARED_K3, g, first, rows, q_lo, q_hi, scratch);
            }
            attention_load(attention_row(grad_x, 0, g, i), head_dim, g_lo, g_hi);
            const float dp_x = attention_dots(v1, shared_mask & ATTENTION_SHARED_V1, g, first, rows, g_lo, g_hi, scratch);
            float dp_a = 0.0f, dp_p = 0.0f;
            if (want_a) {
                attention_load(attention_row(grad_a, 0, g, i), head_dim, g_lo, g_hi);
                dp_a = attention_dots(v2, shared_mask & ATTENTION_SHARED_V2, g, first, rows, g_lo, g_hi, scratch);
            }
            if (want_p) {
                attention_load(attention_row(grad_p, 0, g, i), head_dim, g_lo, g_hi);
                dp_p = attention_dots(v3, shared_mask & ATTENTION_SHARED_V3, g, first, rows, g_lo, g_hi, scratch);
            }
            const int j = first + lane;
            float ds_x = 0.0f, ds_a = 0.0f, ds_p = 0.0f;
            if (lane < rows) {
                const float m = attention_dropout(g, i, j, dropout, seed);
                ds_x = expf(scale * (s1 + s2 + s3) - lse_x[i]) * (m * dp_x - d_x);
                if (want_a) ds_a = expf(scale * s1 - lse_x[stats_stride + i]) * (m * dp_a - d_a);
                if (want_p) ds_p = expf(scale * s2 - lse_x[2 * stats_stride + i]) * (m * dp_p - d_p);
            }
            w[j] = scale * (ds_x + ds_a);
            w[ATTENTION_MAX_LEN + j] = scale * (ds_x + ds_p);
            w[2 * ATTENTION_MAX_LEN + j] = scale * ds_x;
        }
        __syncwarp();
        float lo = 0.0f, hi = 0.0f;
        attention_accumulate(k1, shared_mask & ATTENTION_SHARED_K1, g, 0, count, w, lo, hi);
        attention_store(attention_row_out(dq1, g, i), head_dim, lo, hi);
        if (pairs > 1) {
            lo = hi = 0.0f;
            attention_accumulate(k2, shared_mask & ATTENTION_SHARED_K2, g, 0, count, w + ATTENTION_MAX_LEN, lo, hi);
            attention_store(attention_row_out(dq2, g, i), head_dim, lo, hi);
        }
        if (pairs > 2) {
            lo = hi = 0.0f;
            attention_accumulate(k3, shared_mask & ATTENTION_SHARED_K3, g, 0, count, w + 2 * ATTENTION_MAX_LEN, lo, hi);
            attention_store(attention_row_out(dq3, g, i), head_dim, lo, hi);
        }
        __syncwarp();  // the weights are read by every lane before the next row overwrites them
    }
    for (int i = length + warp; i < n; i += warps) {
        attention_store(attention_row_out(dq1, g, i), head_dim, 0.0f, 0.0f);
        if (pairs > 1) attention_store(attention_row_out(dq2, g, i), head_dim, 0.0f, 0.0f);
        if (pairs > 2) attention_store(attention_row_out(dq3, g, i), head_dim, 0.0f, 0.0f);
    }
}

// Column pass of the backward: warp per valid key row j, lanes over the queries j..L_b−1;
// dK_k,j and dV_s,j. Padded rows get zero gradients.
__device__ __forceinline__ void attention_backward_keys_body(const float* __restrict__ q1, const float* __restrict__ k1,
                                                   const float* __restrict__ q2, const float* __restrict__ k2,
                                                   const float* __restrict__ q3, const float* __restrict__ k3,
                                                   const float* __restrict__ v1, const float* __restrict__ v2,
                                                   const float* __restrict__ v3, const int* __restrict__ lengths,
                                                   const float* __restrict__ grad_x, const float* __restrict__ grad_a,
                                                   const float* __restrict__ grad_p, const float* __restrict__ lse,
                                                   const float* __restrict__ row_dot, float* __restrict__ dk1,
                                                   float* __restrict__ dk2, float* __restrict__ dk3,
                                                   float* __restrict__ dv1, float* __restrict__ dv2,
                                                   float* __restrict__ dv3, int batch, int n, int heads,
                                                   int head_dim, int pairs, int outputs_mask, int shared_mask,
                                                   float dropout, unsigned long long seed) {
    __shared__ float scratch_all[ATTENTION_WARPS][32 * ATTENTION_SCRATCH_STRIDE];
    __shared__ float weights_all[ATTENTION_WARPS][6][ATTENTION_MAX_LEN];
    if ((int)blockIdx.x >= batch * heads) return;  // uniform across the block
    const AttentionBlock g = attention_block(n, heads, head_dim);
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    const int warp = threadIdx.x / ASIF_WARP_SIZE;
    const int warps = blockDim.x / ASIF_WARP_SIZE;
    float* scratch = scratch_all[warp];
    float* w = &weights_all[warp][0][0];
    const bool want_a = (outputs_mask & ATTENTION_OUT_A) != 0;
    const bool want_p = (outputs_mask & ATTENTION_OUT_P) != 0;
    const float scale = 1.0f / sqrtf((float)head_dim);
    const int length = attention_length(lengths, g.b, n);
    const size_t stats_stride = (size_t)batch * heads * n;
    const float* lse_x = lse + (size_t)blockIdx.x * n;
    const float* dot_x = row_dot + (size_t)blockIdx.x * n;
    const int sq1 = shared_mask & ATTENTION_SHARED_Q1, sq2 = shared_mask & ATTENTION_SHARED_Q2;
    const int sq3 = shared_mask & ATTENTION_SHARED_Q3;

    for (int j = warp; j < length; j += warps) {
        const int count = length - j;
        for (int c = 0; c < 2; ++c) {
            const int offset = c * 32;
            if (offset >= count) break;  // uniform across the warp
            const int first = j + offset;
            const int rows = min(32, count - offset);
            float k_lo, k_hi;
            attention_load(attention_row(k1, shared_mask & ATTENTION_SHARED_K1, g, j), head_dim, k_lo, k_hi);
            const float s1 = attention_dots(q1, sq1, g, first, rows, k_lo, k_hi, scratch);
            float s2 = 0.0f, s3 = 0.0f;
            if (pairs > 1) {
                attention_load(attention_row(k2, shared_mask & ATTENTION_SHARED_K2, g, j), head_dim, k_lo, k_hi);
                s2 = attention_dots(q2, sq2, g, first, rows, k_lo, k_hi, scratch);
            }
            if (pairs > 2) {
                attention_load(attention_row(k3, shared_mask & ATTENTION_SHARED_K3, g, j), head_dim, k_lo, k_hi);
                s3 = attention_dots(q3, sq3, g, first, rows, k_lo, k_hi, scratch);
            }
            attention_load(attention_row(v1, shared_mask & ATTENTION_SHARED_V1, g, j), head_dim, k_lo, k_hi);
            const float dp_x = attention_dots(grad_x, 0, g, first, rows, k_lo, k_hi, scratch);
            float dp_a = 0.0f, dp_p = 0.0f;
            if (want_a) {
                attention_load(attention_row(v2, shared_mask & ATTENTION_SHARED_V2, g, j), head_dim, k_lo, k_hi);
                dp_a = attention_dots(grad_a, 0, g, first, rows, k_lo, k_hi, scratch);
            }
            if (want_p) {
                attention_load(attention_row(v3, shared_mask & ATTENTION_SHARED_V3, g, j), head_dim, k_lo, k_hi);
                dp_p = attention_dots(grad_p, 0, g, first, rows, k_lo, k_hi, scratch);
            }
            const int r = offset + lane;
            const int i = j + r;
            float ds_x = 0.0f, ds_a = 0.0f, ds_p = 0.0f, pk_x = 0.0f, pk_a = 0.0f, pk_p = 0.0f;
            if (lane < rows) {
                const float m = attention_dropout(g, i, j, dropout, seed);
                const float p_x = expf(scale * (s1 + s2 + s3) - lse_x[i]);
                pk_x = m * p_x;
                ds_x = p_x * (m * dp_x - dot_x[i]);
                if (want_a) {
                    const float p_a = expf(scale * s1 - lse_x[stats_stride + i]);
                    pk_a = m * p_a;
                    ds_a = p_a * (m * dp_a - dot_x[stats_stride + i]);
                }
                if (want_p) {
                    const float p_p = expf(scale * s2 - lse_x[2 * stats_stride + i]);
                    pk_p = m * p_p;
                    ds_p = p_p * (m * dp_p - dot_x[2 * stats_stride + i]);
                }
            }
            w[r] = scale * (ds_x + ds_a);
            w[ATTENTION_MAX_LEN + r] = scale * (ds_x + ds_p);
            w[2 * ATTENTION_MAX_LEN + r] = scale * ds_x;
            w[3 * ATTENTION_MAX_LEN + r] = pk_x;
            w[4 * ATTENTION_MAX_LEN + r] = pk_a;
            w[5 * ATTENTION_MAX_LEN + r] = pk_p;
        }
        __syncwarp();
        float lo = 0.0f, hi = 0.0f;
        attention_accumulate(q1, sq1, g, j, count, w, lo, hi);
        attention_store(attention_row_out(dk1, g, j), head_dim, lo, hi);
        if (pairs > 1) {
            lo = hi = 0.0f;
            attention_accumulate(q2, sq2, g, j, count, w + ATTENTION_MAX_LEN, lo, hi);
            attention_store(attention_row_out(dk2, g, j), head_dim, lo, hi);
        }
        if (pairs > 2) {
            lo = hi = 0.0f;
            attention_accumulate(q3, sq3, g, j, count, w + 2 * ATTENTION_MAX_LEN, lo, hi);
            attention_store(attention_row_out(dk3, g, j), head_dim, lo, hi);
        }
        lo = hi = 0.0f;
        attention_accumulate(grad_x, 0, g, j, count, w + 3 * ATTENTION_MAX_LEN, lo, hi);
        attention_store(attention_row_out(dv1, g, j), head_dim, lo, hi);
        if (want_a) {
            lo = hi = 0.0f;
            attention_accumulate(grad_a, 0, g, j, count, w + 4 * ATTENTION_MAX_LEN, lo, hi);
            attention_store(attention_row_out(dv2, g, j), head_dim, lo, hi);
        }
        if (want_p) {
            lo = hi = 0.0f;
            attention_accumulate(grad_p, 0, g, j, count, w + 5 * ATTENTION_MAX_LEN, lo, hi);
            attention_store(attention_row_out(dv3, g, j), head_dim, lo, hi);
        }
        __syncwarp();
    }
    for (int j = length + warp; j < n; j += warps) {
        attention_store(attention_row_out(dk1, g, j), head_dim, 0.0f, 0.0f);
        if (pairs > 1) attention_store(attention_row_out(dk2, g, j), head_dim, 0.0f, 0.0f);
        if (pairs > 2) attention_store(attention_row_out(dk3, g, j), head_dim, 0.0f, 0.0f);
        attention_store(attention_row_out(dv1, g, j), head_dim, 0.0f, 0.0f);
        if (want_a) attention_store(attention_row_out(dv2, g, j), head_dim, 0.0f, 0.0f);
        if (want_p) attention_store(attention_row_out(dv3, g, j), head_dim, 0.0f, 0.0f);
    }
}

// out[t] = Σ_b partial[b·count + t], b in order: the gradient of an input shared by the batch.
extern "C" __global__ void attention_sum_over_batch(const float* __restrict__ partial, float* __restrict__ out,
                                                    int batch, int count) {
    for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < count; t += gridDim.x * blockDim.x) {
        float total = 0.0f;
        for (int b = 0; b < batch; ++b) total += partial[(size_t)b * count + t];
        out[t] = total;
    }
}

// ---- version 2: tensor cores, K and V staged once per (sequence, head) ----
//
// One block of 4 warps per (sequence, head), as v1; warp w owns query rows 16w .. 16w + 15 (one
// m16 tile; n ≤ 64 is four of them). The rows of Q_k, K_k and V_s the block needs (the first
// ⌈L_b/16⌉·16, zeros past L_b and past d_h up to a multiple of 8) are staged in shared memory once
// each, by cp.async 16-byte copies when every row is 16-byte aligned (d_h and d multiples of 4,
// aligned bases) and by plain loads otherwise. Tiles have a stride of 72 floats: the A and B
// fragment reads (rows g, columns t; or rows t, columns g) fall in 32 distinct banks.
//   S_k (16 × keys per warp) = Q_k K_kᵀ on m16n8k8 mma, 3xTF32 (fp32-level accuracy), into
//   register fragments; key tiles past min(16w + 16, L_b) (the causal diagonal and L_b) skipped.
//   The masked softmaxes run on the fragments (row max and sum over the 4 lanes of a group by
//   shuffles); the log-sum-exp of each row is saved as v1 saves it (so v1's backward reads it);
//   m ⊙ P goes to the warp's own rows of the Q tile (no longer needed), and O_s = (m ⊙ P) V_s on
//   mma again, staged back through the same rows and written with 16-byte stores. Padded rows
//   are written as zeros in the same pass: no memset.
#include "mma.cuh"

#define ATTENTION_V2_STRIDE 72
#define ATTENTION_V2_TILES 8  // n ≤ 64 keys = 8 n8 tiles; d_h ≤ 64 channels = 8 tiles
// The backward's saved dS_X: warp w's 2w + 2 key tiles of 4 values a lane, 4 warps.
#define ATTENTION_V2_DS_FLOATS (ATTENTION_WARPS * (ATTENTION_WARPS + 1) / 2 * 2 * 4 * 32)

struct __align__(16) AttentionQuad {
    float x, y, z, w;
};

struct __align__(8) AttentionFloatPair {
    float x, y;
};

__device__ __forceinline__ bool attention_aligned16(const void* pointer) {
    return ((unsigned long long)pointer & 15ull) == 0;
}

// Rows 0 .. rows − 1 of one head of `source` into `tile` (stride ATTENTION_V2_STRIDE), columns
// 0 .. columns − 1 (a multiple of 8); zeros for rows ≥ length and columns ≥ d_h. The copies are
// committed as one cp.async group; the caller waits and then synchronises the block.
__device__ __forceinline__ void attention_v2_stage(float* tile, const float* source, int shared,
                                                   const AttentionBlock& g, int length, int rows, int columns,
                                                   bool vector) {
    if (vector) {
        const int quads = columns / 4;
        for (int e = threadIdx.x; e < rows * quads; e += blockDim.x) {
            const int r = e / quads, c = 4 * (e % quads);
            float* destination = tile + r * ATTENTION_V2_STRIDE + c;
            if (r < length && c < g.head_dim) {
                cp_async_16(destination, attention_row(source, shared, g, r) + c);
            } else {
                *reinterpret_cast<AttentionQuad*>(destination) = AttentionQuad{0.0f, 0.0f, 0.0f, 0.0f};
            }
        }
        cp_async_commit();
    } else {
        for (int e = threadIdx.x; e < rows * columns; e += blockDim.x) {
            const int r = e / columns, c = e % columns;
            tile[r * ATTENTION_V2_STRIDE + c] =
                r < length && c < g.head_dim ? attention_row(source, shared, g, r)[c] : 0.0f;
        }
    }
}

// How the v2 kernels form their products (the forward's last argument): 3xTF32 on m16n8k8
// (Precision::Fp32, fp32-level accuracy), plain TF32 on m16n8k8 (Precision::Tf32, opt-in:
// operands rounded to 10 mantissa bits), or bf16 on m16n8k16 (Precision::Bf16, opt-in: operands
// rounded to 8 mantissa bits when the fragments are loaded from the fp32 tiles; fp32 accumulate).
#define ATTENTION_V2_3XTF32 0
#define ATTENTION_V2_TF32 1
#define ATTENTION_V2_BF16 2

// d += A·B on one m16n8k8 tile, 3xTF32 or TF32 (`products`, never ATTENTION_V2_BF16 here).
__device__ __forceinline__ void attention_v2_mma(float d[4], const float a[4], const float b[2], int products) {
    if (products == ATTENTION_V2_TF32) {  // uniform across the warp
        unsigned a_tf32[4], b_tf32[2];
#pragma unroll
        for (int i = 0; i < 4; ++i) a_tf32[i] = tf32_round(a[i]);
#pragma unroll
        for (int i = 0; i < 2; ++i) b_tf32[i] = tf32_round(b[i]);
        mma_m16n8k8_tf32(d, a_tf32, b_tf32, d);
    } else {
        mma_m16n8k8_3xtf32(d, a, b, d);
    }
}

// acc[t] (+)= A·B for key tiles t < key_tiles: A = the warp's 16 rows of `queries`, B = rows
// 8t .. 8t + 7 of `keys` transposed, over `ksteps` steps of 8 channels. `accumulate` = false
// starts from zero.
__device__ __forceinline__ void attention_v2_scores(float acc[ATTENTION_V2_TILES][4], const float* queries,
                                                    const float* keys, int key_tiles, int ksteps, bool accumulate,
                                                    int products) {
    if (!accumulate) {
#pragma unroll
        for (int t = 0; t < ATTENTION_V2_TILES; ++t) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;
    }
    if (products == ATTENTION_V2_BF16) {  // k-steps of 16 channels (the tiles are zero up to 16·⌈ksteps/2⌉)
        for (int k = 0; k < (ksteps + 1) / 2; ++k) {
            unsigned a[4];
            mma_load_a_bf16(a, queries + 16 * k, ATTENTION_V2_STRIDE, 1);
#pragma unroll
            for (int t = 0; t < ATTENTION_V2_TILES; ++t) {
                if (t < key_tiles) {  // uniform across the warp
                    unsigned b[2];
                    mma_load_b_bf16(b, keys + 8 * t * ATTENTION_V2_STRIDE + 16 * k, 1, ATTENTION_V2_STRIDE);
                    mma_m16n8k16_bf16(acc[t], a, b, acc[t]);
                }
            }
        }
        return;
    }
    for (int k = 0; k < ksteps; ++k) {
        float a[4];
        mma_load_a_tf32_values(a, queries + 8 * k, ATTENTION_V2_STRIDE, 1);
#pragma unroll
        for (int t = 0; t < ATTENTION_V2_TILES; ++t) {
            if (t < key_tiles) {  // uniform across the warp
                float b[2];
                mma_load_b_tf32_values(b, keys + 8 * t * ATTENTION_V2_STRIDE + 8 * k, 1, ATTENTION_V2_STRIDE);
                attention_v2_mma(acc[t], a, b, products);
            }
        }
    }
}

// acc[t] = Σ_k A[·][k] · B[k][8t ..] over k-steps first_step ≤ k < last_step of 8, for channel
// tiles t < channel_tiles: A = 16 rows of a row-major (m_stride = ATTENTION_V2_STRIDE, k_stride =
// 1) or transposed (m_stride = 1, k_stride = ATTENTION_V2_STRIDE) tile, `a_tile` at (row 0, k 0);
// B = rows k of a row-major tile (`b_tile` at row 0). The products of O = (m ⊙ P) V (forward) and
// of dV, dQ and dK (backward).
__device__ __forceinline__ void attention_v2_product(float acc[ATTENTION_V2_TILES][4], const float* a_tile,
                                                     int m_stride, int k_stride, const float* b_tile,
                                                     int first_step, int last_step, int channel_tiles,
                                                     int products) {
#pragma unroll
    for (int t = 0; t < ATTENTION_V2_TILES; ++t) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;
    if (products == ATTENTION_V2_BF16) {  // k-steps of 16 (first_step even; zeros up to 16·⌈last_step/2⌉)
        for (int k = first_step / 2; k < (last_step + 1) / 2; ++k) {
            unsigned a[4];
            mma_load_a_bf16(a, a_tile + 16 * k * k_stride, m_stride, k_stride);
#pragma unroll
            for (int t = 0; t < ATTENTION_V2_TILES; ++t) {
                if (t < channel_tiles) {  // uniform across the warp
                    unsigned b[2];
                    mma_load_b_bf16(b, b_tile + 16 * k * ATTENTION_V2_STRIDE + 8 * t, ATTENTION_V2_STRIDE, 1);
                    mma_m16n8k16_bf16(acc[t], a, b, acc[t]);
                }
            }
        }
        return;
    }
    for (int k = first_step; k < last_step; ++k) {
        float a[4];
        mma_load_a_tf32_values(a, a_tile + 8 * k * k_stride, m_stride, k_stride);
#pragma unroll
        for (int t = 0; t < ATTENTION_V2_TILES; ++t) {
            if (t < channel_tiles) {  // uniform across the warp
                float b[2];
                mma_load_b_tf32_values(b, b_tile + 8 * k * ATTENTION_V2_STRIDE + 8 * t, ATTENTION_V2_STRIDE, 1);
                attention_v2_mma(acc[t], a, b, products);
            }
        }
    }
}

// Masked softmax of the warp's rows row0 .. row0 + 15 from the raw scores `s` (scaled here),
// dropout applied, m ⊙ P written to the rows of `probabilities` (stride ATTENTION_V2_STRIDE,
// key tiles < key_tiles), the log-sum-exp of every row < n to `lse_row` (0 for rows ≥ L_b).
__device__ __forceinline__ void attention_v2_softmax(const float s[ATTENTION_V2_TILES][4], float* probabilities,
                                                     float* lse_row, const AttentionBlock& g, int row0, int length,
                                                     int key_tiles, float scale, float dropout,
                                                     unsigned long long seed) {
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    const int group = mma_group(lane), thread = mma_thread_in_group(lane);
    const float minus_inf = -asif_infinity();
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const int local = group + 8 * half;
        const int i = row0 + local;
        const bool row_valid = i < length;
        float row_max = minus_inf;
#pragma unroll
        for (int t = 0; t < ATTENTION_V2_TILES; ++t) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int j = 8 * t + 2 * thread + e;
                if (t < key_tiles && row_valid && j <= i) row_max = fmaxf(row_max, scale * s[t][2 * half + e]);
            }
        }
        row_max = fmaxf(row_max, __shfl_xor_sync(ASIF_FULL_MASK, row_max, 1));
        row_max = fmaxf(row_max, __shfl_xor_sync(ASIF_FULL_MASK, row_max, 2));
        float sum = 0.0f;
        float e_values[ATTENTION_V2_TILES][2];
#pragma unroll
        for (int t = 0; t < ATTENTION_V2_TILES; ++t) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int j = 8 * t + 2 * thread + e;
                const bool valid = t < key_tiles && row_valid && j <= i;
                e_values[t][e] = valid ? expf(scale * s[t][2 * half + e] - row_max) : 0.0f;
                sum += e_values[t][e];
            }
        }
        sum += __shfl_xor_sync(ASIF_FULL_MASK, sum, 1);
        sum += __shfl_xor_sync(ASIF_FULL_MASK, sum, 2);
#pragma unroll
        for (int t = 0; t < ATTENTION_V2_TILES; ++t) {
            if (t < (key_tiles + 1) / 2 * 2) {  // an even count: bf16's k-steps of 16 keys read them
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int j = 8 * t + 2 * thread + e;
                    float p = 0.0f;
                    if (e_values[t][e] != 0.0f) p = attention_dropout(g, i, j, dropout, seed) * (e_values[t][e] / sum);
                    probabilities[local * ATTENTION_V2_STRIDE + j] = p;
                }
            }
        }
        if (thread == 0 && i < g.n) lse_row[i] = row_valid ? row_max + logf(sum) : 0.0f;
    }
}

// O = (m ⊙ P) V for the warp's 16 rows (P in `rows`, key tiles < key_tiles), back into `rows`,
// then rows row0 .. row0 + 15 (< n) of one head of `out`: zeros for rows ≥ L_b.
__device__ __forceinline__ void attention_v2_values(float* rows, const float* values, float* out,
                                                    const AttentionBlock& g, int row0, int length, int key_tiles,
                                                    int channel_tiles, bool vector, int products) {
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    if (row0 < length) {  // uniform across the warp
        float acc[ATTENTION_V2_TILES][4];
        attention_v2_product(acc, rows, ATTENTION_V2_STRIDE, 1, values, 0, key_tiles, channel_tiles, products);
        __syncwarp();  // every lane has read P before O overwrites it
#pragma unroll
        for (int t = 0; t < ATTENTION_V2_TILES; ++t) {
            if (t < channel_tiles) mma_store_d(acc[t], rows + 8 * t, ATTENTION_V2_STRIDE, 1);
        }
        __syncwarp();
    }
    const int last = min(row0 + 16, g.n);
    if (vector) {
        const int quads = g.head_dim / 4;
        for (int e = lane; e < (last - row0) * quads; e += ASIF_WARP_SIZE) {
            const int r = e / quads, c = 4 * (e % quads);
            const int i = row0 + r;
            AttentionQuad value = {0.0f, 0.0f, 0.0f, 0.0f};
            if (i < length) value = *reinterpret_cast<const AttentionQuad*>(rows + r * ATTENTION_V2_STRIDE + c);
            *reinterpret_cast<AttentionQuad*>(attention_row_out(out, g, i) + c) = value;
        }
    } else {
        for (int e = lane; e < (last - row0) * g.head_dim; e += ASIF_WARP_SIZE) {
            const int r = e / g.head_dim, c = e % g.head_dim;
            const int i = row0 + r;
            attention_row_out(out, g, i)[c] = i < length ? rows[r * ATTENTION_V2_STRIDE + c] : 0.0f;
        }
    }
}

// One score pair for the whole block: stage Q and K, then each active warp forms (or adds, when
// `accumulate`) its 16 rows of Q Kᵀ in `s`. Every thread of the block calls it.
__device__ __forceinline__ void attention_v2_pair(float s[ATTENTION_V2_TILES][4], float* rows_tile, float* keys_tile,
                                                  const float* queries, const float* keys, int shared_queries,
                                                  int shared_keys, const AttentionBlock& g, int length,
                                                  int staged_rows, int columns, bool vector, bool active,
                                                  int key_tiles, bool accumulate, int products) {
    attention_v2_stage(rows_tile, queries, shared_queries, g, length, staged_rows, columns, vector);
    attention_v2_stage(keys_tile, keys, shared_keys, g, length, staged_rows, columns, vector);
    cp_async_wait_all();
    __syncthreads();
    const int row0 = 16 * (threadIdx.x / ASIF_WARP_SIZE);
    if (active) {
        attention_v2_scores(s, rows_tile + row0 * ATTENTION_V2_STRIDE, keys_tile, key_tiles, columns / 8, accumulate,
                            products);
    }
    __syncthreads();  // every warp is done with the tiles before the next stage overwrites them
}

// One output for the whole block: stage V_s while each warp forms m ⊙ P_s from `s` in its own
// rows of `rows_tile` (saving the log-sum-exp), then O_s = (m ⊙ P_s) V_s. Every thread calls it.
__device__ __forceinline__ void attention_v2_output(const float s[ATTENTION_V2_TILES][4], float* rows_tile,
                                                    float* keys_tile, const float* values, int shared_values,
                                                    float* out, float* lse_row, const AttentionBlock& g, int row0,
                                                    int length, int staged_rows, int columns, int key_tiles,
                                                    float scale, float dropout, unsigned long long seed, bool vector,
                                                    int products) {
    float* rows = rows_tile + row0 * ATTENTION_V2_STRIDE;
    attention_v2_stage(keys_tile, values, shared_values, g, length, staged_rows, columns, vector);
    attention_v2_softmax(s, rows, lse_row, g, row0, length, key_tiles, scale, dropout, seed);
    cp_async_wait_all();
    __syncthreads();
    attention_v2_values(rows, keys_tile, out, g, row0, length, key_tiles, columns / 8, vector, products);
    __syncthreads();  // V_s is read by every warp before the next stage overwrites it
}

// 4 blocks of 128 per SM (at most 128 registers a thread; 4 × 36 KB of shared memory fits):
// declared apart so the definition keeps the entry-point form build.rs and the emulator scan for.
#define ATTENTION_V2_MIN_BLOCKS 4
extern "C" {
__global__ void __launch_bounds__(ATTENTION_WARPS * 32, ATTENTION_V2_MIN_BLOCKS) attention_forward_v2(
    const float* __restrict__, const float* __restrict__, const float* __restrict__, const float* __restrict__,
    const float* __restrict__, const float* __restrict__, const float* __restrict__, const float* __restrict__,
    const float* __restrict__, const int* __restrict__, float* __restrict__, float* __restrict__,
    float* __restrict__, float* __restrict__, int, int, int, int, int, int, int, float, unsigned long long, int);
__global__ void __launch_bounds__(ATTENTION_WARPS * 32, ATTENTION_V2_MIN_BLOCKS) attention_forward_v2_stepped(
    const float* __restrict__, const float* __restrict__, const float* __restrict__, const float* __restrict__,
    const float* __restrict__, const float* __restrict__, const float* __restrict__, const float* __restrict__,
    const float* __restrict__, const int* __restrict__, float* __restrict__, float* __restrict__,
    float* __restrict__, float* __restrict__, int, int, int, int, int, int, int, float, const unsigned long long* __restrict__, unsigned long long, unsigned long long, int);
}

// Same arguments, outputs and saved state as attention_forward (v1), plus `products`:
// ATTENTION_V2_3XTF32 (Precision::Fp32), ATTENTION_V2_TF32 (Precision::Tf32) or
// ATTENTION_V2_BF16 (Precision::Bf16).
__device__ __forceinline__ void attention_forward_v2_body(const float* __restrict__ q1, const float* __restrict__ k1, const float* __restrict__ q2,
                         const float* __restrict__ k2, const float* __restrict__ q3, const float* __restrict__ k3,
                         const float* __restrict__ v1, const float* __restrict__ v2, const float* __restrict__ v3,
                         const int* __restrict__ lengths, float* __restrict__ out_x, float* __restrict__ out_a,
                         float* __restrict__ out_p, float* __restrict__ lse, int batch, int n, int heads,
                         int head_dim, int pairs, int outputs_mask, int shared_mask, float dropout,
                         unsigned long long seed, int products) {
    __shared__ __align__(16) float rows_tile[ATTENTION_MAX_LEN * ATTENTION_V2_STRIDE];  // Q_k, then m ⊙ P, then O
    __shared__ __align__(16) float keys_tile[ATTENTION_MAX_LEN * ATTENTION_V2_STRIDE];  // K_k, then V_s
    if ((int)blockIdx.x >= batch * heads) return;  // uniform across the block
    const AttentionBlock g = attention_block(n, heads, head_dim);
    const int warp = threadIdx.x / ASIF_WARP_SIZE;
    const bool want_a = (outputs_mask & ATTENTION_OUT_A) != 0;
    const bool want_p = (outputs_mask & ATTENTION_OUT_P) != 0;
    const float scale = 1.0f / sqrtf((float)head_dim);
    const int length = attention_length(lengths, g.b, n);
    const size_t lse_stride = (size_t)batch * heads * n;
    float* lse_row = lse + (size_t)blockIdx.x * n;
    // 16-byte copies need every row of every tensor 16-byte aligned.
    const bool vector = head_dim % 4 == 0 && attention_aligned16(q1) && attention_aligned16(k1) &&
                        attention_aligned16(q2) && attention_aligned16(k2) && attention_aligned16(q3) &&
                        attention_aligned16(k3) && attention_aligned16(v1) && attention_aligned16(v2) &&
                        attention_aligned16(v3) && attention_aligned16(out_x) && attention_aligned16(out_a) &&
                        attention_aligned16(out_p);
    const int staged_rows = (length + 15) / 16 * 16;
    // Channels staged up to a multiple of 8 (m16n8k8's k), of 16 for bf16 (m16n8k16's k).
    const int columns = products == ATTENTION_V2_BF16 ? (head_dim + 15) / 16 * 16 : (head_dim + 7) / 8 * 8;
    const int row0 = 16 * warp;
    const bool active = row0 < length;  // uniform across the warp
    const int key_tiles = active ? (min(row0 + 16, length) + 7) / 8 : 0;
    float* rows = rows_tile + row0 * ATTENTION_V2_STRIDE;

    // Absent softmaxes have log-sum-exp 0 in every row.
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        if (!want_a) lse_row[lse_stride + i] = 0.0f;
        if (!want_p) lse_row[2 * lse_stride + i] = 0.0f;
    }

    // Register budget: two score fragments (S_1 + S_2 + S_3 accumulating, and S_2 alone while
    // softmax P reads it) and one output fragment, never three score sets at once. Order:
    // S_1 → O_A; S_2 → O_P, then added; S_3 added; → O_X.
    float s_x[ATTENTION_V2_TILES][4];
    attention_v2_pair(s_x, rows_tile, keys_tile, q1, k1, shared_mask & ATTENTION_SHARED_Q1,
                      shared_mask & ATTENTION_SHARED_K1, g, length, staged_rows, columns, vector, active, key_tiles,
                      false, products);
    if (want_a) {
        attention_v2_output(s_x, rows_tile, keys_tile, v2, shared_mask & ATTENTION_SHARED_V2, out_a,
                            lse_row + lse_stride, g, row0, length, staged_rows, columns, key_tiles, scale, dropout,
                            seed, vector, products);
    }
    if (pairs > 1) {
        if (want_p) {
            float s_2[ATTENTION_V2_TILES][4];
            attention_v2_pair(s_2, rows_tile, keys_tile, q2, k2, shared_mask & ATTENTION_SHARED_Q2,
                              shared_mask & ATTENTION_SHARED_K2, g, length, staged_rows, columns, vector, active,
                              key_tiles, false, products);
            // softmax P first (it reads s_2), then s_2 joins the sum and dies before O_P's fragment.
            attention_v2_stage(keys_tile, v3, shared_mask & ATTENTION_SHARED_V3, g, length, staged_rows, columns,
                               vector);
            attention_v2_softmax(s_2, rows, lse_row + 2 * lse_stride, g, row0, length, key_tiles, scale, dropout,
                                 seed);
#pragma unroll
            for (int t = 0; t < ATTENTION_V2_TILES; ++t) {
#pragma unroll
                for (int e = 0; e < 4; ++e) s_x[t][e] += s_2[t][e];
            }
            cp_async_wait_all();
            __syncthreads();
            attention_v2_values(rows, keys_tile, out_p, g, row0, length, key_tiles, columns / 8, vector, products);
            __syncthreads();  // V_3 is read by every warp before the next stage overwrites it
        } else {
            attention_v2_pair(s_x, rows_tile, keys_tile, q2, k2, shared_mask & ATTENTION_SHARED_Q2,
                              shared_mask & ATTENTION_SHARED_K2, g, length, staged_rows, columns, vector, active,
                              key_tiles, true, products);
        }
    }
    if (pairs > 2) {
        attention_v2_pair(s_x, rows_tile, keys_tile, q3, k3, shared_mask & ATTENTION_SHARED_Q3,
                          shared_mask & ATTENTION_SHARED_K3, g, length, staged_rows, columns, vector, active, key_tiles,
                          true, products);
    }
    attention_v2_output(s_x, rows_tile, keys_tile, v1, shared_mask & ATTENTION_SHARED_V1, out_x, lse_row, g, row0,
                        length, staged_rows, columns, key_tiles, scale, dropout, seed, vector, products);
}


// ---- version 2 backward: one pass per (sequence, head), one block owning dQ, dK and dV ----
//
// Same block and tiles as attention_forward_v2: 4 warps, warp w owns rows 16w .. 16w + 15 twice
// over: as query rows i (scores, P, dP, dS, dQ) and as key rows j (dK, dV). Per softmax s, with
// its scores S_s recomputed on mma from staged Q_k, K_k:
//   P_s = exp(scale · S_s − lse_s) on the fragments (0 where masked or i ≥ L_b);
//   dP'_s = dO_s V_sᵀ on mma (dO_s and V_s staged), m the dropout multiplier, dP_s = m ⊙ dP'_s;
//   D_s,i = Σ_j P_s,ij dP_s,ij (the row sum over the 4 lanes of a group: no read of O);
//   dS_s = P_s ⊙ (dP_s − D_s) in the fragment; m ⊙ P_s into the block's n × n tile (each warp its
//   rows, all 64 columns), then dV_s (rows 16w ..) = (m ⊙ P_s)ᵀ dO_s, A read transposed.
// Then per pair k: dZ_k = scale (dS_X + dS_A [k = 1] + dS_P [k = 2]) into the n × n tile,
// dQ_k = dZ_k K_k (the warp's rows), dK_k = dZ_kᵀ Q_k (the warp's columns, queries i ≥ 16w only:
// causal). Every gradient row has one owner, so no atomics and the same bits on every run.
// Gradients are written straight from the accumulator fragments (two adjacent floats a lane,
// 8-byte stores when aligned; every 32-byte sector written in full), rows past L_b as zeros; an
// input shared by the batch gets per-sequence partials that attention_sum_over_batch (v1's)
// reduces in batch order. The products are 3xTF32 (fp32-level) in every precision.

// s (the scores S of the warp's rows) → P = exp(scale · S − lse_i) where valid, else 0.
__device__ __forceinline__ void attention_v2_probabilities(float s[ATTENTION_V2_TILES][4], const float* lse_row,
                                                           int row0, int length, int key_tiles, float scale) {
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    const int group = mma_group(lane), thread = mma_thread_in_group(lane);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const int i = row0 + group + 8 * half;
        const float lse_i = i < length ? lse_row[i] : 0.0f;
#pragma unroll
        for (int t = 0; t < ATTENTION_V2_TILES; ++t) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int j = 8 * t + 2 * thread + e;
                const bool valid = t < key_tiles && i < length && j <= i;
                s[t][2 * half + e] = valid ? expf(scale * s[t][2 * half + e] - lse_i) : 0.0f;
            }
        }
    }
}

// p (P of the warp's rows) → dS = P ⊙ (m ⊙ dP' − D) in place, from dp (dP' = dO Vᵀ, overwritten
// by m ⊙ dP') and the dropout multipliers m; D_i = Σ_j P_ij m_ij dP'_ij over the row. m ⊙ P goes
// to the warp's rows of `weighted` (stride ATTENTION_V2_STRIDE, all 64 columns, zeros where
// masked).
__device__ __forceinline__ void attention_v2_score_gradient(float p[ATTENTION_V2_TILES][4],
                                                            float dp[ATTENTION_V2_TILES][4], float* weighted,
                                                            const AttentionBlock& g, int row0, int length,
                                                            float dropout, unsigned long long seed) {
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    const int group = mma_group(lane), thread = mma_thread_in_group(lane);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const int local = group + 8 * half;
        const int i = row0 + local;
        float row_dot = 0.0f;
#pragma unroll
        for (int t = 0; t < ATTENTION_V2_TILES; ++t) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int j = 8 * t + 2 * thread + e;
                const float probability = p[t][2 * half + e];
                // P is 0 wherever the entry is masked: no hash for those.
                // (dp is not formed past the warp's key tiles, where P is 0.)
                const float m = probability != 0.0f ? attention_dropout(g, i, j, dropout, seed) : 0.0f;
                dp[t][2 * half + e] = probability != 0.0f ? m * dp[t][2 * half + e] : 0.0f;
                row_dot += probability * dp[t][2 * half + e];
                weighted[local * ATTENTION_V2_STRIDE + j] = m * probability;
            }
        }
        row_dot += __shfl_xor_sync(ASIF_FULL_MASK, row_dot, 1);
        row_dot += __shfl_xor_sync(ASIF_FULL_MASK, row_dot, 2);
#pragma unroll
        for (int t = 0; t < ATTENTION_V2_TILES; ++t) {
#pragma unroll
            for (int e = 0; e < 2; ++e) p[t][2 * half + e] = p[t][2 * half + e] * (dp[t][2 * half + e] - row_dot);
        }
    }
}

// Rows row0 .. row0 + 15 (< n) of one head of `out` from the accumulator fragments: zeros for
// rows ≥ L_b or when the warp has no valid row (`active` false; acc is not read then).
__device__ __forceinline__ void attention_v2_store_fragments(const float acc[ATTENTION_V2_TILES][4], float* out,
                                                             const AttentionBlock& g, int row0, int length,
                                                             bool active, bool vector) {
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    const int group = mma_group(lane), thread = mma_thread_in_group(lane);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const int i = row0 + group + 8 * half;
        if (i >= g.n) continue;
        float* row = attention_row_out(out, g, i);
        const bool valid = active && i < length;
#pragma unroll
        for (int t = 0; t < ATTENTION_V2_TILES; ++t) {
            const int c = 8 * t + 2 * thread;
            if (c >= g.head_dim) continue;
            const float x = valid ? acc[t][2 * half] : 0.0f;
            const float y = valid ? acc[t][2 * half + 1] : 0.0f;
            if (vector) {  // d_h a multiple of 4: c + 1 < d_h, 8-byte aligned
                *reinterpret_cast<AttentionFloatPair*>(row + c) = AttentionFloatPair{x, y};
            } else {
                row[c] = x;
                if (c + 1 < g.head_dim) row[c + 1] = y;
            }
        }
    }
}

// One softmax's backward for the whole block: s holds the warp's raw scores S_s on entry and
// dS_s on return; dV_s is written. Every thread of the block calls it; it starts and ends with
// the tiles free.
__device__ __forceinline__ void attention_v2_softmax_backward(float s[ATTENTION_V2_TILES][4], float* rows_tile,
                                                              float* keys_tile, const float* grad,
                                                              const float* values, int shared_values,
                                                              const float* lse_row, float* grad_values,
                                                              const AttentionBlock& g, int length,
                                                              int staged_rows, int columns, bool vector, bool active,
                                                              int key_tiles, float scale, float dropout,
                                                              unsigned long long seed) {
    const int row0 = 16 * (threadIdx.x / ASIF_WARP_SIZE);
    attention_v2_stage(rows_tile, grad, 0, g, length, staged_rows, columns, vector);
    attention_v2_stage(keys_tile, values, shared_values, g, length, staged_rows, columns, vector);
    if (active) attention_v2_probabilities(s, lse_row, row0, length, key_tiles, scale);
    cp_async_wait_all();
    __syncthreads();
    float dp[ATTENTION_V2_TILES][4];
    if (active) {
        attention_v2_scores(dp, rows_tile + row0 * ATTENTION_V2_STRIDE, keys_tile, key_tiles, columns / 8, false,
                            ATTENTION_V2_3XTF32);
    }
    __syncthreads();  // every warp has read V_s before m ⊙ P overwrites it
    if (active) {
        attention_v2_score_gradient(s, dp, keys_tile + row0 * ATTENTION_V2_STRIDE, g, row0, length, dropout, seed);
    }
    __syncthreads();
    // dV_s rows j = row0 .. row0 + 15: Σ over queries i ≥ row0 (causal) below L_b.
    float acc[ATTENTION_V2_TILES][4];
    if (active) {
        attention_v2_product(acc, keys_tile + row0, 1, ATTENTION_V2_STRIDE, rows_tile, row0 / 8, (length + 7) / 8,
                             columns / 8, ATTENTION_V2_3XTF32);
    }
    attention_v2_store_fragments(acc, grad_values, g, row0, length, active, vector);
    __syncthreads();  // the tiles are free again
}

// dQ_k and dK_k of one pair from dZ_k (the warp's rows, scaled). Every thread calls it.
__device__ __forceinline__ void attention_v2_pair_backward(const float dz[ATTENTION_V2_TILES][4], float* rows_tile,
                                                           float* keys_tile, const float* queries,
                                                           const float* keys, int shared_queries, int shared_keys,
                                                           float* grad_queries, float* grad_keys,
                                                           const AttentionBlock& g, int length, int staged_rows,
                                                           int columns, bool vector, bool active, int key_tiles) {
    const int row0 = 16 * (threadIdx.x / ASIF_WARP_SIZE);
    attention_v2_stage(keys_tile, keys, shared_keys, g, length, staged_rows, columns, vector);
    if (active) {
        // dZ into the warp's rows of the n × n tile, all 64 columns (zeros past its key tiles).
#pragma unroll
        for (int t = 0; t < ATTENTION_V2_TILES; ++t) {
            float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            if (t < key_tiles) d[0] = dz[t][0], d[1] = dz[t][1], d[2] = dz[t][2], d[3] = dz[t][3];
            mma_store_d(d, rows_tile + row0 * ATTENTION_V2_STRIDE + 8 * t, ATTENTION_V2_STRIDE, 1);
        }
    }
    cp_async_wait_all();
    __syncthreads();
    float acc[ATTENTION_V2_TILES][4];
    if (active) {
        attention_v2_product(acc, rows_tile + row0 * ATTENTION_V2_STRIDE, ATTENTION_V2_STRIDE, 1, keys_tile, 0,
                             key_tiles, columns / 8, ATTENTION_V2_3XTF32);
    }
    attention_v2_store_fragments(acc, grad_queries, g, row0, length, active, vector);
    __syncthreads();  // every warp has read K_k
    attention_v2_stage(keys_tile, queries, shared_queries, g, length, staged_rows, columns, vector);
    cp_async_wait_all();
    __syncthreads();
    if (active) {
        attention_v2_product(acc, rows_tile + row0, 1, ATTENTION_V2_STRIDE, keys_tile, row0 / 8, (length + 7) / 8,
                             columns / 8, ATTENTION_V2_3XTF32);
    }
    attention_v2_store_fragments(acc, grad_keys, g, row0, length, active, vector);
    __syncthreads();  // the tiles are free again
}

// The gradients of pair k for the whole block: dZ_k = scale (dS_X + dS_s) when the pair has its
// own softmax s (A for pair 1, P for pair 2: scores S_k alone; its dV_s written too), else
// scale dS_X; then dQ_k and dK_k. dS_X comes from `ds_x_own` (the warp's saved fragments).
__device__ __forceinline__ void attention_v2_pair_gradient(const float* ds_x_own, bool own_softmax, float* rows_tile,
                                                           float* keys_tile, const float* queries,
                                                           const float* keys, int shared_queries, int shared_keys,
                                                           const float* grad, const float* values,
                                                           int shared_values, const float* lse_row,
                                                           float* grad_values, float* grad_queries,
                                                           float* grad_keys, const AttentionBlock& g, int length,
                                                           int staged_rows, int columns, bool vector, bool active,
                                                           int key_tiles, float scale, float dropout,
                                                           unsigned long long seed) {
    float dz[ATTENTION_V2_TILES][4] = {};
    if (own_softmax) {  // uniform across the block
        attention_v2_pair(dz, rows_tile, keys_tile, queries, keys, shared_queries, shared_keys, g, length,
                          staged_rows, columns, vector, active, key_tiles, false, ATTENTION_V2_3XTF32);
        attention_v2_softmax_backward(dz, rows_tile, keys_tile, grad, values, shared_values, lse_row, grad_values, g,
                                      length, staged_rows, columns, vector, active, key_tiles, scale, dropout, seed);
    }
#pragma unroll
    for (int t = 0; t < ATTENTION_V2_TILES; ++t) {
        if (t < key_tiles) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float ds = ds_x_own[(4 * t + e) * ASIF_WARP_SIZE];
                dz[t][e] = scale * (own_softmax ? ds + dz[t][e] : ds);
            }
        }
    }
    attention_v2_pair_backward(dz, rows_tile, keys_tile, queries, keys, shared_queries, shared_keys, grad_queries,
                               grad_keys, g, length, staged_rows, columns, vector, active, key_tiles);
}

// 3 blocks of 128 per SM (at most 168 registers a thread; 3 × 46 KB of shared memory fits): with
// 4 (128 registers) ptxas spills about 1.3 KB a thread around the pairs' softmax backward.
#define ATTENTION_V2_BACKWARD_MIN_BLOCKS 3
extern "C" {
__global__ void __launch_bounds__(ATTENTION_WARPS * 32, ATTENTION_V2_BACKWARD_MIN_BLOCKS) attention_backward_v2(
    const float* __restrict__, const float* __restrict__, const float* __restrict__, const float* __restrict__,
    const float* __restrict__, const float* __restrict__, const float* __restrict__, const float* __restrict__,
    const float* __restrict__, const int* __restrict__, const float* __restrict__, const float* __restrict__,
    const float* __restrict__, const float* __restrict__, float* __restrict__, float* __restrict__,
    float* __restrict__, float* __restrict__, float* __restrict__, float* __restrict__, float* __restrict__,
    float* __restrict__, float* __restrict__, int, int, int, int, int, int, int, float, unsigned long long);
__global__ void __launch_bounds__(ATTENTION_WARPS * 32, ATTENTION_V2_BACKWARD_MIN_BLOCKS) attention_backward_v2_stepped(
    const float* __restrict__, const float* __restrict__, const float* __restrict__, const float* __restrict__,
    const float* __restrict__, const float* __restrict__, const float* __restrict__, const float* __restrict__,
    const float* __restrict__, const int* __restrict__, const float* __restrict__, const float* __restrict__,
    const float* __restrict__, const float* __restrict__, float* __restrict__, float* __restrict__,
    float* __restrict__, float* __restrict__, float* __restrict__, float* __restrict__, float* __restrict__,
    float* __restrict__, float* __restrict__, int, int, int, int, int, int, int, float, const unsigned long long* __restrict__, unsigned long long, unsigned long long);
}

// The whole backward in one launch: the inputs and lengths as the forward takes them, the
// upstream gradients dO_X, dO_A, dO_P (zeros where an output has none; O itself is not read), the
// forward's log-sum-exp; writes dQ_k, dK_k (k ≤ pairs) and dV_s (present values) in full, per
// sequence ([B·n, d]) also for inputs shared by the batch.
__device__ __forceinline__ void attention_backward_v2_body(const float* __restrict__ q1, const float* __restrict__ k1,
                         const float* __restrict__ q2, const float* __restrict__ k2, const float* __restrict__ q3,
                         const float* __restrict__ k3, const float* __restrict__ v1, const float* __restrict__ v2,
                         const float* __restrict__ v3, const int* __restrict__ lengths,
                         const float* __restrict__ grad_x, const float* __restrict__ grad_a,
                         const float* __restrict__ grad_p, const float* __restrict__ lse, float* __restrict__ dq1,
                         float* __restrict__ dk1, float* __restrict__ dq2, float* __restrict__ dk2,
                         float* __restrict__ dq3, float* __restrict__ dk3, float* __restrict__ dv1,
                         float* __restrict__ dv2, float* __restrict__ dv3, int batch, int n, int heads,
                         int head_dim, int pairs, int outputs_mask, int shared_mask, float dropout,
                         unsigned long long seed) {
    __shared__ __align__(16) float rows_tile[ATTENTION_MAX_LEN * ATTENTION_V2_STRIDE];  // dO_s, then dZ_k
    __shared__ __align__(16) float keys_tile[ATTENTION_MAX_LEN * ATTENTION_V2_STRIDE];  // K_k, V_s, m ⊙ P_s, Q_k
    // dS_X of every warp between its softmax and the pairs, in fragment order (lane-minor: no
    // bank conflicts): warp w's key tiles t < 2w + 2, at 128·w·(w + 1). 10 KB, so registers hold
    // at most two fragments (47 KB of static shared memory in all).
    __shared__ float ds_x_saved[ATTENTION_V2_DS_FLOATS];
    if ((int)blockIdx.x >= batch * heads) return;  // uniform across the block
    const AttentionBlock g = attention_block(n, heads, head_dim);
    const int warp = threadIdx.x / ASIF_WARP_SIZE;
    const bool want_a = (outputs_mask & ATTENTION_OUT_A) != 0;
    const bool want_p = (outputs_mask & ATTENTION_OUT_P) != 0;
    const float scale = 1.0f / sqrtf((float)head_dim);
    const int length = attention_length(lengths, g.b, n);
    const size_t lse_stride = (size_t)batch * heads * n;
    const float* lse_row = lse + (size_t)blockIdx.x * n;
    const bool vector = head_dim % 4 == 0 && attention_aligned16(q1) && attention_aligned16(k1) &&
                        attention_aligned16(q2) && attention_aligned16(k2) && attention_aligned16(q3) &&
                        attention_aligned16(k3) && attention_aligned16(v1) && attention_aligned16(v2) &&
                        attention_aligned16(v3) && attention_aligned16(grad_x) && attention_aligned16(grad_a) &&
                        attention_aligned16(grad_p) && attention_aligned16(dq1) && attention_aligned16(dk1) &&
                        attention_aligned16(dq2) && attention_aligned16(dk2) && attention_aligned16(dq3) &&
                        attention_aligned16(dk3) && attention_aligned16(dv1) && attention_aligned16(dv2) &&
                        attention_aligned16(dv3);
    const int staged_rows = (length + 15) / 16 * 16;
    const int columns = (head_dim + 7) / 8 * 8;
    const int row0 = 16 * warp;
    const bool active = row0 < length;  // uniform across the warp
    const int key_tiles = active ? (min(row0 + 16, length) + 7) / 8 : 0;

    float* ds_x_own = ds_x_saved + 128 * warp * (warp + 1) + threadIdx.x % ASIF_WARP_SIZE;
    {
        // Softmax X: S_X = Σ_k S_k, then dS_X (saved for every pair) and dV_1.
        float ds_x[ATTENTION_V2_TILES][4] = {};  // stays 0 in a warp without valid rows
        attention_v2_pair(ds_x, rows_tile, keys_tile, q1, k1, shared_mask & ATTENTION_SHARED_Q1,
                          shared_mask & ATTENTION_SHARED_K1, g, length, staged_rows, columns, vector, active, key_tiles,
                          false, ATTENTION_V2_3XTF32);
        if (pairs > 1) {
            attention_v2_pair(ds_x, rows_tile, keys_tile, q2, k2, shared_mask & ATTENTION_SHARED_Q2,
                              shared_mask & ATTENTION_SHARED_K2, g, length, staged_rows, columns, vector, active,
                              key_tiles, true, ATTENTION_V2_3XTF32);
        }
        if (pairs > 2) {
            attention_v2_pair(ds_x, rows_tile, keys_tile, q3, k3, shared_mask & ATTENTION_SHARED_Q3,
                              shared_mask & ATTENTION_SHARED_K3, g, length, staged_rows, columns, vector, active,
                              key_tiles, true, ATTENTION_V2_3XTF32);
        }
        attention_v2_softmax_backward(ds_x, rows_tile, keys_tile, grad_x, v1, shared_mask & ATTENTION_SHARED_V1, lse_row,
                                      dv1, g, length, staged_rows, columns, vector, active, key_tiles, scale, dropout,
                                      seed);
#pragma unroll
        for (int t = 0; t < ATTENTION_V2_TILES; ++t) {
            if (t < key_tiles) {  // each lane reads back only what it wrote: no barrier
#pragma unroll
                for (int e = 0; e < 4; ++e) ds_x_own[(4 * t + e) * ASIF_WARP_SIZE] = ds_x[t][e];
            }
        }
    }

    // Per pair k: dZ_k = scale (dS_X + dS_A [k = 1, with O_A] + dS_P [k = 2, with O_P]). Written
    // out per pair (not a loop choosing pointers by k): the kernel arguments stay in the parameter
    // bank instead of occupying registers through the softmax backward.
    attention_v2_pair_gradient(ds_x_own, want_a, rows_tile, keys_tile, q1, k1, shared_mask & ATTENTION_SHARED_Q1,
                               shared_mask & ATTENTION_SHARED_K1, grad_a, v2, shared_mask & ATTENTION_SHARED_V2,
                               lse_row + lse_stride, dv2, dq1, dk1, g, length, staged_rows, columns, vector, active,
                               key_tiles, scale, dropout, seed);
    if (pairs > 1) {
        attention_v2_pair_gradient(ds_x_own, want_p, rows_tile, keys_tile, q2, k2, shared_mask & ATTENTION_SHARED_Q2,
                                   shared_mask & ATTENTION_SHARED_K2, grad_p, v3, shared_mask & ATTENTION_SHARED_V3,
                                   lse_row + 2 * lse_stride, dv3, dq2, dk2, g, length, staged_rows, columns, vector,
                                   active, key_tiles, scale, dropout, seed);
    }
    if (pairs > 2) {  // C_X of w/o FA has no softmax of its own
        attention_v2_pair_gradient(ds_x_own, false, rows_tile, keys_tile, q3, k3, shared_mask & ATTENTION_SHARED_Q3,
                                   shared_mask & ATTENTION_SHARED_K3, grad_p, v3, 0, lse_row, dv3, dq3, dk3, g, length,
                                   staged_rows, columns, vector, active, key_tiles, scale, dropout, seed);
    }
}

// Entry points (after the bodies above, which they inline): by value, the seed an argument (the
// public kernel API); step counter (issue 20), the seed derived on the device from the step
// counter, the model's dropout stream and the site (asif_step_seed, hash_rng.cuh), so a replayed
// CUDA graph draws each step's masks. Same arguments otherwise, the same masks for the same seed.
extern "C" __global__ void attention_forward(const float* __restrict__ q1, const float* __restrict__ k1,
                                             const float* __restrict__ q2, const float* __restrict__ k2,
                                             const float* __restrict__ q3, const float* __restrict__ k3,
                                             const float* __restrict__ v1, const float* __restrict__ v2,
                                             const float* __restrict__ v3, const int* __restrict__ lengths,
                                             float* __restrict__ out_x, float* __restrict__ out_a,
                                             float* __restrict__ out_p, float* __restrict__ lse,
                                             int batch, int n, int heads, int head_dim, int pairs,
                                             int outputs_mask, int shared_mask, float dropout,
                                             unsigned long long seed) {
    attention_forward_body(q1, k1, q2, k2, q3, k3, v1, v2, v3, lengths, out_x, out_a, out_p, lse, batch, n, heads, head_dim, pairs, outputs_mask, shared_mask, dropout, seed);
}

extern "C" __global__ void attention_forward_stepped(const float* __restrict__ q1, const float* __restrict__ k1,
                                             const float* __restrict__ q2, const float* __restrict__ k2,
                                             const float* __restrict__ q3, const float* __restrict__ k3,
                                             const float* __restrict__ v1, const float* __restrict__ v2,
                                             const float* __restrict__ v3, const int* __restrict__ lengths,
                                             float* __restrict__ out_x, float* __restrict__ out_a,
                                             float* __restrict__ out_p, float* __restrict__ lse,
                                             int batch, int n, int heads, int head_dim, int pairs,
                                             int outputs_mask, int shared_mask, float dropout,
                                             const unsigned long long* __restrict__ step, unsigned long long stream,
    unsigned long long site) {
    attention_forward_body(q1, k1, q2, k2, q3, k3, v1, v2, v3, lengths, out_x, out_a, out_p, lse, batch, n, heads, head_dim, pairs, outputs_mask, shared_mask, dropout, asif_step_seed(step, stream, site));
}

extern "C" __global__ void attention_backward_queries(const float* __restrict__ q1, const float* __restrict__ k1,
                                                      const float* __restrict__ q2, const float* __restrict__ k2,
                                                      const float* __restrict__ q3, const float* __restrict__ k3,
                                                      const float* __restrict__ v1, const float* __restrict__ v2,
                                                      const float* __restrict__ v3, const int* __restrict__ lengths,
                                                      const float* __restrict__ out_x, const float* __restrict__ out_a,
                                                      const float* __restrict__ out_p, const float* __restrict__ grad_x,
                                                      const float* __restrict__ grad_a, const float* __restrict__ grad_p,
                                                      const float* __restrict__ lse, float* __restrict__ row_dot,
                                                      float* __restrict__ dq1, float* __restrict__ dq2,
                                                      float* __restrict__ dq3, int batch, int n, int heads,
                                                      int head_dim, int pairs, int outputs_mask, int shared_mask,
                                                      float dropout, unsigned long long seed) {
    attention_backward_queries_body(q1, k1, q2, k2, q3, k3, v1, v2, v3, lengths, out_x, out_a, out_p, grad_x, grad_a, grad_p, lse, row_dot, dq1, dq2, dq3, batch, n, heads, head_dim, pairs, outputs_mask, shared_mask, dropout, seed);
}

extern "C" __global__ void attention_backward_queries_stepped(const float* __restrict__ q1, const float* __restrict__ k1,
                                                      const float* __restrict__ q2, const float* __restrict__ k2,
                                                      const float* __restrict__ q3, const float* __restrict__ k3,
                                                      const float* __restrict__ v1, const float* __restrict__ v2,
                                                      const float* __restrict__ v3, const int* __restrict__ lengths,
                                                      const float* __restrict__ out_x, const float* __restrict__ out_a,
                                                      const float* __restrict__ out_p, const float* __restrict__ grad_x,
                                                      const float* __restrict__ grad_a, const float* __restrict__ grad_p,
                                                      const float* __restrict__ lse, float* __restrict__ row_dot,
                                                      float* __restrict__ dq1, float* __restrict__ dq2,
                                                      float* __restrict__ dq3, int batch, int n, int heads,
                                                      int head_dim, int pairs, int outputs_mask, int shared_mask,
                                                      float dropout, const unsigned long long* __restrict__ step, unsigned long long stream,
    unsigned long long site) {
    attention_backward_queries_body(q1, k1, q2, k2, q3, k3, v1, v2, v3, lengths, out_x, out_a, out_p, grad_x, grad_a, grad_p, lse, row_dot, dq1, dq2, dq3, batch, n, heads, head_dim, pairs, outputs_mask, shared_mask, dropout, asif_step_seed(step, stream, site));
}

extern "C" __global__ void attention_backward_keys(const float* __restrict__ q1, const float* __restrict__ k1,
                                                   const float* __restrict__ q2, const float* __restrict__ k2,
                                                   const float* __restrict__ q3, const float* __restrict__ k3,
                                                   const float* __restrict__ v1, const float* __restrict__ v2,
                                                   const float* __restrict__ v3, const int* __restrict__ lengths,
                                                   const float* __restrict__ grad_x, const float* __restrict__ grad_a,
                                                   const float* __restrict__ grad_p, const float* __restrict__ lse,
                                                   const float* __restrict__ row_dot, float* __restrict__ dk1,
                                                   float* __restrict__ dk2, float* __restrict__ dk3,
                                                   float* __restrict__ dv1, float* __restrict__ dv2,
                                                   float* __restrict__ dv3, int batch, int n, int heads,
                                                   int head_dim, int pairs, int outputs_mask, int shared_mask,
                                                   float dropout, unsigned long long seed) {
    attention_backward_keys_body(q1, k1, q2, k2, q3, k3, v1, v2, v3, lengths, grad_x, grad_a, grad_p, lse, row_dot, dk1, dk2, dk3, dv1, dv2, dv3, batch, n, heads, head_dim, pairs, outputs_mask, shared_mask, dropout, seed);
}

extern "C" __global__ void attention_backward_keys_stepped(const float* __restrict__ q1, const float* __restrict__ k1,
                                                   const float* __restrict__ q2, const float* __restrict__ k2,
                                                   const float* __restrict__ q3, const float* __restrict__ k3,
                                                   const float* __restrict__ v1, const float* __restrict__ v2,
                                                   const float* __restrict__ v3, const int* __restrict__ lengths,
                                                   const float* __restrict__ grad_x, const float* __restrict__ grad_a,
                                                   const float* __restrict__ grad_p, const float* __restrict__ lse,
                                                   const float* __restrict__ row_dot, float* __restrict__ dk1,
                                                   float* __restrict__ dk2, float* __restrict__ dk3,
                                                   float* __restrict__ dv1, float* __restrict__ dv2,
                                                   float* __restrict__ dv3, int batch, int n, int heads,
                                                   int head_dim, int pairs, int outputs_mask, int shared_mask,
                                                   float dropout, const unsigned long long* __restrict__ step, unsigned long long stream,
    unsigned long long site) {
    attention_backward_keys_body(q1, k1, q2, k2, q3, k3, v1, v2, v3, lengths, grad_x, grad_a, grad_p, lse, row_dot, dk1, dk2, dk3, dv1, dv2, dv3, batch, n, heads, head_dim, pairs, outputs_mask, shared_mask, dropout, asif_step_seed(step, stream, site));
}

extern "C" __global__ void attention_forward_v2(const float* __restrict__ q1, const float* __restrict__ k1, const float* __restrict__ q2,
                         const float* __restrict__ k2, const float* __restrict__ q3, const float* __restrict__ k3,
                         const float* __restrict__ v1, const float* __restrict__ v2, const float* __restrict__ v3,
                         const int* __restrict__ lengths, float* __restrict__ out_x, float* __restrict__ out_a,
                         float* __restrict__ out_p, float* __restrict__ lse, int batch, int n, int heads,
                         int head_dim, int pairs, int outputs_mask, int shared_mask, float dropout,
                         unsigned long long seed, int products) {
    attention_forward_v2_body(q1, k1, q2, k2, q3, k3, v1, v2, v3, lengths, out_x, out_a, out_p, lse, batch, n, heads, head_dim, pairs, outputs_mask, shared_mask, dropout, seed, products);
}

extern "C" __global__ void attention_forward_v2_stepped(const float* __restrict__ q1, const float* __restrict__ k1, const float* __restrict__ q2,
                         const float* __restrict__ k2, const float* __restrict__ q3, const float* __restrict__ k3,
                         const float* __restrict__ v1, const float* __restrict__ v2, const float* __restrict__ v3,
                         const int* __restrict__ lengths, float* __restrict__ out_x, float* __restrict__ out_a,
                         float* __restrict__ out_p, float* __restrict__ lse, int batch, int n, int heads,
                         int head_dim, int pairs, int outputs_mask, int shared_mask, float dropout,
                         const unsigned long long* __restrict__ step, unsigned long long stream,
    unsigned long long site, int products) {
    attention_forward_v2_body(q1, k1, q2, k2, q3, k3, v1, v2, v3, lengths, out_x, out_a, out_p, lse, batch, n, heads, head_dim, pairs, outputs_mask, shared_mask, dropout, asif_step_seed(step, stream, site), products);
}

extern "C" __global__ void attention_backward_v2(const float* __restrict__ q1, const float* __restrict__ k1,
                         const float* __restrict__ q2, const float* __restrict__ k2, const float* __restrict__ q3,
                         const float* __restrict__ k3, const float* __restrict__ v1, const float* __restrict__ v2,
                         const float* __restrict__ v3, const int* __restrict__ lengths,
                         const float* __restrict__ grad_x, const float* __restrict__ grad_a,
                         const float* __restrict__ grad_p, const float* __restrict__ lse, float* __restrict__ dq1,
                         float* __restrict__ dk1, float* __restrict__ dq2, float* __restrict__ dk2,
                         float* __restrict__ dq3, float* __restrict__ dk3, float* __restrict__ dv1,
                         float* __restrict__ dv2, float* __restrict__ dv3, int batch, int n, int heads,
                         int head_dim, int pairs, int outputs_mask, int shared_mask, float dropout,
                         unsigned long long seed) {
    attention_backward_v2_body(q1, k1, q2, k2, q3, k3, v1, v2, v3, lengths, grad_x, grad_a, grad_p, lse, dq1, dk1, dq2, dk2, dq3, dk3, dv1, dv2, dv3, batch, n, heads, head_dim, pairs, outputs_mask, shared_mask, dropout, seed);
}

extern "C" __global__ void attention_backward_v2_stepped(const float* __restrict__ q1, const float* __restrict__ k1,
                         const float* __restrict__ q2, const float* __restrict__ k2, const float* __restrict__ q3,
                         const float* __restrict__ k3, const float* __restrict__ v1, const float* __restrict__ v2,
                         const float* __restrict__ v3, const int* __restrict__ lengths,
                         const float* __restrict__ grad_x, const float* __restrict__ grad_a,
                         const float* __restrict__ grad_p, const float* __restrict__ lse, float* __restrict__ dq1,
                         float* __restrict__ dk1, float* __restrict__ dq2, float* __restrict__ dk2,
                         float* __restrict__ dq3, float* __restrict__ dk3, float* __restrict__ dv1,
                         float* __restrict__ dv2, float* __restrict__ dv3, int batch, int n, int heads,
                         int head_dim, int pairs, int outputs_mask, int shared_mask, float dropout,
                         const unsigned long long* __restrict__ step, unsigned long long stream,
    unsigned long long site) {
    attention_backward_v2_body(q1, k1, q2, k2, q3, k3, v1, v2, v3, lengths, grad_x, grad_a, grad_p, lse, dq1, dk1, dq2, dk2, dq3, dk3, dv1, dv2, dv3, batch, n, heads, head_dim, pairs, outputs_mask, shared_mask, dropout, asif_step_seed(step, stream, site));
}
