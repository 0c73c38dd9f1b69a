// mma.cuh: tensor-core building blocks for sm_80 and newer (docs/tensor-cores.md).
//
// Inline PTX, not `wmma`: `wmma` fragments have an unspecified layout, these have the one the PTX
// ISA documents ("Matrix Fragments for mma.m16n8k8" and "for mma.m16n8k16 with floating point
// type"), so a kernel can build fragments from registers, shuffles or ldmatrix and knows which
// output element each lane holds.
//   - mma.sync m16n8k8 TF32 (fp32 accumulate), and the 3xTF32 split on it for fp32-level accuracy;
//   - mma.sync m16n8k16 bf16 (fp32 accumulate);
//   - ldmatrix m8n8 .x2/.x4, plain and .trans (16-bit elements);
//   - cp.async 16-byte global → shared copies with commit_group / wait_group / wait_all.
// Under the host emulator (ASIF_EMULATOR) every wrapper calls the emulated instruction in
// emulator/include/cuda_emulator.h instead: mma and ldmatrix as warp collectives, cp.async with
// its destination poisoned (NaN) until the matching wait.
//
// Fragment layouts, groupID g = lane / 4, threadID_in_group t = lane % 4 (one warp, all 32 lanes
// must call every mma and ldmatrix: they are .sync.aligned):
//   m16n8k8 TF32   A 16×8   a[i] = A[g + 8·(i & 1)][t + 4·(i >> 1)]          i = 0..3
//                  B 8×8    b[i] = B[t + 4·i][g]                              i = 0..1
//   m16n8k16 bf16  A 16×16  a[i] = A[g + 8·(i & 1)][2t + h + 8·(i >> 1)]      i = 0..3, half h
//                  B 16×8   b[i] = B[2t + h + 8·i][g]                         i = 0..1, half h
//   both           C/D 16×8 c[i] = C[g + 8·(i >> 1)][2t + (i & 1)]            i = 0..3
// A bf16 register holds two elements, h = 0 in bits 0..15 and h = 1 in bits 16..31.
//
// Operand precision: a TF32 operand is an fp32 bit pattern whose low 13 bits the tensor core
// ignores; the loaders round with cvt.rna.tf32.f32 (nearest, ties away) first. A bf16 operand is
// packed with cvt.rn.bf16x2.f32 (nearest even). Products are exact and accumulate in fp32.
//
// Versions: 1 (issue 15) the wrappers, loaders and stores; checked by kernels/mma_selftest.cu.
#pragma once

// ---- fragment layouts (the table above, one function per row) ----

__device__ __forceinline__ int mma_group(int lane) { return lane >> 2; }
__device__ __forceinline__ int mma_thread_in_group(int lane) { return lane & 3; }

// m16n8k8 TF32 A fragment: row and column of a[i].
__device__ __forceinline__ int mma_tf32_a_row(int lane, int i) { return mma_group(lane) + 8 * (i & 1); }
__device__ __forceinline__ int mma_tf32_a_col(int lane, int i) { return mma_thread_in_group(lane) + 4 * (i >> 1); }
// m16n8k8 TF32 B fragment: row (k) and column (n) of b[i].
__device__ __forceinline__ int mma_tf32_b_row(int lane, int i) { return mma_thread_in_group(lane) + 4 * i; }
__device__ __forceinline__ int mma_tf32_b_col(int lane, int /*i*/) { return mma_group(lane); }
// m16n8k16 bf16 A fragment: row and column of half h of a[i].
__device__ __forceinline__ int mma_bf16_a_row(int lane, int i) { return mma_group(lane) + 8 * (i & 1); }
__device__ __forceinline__ int mma_bf16_a_col(int lane, int i, int h) {
    return 2 * mma_thread_in_group(lane) + h + 8 * (i >> 1);
}
// m16n8k16 bf16 B fragment: row (k) and column (n) of half h of b[i].
__device__ __forceinline__ int mma_bf16_b_row(int lane, int i, int h) { return 2 * mma_thread_in_group(lane) + h + 8 * i; }
__device__ __forceinline__ int mma_bf16_b_col(int lane, int /*i*/) { return mma_group(lane); }
// C/D fragment of both shapes: row and column of c[i].
__device__ __forceinline__ int mma_c_row(int lane, int i) { return mma_group(lane) + 8 * (i >> 1); }
__device__ __forceinline__ int mma_c_col(int lane, int i) { return 2 * mma_thread_in_group(lane) + (i & 1); }

// ---- conversions ----

// cvt.rna.tf32.f32: the TF32 value of x (10 mantissa bits, nearest, ties away) as fp32 bits.
__device__ __forceinline__ unsigned tf32_round(float x) {
#ifdef ASIF_EMULATOR
    return ::emu::tf32_round(x);
#else
    unsigned bits;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(bits) : "f"(x));
    return bits;
#endif
}

// 3xTF32 split: x ≈ hi + lo with hi = tf32(x) and lo = tf32(x − hi) (x − hi is exact in fp32).
__device__ __forceinline__ void tf32_split(float x, unsigned& hi, unsigned& lo) {
    hi = tf32_round(x);
    lo = tf32_round(x - __uint_as_float(hi));
}

// cvt.rn.bf16x2.f32: two fp32 values as bf16 (nearest even), `low` in bits 0..15.
__device__ __forceinline__ unsigned bf16x2_pack(float low, float high) {
#ifdef ASIF_EMULATOR
    return ::emu::bf16x2_pack(low, high);
#else
    unsigned bits;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(bits) : "f"(high), "f"(low));
    return bits;
#endif
}

// ---- mma.sync ----

// d = A·B + c, m16n8k8, TF32 operands (fp32 bit patterns, see tf32_round), fp32 accumulate.
// d may be c. volatile, as CUTLASS has it: a warp-synchronous instruction stays where it is
// written, never moved into or out of a branch.
__device__ __forceinline__ void mma_m16n8k8_tf32(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
#ifdef ASIF_EMULATOR
    ::emu::mma_m16n8k8_tf32(d, a, b, c);
#else
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%10, %11, %12, %13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
                   "f"(c[2]), "f"(c[3]));
#endif
}

// d = A·B + c, m16n8k16, bf16 operands (two per register, see bf16x2_pack), fp32 accumulate.
// d may be c.
__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
#ifdef ASIF_EMULATOR
    ::emu::mma_m16n8k16_bf16(d, a, b, c);
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%10, %11, %12, %13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
                   "f"(c[2]), "f"(c[3]));
#endif
}

// d = A·B + c at fp32-level accuracy from three TF32 mmas: hi·hi + hi·lo + lo·hi (lo·lo, about
// 2^-22 relative, is dropped). `a` and `b` are fp32 values in the TF32 fragment layout. The small
// terms go first so they are not lost against the large one. d may be c.
__device__ __forceinline__ void mma_m16n8k8_3xtf32(float d[4], const float a[4], const float b[2], const float c[4]) {
    unsigned a_hi[4], a_lo[4], b_hi[2], b_lo[2];
#pragma unroll
    for (int i = 0; i < 4; ++i) tf32_split(a[i], a_hi[i], a_lo[i]);
#pragma unroll
    for (int i = 0; i < 2; ++i) tf32_split(b[i], b_hi[i], b_lo[i]);
    float acc[4] = {c[0], c[1], c[2], c[3]};
    mma_m16n8k8_tf32(acc, a_lo, b_hi, acc);
    mma_m16n8k8_tf32(acc, a_hi, b_lo, acc);
    mma_m16n8k8_tf32(d, a_hi, b_hi, acc);
}

// ---- fragment loads and stores from fp32 memory (global or shared) ----
// A[m][k] = a[m·m_stride + k·k_stride], B[k][n] = b[k·k_stride + n·n_stride],
// C[m][n] = c[m·m_stride + n·n_stride]: one function serves row- and column-major tiles.

// TF32 A fragment as fp32 values (the input of mma_m16n8k8_3xtf32).
__device__ __forceinline__ void mma_load_a_tf32_values(float a[4], const float* tile, int m_stride, int k_stride) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int i = 0; i < 4; ++i) a[i] = tile[mma_tf32_a_row(lane, i) * m_stride + mma_tf32_a_col(lane, i) * k_stride];
}
__device__ __forceinline__ void mma_load_b_tf32_values(float b[2], const float* tile, int k_stride, int n_stride) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int i = 0; i < 2; ++i) b[i] = tile[mma_tf32_b_row(lane, i) * k_stride + mma_tf32_b_col(lane, i) * n_stride];
}
// TF32 fragments rounded for mma_m16n8k8_tf32.
__device__ __forceinline__ void mma_load_a_tf32(unsigned a[4], const float* tile, int m_stride, int k_stride) {
    float values[4];
    mma_load_a_tf32_values(values, tile, m_stride, k_stride);
#pragma unroll
    for (int i = 0; i < 4; ++i) a[i] = tf32_round(values[i]);
}
__device__ __forceinline__ void mma_load_b_tf32(unsigned b[2], const float* tile, int k_stride, int n_stride) {
    float values[2];
    mma_load_b_tf32_values(values, tile, k_stride, n_stride);
#pragma unroll
    for (int i = 0; i < 2; ++i) b[i] = tf32_round(values[i]);
}
// bf16 fragments packed for mma_m16n8k16_bf16.
__device__ __forceinline__ void mma_load_a_bf16(unsigned a[4], const float* tile, int m_stride, int k_stride) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float* row = tile + mma_bf16_a_row(lane, i) * m_stride;
        a[i] = bf16x2_pack(row[mma_bf16_a_col(lane, i, 0) * k_stride], row[mma_bf16_a_col(lane, i, 1) * k_stride]);
    }
}
__device__ __forceinline__ void mma_load_b_bf16(unsigned b[2], const float* tile, int k_stride, int n_stride) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const float* column = tile + mma_bf16_b_col(lane, i) * n_stride;
        b[i] = bf16x2_pack(column[mma_bf16_b_row(lane, i, 0) * k_stride], column[mma_bf16_b_row(lane, i, 1) * k_stride]);
    }
}
// C fragment (both shapes) from memory, and D back to memory.
__device__ __forceinline__ void mma_load_c(float c[4], const float* tile, int m_stride, int n_stride) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int i = 0; i < 4; ++i) c[i] = tile[mma_c_row(lane, i) * m_stride + mma_c_col(lane, i) * n_stride];
}
__device__ __forceinline__ void mma_store_d(const float d[4], float* tile, int m_stride, int n_stride) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int i = 0; i < 4; ++i) tile[mma_c_row(lane, i) * m_stride + mma_c_col(lane, i) * n_stride] = d[i];
}

// ---- ldmatrix (shared memory, 16-bit elements) ----
// Lane 8·i + r gives the address of row r of 8×8 matrix i (16 bytes, 16-byte aligned); register
// i of lane L receives matrix i's (row L/4, columns 2·(L%4), +1), or with .trans its (rows
// 2·(L%4), +1, column L/4), the first element in the low half. So, with 16-bit units:
//   - .x4 with lane L at row (L % 8) + 8·((L / 8) & 1), column 8·(L / 16) of a row-major bf16
//     16×16 A gives its m16n8k16 A fragment (mma_ldmatrix_a_offset);
//   - .x2.trans with lane L at row L % 16 of a row-major ([k][n]) bf16 16×8 B gives its B fragment;
//   - for TF32 (32-bit elements, two 16-bit units each) .x4 with the same lane rows and column
//     4·(L / 16) floats gives the m16n8k8 TF32 A fragment of a row-major fp32 16×8 tile. Nothing
//     else of TF32 fits: .trans would split each 32-bit element across lanes.

// Element offset of lane L's row address for the A fragment through .x4: `stride` elements per
// row, `elements_per_16_bytes` = 8 for bf16, 4 for fp32/TF32.
__device__ __forceinline__ int mma_ldmatrix_a_offset(int lane, int stride, int elements_per_16_bytes) {
    return ((lane % 8) + 8 * ((lane / 8) & 1)) * stride + elements_per_16_bytes * (lane / 16);
}

#ifndef ASIF_EMULATOR
// The shared-state-space address of a generic pointer to shared memory.
__device__ __forceinline__ unsigned shared_address(const void* pointer) {
    unsigned address;
    asm("{ .reg .u64 generic; cvta.to.shared.u64 generic, %1; cvt.u32.u64 %0, generic; }"
        : "=r"(address)
        : "l"(pointer));
    return address;
}
// The global-state-space address of a generic pointer to global memory.
__device__ __forceinline__ unsigned long long global_address(const void* pointer) {
    unsigned long long address;
    asm("cvta.to.global.u64 %0, %1;" : "=l"(address) : "l"(pointer));
    return address;
}
#endif

__device__ __forceinline__ void ldmatrix_x2(unsigned r[2], const void* row) {
#ifdef ASIF_EMULATOR
    ::emu::ldmatrix(r, 2, false, row);
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(shared_address(row))
                 : "memory");
#endif
}
__device__ __forceinline__ void ldmatrix_x2_trans(unsigned r[2], const void* row) {
#ifdef ASIF_EMULATOR
    ::emu::ldmatrix(r, 2, true, row);
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(shared_address(row))
                 : "memory");
#endif
}
__device__ __forceinline__ void ldmatrix_x4(unsigned r[4], const void* row) {
#ifdef ASIF_EMULATOR
    ::emu::ldmatrix(r, 4, false, row);
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_address(row))
                 : "memory");
#endif
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned r[4], const void* row) {
#ifdef ASIF_EMULATOR
    ::emu::ldmatrix(r, 4, true, row);
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_address(row))
                 : "memory");
#endif
}

// ---- cp.async (per thread; both addresses 16-byte aligned) ----
// A copy belongs to the group of the next commit; wait_group<N> returns when at most the N most
// recent committed groups are still in flight. Other threads see the data only after a barrier
// (__syncthreads or __syncwarp) that follows the wait.

__device__ __forceinline__ void cp_async_16(void* shared_destination, const void* global_source) {
#ifdef ASIF_EMULATOR
    ::emu::cp_async_16(shared_destination, global_source);
#else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(shared_address(shared_destination)),
                 "l"(global_address(global_source))
                 : "memory");
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#ifdef ASIF_EMULATOR
    ::emu::cp_async_commit();
#else
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
template <int Pending>
__device__ __forceinline__ void cp_async_wait_group() {
#ifdef ASIF_EMULATOR
    ::emu::cp_async_wait_group(Pending);
#else
    asm volatile("cp.async.wait_group %0;" ::"n"(Pending) : "memory");
#endif
}
__device__ __forceinline__ void cp_async_wait_all() {
#ifdef ASIF_EMULATOR
    ::emu::cp_async_wait_all();
#else
    asm volatile("cp.async.wait_all;" ::: "memory");
#endif
}
