// mma_selftest.cu: layout self-test of kernels/mma.cuh (docs/tensor-cores.md).
//
// What it computes: one warp multiplies one tile with each building block, so that tests/mma.rs
// can hold every fragment layout, conversion and copy against a host matrix product:
//   mma_selftest_tf32      D = tf32(A)·tf32(B) + C      A 16×8, B 8×8
//   mma_selftest_3xtf32    D = A·B + C by 3xTF32        A 16×8, B 8×8 given transposed (n-major)
//   mma_selftest_bf16      D = bf16(A)·bf16(B) + C      A 16×16, B 16×8
//   mma_selftest_ldmatrix  the bf16 product with A and B through shared memory and ldmatrix
//                          (.x4, .x2.trans), then the TF32 product with A through ldmatrix .x4
//   mma_selftest_cp_async  the TF32 product with A and B copied to shared memory by cp.async in
//                          two commit groups
// Every matrix is fp32 in memory, row-major unless said otherwise; C and D are 16×8.
//
// Launch shape (tests/mma.rs): one block of 32 threads (one full warp: mma and ldmatrix are
// warp collectives). Traffic: under 5 KB; this family exists for its answers, not its speed.
//
// Versions: 1 (issue 15).
//
// Gates (docs/build.md): one warp per launch, so at most 32 blocks of one warp each per SM.
//   asif-gate: mma_selftest_tf32 block=32 occupancy>=50% tensor_core
//   asif-gate: mma_selftest_3xtf32 block=32 occupancy>=50% tensor_core
//   asif-gate: mma_selftest_bf16 block=32 occupancy>=50% tensor_core
//   asif-gate: mma_selftest_ldmatrix block=32 occupancy>=50% tensor_core
//   asif-gate: mma_selftest_cp_async block=32 occupancy>=50% tensor_core vector_io
#include "common.cuh"
#include "mma.cuh"

extern "C" __global__ void mma_selftest_tf32(const float* __restrict__ a, const float* __restrict__ b,
                                             const float* __restrict__ c, float* __restrict__ d) {
    unsigned a_fragment[4], b_fragment[2];
    float accumulator[4];
    mma_load_a_tf32(a_fragment, a, 8, 1);
    mma_load_b_tf32(b_fragment, b, 8, 1);
    mma_load_c(accumulator, c, 8, 1);
    mma_m16n8k8_tf32(accumulator, a_fragment, b_fragment, accumulator);
    mma_store_d(accumulator, d, 8, 1);
}

// `b_transposed` is Bᵀ (8×8, row n holds column n of B), as keys are in QKᵀ: the loaders' strides
// read it in place.
extern "C" __global__ void mma_selftest_3xtf32(const float* __restrict__ a, const float* __restrict__ b_transposed,
                                               const float* __restrict__ c, float* __restrict__ d) {
    float a_values[4], b_values[2], accumulator[4];
    mma_load_a_tf32_values(a_values, a, 8, 1);
    mma_load_b_tf32_values(b_values, b_transposed, 1, 8);
    mma_load_c(accumulator, c, 8, 1);
    mma_m16n8k8_3xtf32(accumulator, a_values, b_values, accumulator);
    mma_store_d(accumulator, d, 8, 1);
}

extern "C" __global__ void mma_selftest_bf16(const float* __restrict__ a, const float* __restrict__ b,
                                             const float* __restrict__ c, float* __restrict__ d) {
    unsigned a_fragment[4], b_fragment[2];
    float accumulator[4];
    mma_load_a_bf16(a_fragment, a, 16, 1);
    mma_load_b_bf16(b_fragment, b, 8, 1);
    mma_load_c(accumulator, c, 8, 1);
    mma_m16n8k16_bf16(accumulator, a_fragment, b_fragment, accumulator);
    mma_store_d(accumulator, d, 8, 1);
}

// d[0..128): bf16(a_bf16)·bf16(b_bf16) + c; d[128..256): tf32(a_tf32)·tf32(b_tf32) + c.
extern "C" __global__ void mma_selftest_ldmatrix(const float* __restrict__ a_bf16, const float* __restrict__ b_bf16,
                                                 const float* __restrict__ a_tf32, const float* __restrict__ b_tf32,
                                                 const float* __restrict__ c, float* __restrict__ d) {
    // Row-major tiles in shared memory: bf16 two to a word, TF32 one to a word.
    __shared__ __align__(16) unsigned a_bf16_shared[16 * 16 / 2];
    __shared__ __align__(16) unsigned b_bf16_shared[16 * 8 / 2];
    __shared__ __align__(16) unsigned a_tf32_shared[16 * 8];
    const int lane = threadIdx.x % 32;
    for (int word = lane; word < 16 * 16 / 2; word += 32) {
        a_bf16_shared[word] = bf16x2_pack(a_bf16[2 * word], a_bf16[2 * word + 1]);
    }
    for (int word = lane; word < 16 * 8 / 2; word += 32) {
        b_bf16_shared[word] = bf16x2_pack(b_bf16[2 * word], b_bf16[2 * word + 1]);
    }
    for (int word = lane; word < 16 * 8; word += 32) a_tf32_shared[word] = tf32_round(a_tf32[word]);
    __syncwarp();

    unsigned a_fragment[4], b_fragment[2];
    float accumulator[4];
    const unsigned short* a_bf16_halves = reinterpret_cast<const unsigned short*>(a_bf16_shared);
    const unsigned short* b_bf16_halves = reinterpret_cast<const unsigned short*>(b_bf16_shared);
    ldmatrix_x4(a_fragment, a_bf16_halves + mma_ldmatrix_a_offset(lane, 16, 8));
    ldmatrix_x2_trans(b_fragment, b_bf16_halves + (lane % 16) * 8);
    mma_load_c(accumulator, c, 8, 1);
    mma_m16n8k16_bf16(accumulator, a_fragment, b_fragment, accumulator);
    mma_store_d(accumulator, d, 8, 1);

    ldmatrix_x4(a_fragment, a_tf32_shared + mma_ldmatrix_a_offset(lane, 8, 4));
    mma_load_b_tf32(b_fragment, b_tf32, 8, 1);
    mma_load_c(accumulator, c, 8, 1);
    mma_m16n8k8_tf32(accumulator, a_fragment, b_fragment, accumulator);
    mma_store_d(accumulator, d + 16 * 8, 8, 1);
}

// `omit_wait` leaves one wait out, as a bug would: 1 the wait for B's group, 2 the wait for A's.
// The emulator then reads NaN from the copy's destination, every run (tests/mma.rs checks it).
// Only 0 is meaningful on a GPU, where the others are races.
extern "C" __global__ void mma_selftest_cp_async(const float* __restrict__ a, const float* __restrict__ b,
                                                 const float* __restrict__ c, float* __restrict__ d, int omit_wait) {
    __shared__ __align__(16) float a_shared[16 * 8];
    __shared__ __align__(16) float b_shared[8 * 8];
    const int lane = threadIdx.x % 32;
    cp_async_16(a_shared + 4 * lane, a + 4 * lane);  // 32 copies of 16 bytes: A
    cp_async_commit();
    if (lane < 16) cp_async_16(b_shared + 4 * lane, b + 4 * lane);  // 16 copies: B
    cp_async_commit();

    unsigned a_fragment[4], b_fragment[2];
    float accumulator[4];
    if (omit_wait != 2) cp_async_wait_group<1>();  // A's group has landed, B's may be in flight
    __syncwarp();
    mma_load_a_tf32(a_fragment, a_shared, 8, 1);
    // Every lane has read A before any lane's next wait can land a copy: without this barrier a
    // lane that reads A too early (omit_wait = 2) would race with another lane's wait_group<0>
    // landing A, and the emulator's NaN would show only sometimes.
    __syncwarp();
    if (omit_wait != 1) cp_async_wait_group<0>();
    __syncwarp();
    mma_load_b_tf32(b_fragment, b_shared, 8, 1);
    mma_load_c(accumulator, c, 8, 1);
    mma_m16n8k8_tf32(accumulator, a_fragment, b_fragment, accumulator);
    mma_store_d(accumulator, d, 8, 1);
}
