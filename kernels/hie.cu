// hie.cu: Homogeneous Information Extraction (spec §3.3, eqs. 10 to 12), forward and backward.
//
// What it computes, per sequence b (whole hidden, A12), with H_X, H_A ∈ R^{n×d}, W_r ∈ R^{n×r}:
//   1. rows t ≥ L_b of H_X and H_A are zero (A6; `keep_padding` = 1 uses all n rows);
//   2. M_b = H_Xᵀ W_r (d×r), computed here from H_X and W_r;
//   3. thin Householder QR M_b = Q R with the rank guard: column k is dropped (zero in Q, no
//      reflector, the pivot row does not advance) when its residual norm is at most
//      rank_tolerance · the largest residual norm of columns 0..k, or when L_b columns are kept
//      already (rank M_b ≤ L_b exactly), so the kept columns of Q are the Gram–Schmidt basis of
//      the kept columns of M in order;
//   4. C_X = H_X Q, C_A = H_A Q (eq. 10);
//   5. φ = 1[C_X ⊙ C_A > 0] (strict), h_A* = (φ ⊙ C_A) Qᵀ (eqs. 11, 12); padding rows are 0.
//   Saved for the backward: Q [B,d,r], R [B,r,r] (kept rows/columns only), φ [B,n,r].
//   Backward, Q constant (default, A7):  dH_A = ((dh Q) ⊙ φ) Qᵀ.
//   Backward, full QR (option): also Q̄ = dhᵀ(φ⊙C_A) + H_Aᵀ(φ⊙(dh Q)) on kept columns,
//     N = −Q̄ᵀQ, M̄ = (Q̄ + Q·copyltu(N)) R⁻ᵀ (back substitution over the kept columns),
//     dH_X = W_r M̄ᵀ on valid rows, dW_r = Σ_b H_X,b M̄_b (per-sequence partials, then a
//     deterministic sum over b; no atomics).
//
// Launch shapes (src/ops/hie/cuda.rs), version 1: one block per sequence, blockDim.x = d rounded
// up to a multiple of 32, at most 256; dynamic shared memory r·ld floats with ld = d rounded up to odd
// (Q or M column-major, column k at k·ld: thread-per-row loops are conflict-free, and the
// lane-per-column loops too because ld is odd). ≤ 32·257·4 = 32.9 KB at d = 256, r = 32.
//   hie_forward, hie_backward_q_constant, hie_backward_full: grid.x = B.
//   hie_sum_batch: grid-stride over n·r, each thread sums B partials in order.
// Version 2: the same grid and block (d ≤ 256 only: thread i owns row i); dynamic shared memory
// d·(R+1) floats (Q, then M̄ in the full backward, row-major with odd stride R + 1: lane l reading
// rows l + 32j, and thread i reading its own row, are conflict-free); 17.4 KB at d = 256, R = 16;
// 33.8 KB at R = 32; the forward adds the n·d floats of H_X when they fit (`stage_x`, opted in
// above 48 KB). Entry points `<v1 name>_v2_r16` and `_v2_r32`: R = 16 serves r ≤ 16, R = 32
// serves 16 < r ≤ 32 (columns r..R-1 are zero and never kept); d > 256 launches v1 whatever the
// selection (documented in src/ops/hie/mod.rs).
// Version 3: v2's grid, block and entry-point widths (`<v1 name>_v3_r16`, `_v3_r32`); dynamic
// shared memory d·(R+4) floats (Q; M before it in the forward, Q̄ and M̄ after it in the full
// backward), 20.5 KB at d = 256, R = 16, 36.9 KB at R = 32; the forward adds n rows of H_X with
// stride ⌈d/32⌉·32 + 4 when they fit (`stage_x`, opted in above 48 KB).
//
// Traffic and floor at the paper's sizes (B = 2048, n = 50, d = 256, r = 16, fp32): the forward
// reads H_X and H_A and writes h_A* (315 MB with Q, φ; about 105 µs at 3.0 TB/s on an H100); the
// Q-constant backward reads dh and writes dH_A. The 2·r serial reflector steps per block (two
// barriers each) are latency, hidden by several blocks per SM (≤ 41 KB shared per block).
//
// Versions:
//   1. one block per sequence; M_b in shared memory; Householder reflectors in place (LAPACK
//      geqr2 then org2r, column-major in shared memory); one warp per trailing column for the
//      reflector dot products (warp shuffles, no block barrier per column); lane k of a warp
//      computes C[t,k] for one row t with broadcast loads of the row.
//   2. (issue 19; kernel_version family "hie", v1 stays the default until a GPU run decides)
//      removes v1's measured causes with plain fp32 FMA; the 3xTF32 mma products of the issue
//      are version 3 (the sign test φ needs fp32-level sums, so plain TF32 is no option):
//      - M_b = H_Xᵀ W_r accumulates in registers (thread i: row i of M, R values), W_r staged in
//        shared memory 32 rows at a time and read as broadcasts; v1 did a shared-memory
//        read-modify-write per FMA;
//      - the Householder QR keeps the rows in registers: per column ONE block reduction (each
//        warp a transposed shuffle sum of R values, R − 1 + log2(32/R) shuffles, 8 partials per
//        value in shared memory, double-buffered by step parity, summed by lane j and shuffled to
//        every lane) gives every dot product the step needs, s_j = Σ_{i≥p} M[i,k] M[i,j], with
//        the pivot row; vᵀM[:,j] = s_j − α M[p,j] (v = M[p:,k] − α e_p); one barrier per column
//        and every warp busy, where v1 had two barriers per column and the norm on one warp;
//        org2r the same way (MAGMA's fused small batched QR pattern, without tensor cores);
//      - the projection and both backwards a warp per row: lane l reads the row's elements
//        l + 32j once (coalesced) and forms all R coordinates, one transposed warp sum, then the
//        back-projection from Q in shared memory; v1 used r of 32 lanes and re-read the row per
//        column;
//      - the full backward keeps c̄ = φ⊙(dh Q) and φ⊙C_A in shared memory (256/R rows at a
//        time), Q̄, the right-hand side and M̄ in registers, N = −Q̄ᵀQ by one block reduction
//        per row of N: no global scratch (v1 had three buffers, stride r, re-read per column);
//        dW_r stays per-sequence partials summed in order over b by hie_sum_batch
//        (deterministic, no atomics).
//      - the forward stages the valid rows of H_X once in dynamic shared memory beside Q (the
//        kernel opts in to more than 48 KB: 17.4 + 51.2 = 68.6 KB at n = 50, d = 256, R = 16;
//        85.0 KB at R = 32) and forms M and C_X from it: H_X is read once. The launcher passes
//        `stage_x` = 0 where n·d·4 bytes do not fit beside Q (n > 200 or so at d = 256), and the
//        kernel then reads H_X twice from device memory (the second read mostly from L2).
//        Occupancy is unchanged: registers already held it to 3 blocks (R = 16) and 2 (R = 32)
//        per SM, and 3 × 72 KB (2 × 92 KB) of shared memory fit in the SM's 228 KB.
//      Rank guard, pivots, R, padding rows and the zero columns of dropped columns are v1's;
//      results differ from v1 by rounding only (sums in another order).
//      The products on 3xTF32 mma are version 3 (below); v2 stays the plain-fp32 comparison point.
//   3. (issue 19; family "hie", ASIF_KERNEL_HIE=v3; v1 stays the default until a GPU run decides)
//      v2's QR and solve unchanged (hie_v2_factor, hie_v2_solve: the same code, so the same rank
//      decisions, pivots and R), and every GEMM-shaped product on m16n8k8 tensor-core mma by
//      3xTF32 (mma_m16n8k8_3xtf32, kernels/mma.cuh: hi·hi + hi·lo + lo·hi, fp32-level accuracy;
//      the sign test φ = 1[C_X ⊙ C_A > 0] needs it: one TF32 mma (2^-11) would flip the signs
//      of coordinates near zero that fp32 gets right). A warp per 16 × 8 output tile (16 × 32
//      for the back-projections); rows, columns and k padded to the tile by zeros (guarded
//      fragment loads, so nothing is read past d, r or L_b), tiles at or beyond L_b skipped:
//      - forward: M_b = H_Xᵀ W_r as [d × L_b]·[L_b × R] tiles (A = the staged H_X read
//        transposed, ⌈L_b/8⌉ k steps), stored to shared memory and read back as thread i's row
//        for the QR; C_X = H_X Q and C_A = H_A Q as [⌈L_b/16⌉·16 × d]·[d × R] tiles (Q the B
//        operand from shared memory, one B fragment for both), φ and φ⊙C_A in the accumulator
//        registers (C_X and C_A tiles share a layout, so φ needs no exchange), φ⊙C_A to shared
//        memory 1024/R rows at a time, then h_A* = (φ⊙C_A) Qᵀ as [16 × R]·[R × 32] tiles, k steps
//        stopping at r;
//      - Q-constant backward: dh Q tiles, masked by φ, then (·) Qᵀ tiles: dH_A;
//      - full backward: c̄ = φ⊙(dh Q) and φ⊙C_A tiles (512/R rows at a time), dH_A = c̄ Qᵀ,
//        Q̄ += dhᵀ(φ⊙C_A) + H_Aᵀ c̄ as [d × rows]·[rows × R] tiles accumulated in registers over
//        the chunks (a warp owns two 16-row tiles of Q̄), Q̄ handed to thread i's row through
//        shared memory for v2's solve (N = −Q̄ᵀQ by block reductions, the back substitution: not
//        GEMM-shaped, or R × R), then dH_X = W_r M̄ᵀ and the dW_r share H_X M̄ as tiles.
//      Q (and M, Q̄, M̄) in shared memory row-major with stride R + 4, staged H_X with stride
//      d rounded up to 32, plus 4. No global scratch; dW_r summed over b by hie_sum_batch.
//      Results differ from v2 by rounding only (3xTF32 drops lo·lo, about 2^-22 relative, and
//      sums in another order).

// Floor and expected time of v2 (H200, 4.8 TB/s; B = 2048, n = 50, d = 256, r = 16, all valid):
//   forward: reads H_X, H_A (2 × 105 MB; H_X once: staged), writes h_A* (105 MB), Q (33.6 MB),
//   φ (6.6 MB), R: about 350 MB, floor 73 µs; 2·B·n·d·r·4 = 1.7 GFLOP (negligible). What v2 adds over the floor is
//   latency: 2r = 32 barrier steps per block (each a transposed reduction, 8 loads and up to r
//   shuffles), overlapped by the blocks per SM the occupancy gate allows (2048 blocks on 132
//   SMs). Expected 0.15 to 0.25 ms (30 to 50 % of the floor), from 0.94 ms for v1.
//   Q-constant backward: reads dh, Q, φ, writes dH_A: about 250 MB, floor 52 µs; one pass with
//   every lane busy: expected 80 to 100 µs. Full backward: reads H_X, H_A, dh (H_A and dh twice:
//   per row, then per chunk from L1/L2), Q, R, φ, W_r; writes dH_A, dH_X and the dW_r shares:
//   about 560 MB, floor 117 µs; its r + 1 barrier steps for N and 2·n/(256/R) chunk barriers
//   are latency as above: expected 0.2 to 0.3 ms. Forward + full backward: floor 190 µs,
//   expected 0.35 to 0.55 ms (the issue's target 0.40 ms likely needs the mma products).
//   Nothing is timed here (no GPU): `benches/hie.rs` has v1 and v2 rows side by side.
//
// Floor and expected time of v3 (same sizes; UNMEASURED: no GPU here, `benches/hie.rs` times
// v1, v2 and v3 side by side): the floors are v2's (v3 moves the same bytes: forward 73 µs,
// Q-constant backward 52 µs, full backward 117 µs, forward + full backward 190 µs at 4.8 TB/s;
// about 15 % more at the 4.17 TB/s copy rate measured on the H200). Tensor-core work per
// sequence (mma.sync m16n8k8, 3 per tile step for 3xTF32): forward 672 (M) + 1536 (C_X, C_A) +
// 768 (h_A*) = 2976 mma, 12.5 GFLOP of TF32 for the batch, about 40 to 60 µs at the 200 to 300
// TFLOPS mma.sync reaches on an H200, overlapped with the loads by 2 blocks per SM (registers
// and the 79 KB of shared memory allow 2); Q-constant backward 1536 mma (6.4 GFLOP, 20 to 30
// µs); full backward 5184 mma (21.7 GFLOP, 70 to 110 µs). What v3 changes against v2 is the
// products only: the per-row warp-transposed reductions (R − 1 + log2(32/R) shuffles per row and
// projection) become fragment mma with no shuffles; the QR's 2r barrier steps, the latency that
// dominates v2's estimate, are the same code. Expected: forward 0.13 to 0.22 ms (v2 0.15 to
// 0.25), Q-constant backward 70 to 100 µs (as v2: it was already near its floor, and the guarded
// fragment loads cost integer work), full backward 0.18 to 0.28 ms, forward + full backward 0.30
// to 0.50 ms. So v3 may or may not beat v2; the GPU run decides, and v2 stays if v3 is not
// clearly faster. The issue's 0.15 ms forward and 0.40 ms forward + backward need the QR's
// latency hidden as well (more blocks per SM, or two sequences per block), which v3 does not
// change.
//
// Gates (docs/kernels-sass.md): block and dynamic shared bytes are the launch shape at the
// paper's sizes (d = 256, h = 4, n = 50, r = 16) as the launcher in src/ops/ computes it;
// d = 256: 8 warps, r = 16 columns of leading(d) = 257 floats of dynamic shared memory.
//   asif-gate: hie_forward block=256 dynamic_shared=16448 occupancy>=75%
//   asif-gate: hie_backward_q_constant block=256 dynamic_shared=16448 occupancy>=100%
//   asif-gate: hie_backward_full block=256 dynamic_shared=16448 occupancy>=75%
//   asif-gate: hie_sum_batch block=256 occupancy>=100%
// Version 2 at d = 256: r = 16 launches the _r16 entry points with 256·17·4 = 17408 dynamic
// bytes, r = 24 the _r32 ones with 256·33·4 = 33792; the forwards add H_X's 50·256·4 = 51200
// (68608 and 84992 bytes: opted in above 48 KB). Registers (ptxas, sm_90): forward 80 and full
// backward 72 at R = 16 (3 blocks of 256 per SM: 37.5 %), 128 at R = 32 (2 blocks: 25 %); the
// Q-constant backward 48 (5 blocks: 62.5 %) and 56 (4 blocks: 50 %). Above the 64-register budget
// by design (tests/nvrtc.rs lists them): a row of M (or Q̄ and M̄) lives in R registers, and the
// block reduction of a QR step holds R partial products beside it. Scalar (32-bit) coalesced
// global access, no vector_io, no mma.
//   asif-gate: hie_forward_v2_r16 block=256 dynamic_shared=68608 occupancy>=37%
//   asif-gate: hie_forward_v2_r32 block=256 dynamic_shared=84992 occupancy>=25%
//   asif-gate: hie_backward_q_constant_v2_r16 block=256 dynamic_shared=17408 occupancy>=62%
//   asif-gate: hie_backward_q_constant_v2_r32 block=256 dynamic_shared=33792 occupancy>=50%
//   asif-gate: hie_backward_full_v2_r16 block=256 dynamic_shared=17408 occupancy>=37%
//   asif-gate: hie_backward_full_v2_r32 block=256 dynamic_shared=33792 occupancy>=25%
// Version 3 at d = 256: Q with stride R + 4, so r = 16 launches the _r16 entry points with
// 256·20·4 = 20480 dynamic bytes, r = 24 the _r32 ones with 256·36·4 = 36864; the forwards add
// H_X's 50 rows of 260 floats, 52000 bytes (72480 and 88864: opted in above 48 KB). Registers
// (ptxas, sm_90): forward 96 (R = 16) and 128 (R = 32), 2 blocks per SM (25 %; shared memory
// allows 2 as well); Q-constant backward 55 (4 blocks: 50 %); full backward 80 (3 blocks:
// 37.5 %) and 96 (2 blocks: 25 %). No stack, no spills. HMMA required (tensor_core).
//   asif-gate: hie_forward_v3_r16 block=256 dynamic_shared=72480 occupancy>=25% tensor_core
//   asif-gate: hie_forward_v3_r32 block=256 dynamic_shared=88864 occupancy>=25% tensor_core
//   asif-gate: hie_backward_q_constant_v3_r16 block=256 dynamic_shared=20480 occupancy>=50% tensor_core
//   asif-gate: hie_backward_q_constant_v3_r32 block=256 dynamic_shared=36864 occupancy>=50% tensor_core
//   asif-gate: hie_backward_full_v3_r16 block=256 dynamic_shared=20480 occupancy>=37% tensor_core
//   asif-gate: hie_backward_full_v3_r32 block=256 dynamic_shared=36864 occupancy>=25% tensor_core
#include "common.cuh"

#define HIE_MAX_RANK 32
#define HIE_MAX_WARPS 8

// Stride of one column of the shared d×r matrix: d rounded up to odd.
__device__ __forceinline__ int hie_leading(int d) { return d | 1; }

// Per row t of the valid rows, warp-per-row: lane k (< r) forms coordinate k of `row_a` and
// `row_b` in the basis `q` (column-major, stride ld); returns them through the pointers.
__device__ __forceinline__ void hie_coordinates(const float* __restrict__ row_a,
                                                const float* __restrict__ row_b,
                                                const float* q, int ld, int d, int k,
                                                float* c_a, float* c_b) {
    float sum_a = 0.0f, sum_b = 0.0f;
    const float* column = q + k * ld;
    for (int i = 0; i < d; ++i) {
        const float value = column[i];
        sum_a += row_a[i] * value;
        sum_b += row_b[i] * value;
    }
    *c_a = sum_a;
    *c_b = sum_b;
}

// out_row[i] = Σ_k coeff[k] q[k·ld + i], the warp's lanes over i.
__device__ __forceinline__ void hie_back_project(const float* coeff, const float* q, int ld, int d,
                                                 int r, int lane, float* __restrict__ out_row) {
    for (int i = lane; i < d; i += ASIF_WARP_SIZE) {
        float sum = 0.0f;
        for (int k = 0; k < r; ++k) sum += coeff[k] * q[k * ld + i];
        out_row[i] = sum;
    }
}

__device__ __forceinline__ int hie_valid_rows(const int* lengths, int b, int n, int keep_padding) {
    if (keep_padding) return n;
    return min(max(lengths[b], 0), n);
}

// Loads Q [d, r] (row-major, global) into shared column-major storage.
__device__ __forceinline__ void hie_load_q(const float* __restrict__ q_b, float* a, int ld, int d,
                                           int r) {
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        for (int k = 0; k < r; ++k) a[k * ld + i] = q_b[i * r + k];
    }
}

extern "C" __global__ void hie_forward(const float* __restrict__ h_x,
                                       const float* __restrict__ h_a,
                                       const float* __restrict__ w_r,
                                       const int* __restrict__ lengths,
                                       float* __restrict__ output,
                                       float* __restrict__ q_out,
                                       float* __restrict__ r_out,
                                       float* __restrict__ mask_out,
                                       int batch, int n, int d, int r, int keep_padding,
                                       float rank_tolerance) {
    ASIF_DYNAMIC_SHARED(float, a);  // r columns of ld floats: M, then reflectors, then Q
    __shared__ float s_tau[HIE_MAX_RANK];
    __shared__ float s_vp[HIE_MAX_RANK];
    __shared__ float s_alpha[HIE_MAX_RANK];
    __shared__ int s_pivot[HIE_MAX_RANK];
    __shared__ int s_kept[HIE_MAX_RANK];
    __shared__ float s_largest;
    __shared__ float s_coeff[HIE_MAX_WARPS][ASIF_WARP_SIZE];

    const int b = blockIdx.x;
    if (b >= batch) return;  // uniform across the block
    const int ld = hie_leading(d);
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    const int warp = threadIdx.x / ASIF_WARP_SIZE;
    const int warps = blockDim.x / ASIF_WARP_SIZE;
    const int rows = hie_valid_rows(lengths, b, n, keep_padding);
    const float* x_b = h_x + (size_t)b * n * d;
    const float* a_b = h_a + (size_t)b * n * d;

    // 1. M = H_Xᵀ W_r over the valid rows: thread i owns row i of M.
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        for (int k = 0; k < r; ++k) a[k * ld + i] = 0.0f;
        for (int t = 0; t < rows; ++t) {
            const float x = x_b[(size_t)t * d + i];
            for (int k = 0; k < r; ++k) a[k * ld + i] += x * w_r[t * r + k];
        }
    }
    if (threadIdx.x == 0) s_largest = 0.0f;
    __syncthreads();

    // 2. Householder with the rank guard. p = pivot row = number of kept columns so far.
    int p = 0;
    for (int k = 0; k < r; ++k) {
        float* column = a + k * ld;
        if (warp == 0) {
            float sum_sq = 0.0f;
            for (int i = p + lane; i < d; i += ASIF_WARP_SIZE) sum_sq += column[i] * column[i];
            sum_sq = warp_reduce_sum(sum_sq);
            if (lane == 0) {
                const float norm = sqrtf(sum_sq);
                const float largest = fmaxf(s_largest, norm);
                s_largest = largest;
                // At most `rows` kept: M = Σ_{t<rows} h_t w_tᵀ has rank ≤ rows (exact, not noise).
                const int kept = p < rows && norm > rank_tolerance * largest;
                s_kept[k] = kept;
                s_pivot[k] = p;
                if (kept) {
                    const float x_p = column[p];
                    const float alpha = x_p >= 0.0f ? -norm : norm;
                    const float v_p = x_p - alpha;  // |v_p| = |x_p| + norm
                    column[p] = v_p;
                    s_vp[k] = v_p;
                    s_alpha[k] = alpha;
                    s_tau[k] = 1.0f / (norm * fabsf(v_p));  // 2 / vᵀv
                }
            }
        }
        __syncthreads();
        if (!s_kept[k]) continue;  // uniform: every thread read the same flag after the barrier
        const float tau = s_tau[k];
        for (int j = k + 1 + warp; j < r; j += warps) {
            float* target = a + j * ld;
            float dot = 0.0f;
            for (int i = p + lane; i < d; i += ASIF_WARP_SIZE) dot += column[i] * target[i];
            const float scale = tau * warp_reduce_sum(dot);
            for (int i = p + lane; i < d; i += ASIF_WARP_SIZE) target[i] -= scale * column[i];
        }
        ++p;
        __syncthreads();
    }

    // 3. R on the kept rows and columns; dropped columns of Q are zero.
    float* r_b = r_out + (size_t)b * r * r;
    for (int index = threadIdx.x; index < r * r; index += blockDim.x) {
        const int j = index / r, k = index % r;
        float value = 0.0f;
        if (s_kept[j] && s_kept[k]) {
            if (j < k) value = a[k * ld + s_pivot[j]];
            else if (j == k) value = s_alpha[k];
        }
        r_b[index] = value;
    }
    for (int k = 0; k < r; ++k) {
        if (s_kept[k]) continue;
        for (int i = threadIdx.x; i < d; i += blockDim.x) a[k * ld + i] = 0.0f;
    }
    __syncthreads();

    // 4. Q in place (org2r): kept columns from the last one back, Q e_p = H_k (H_later ⋯ e_p).
    for (int k = r - 1; k >= 0; --k) {
        if (!s_kept[k]) continue;
        const int pk = s_pivot[k];
        const float tau = s_tau[k];
        const float v_p = s_vp[k];
        const float* column = a + k * ld;
        for (int j = k + 1 + warp; j < r; j += warps) {
            if (!s_kept[j]) continue;
            float* target = a + j * ld;
            float dot = 0.0f;
            for (int i = pk + lane; i < d; i += ASIF_WARP_SIZE) dot += column[i] * target[i];
            const float scale = tau * warp_reduce_sum(dot);
            for (int i = pk + lane; i < d; i += ASIF_WARP_SIZE) target[i] -= scale * column[i];
        }
        __syncthreads();
        for (int i = threadIdx.x; i < d; i += blockDim.x) {
            const float v = a[k * ld + i];
            a[k * ld + i] = i < pk ? 0.0f : (i == pk ? 1.0f - tau * v_p * v_p : -tau * v_p * v);
        }
        __syncthreads();
    }

    float* q_b = q_out + (size_t)b * d * r;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        for (int k = 0; k < r; ++k) q_b[i * r + k] = a[k * ld + i];
    }

    // 5. Coordinates, sign mask, back-projection: one warp per row, lane k for column k.
    float* out_b = output + (size_t)b * n * d;
    float* mask_b = mask_out + (size_t)b * n * r;
    for (int t = warp; t < n; t += warps) {
        float* out_row = out_b + (size_t)t * d;
        if (t >= rows) {
            for (int i = lane; i < d; i += ASIF_WARP_SIZE) out_row[i] = 0.0f;
            if (lane < r) mask_b[t * r + lane] = 0.0f;
            continue;
        }
        float c_x = 0.0f, c_a = 0.0f;
        if (lane < r) {
            hie_coordinates(x_b + (size_t)t * d, a_b + (size_t)t * d, a, ld, d, lane, &c_x, &c_a);
        }
        const bool same_sign = c_x * c_a > 0.0f;
        if (lane < r) mask_b[t * r + lane] = same_sign ? 1.0f : 0.0f;
        s_coeff[warp][lane] = same_sign ? c_a : 0.0f;
        __syncwarp();
        hie_back_project(s_coeff[warp], a, ld, d, r, lane, out_row);
        __syncwarp();
    }
}

extern "C" __global__ void hie_backward_q_constant(const float* __restrict__ q,
                                                   const float* __restrict__ mask,
                                                   const float* __restrict__ dy,
                                                   const int* __restrict__ lengths,
                                                   float* __restrict__ dh_a,
                                                   int batch, int n, int d, int r,
                                                   int keep_padding) {
    ASIF_DYNAMIC_SHARED(float, a);
    __shared__ float s_coeff[HIE_MAX_WARPS][ASIF_WARP_SIZE];
    const int b = blockIdx.x;
    if (b >= batch) return;
    const int ld = hie_leading(d);
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    const int warp = threadIdx.x / ASIF_WARP_SIZE;
    const int warps = blockDim.x / ASIF_WARP_SIZE;
    const int rows = hie_valid_rows(lengths, b, n, keep_padding);
    hie_load_q(q + (size_t)b * d * r, a, ld, d, r);
    __syncthreads();

    const float* dy_b = dy + (size_t)b * n * d;
    const float* mask_b = mask + (size_t)b * n * r;
    float* dh_a_b = dh_a + (size_t)b * n * d;
    for (int t = warp; t < n; t += warps) {
        float* out_row = dh_a_b + (size_t)t * d;
        if (t >= rows) {
            for (int i = lane; i < d; i += ASIF_WARP_SIZE) out_row[i] = 0.0f;
            continue;
        }
        float g = 0.0f;
        if (lane < r) {
            const float* row = dy_b + (size_t)t * d;
            const float* column = a + lane * ld;
            for (int i = 0; i < d; ++i) g += row[i] * column[i];
            g *= mask_b[t * r + lane];
        }
        s_coeff[warp][lane] = g;
        __syncwarp();
        hie_back_project(s_coeff[warp], a, ld, d, r, lane, out_row);
        __syncwarp();
    }
}

// Full QR backward. Scratch (global, this block's slices only): `filtered` = φ ⊙ C_A and
// `c_bar` = φ ⊙ (dh Q), both [B, n, r]; `m_bar` [B, d, r] holds Q̄, then the right-hand side,
// then M̄ in place (thread i owns row i). `dw_partial` [B, n, r] is this sequence's share of dW_r.
extern "C" __global__ void hie_backward_full(const float* __restrict__ h_x,
                                             const float* __restrict__ h_a,
                                             const float* __restrict__ w_r,
                                             const float* __restrict__ q,
                                             const float* __restrict__ r_mat,
                                             const float* __restrict__ mask,
                                             const float* __restrict__ dy,
                                             const int* __restrict__ lengths,
                                             float* __restrict__ dh_a,
                                             float* __restrict__ dh_x,
                                             float* __restrict__ dw_partial,
                                             float* filtered,
                                             float* c_bar,
                                             float* m_bar,
                                             int batch, int n, int d, int r, int keep_padding) {
    ASIF_DYNAMIC_SHARED(float, a);  // Q, then M̄, column-major
    __shared__ float s_coeff[HIE_MAX_WARPS][ASIF_WARP_SIZE];
    __shared__ float s_n[HIE_MAX_RANK * HIE_MAX_RANK];  // lower triangle of N = −Q̄ᵀQ
    __shared__ float s_r[HIE_MAX_RANK * HIE_MAX_RANK];
    const int b = blockIdx.x;
    if (b >= batch) return;
    const int ld = hie_leading(d);
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    const int warp = threadIdx.x / ASIF_WARP_SIZE;
    const int warps = blockDim.x / ASIF_WARP_SIZE;
    const int rows = hie_valid_rows(lengths, b, n, keep_padding);
    const size_t seq = (size_t)b * n * d;
    const size_t small = (size_t)b * n * r;
    float* m_bar_b = m_bar + (size_t)b * d * r;
    hie_load_q(q + (size_t)b * d * r, a, ld, d, r);
    for (int index = threadIdx.x; index < r * r; index += blockDim.x) {
        s_r[index] = r_mat[(size_t)b * r * r + index];
    }
    __syncthreads();

    // 1. Per valid row: c̄ = φ ⊙ (dh Q), φ ⊙ C_A, and dH_A = c̄ Qᵀ; padding rows get zeros.
    for (int t = warp; t < n; t += warps) {
        float* dh_a_row = dh_a + seq + (size_t)t * d;
        if (t >= rows) {
            for (int i = lane; i < d; i += ASIF_WARP_SIZE) dh_a_row[i] = 0.0f;
            continue;
        }
        float g = 0.0f, c_a = 0.0f;
        if (lane < r) {
            hie_coordinates(dy + seq + (size_t)t * d, h_a + seq + (size_t)t * d, a, ld, d, lane,
                            &g, &c_a);
            const float phi = mask[small + t * r + lane];
            g *= phi;
            c_a *= phi;
            c_bar[small + t * r + lane] = g;
            filtered[small + t * r + lane] = c_a;
        }
        s_coeff[warp][lane] = g;
        __syncwarp();
        hie_back_project(s_coeff[warp], a, ld, d, r, lane, dh_a_row);
        __syncwarp();
    }
    __syncthreads();  // c̄ and φ⊙C_A (global, this block's) are visible to the whole block

    // 2. Q̄[i,k] = Σ_t dh[t,i] (φ⊙C_A)[t,k] + H_A[t,i] c̄[t,k] on kept columns (R_kk ≠ 0).
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        for (int k = 0; k < r; ++k) {
            float sum = 0.0f;
            if (s_r[k * r + k] != 0.0f) {
                for (int t = 0; t < rows; ++t) {
                    sum += dy[seq + (size_t)t * d + i] * filtered[small + t * r + k] +
                           h_a[seq + (size_t)t * d + i] * c_bar[small + t * r + k];
                }
            }
            m_bar_b[i * r + k] = sum;
        }
    }
    __syncthreads();

    // 3. N = −Q̄ᵀQ, lower triangle, one warp per entry.
    for (int index = warp; index < r * r; index += warps) {
        const int j = index / r, l = index % r;
        if (l > j) continue;
        float dot = 0.0f;
        for (int i = lane; i < d; i += ASIF_WARP_SIZE) dot += m_bar_b[i * r + j] * a[l * ld + i];
        dot = warp_reduce_sum(dot);
        if (lane == 0) s_n[j * r + l] = -dot;
    }
    __syncthreads();

    // 4. Row i: rhs = Q̄ + Q copyltu(N), then M̄ Rᵀ = rhs by back substitution on kept columns.
    //    Thread i reads and writes only row i of m_bar and of a.
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float* row = m_bar_b + i * r;
        for (int k = 0; k < r; ++k) {
            float sum = row[k];
            for (int j = 0; j < r; ++j) {
                const float sym = j >= k ? s_n[j * r + k] : s_n[k * r + j];
                sum += a[j * ld + i] * sym;
            }
            row[k] = sum;  // rhs[k] depends on Q̄[i,k] only: in place is safe
        }
        for (int j = r - 1; j >= 0; --j) {
            const float diagonal = s_r[j * r + j];
            float value = 0.0f;
            if (diagonal != 0.0f) {
                value = row[j];
                for (int k = j + 1; k < r; ++k) value -= row[k] * s_r[j * r + k];
                value /= diagonal;
            }
            row[j] = value;
        }
        for (int k = 0; k < r; ++k) a[k * ld + i] = row[k];  // M̄ into shared, column-major
    }
    __syncthreads();

    // 5. dH_X = W_r M̄ᵀ on valid rows (zero elsewhere); dW_r share = H_X M̄ (one warp per entry).
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        for (int t = 0; t < n; ++t) {
            float sum = 0.0f;
            if (t < rows) {
                for (int k = 0; k < r; ++k) sum += w_r[t * r + k] * a[k * ld + i];
            }
            dh_x[seq + (size_t)t * d + i] = sum;
        }
    }
    for (int index = warp; index < n * r; index += warps) {
        const int t = index / r, k = index % r;
        float dot = 0.0f;
        if (t < rows) {
            for (int i = lane; i < d; i += ASIF_WARP_SIZE) {
                dot += h_x[seq + (size_t)t * d + i] * a[k * ld + i];
            }
            dot = warp_reduce_sum(dot);
        }
        if (lane == 0) dw_partial[small + index] = dot;
    }
}

// out[e] = Σ_b partial[b·len + e], in order of b (deterministic).
extern "C" __global__ void hie_sum_batch(const float* __restrict__ partial,
                                         float* __restrict__ out, int batch, int len) {
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < len; e += gridDim.x * blockDim.x) {
        float sum = 0.0f;
        for (int b = 0; b < batch; ++b) sum += partial[(size_t)b * len + e];
        out[e] = sum;
    }
}

// ---------------------------------------------------------------------------------------------
// Version 2 (plain fp32 FMA; see the header's "Versions"). R, the template parameter, is the
// register width of a row of M: 16 or 32 (entry points `_r16`, `_r32`), any runtime r ≤ R (the
// columns r..R-1 are zero and never kept). One block per sequence, blockDim.x = d rounded up to
// a multiple of 32 (d ≤ 256: thread i owns row i of M, Q, Q̄ and M̄ in registers).

#define HIE_V2_WARPS 8
#define HIE_V2_W_ROWS 32  // rows of W_r staged in shared memory at a time (forward)

// Transposed warp sum of values[0..R) (R a power of two ≤ 32): on return every lane of the
// group of 32/R lanes l / (32/R) holds, in values[0], the warp's sum of value l / (32/R).
// R − 1 + log2(32/R) shuffles instead of 5·R (each level halves the values a lane keeps).
// One level of it: lanes with bit `offset` set keep the upper half, the others the lower half,
// and add their partner's copy; Half is a compile-time constant so every index is (no local
// memory).
template <int Half, int R>
__device__ __forceinline__ void hie_transpose_level(float (&values)[R], int lane) {
    constexpr int offset = Half * ASIF_WARP_SIZE / R;
    const bool upper = (lane & offset) != 0;
#pragma unroll
    for (int index = 0; index < Half; ++index) {
        const float low = values[index];
        const float high = values[index + Half];
        const float other = __shfl_xor_sync(ASIF_FULL_MASK, upper ? low : high, offset);
        values[index] = (upper ? high : low) + other;
    }
    if constexpr (Half > 1) hie_transpose_level<Half / 2, R>(values, lane);
}

template <int R>
__device__ __forceinline__ void hie_warp_transpose_sum(float (&values)[R], int lane) {
    static_assert(R >= 2 && R <= ASIF_WARP_SIZE && (R & (R - 1)) == 0, "R: a power of two ≤ 32");
    hie_transpose_level<R / 2, R>(values, lane);
#pragma unroll
    for (int offset = ASIF_WARP_SIZE / R / 2; offset > 0; offset /= 2) {
        values[0] += __shfl_xor_sync(ASIF_FULL_MASK, values[0], offset);
    }
}

// Each warp's sums of values[0..R) into part[warp·R + k]; the block sum of value k is
// Σ_w part[w·R + k] once the caller's barrier has passed. `values` is consumed.
template <int R>
__device__ __forceinline__ void hie_warp_partials(float (&values)[R], float* part, int lane,
                                                  int warp) {
    hie_warp_transpose_sum<R>(values, lane);
    constexpr int group = ASIF_WARP_SIZE / R;
    if (lane % group == 0) part[warp * R + lane / group] = values[0];
}

template <int R>
__device__ __forceinline__ float hie_part_sum(const float* part, int warps, int k) {
    float sum = 0.0f;
    for (int w = 0; w < warps; ++w) sum += part[w * R + k];
    return sum;
}

// Warp-per-row projection onto the basis q_s (row-major, stride R + 1, rows 0..d-1): lane l
// forms Σ_i row[i] q[i,k] over its rows i ≡ l (mod 32) for every k; after the transposed sum,
// the lanes of group k hold coordinate k (returned).
template <int R>
__device__ __forceinline__ float hie_v2_coordinate(const float* __restrict__ row, const float* q_s,
                                                   int d, int lane) {
    float sums[R];
#pragma unroll
    for (int k = 0; k < R; ++k) sums[k] = 0.0f;
    for (int i = lane; i < d; i += ASIF_WARP_SIZE) {
        const float value = row[i];
        const float* q = q_s + i * (R + 1);
#pragma unroll
        for (int k = 0; k < R; ++k) sums[k] = fmaf(value, q[k], sums[k]);
    }
    hie_warp_transpose_sum<R>(sums, lane);
    return sums[0];
}

// out_row[i] = Σ_k coeff_k q[i,k], coeff_k held by the lanes of group k (every lane calls it).
template <int R>
__device__ __forceinline__ void hie_v2_back_project(float coeff, const float* q_s, int d, int lane,
                                                    float* __restrict__ out_row) {
    constexpr int group = ASIF_WARP_SIZE / R;
    float c[R];
#pragma unroll
    for (int k = 0; k < R; ++k) c[k] = __shfl_sync(ASIF_FULL_MASK, coeff, k * group);
    for (int i = lane; i < d; i += ASIF_WARP_SIZE) {
        const float* q = q_s + i * (R + 1);
        float sum = 0.0f;
#pragma unroll
        for (int k = 0; k < R; ++k) sum = fmaf(c[k], q[k], sum);
        out_row[i] = sum;
    }
}

// Q [d, r] (row-major, global) into q_s (row-major, stride R + 1, columns r..R-1 zero).
template <int R>
__device__ __forceinline__ void hie_v2_load_q(const float* __restrict__ q_b, float* q_s, int d,
                                              int r) {
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
#pragma unroll
        for (int k = 0; k < R; ++k) q_s[i * (R + 1) + k] = k < r ? q_b[i * r + k] : 0.0f;
    }
}

// The shared memory of the v2 (and v3) QR: per-warp partial sums and the pivot row by step
// parity, and each column's reflector (τ, v_p, α, pivot row; pivot −1 when dropped).
template <int R>
struct HieFactorShared {
    float part[2][HIE_V2_WARPS * R];
    float row[2][R];
    float tau[R];
    float vp[R];
    float alpha[R];
    int pivot[R];
};

// Steps 2 to 4 of the v2 and v3 forwards: thread i holds row i of M_b in m (zeros for i ≥ d);
// Householder QR with the rank guard, R written to r_b, and Q formed in place, so m returns
// holding row i of Q (dropped columns zero). Every thread of the block calls it.
template <int R>
__device__ __forceinline__ void hie_v2_factor(float (&m)[R], HieFactorShared<R>& factor,
                                              float* __restrict__ r_b, int i, int lane, int warp,
                                              int warps, int rows, int r, float rank_tolerance) {
    float(*s_part)[HIE_V2_WARPS * R] = factor.part;
    float(*s_row)[R] = factor.row;
    float* s_tau = factor.tau;
    float* s_vp = factor.vp;
    float* s_alpha = factor.alpha;
    int* s_pivot = factor.pivot;
    // 2. Householder with the rank guard (v1's decisions): one block reduction per column gives
    //    every dot product the step needs, s_j = Σ_{i≥p} M[i,k] M[i,j] (j ≥ k), with the pivot
    //    row; then vᵀ M[:,j] = s_j − α M[p,j] for v = M[p:,k] − α e_p. One barrier per column.
    float largest = 0.0f;
    int p = 0;  // pivot row = number of kept columns so far
#pragma unroll
    for (int k = 0; k < R; ++k) {
        if (k < r) {  // uniform
            const int parity = k & 1;
            const float mine = i >= p ? m[k] : 0.0f;
            float products[R];
#pragma unroll
            for (int j = 0; j < R; ++j) products[j] = j >= k ? mine * m[j] : 0.0f;
            hie_warp_partials<R>(products, s_part[parity], lane, warp);
            if (i == p) {
#pragma unroll
                for (int j = 0; j < R; ++j) s_row[parity][j] = m[j];
            }
            __syncthreads();
            // Lane j sums value j over the warps (8 loads), shuffles hand it to every lane.
            const float lane_sum = hie_part_sum<R>(s_part[parity], warps, lane % R);
            float sums[R];
#pragma unroll
            for (int j = 0; j < R; ++j) {
                sums[j] = j >= k ? __shfl_sync(ASIF_FULL_MASK, lane_sum, j) : 0.0f;
            }
            const float norm = sqrtf(sums[k]);
            largest = fmaxf(largest, norm);
            // At most `rows` kept: M = Σ_{t<rows} h_t w_tᵀ has rank ≤ rows (exact, not noise).
            const bool kept = p < rows && norm > rank_tolerance * largest;
            if (kept) {
                const float x_p = s_row[parity][k];
                const float alpha = x_p >= 0.0f ? -norm : norm;
                const float v_p = x_p - alpha;  // |v_p| = |x_p| + norm
                const float tau = 1.0f / (norm * fabsf(v_p));  // 2 / vᵀv
                if (i >= p) {
                    const float v_i = i == p ? v_p : m[k];
#pragma unroll
                    for (int j = k + 1; j < R; ++j) {
                        const float dot = sums[j] - alpha * s_row[parity][j];
                        m[j] -= tau * dot * v_i;
                    }
                }
                if (i == p) m[k] = v_p;  // the reflector stays in column k, rows ≥ p
                if (threadIdx.x == 0) {
                    s_tau[k] = tau;
                    s_vp[k] = v_p;
                    s_alpha[k] = alpha;
                    s_pivot[k] = p;
                }
                ++p;
            } else if (threadIdx.x == 0) {
                s_pivot[k] = -1;
            }
        }
    }
    __syncthreads();  // s_pivot, s_tau, ... visible; every s_part read done

    // 3. R: the pivot row p_j of column j holds R[j, k] (k > j) after step j, α_j on the diagonal.
#pragma unroll
    for (int j = 0; j < R; ++j) {
        if (j < r && s_pivot[j] >= 0 && s_pivot[j] == i) {
#pragma unroll
            for (int k = 0; k < R; ++k) {
                if (k < r) {
                    float value = 0.0f;
                    if (k == j) value = s_alpha[j];
                    else if (k > j && s_pivot[k] >= 0) value = m[k];
                    r_b[j * r + k] = value;
                }
            }
        }
    }
    if (i < r && s_pivot[i] < 0) {
        for (int k = 0; k < r; ++k) r_b[i * r + k] = 0.0f;
    }

    // 4. Q in place (org2r), kept columns from the last one back: Q e_p = H_k (H_later ⋯ e_p).
#pragma unroll
    for (int k = 0; k < R; ++k) {
        if (k >= r || s_pivot[k] < 0) m[k] = 0.0f;
    }
    int step = 0;
#pragma unroll
    for (int k = R - 1; k >= 0; --k) {
        if (k < r && s_pivot[k] >= 0) {  // uniform
            const int pk = s_pivot[k];
            const float tau = s_tau[k];
            const float v_p = s_vp[k];
            const int parity = step++ & 1;
            const float v_i = i >= pk ? m[k] : 0.0f;  // thread pk holds v_p
            float products[R];
#pragma unroll
            for (int j = 0; j < R; ++j) products[j] = j > k ? v_i * m[j] : 0.0f;
            hie_warp_partials<R>(products, s_part[parity], lane, warp);
            __syncthreads();
            const float lane_sum = hie_part_sum<R>(s_part[parity], warps, lane % R);
#pragma unroll
            for (int j = k + 1; j < R; ++j) {
                const float dot = __shfl_sync(ASIF_FULL_MASK, lane_sum, j);
                if (i >= pk) m[j] -= tau * dot * v_i;
            }
            m[k] = i < pk ? 0.0f : (i == pk ? 1.0f - tau * v_p * v_p : -tau * v_p * v_i);
        }
    }
}

template <int R>
__device__ __forceinline__ void hie_forward_v2(const float* __restrict__ h_x,
                                               const float* __restrict__ h_a,
                                               const float* __restrict__ w_r,
                                               const int* __restrict__ lengths,
                                               float* __restrict__ output,
                                               float* __restrict__ q_out,
                                               float* __restrict__ r_out,
                                               float* __restrict__ mask_out, int batch, int n,
                                               int d, int r, int keep_padding,
                                               float rank_tolerance, int stage_x) {
    // Q, row-major, stride R + 1 (for the projection); then, with `stage_x`, the valid rows of
    // H_X (row-major, stride d: thread i reading column i and lane l reading i ≡ l (mod 32) are
    // conflict-free), read once from device memory for both M and C_X.
    ASIF_DYNAMIC_SHARED(float, q_s);
    __shared__ HieFactorShared<R> s_factor;   // the QR's reductions and reflectors
    __shared__ float s_w[HIE_V2_W_ROWS * R];  // rows of W_r

    const int b = blockIdx.x;
    if (b >= batch) return;  // uniform across the block
    const int i = threadIdx.x;  // the row of M this thread owns (zeros when i ≥ d)
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    const int warp = threadIdx.x / ASIF_WARP_SIZE;
    const int warps = blockDim.x / ASIF_WARP_SIZE;
    const int rows = hie_valid_rows(lengths, b, n, keep_padding);
    const float* a_b = h_a + (size_t)b * n * d;
    const float* x_b = h_x + (size_t)b * n * d;
    if (stage_x) {
        float* x_s = q_s + d * (R + 1);
        for (int e = threadIdx.x; e < rows * d; e += blockDim.x) x_s[e] = x_b[e];
        x_b = x_s;  // the first barrier below publishes it
    }

    // 1. Row i of M = H_Xᵀ W_r in registers; W_r staged in shared memory (broadcast reads).
    float m[R];
#pragma unroll
    for (int k = 0; k < R; ++k) m[k] = 0.0f;
    for (int t0 = 0; t0 < rows; t0 += HIE_V2_W_ROWS) {
        const int count = min(HIE_V2_W_ROWS, rows - t0);
        __syncthreads();  // the previous chunk is read
        for (int e = threadIdx.x; e < HIE_V2_W_ROWS * R; e += blockDim.x) {
            const int t = e / R, k = e % R;
            s_w[e] = t < count && k < r ? w_r[(t0 + t) * r + k] : 0.0f;
        }
        __syncthreads();
        if (i < d) {
            for (int t = 0; t < count; ++t) {
                const float x = x_b[(size_t)(t0 + t) * d + i];
#pragma unroll
                for (int k = 0; k < R; ++k) m[k] = fmaf(x, s_w[t * R + k], m[k]);
            }
        }
    }

    // 2 to 4. Householder QR with the rank guard, R out, Q in place: m becomes row i of Q.
    hie_v2_factor<R>(m, s_factor, r_out + (size_t)b * r * r, i, lane, warp, warps, rows, r,
                     rank_tolerance);

    // 5. Q out (global, and shared for the projection).
    if (i < d) {
        float* q_row = q_out + (size_t)b * d * r + (size_t)i * r;
#pragma unroll
        for (int k = 0; k < R; ++k) {
            if (k < r) q_row[k] = m[k];
            q_s[i * (R + 1) + k] = m[k];
        }
    }
    __syncthreads();

    // 6. Coordinates, sign mask, back-projection: a warp per row, the lanes of group k for k.
    constexpr int group = ASIF_WARP_SIZE / R;
    const int k_lane = lane / group;
    float* out_b = output + (size_t)b * n * d;
    float* mask_b = mask_out + (size_t)b * n * r;
    for (int t = warp; t < n; t += warps) {
        float* out_row = out_b + (size_t)t * d;
        if (t >= rows) {
            for (int e = lane; e < d; e += ASIF_WARP_SIZE) out_row[e] = 0.0f;
            if (lane < r) mask_b[t * r + lane] = 0.0f;
            continue;
        }
        const float c_x = hie_v2_coordinate<R>(x_b + (size_t)t * d, q_s, d, lane);
        const float c_a = hie_v2_coordinate<R>(a_b + (size_t)t * d, q_s, d, lane);
        const bool same_sign = c_x * c_a > 0.0f;
        if (lane % group == 0 && k_lane < r) mask_b[t * r + k_lane] = same_sign ? 1.0f : 0.0f;
        hie_v2_back_project<R>(same_sign ? c_a : 0.0f, q_s, d, lane, out_row);
    }
}

template <int R>
__device__ __forceinline__ void hie_backward_q_constant_v2(const float* __restrict__ q,
                                                           const float* __restrict__ mask,
                                                           const float* __restrict__ dy,
                                                           const int* __restrict__ lengths,
                                                           float* __restrict__ dh_a, int batch,
                                                           int n, int d, int r, int keep_padding) {
    ASIF_DYNAMIC_SHARED(float, q_s);  // Q, row-major, stride R + 1
    const int b = blockIdx.x;
    if (b >= batch) return;
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    const int warp = threadIdx.x / ASIF_WARP_SIZE;
    const int warps = blockDim.x / ASIF_WARP_SIZE;
    const int rows = hie_valid_rows(lengths, b, n, keep_padding);
    hie_v2_load_q<R>(q + (size_t)b * d * r, q_s, d, r);
    __syncthreads();

    constexpr int group = ASIF_WARP_SIZE / R;
    const int k_lane = lane / group;
    const float* dy_b = dy + (size_t)b * n * d;
    const float* mask_b = mask + (size_t)b * n * r;
    float* dh_a_b = dh_a + (size_t)b * n * d;
    for (int t = warp; t < n; t += warps) {
        float* out_row = dh_a_b + (size_t)t * d;
        if (t >= rows) {
            for (int e = lane; e < d; e += ASIF_WARP_SIZE) out_row[e] = 0.0f;
            continue;
        }
        float g = hie_v2_coordinate<R>(dy_b + (size_t)t * d, q_s, d, lane);
        g *= k_lane < r ? mask_b[t * r + k_lane] : 0.0f;
        hie_v2_back_project<R>(g, q_s, d, lane, out_row);
    }
}

// Steps 3 and 4 of the v2 and v3 full backwards, for thread i's row: Q̄ of dropped columns
// (R_kk = 0) set to 0, N = −Q̄ᵀQ (lower triangle, one block reduction per row of N, into s_n),
// then rhs = Q̄ + Q copyltu(N) and M̄ Rᵀ = rhs by back substitution over the kept columns into
// m_bar. `s_r` holds R (zero past r), `s_n` zeros on entry. Every thread of the block calls it.
template <int R>
__device__ __forceinline__ void hie_v2_solve(float (&q_bar)[R], const float (&q_row)[R],
                                             float (&m_bar)[R],
                                             float (*s_part)[HIE_V2_WARPS * R], float* s_n,
                                             const float* s_r, int i, int lane, int warp,
                                             int warps, int r) {
#pragma unroll
    for (int k = 0; k < R; ++k) {
        if (s_r[k * R + k] == 0.0f) q_bar[k] = 0.0f;  // kept columns only (R_kk ≠ 0)
    }
    // 3. N = −Q̄ᵀQ, lower triangle: one block reduction per row j of N.
#pragma unroll
    for (int j = 0; j < R; ++j) {
        if (j < r) {  // uniform
            const int parity = j & 1;
            float products[R];
#pragma unroll
            for (int l = 0; l < R; ++l) products[l] = l <= j ? q_bar[j] * q_row[l] : 0.0f;
            hie_warp_partials<R>(products, s_part[parity], lane, warp);
            __syncthreads();
            if (i <= j) s_n[j * R + i] = -hie_part_sum<R>(s_part[parity], warps, i);
        }
    }
    __syncthreads();

    // 4. Row i: rhs = Q̄ + Q copyltu(N), then M̄ Rᵀ = rhs by back substitution on kept columns.
#pragma unroll
    for (int k = 0; k < R; ++k) {
        float sum = q_bar[k];
#pragma unroll
        for (int j = 0; j < R; ++j) {
            const float sym = j >= k ? s_n[j * R + k] : s_n[k * R + j];
            sum += q_row[j] * sym;
        }
        m_bar[k] = sum;
    }
#pragma unroll
    for (int j = R - 1; j >= 0; --j) {
        const float diagonal = s_r[j * R + j];
        float value = 0.0f;
        if (diagonal != 0.0f) {
            value = m_bar[j];
#pragma unroll
            for (int k = j + 1; k < R; ++k) value -= m_bar[k] * s_r[j * R + k];
            value /= diagonal;
        }
        m_bar[j] = value;
    }
}

// Full QR backward, v2: c̄ = φ⊙(dh Q) and φ⊙C_A live in shared memory a chunk of rows at a time,
// Q̄, the right-hand side and M̄ in registers (thread i, row i); N = −Q̄ᵀQ by one block reduction
// per column; M̄ replaces Q in shared memory for dW_r. No global scratch: `dw_partial` [B, n, r]
// is this sequence's share of dW_r (summed over b in order by hie_sum_batch).
template <int R>
__device__ __forceinline__ void hie_backward_full_v2(
    const float* __restrict__ h_x, const float* __restrict__ h_a, const float* __restrict__ w_r,
    const float* __restrict__ q, const float* __restrict__ r_mat, const float* __restrict__ mask,
    const float* __restrict__ dy, const int* __restrict__ lengths, float* __restrict__ dh_a,
    float* __restrict__ dh_x, float* __restrict__ dw_partial, int batch, int n, int d, int r,
    int keep_padding) {
    ASIF_DYNAMIC_SHARED(float, q_s);  // Q, then M̄; row-major, stride R + 1
    constexpr int chunk = 256 / R;    // rows of c̄ and φ⊙C_A held at a time
    __shared__ float s_filtered[chunk * R];
    __shared__ float s_c_bar[chunk * R];
    __shared__ float s_part[2][HIE_V2_WARPS * R];
    __shared__ float s_n[R * R];  // lower triangle of N = −Q̄ᵀQ, zeros elsewhere
    __shared__ float s_r[R * R];  // R, zero past r
    const int b = blockIdx.x;
    if (b >= batch) return;
    const int i = threadIdx.x;
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    const int warp = threadIdx.x / ASIF_WARP_SIZE;
    const int warps = blockDim.x / ASIF_WARP_SIZE;
    const int rows = hie_valid_rows(lengths, b, n, keep_padding);
    const size_t seq = (size_t)b * n * d;
    const size_t small = (size_t)b * n * r;
    hie_v2_load_q<R>(q + (size_t)b * d * r, q_s, d, r);
    for (int index = threadIdx.x; index < R * R; index += blockDim.x) {
        const int j = index / R, k = index % R;
        s_r[index] = j < r && k < r ? r_mat[(size_t)b * r * r + j * r + k] : 0.0f;
        s_n[index] = 0.0f;
    }
    __syncthreads();

    constexpr int group = ASIF_WARP_SIZE / R;
    const int k_lane = lane / group;
    float q_bar[R];
#pragma unroll
    for (int k = 0; k < R; ++k) q_bar[k] = 0.0f;
    for (int t0 = 0; t0 < n; t0 += chunk) {
        // 1. Per row: c̄ = φ ⊙ (dh Q), φ ⊙ C_A into shared, and dH_A = c̄ Qᵀ; padding rows zero.
        for (int tt = warp; tt < chunk && t0 + tt < n; tt += warps) {
            const int t = t0 + tt;
            float* dh_a_row = dh_a + seq + (size_t)t * d;
            if (t >= rows) {
                for (int e = lane; e < d; e += ASIF_WARP_SIZE) dh_a_row[e] = 0.0f;
                continue;
            }
            const float phi = k_lane < r ? mask[small + t * r + k_lane] : 0.0f;
            const float g = phi * hie_v2_coordinate<R>(dy + seq + (size_t)t * d, q_s, d, lane);
            const float c_a = phi * hie_v2_coordinate<R>(h_a + seq + (size_t)t * d, q_s, d, lane);
            if (lane % group == 0) {
                s_c_bar[tt * R + k_lane] = g;
                s_filtered[tt * R + k_lane] = c_a;
            }
            hie_v2_back_project<R>(g, q_s, d, lane, dh_a_row);
        }
        __syncthreads();
        // 2. Q̄[i,k] += Σ_t dh[t,i] (φ⊙C_A)[t,k] + H_A[t,i] c̄[t,k] over this chunk's valid rows.
        const int valid = min(chunk, rows - t0);
        if (i < d) {
            for (int tt = 0; tt < valid; ++tt) {
                const float dh = dy[seq + (size_t)(t0 + tt) * d + i];
                const float a = h_a[seq + (size_t)(t0 + tt) * d + i];
#pragma unroll
                for (int k = 0; k < R; ++k) {
                    q_bar[k] += dh * s_filtered[tt * R + k] + a * s_c_bar[tt * R + k];
                }
            }
        }
        __syncthreads();  // the chunk is read before the next one overwrites it
    }
    float q_row[R];
#pragma unroll
    for (int k = 0; k < R; ++k) {
        q_row[k] = i < d ? q_s[i * (R + 1) + k] : 0.0f;
    }

    // 3 and 4. N = −Q̄ᵀQ, the right-hand side, and M̄ by back substitution.
    float m_bar[R];
    hie_v2_solve<R>(q_bar, q_row, m_bar, s_part, s_n, s_r, i, lane, warp, warps, r);
    if (i < d) {
#pragma unroll
        for (int k = 0; k < R; ++k) q_s[i * (R + 1) + k] = m_bar[k];  // own row only
    }
    __syncthreads();

    // 5. dH_X = W_r M̄ᵀ on valid rows (zero elsewhere), thread i for column i; dW_r share = H_X M̄,
    //    a warp per row.
    if (i < d) {
        for (int t = 0; t < n; ++t) {
            float sum = 0.0f;
            if (t < rows) {
#pragma unroll
                for (int k = 0; k < R; ++k) {
                    if (k < r) sum += w_r[t * r + k] * m_bar[k];
                }
            }
            dh_x[seq + (size_t)t * d + i] = sum;
        }
    }
    for (int t = warp; t < n; t += warps) {
        float dot = 0.0f;
        if (t < rows) dot = hie_v2_coordinate<R>(h_x + seq + (size_t)t * d, q_s, d, lane);
        if (lane % group == 0 && k_lane < r) dw_partial[small + t * r + k_lane] = dot;
    }
}

// Entry points of version 2, one per register width R (the launcher picks the smallest R ≥ r).
extern "C" __global__ void hie_forward_v2_r16(const float* __restrict__ h_x,
                                              const float* __restrict__ h_a,
                                              const float* __restrict__ w_r,
                                              const int* __restrict__ lengths,
                                              float* __restrict__ output,
                                              float* __restrict__ q_out,
                                              float* __restrict__ r_out,
                                              float* __restrict__ mask_out, int batch, int n,
                                              int d, int r, int keep_padding,
                                              float rank_tolerance, int stage_x) {
    hie_forward_v2<16>(h_x, h_a, w_r, lengths, output, q_out, r_out, mask_out, batch, n, d, r,
                       keep_padding, rank_tolerance, stage_x);
}

extern "C" __global__ void hie_forward_v2_r32(const float* __restrict__ h_x,
                                              const float* __restrict__ h_a,
                                              const float* __restrict__ w_r,
                                              const int* __restrict__ lengths,
                                              float* __restrict__ output,
                                              float* __restrict__ q_out,
                                              float* __restrict__ r_out,
                                              float* __restrict__ mask_out, int batch, int n,
                                              int d, int r, int keep_padding,
                                              float rank_tolerance, int stage_x) {
    hie_forward_v2<32>(h_x, h_a, w_r, lengths, output, q_out, r_out, mask_out, batch, n, d, r,
                       keep_padding, rank_tolerance, stage_x);
}

extern "C" __global__ void hie_backward_q_constant_v2_r16(const float* __restrict__ q,
                                                          const float* __restrict__ mask,
                                                          const float* __restrict__ dy,
                                                          const int* __restrict__ lengths,
                                                          float* __restrict__ dh_a, int batch,
                                                          int n, int d, int r,
                                                          int keep_padding) {
    hie_backward_q_constant_v2<16>(q, mask, dy, lengths, dh_a, batch, n, d, r, keep_padding);
}

extern "C" __global__ void hie_backward_q_constant_v2_r32(const float* __restrict__ q,
                                                          const float* __restrict__ mask,
                                                          const float* __restrict__ dy,
                                                          const int* __restrict__ lengths,
                                                          float* __restrict__ dh_a, int batch,
                                                          int n, int d, int r,
                                                          int keep_padding) {
    hie_backward_q_constant_v2<32>(q, mask, dy, lengths, dh_a, batch, n, d, r, keep_padding);
}

extern "C" __global__ void hie_backward_full_v2_r16(
    const float* __restrict__ h_x, const float* __restrict__ h_a, const float* __restrict__ w_r,
    const float* __restrict__ q, const float* __restrict__ r_mat, const float* __restrict__ mask,
    const float* __restrict__ dy, const int* __restrict__ lengths, float* __restrict__ dh_a,
    float* __restrict__ dh_x, float* __restrict__ dw_partial, int batch, int n, int d, int r,
    int keep_padding) {
    hie_backward_full_v2<16>(h_x, h_a, w_r, q, r_mat, mask, dy, lengths, dh_a, dh_x, dw_partial,
                             batch, n, d, r, keep_padding);
}

extern "C" __global__ void hie_backward_full_v2_r32(
    const float* __restrict__ h_x, const float* __restrict__ h_a, const float* __restrict__ w_r,
    const float* __restrict__ q, const float* __restrict__ r_mat, const float* __restrict__ mask,
    const float* __restrict__ dy, const int* __restrict__ lengths, float* __restrict__ dh_a,
    float* __restrict__ dh_x, float* __restrict__ dw_partial, int batch, int n, int d, int r,
    int keep_padding) {
    hie_backward_full_v2<32>(h_x, h_a, w_r, q, r_mat, mask, dy, lengths, dh_a, dh_x, dw_partial,
                             batch, n, d, r, keep_padding);
}

// ---------------------------------------------------------------------------------------------
// Version 3 (issue 19; see the header's "Versions"): v2's QR (hie_v2_factor) and solve
// (hie_v2_solve), every GEMM-shaped product on m16n8k8 tensor-core mma by 3xTF32
// (mma_m16n8k8_3xtf32: fp32-level accuracy, which the sign test φ needs). Tiles are 16 rows by
// 8 columns by 8 k; rows, columns and k are padded by zeros (guarded loads), and tiles at or
// beyond L_b are skipped. One block per sequence, blockDim.x = d rounded up to 32 (d ≤ 256), a
// warp per output tile. Q (and M, Q̄, M̄) in dynamic shared memory, row-major, stride R + 4.
#include "mma.cuh"

#define HIE_V3_PAD 4  // Q's row stride is R + HIE_V3_PAD floats

// Row stride of the staged H_X: d rounded up to 32, plus 4 (A fragments of rows g, columns t
// fall in distinct banks).
__device__ __forceinline__ int hie_v3_x_stride(int d) { return (d + 31) / 32 * 32 + 4; }

// A fragment (16 × 8) at (row0, col0) of the row-major base[row · stride + col]; zero at
// row ≥ rows or col ≥ cols (the tiles' padding).
__device__ __forceinline__ void hie_v3_load_a(float a[4], const float* base, int stride, int row0,
                                              int col0, int rows, int cols) {
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        const int row = row0 + mma_tf32_a_row(lane, e), col = col0 + mma_tf32_a_col(lane, e);
        a[e] = row < rows && col < cols ? base[(size_t)row * stride + col] : 0.0f;
    }
}

// A fragment of the transpose: A[m][k] = base[k · stride + m]; zero at m ≥ ms or k ≥ ks.
__device__ __forceinline__ void hie_v3_load_a_transposed(float a[4], const float* base, int stride,
                                                         int m0, int k0, int ms, int ks) {
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        const int m = m0 + mma_tf32_a_row(lane, e), k = k0 + mma_tf32_a_col(lane, e);
        a[e] = m < ms && k < ks ? base[(size_t)k * stride + m] : 0.0f;
    }
}

// B fragment (8 × 8): B[k][n] = base[k · stride + n]; zero at k ≥ ks or n ≥ ns.
__device__ __forceinline__ void hie_v3_load_b(float b[2], const float* base, int stride, int k0,
                                              int n0, int ks, int ns) {
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
#pragma unroll
    for (int e = 0; e < 2; ++e) {
        const int k = k0 + mma_tf32_b_row(lane, e), col = n0 + mma_tf32_b_col(lane, e);
        b[e] = k < ks && col < ns ? base[(size_t)k * stride + col] : 0.0f;
    }
}

// B fragment of the transpose: B[k][n] = base[n · stride + k]; zero at k ≥ ks or n ≥ ns.
__device__ __forceinline__ void hie_v3_load_b_transposed(float b[2], const float* base, int stride,
                                                         int k0, int n0, int ks, int ns) {
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
#pragma unroll
    for (int e = 0; e < 2; ++e) {
        const int k = k0 + mma_tf32_b_row(lane, e), col = n0 + mma_tf32_b_col(lane, e);
        b[e] = k < ks && col < ns ? base[(size_t)col * stride + k] : 0.0f;
    }
}

// Coordinates in the basis Q (q_s: d rows, stride R + 4), one 16 × 8 tile: c_1 = X_1[row0 ..
// row0 + 16, :] Q[:, k0 .. k0 + 8] and, when rows_2 is not null (uniform), c_2 the same for X_2
// (X row-major with its stride; rows ≥ rows are zero). The B fragment serves both products.
template <int R>
__device__ __forceinline__ void hie_v3_coordinate_tiles(float c_1[4], const float* rows_1,
                                                        int stride_1, float c_2[4],
                                                        const float* rows_2, int stride_2,
                                                        int row0, int rows, const float* q_s,
                                                        int d, int k0) {
#pragma unroll
    for (int e = 0; e < 4; ++e) c_1[e] = c_2[e] = 0.0f;
    for (int i0 = 0; i0 < d; i0 += 8) {
        float a[4], q[2];
        hie_v3_load_b(q, q_s, R + HIE_V3_PAD, i0, k0, d, R);
        hie_v3_load_a(a, rows_1, stride_1, row0, i0, rows, d);
        mma_m16n8k8_3xtf32(c_1, a, q, c_1);
        if (rows_2 != nullptr) {
            hie_v3_load_a(a, rows_2, stride_2, row0, i0, rows, d);
            mma_m16n8k8_3xtf32(c_2, a, q, c_2);
        }
    }
}

// Back-projection, one warp's 16 × 32 output tile: out[t][i] = Σ_{k<r} G[t][k] Q[i][k] for the
// rows out_row0 .. +16 (below n) and columns 32 · group .. +32 (below d). G is row-major
// (stride, rows g_row0 .. +16, zero at rows ≥ g_rows), its columns k ≥ r are skipped (padded to
// 8: the k steps stop at r).
template <int R>
__device__ __forceinline__ void hie_v3_back_project_tile(const float* g, int g_stride, int g_row0,
                                                         int g_rows, int r, const float* q_s,
                                                         int d, int group,
                                                         float* __restrict__ out, int out_row0,
                                                         int n) {
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    float acc[4][4];
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
    for (int k0 = 0; k0 < r; k0 += 8) {
        float a[4];
        hie_v3_load_a(a, g, g_stride, g_row0, k0, g_rows, r);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int i0 = 32 * group + 8 * j;
            if (i0 < d) {  // uniform across the warp
                float q[2];
                hie_v3_load_b_transposed(q, q_s, R + HIE_V3_PAD, k0, i0, r, d);
                mma_m16n8k8_3xtf32(acc[j], a, q, acc[j]);
            }
        }
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int t = out_row0 + mma_c_row(lane, e);
            const int column = 32 * group + 8 * j + mma_c_col(lane, e);
            if (t < n && column < d) out[(size_t)t * d + column] = acc[j][e];
        }
    }
}

// Rows covered by the row tiles of the first `rows` rows (⌈rows/16⌉·16, at most n); rows from
// there to n are written as zeros apart from the tiles.
__device__ __forceinline__ int hie_v3_covered(int rows, int n) { return min(n, (rows + 15) / 16 * 16); }

// Q [d, r] (row-major, global) into q_s (row-major, stride R + 4, columns r..R-1 zero).
template <int R>
__device__ __forceinline__ void hie_v3_load_q(const float* __restrict__ q_b, float* q_s, int d,
                                              int r) {
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
#pragma unroll
        for (int k = 0; k < R; ++k) q_s[i * (R + HIE_V3_PAD) + k] = k < r ? q_b[i * r + k] : 0.0f;
    }
}

template <int R>
__device__ __forceinline__ void hie_forward_v3(const float* __restrict__ h_x,
                                               const float* __restrict__ h_a,
                                               const float* __restrict__ w_r,
                                               const int* __restrict__ lengths,
                                               float* __restrict__ output,
                                               float* __restrict__ q_out,
                                               float* __restrict__ r_out,
                                               float* __restrict__ mask_out, int batch, int n,
                                               int d, int r, int keep_padding,
                                               float rank_tolerance, int stage_x) {
    constexpr int stride = R + HIE_V3_PAD;
    constexpr int chunk = 1024 / R;  // rows of φ⊙C_A held at a time: 64 (R = 16), 32 (R = 32)
    constexpr int column_tiles = R / 8;
    // M, then Q: d rows of `stride`; then, with `stage_x`, the valid rows of H_X (stride
    // hie_v3_x_stride(d)), read once from device memory for both M and C_X.
    ASIF_DYNAMIC_SHARED(float, q_s);
    __shared__ HieFactorShared<R> s_factor;  // the QR's reductions and reflectors
    __shared__ float s_g[chunk * stride];    // φ ⊙ C_A of the chunk's rows

    const int b = blockIdx.x;
    if (b >= batch) return;  // uniform across the block
    const int i = threadIdx.x;  // the row of M this thread owns in the QR (zeros when i ≥ d)
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    const int warp = threadIdx.x / ASIF_WARP_SIZE;
    const int warps = blockDim.x / ASIF_WARP_SIZE;
    const int rows = hie_valid_rows(lengths, b, n, keep_padding);
    const float* a_b = h_a + (size_t)b * n * d;
    const float* x_b = h_x + (size_t)b * n * d;
    int x_stride = d;
    if (stage_x) {
        float* x_s = q_s + d * stride;
        x_stride = hie_v3_x_stride(d);
        for (int e = threadIdx.x; e < rows * d; e += blockDim.x) {
            const int t = e / d;
            x_s[t * x_stride + (e - t * d)] = x_b[e];
        }
        x_b = x_s;
    }
    __syncthreads();

    // 1. M = H_Xᵀ W_r: a warp per 16 × 8 tile of M (rows i, columns k), ⌈L_b/8⌉ k steps over t.
    const int m_tiles = (d + 15) / 16;
    for (int task = warp; task < m_tiles * column_tiles; task += warps) {
        const int i0 = 16 * (task / column_tiles), k0 = 8 * (task % column_tiles);
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int t0 = 0; t0 < rows; t0 += 8) {
            float x[4], w[2];
            hie_v3_load_a_transposed(x, x_b, x_stride, i0, t0, d, rows);  // A[i][t] = H_X[t][i]
            hie_v3_load_b(w, w_r, r, t0, k0, rows, r);
            mma_m16n8k8_3xtf32(acc, x, w, acc);
        }
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int row = i0 + mma_c_row(lane, e);
            if (row < d) q_s[row * stride + k0 + mma_c_col(lane, e)] = acc[e];
        }
    }
    __syncthreads();
    float m[R];
#pragma unroll
    for (int k = 0; k < R; ++k) m[k] = i < d ? q_s[i * stride + k] : 0.0f;

    // 2 to 4. Householder QR with the rank guard, R out, Q in place: m becomes row i of Q (v2's).
    hie_v2_factor<R>(m, s_factor, r_out + (size_t)b * r * r, i, lane, warp, warps, rows, r,
                     rank_tolerance);

    // 5. Q out (global, and shared for the products); own row only, the reads of M are done.
    if (i < d) {
        float* q_row = q_out + (size_t)b * d * r + (size_t)i * r;
#pragma unroll
        for (int k = 0; k < R; ++k) {
            if (k < r) q_row[k] = m[k];
            q_s[i * stride + k] = m[k];
        }
    }
    __syncthreads();

    // 6. Per chunk of rows: C_X and C_A tiles, φ and φ ⊙ C_A (same fragment layout for both),
    //    then h_A* = (φ ⊙ C_A) Qᵀ, a warp per 16 × 32 output tile.
    float* out_b = output + (size_t)b * n * d;
    float* mask_b = mask_out + (size_t)b * n * r;
    const int groups = (d + 31) / 32;
    for (int t0 = 0; t0 < rows; t0 += chunk) {
        const int tiles = min(chunk, rows - t0 + 15) / 16;  // row tiles with valid rows
        for (int task = warp; task < tiles * column_tiles; task += warps) {
            const int row0 = 16 * (task / column_tiles), k0 = 8 * (task % column_tiles);
            float c_x[4], c_a[4];
            hie_v3_coordinate_tiles<R>(c_x, x_b + (size_t)t0 * x_stride, x_stride, c_a,
                                       a_b + (size_t)t0 * d, d, row0, rows - t0, q_s, d, k0);
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int local = row0 + mma_c_row(lane, e), k = k0 + mma_c_col(lane, e);
                const bool same_sign = c_x[e] * c_a[e] > 0.0f;
                s_g[local * stride + k] = same_sign ? c_a[e] : 0.0f;
                const int t = t0 + local;
                if (t < n && k < r) mask_b[t * r + k] = same_sign ? 1.0f : 0.0f;
            }
        }
        __syncthreads();
        for (int task = warp; task < tiles * groups; task += warps) {
            const int tile = task / groups;
            hie_v3_back_project_tile<R>(s_g, stride, 16 * tile, chunk, r, q_s, d, task % groups,
                                        out_b, t0 + 16 * tile, n);
        }
        __syncthreads();  // s_g is read before the next chunk overwrites it
    }
    for (int t = hie_v3_covered(rows, n) + warp; t < n; t += warps) {
        for (int e = lane; e < d; e += ASIF_WARP_SIZE) out_b[(size_t)t * d + e] = 0.0f;
        if (lane < r) mask_b[t * r + lane] = 0.0f;
    }
}

template <int R>
__device__ __forceinline__ void hie_backward_q_constant_v3(const float* __restrict__ q,
                                                           const float* __restrict__ mask,
                                                           const float* __restrict__ dy,
                                                           const int* __restrict__ lengths,
                                                           float* __restrict__ dh_a, int batch,
                                                           int n, int d, int r, int keep_padding) {
    constexpr int stride = R + HIE_V3_PAD;
    constexpr int chunk = 1024 / R;
    constexpr int column_tiles = R / 8;
    ASIF_DYNAMIC_SHARED(float, q_s);  // Q: d rows of `stride`
    __shared__ float s_g[chunk * stride];  // φ ⊙ (dh Q) of the chunk's rows
    const int b = blockIdx.x;
    if (b >= batch) return;
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    const int warp = threadIdx.x / ASIF_WARP_SIZE;
    const int warps = blockDim.x / ASIF_WARP_SIZE;
    const int rows = hie_valid_rows(lengths, b, n, keep_padding);
    hie_v3_load_q<R>(q + (size_t)b * d * r, q_s, d, r);
    __syncthreads();

    const float* dy_b = dy + (size_t)b * n * d;
    const float* mask_b = mask + (size_t)b * n * r;
    float* dh_a_b = dh_a + (size_t)b * n * d;
    const int groups = (d + 31) / 32;
    for (int t0 = 0; t0 < rows; t0 += chunk) {
        const int tiles = min(chunk, rows - t0 + 15) / 16;
        for (int task = warp; task < tiles * column_tiles; task += warps) {
            const int row0 = 16 * (task / column_tiles), k0 = 8 * (task % column_tiles);
            float g[4], unused[4];
            hie_v3_coordinate_tiles<R>(g, dy_b + (size_t)t0 * d, d, unused, nullptr, 0, row0,
                                       rows - t0, q_s, d, k0);
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int local = row0 + mma_c_row(lane, e), k = k0 + mma_c_col(lane, e);
                const int t = t0 + local;
                const float phi = t < rows && k < r ? mask_b[t * r + k] : 0.0f;
                s_g[local * stride + k] = phi * g[e];
            }
        }
        __syncthreads();
        for (int task = warp; task < tiles * groups; task += warps) {
            const int tile = task / groups;
            hie_v3_back_project_tile<R>(s_g, stride, 16 * tile, chunk, r, q_s, d, task % groups,
                                        dh_a_b, t0 + 16 * tile, n);
        }
        __syncthreads();
    }
    for (int t = hie_v3_covered(rows, n) + warp; t < n; t += warps) {
        for (int e = lane; e < d; e += ASIF_WARP_SIZE) dh_a_b[(size_t)t * d + e] = 0.0f;
    }
}

// Full QR backward, v3: c̄ = φ⊙(dh Q) and φ⊙C_A by coordinate tiles into shared memory a chunk
// of rows at a time, dH_A by back-projection tiles, Q̄ += dhᵀ(φ⊙C_A) + H_Aᵀ c̄ as 16 × 8 tiles
// accumulated in registers over the chunks (a warp holds two row tiles of Q̄); then v2's solve
// (N, right-hand side, back substitution) per row, and dH_X = W_r M̄ᵀ, dW_r share = H_X M̄ as
// tiles again.
template <int R>
__device__ __forceinline__ void hie_backward_full_v3(
    const float* __restrict__ h_x, const float* __restrict__ h_a, const float* __restrict__ w_r,
    const float* __restrict__ q, const float* __restrict__ r_mat, const float* __restrict__ mask,
    const float* __restrict__ dy, const int* __restrict__ lengths, float* __restrict__ dh_a,
    float* __restrict__ dh_x, float* __restrict__ dw_partial, int batch, int n, int d, int r,
    int keep_padding) {
    constexpr int stride = R + HIE_V3_PAD;
    constexpr int chunk = 512 / R;  // rows of c̄ and φ⊙C_A held at a time: 32 (R = 16), 16
    constexpr int column_tiles = R / 8;
    // c̄ and φ⊙C_A during the chunks; N and R afterwards (the total stays under 48 KB at R = 32).
    constexpr int scratch = 2 * chunk * stride > 2 * R * R ? 2 * chunk * stride : 2 * R * R;
    ASIF_DYNAMIC_SHARED(float, q_s);  // Q, then Q̄, then M̄: d rows of `stride`
    __shared__ float s_part[2][HIE_V2_WARPS * R];
    __shared__ float s_scratch[scratch];
    float* s_c_bar = s_scratch;
    float* s_filtered = s_scratch + chunk * stride;
    const int b = blockIdx.x;
    if (b >= batch) return;
    const int i = threadIdx.x;
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    const int warp = threadIdx.x / ASIF_WARP_SIZE;
    const int warps = blockDim.x / ASIF_WARP_SIZE;
    const int rows = hie_valid_rows(lengths, b, n, keep_padding);
    const size_t seq = (size_t)b * n * d;
    const size_t small = (size_t)b * n * r;
    const float* dy_b = dy + seq;
    const float* h_a_b = h_a + seq;
    const float* h_x_b = h_x + seq;
    hie_v3_load_q<R>(q + (size_t)b * d * r, q_s, d, r);
    __syncthreads();

    // Q̄ tiles of this warp: rows 16 · (warp + slot · warps), all R / 8 column tiles.
    float q_bar_tiles[2][column_tiles][4];
#pragma unroll
    for (int slot = 0; slot < 2; ++slot) {
#pragma unroll
        for (int j = 0; j < column_tiles; ++j) {
            q_bar_tiles[slot][j][0] = q_bar_tiles[slot][j][1] = 0.0f;
            q_bar_tiles[slot][j][2] = q_bar_tiles[slot][j][3] = 0.0f;
        }
    }
    const int groups = (d + 31) / 32;
    for (int t0 = 0; t0 < rows; t0 += chunk) {
        const int tiles = min(chunk, rows - t0 + 15) / 16;
        const int valid = min(chunk, rows - t0);
        // 1. c̄ = φ ⊙ (dh Q) and φ ⊙ C_A into shared memory.
        for (int task = warp; task < tiles * column_tiles; task += warps) {
            const int row0 = 16 * (task / column_tiles), k0 = 8 * (task % column_tiles);
            float g[4], c_a[4];
            hie_v3_coordinate_tiles<R>(g, dy_b + (size_t)t0 * d, d, c_a, h_a_b + (size_t)t0 * d,
                                       d, row0, rows - t0, q_s, d, k0);
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int local = row0 + mma_c_row(lane, e), k = k0 + mma_c_col(lane, e);
                const int t = t0 + local;
                const float phi = t < rows && k < r ? mask[small + t * r + k] : 0.0f;
                s_c_bar[local * stride + k] = phi * g[e];
                s_filtered[local * stride + k] = phi * c_a[e];
            }
        }
        __syncthreads();
        // 2. dH_A = c̄ Qᵀ; Q̄ += dhᵀ (φ⊙C_A) + H_Aᵀ c̄ over the chunk's valid rows (k = t).
        for (int task = warp; task < tiles * groups; task += warps) {
            const int tile = task / groups;
            hie_v3_back_project_tile<R>(s_c_bar, stride, 16 * tile, chunk, r, q_s, d,
                                        task % groups, dh_a + seq, t0 + 16 * tile, n);
        }
#pragma unroll
        for (int slot = 0; slot < 2; ++slot) {
            const int i0 = 16 * (warp + slot * warps);
            if (i0 < d) {  // uniform across the warp
                for (int k0 = 0; k0 < valid; k0 += 8) {
                    float a_dy[4], a_h[4];
                    hie_v3_load_a_transposed(a_dy, dy_b + (size_t)t0 * d, d, i0, k0, d, valid);
                    hie_v3_load_a_transposed(a_h, h_a_b + (size_t)t0 * d, d, i0, k0, d, valid);
#pragma unroll
                    for (int j = 0; j < column_tiles; ++j) {
                        float f[2], c[2];
                        hie_v3_load_b(f, s_filtered, stride, k0, 8 * j, valid, R);
                        hie_v3_load_b(c, s_c_bar, stride, k0, 8 * j, valid, R);
                        mma_m16n8k8_3xtf32(q_bar_tiles[slot][j], a_dy, f, q_bar_tiles[slot][j]);
                        mma_m16n8k8_3xtf32(q_bar_tiles[slot][j], a_h, c, q_bar_tiles[slot][j]);
                    }
                }
            }
        }
        __syncthreads();  // the chunk is read before the next one overwrites it
    }
    for (int t = hie_v3_covered(rows, n) + warp; t < n; t += warps) {
        for (int e = lane; e < d; e += ASIF_WARP_SIZE) dh_a[seq + (size_t)t * d + e] = 0.0f;
    }

    // 3. Q̄ from the tiles to thread i's row (through q_s, after every thread has its row of Q),
    //    R and a zero N into the scratch (c̄ and φ⊙C_A are read: the barrier above).
    float q_row[R];
#pragma unroll
    for (int k = 0; k < R; ++k) q_row[k] = i < d ? q_s[i * stride + k] : 0.0f;
    __syncthreads();
#pragma unroll
    for (int slot = 0; slot < 2; ++slot) {
        const int i0 = 16 * (warp + slot * warps);
        if (i0 < d) {
#pragma unroll
            for (int j = 0; j < column_tiles; ++j) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int row = i0 + mma_c_row(lane, e);
                    if (row < d) q_s[row * stride + 8 * j + mma_c_col(lane, e)] = q_bar_tiles[slot][j][e];
                }
            }
        }
    }
    float* s_n = s_scratch;
    float* s_r = s_scratch + R * R;
    for (int index = threadIdx.x; index < R * R; index += blockDim.x) {
        const int j = index / R, k = index % R;
        s_r[index] = j < r && k < r ? r_mat[(size_t)b * r * r + j * r + k] : 0.0f;
        s_n[index] = 0.0f;
    }
    __syncthreads();
    float q_bar[R];
#pragma unroll
    for (int k = 0; k < R; ++k) q_bar[k] = i < d ? q_s[i * stride + k] : 0.0f;

    // 4. N, the right-hand side and M̄ (v2's), M̄ into q_s (own row; the solve's barriers order it
    //    after every thread's read of Q̄).
    float m_bar[R];
    hie_v2_solve<R>(q_bar, q_row, m_bar, s_part, s_n, s_r, i, lane, warp, warps, r);
    if (i < d) {
#pragma unroll
        for (int k = 0; k < R; ++k) q_s[i * stride + k] = m_bar[k];
    }
    __syncthreads();

    // 5. dH_X = W_r M̄ᵀ (back-projection tiles with W_r as the coefficients, rows ≥ L_b zero);
    //    dW_r share = H_X M̄ (coordinate tiles in the basis M̄).
    const int tiles = (rows + 15) / 16;
    for (int task = warp; task < tiles * groups; task += warps) {
        const int tile = task / groups;
        hie_v3_back_project_tile<R>(w_r, r, 16 * tile, rows, r, q_s, d, task % groups, dh_x + seq,
                                    16 * tile, n);
    }
    for (int task = warp; task < tiles * column_tiles; task += warps) {
        const int row0 = 16 * (task / column_tiles), k0 = 8 * (task % column_tiles);
        float share[4], unused[4];
        hie_v3_coordinate_tiles<R>(share, h_x_b, d, unused, nullptr, 0, row0, rows, q_s, d, k0);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int t = row0 + mma_c_row(lane, e), k = k0 + mma_c_col(lane, e);
            if (t < n && k < r) dw_partial[small + t * r + k] = share[e];
        }
    }
    for (int t = hie_v3_covered(rows, n) + warp; t < n; t += warps) {
        for (int e = lane; e < d; e += ASIF_WARP_SIZE) dh_x[seq + (size_t)t * d + e] = 0.0f;
        if (lane < r) dw_partial[small + t * r + lane] = 0.0f;
    }
}

// Entry points of version 3, one per register width R (the launcher picks the smallest R ≥ r).
extern "C" __global__ void hie_forward_v3_r16(const float* __restrict__ h_x,
                                              const float* __restrict__ h_a,
                                              const float* __restrict__ w_r,
                                              const int* __restrict__ lengths,
                                              float* __restrict__ output,
                                              float* __restrict__ q_out,
                                              float* __restrict__ r_out,
                                              float* __restrict__ mask_out, int batch, int n,
                                              int d, int r, int keep_padding,
                                              float rank_tolerance, int stage_x) {
    hie_forward_v3<16>(h_x, h_a, w_r, lengths, output, q_out, r_out, mask_out, batch, n, d, r,
                       keep_padding, rank_tolerance, stage_x);
}

extern "C" __global__ void hie_forward_v3_r32(const float* __restrict__ h_x,
                                              const float* __restrict__ h_a,
                                              const float* __restrict__ w_r,
                                              const int* __restrict__ lengths,
                                              float* __restrict__ output,
                                              float* __restrict__ q_out,
                                              float* __restrict__ r_out,
                                              float* __restrict__ mask_out, int batch, int n,
                                              int d, int r, int keep_padding,
                                              float rank_tolerance, int stage_x) {
    hie_forward_v3<32>(h_x, h_a, w_r, lengths, output, q_out, r_out, mask_out, batch, n, d, r,
                       keep_padding, rank_tolerance, stage_x);
}

extern "C" __global__ void hie_backward_q_constant_v3_r16(const float* __restrict__ q,
                                                          const float* __restrict__ mask,
                                                          const float* __restrict__ dy,
                                                          const int* __restrict__ lengths,
                                                          float* __restrict__ dh_a, int batch,
                                                          int n, int d, int r,
                                                          int keep_padding) {
    hie_backward_q_constant_v3<16>(q, mask, dy, lengths, dh_a, batch, n, d, r, keep_padding);
}

extern "C" __global__ void hie_backward_q_constant_v3_r32(const float* __restrict__ q,
                                                          const float* __restrict__ mask,
                                                          const float* __restrict__ dy,
                                                          const int* __restrict__ lengths,
                                                          float* __restrict__ dh_a, int batch,
                                                          int n, int d, int r,
                                                          int keep_padding) {
    hie_backward_q_constant_v3<32>(q, mask, dy, lengths, dh_a, batch, n, d, r, keep_padding);
}

extern "C" __global__ void hie_backward_full_v3_r16(
    const float* __restrict__ h_x, const float* __restrict__ h_a, const float* __restrict__ w_r,
    const float* __restrict__ q, const float* __restrict__ r_mat, const float* __restrict__ mask,
    const float* __restrict__ dy, const int* __restrict__ lengths, float* __restrict__ dh_a,
    float* __restrict__ dh_x, float* __restrict__ dw_partial, int batch, int n, int d, int r,
    int keep_padding) {
    hie_backward_full_v3<16>(h_x, h_a, w_r, q, r_mat, mask, dy, lengths, dh_a, dh_x, dw_partial,
                             batch, n, d, r, keep_padding);
}

extern "C" __global__ void hie_backward_full_v3_r32(
    const float* __restrict__ h_x, const float* __restrict__ h_a, const float* __restrict__ w_r,
    const float* __restrict__ q, const float* __restrict__ r_mat, const float* __restrict__ mask,
    const float* __restrict__ dy, const int* __restrict__ lengths, float* __restrict__ dh_a,
    float* __restrict__ dh_x, float* __restrict__ dw_partial, int batch, int n, int d, int r,
    int keep_padding) {
    hie_backward_full_v3<32>(h_x, h_a, w_r, q, r_mat, mask, dy, lengths, dh_a, dh_x, dw_partial,
                             batch, n, d, r, keep_padding);
}
