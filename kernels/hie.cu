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
// Launch shapes (src/ops/hie/cuda.rs): one block per sequence, blockDim.x = d rounded up to a
// multiple of 32, at most 256; dynamic shared memory r·ld floats with ld = d rounded up to odd
// (Q or M column-major, column k at k·ld: thread-per-row loops are conflict-free, and the
// lane-per-column loops too because ld is odd). ≤ 32·257·4 = 32.9 KB at d = 256, r = 32.
//   hie_forward, hie_backward_q_constant, hie_backward_full: grid.x = B.
//   hie_sum_batch: grid-stride over n·r, each thread sums B partials in order.
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
//
// Gates (docs/kernels-sass.md): block and dynamic shared bytes are the launch shape at the
// paper's sizes (d = 256, h = 4, n = 50, r = 16) as the launcher in src/ops/ computes it;
// d = 256: 8 warps, r = 16 columns of leading(d) = 257 floats of dynamic shared memory.
//   asif-gate: hie_forward block=256 dynamic_shared=16448 occupancy>=75%
//   asif-gate: hie_backward_q_constant block=256 dynamic_shared=16448 occupancy>=100%
//   asif-gate: hie_backward_full block=256 dynamic_shared=16448 occupancy>=75%
//   asif-gate: hie_sum_batch block=256 occupancy>=100%
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
