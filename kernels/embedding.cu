// embedding.cu: embedding lookup E[s] and pooled multi-token attributes, forward and backward.
//
// What it computes (spec §1 "Embeddings"; E_X ∈ R^{|V|×d} with row 0 = pad, E_Aj ∈ R^{|A_j|×d}
// with token 0 = pad):
//   embedding_forward         out[p, c] = E[ids[p], c]
//   embedding_backward        dE[ids[p], c] += dout[p, c] for every p with ids[p] ≠ 0
//                             (duplicates accumulate; the pad row gets no gradient)
//   pooled_embedding_forward  out[r, c] = Σ_{k: tokens[r,k] ≠ 0} E[tokens[r,k], c], divided by the
//                             number of such tokens when mean = 1 (RecBole's token_seq pooling,
//                             `sum` by default); a row with no tokens pools to 0
//   pooled_embedding_backward dE[t, c] += dout[r, c] (/ count for mean) for every non-pad token t
// Ids outside [0, vocab) read as the pad (zero row) and get no gradient: the host devices reject
// them before launching; on the GPU this keeps a bad id from reading out of bounds.
//
// Launch shape (src/ops/embedding/cuda.rs): 1-D grid-stride over rows·d, 256 threads; consecutive
// threads take consecutive columns of one row, so reads of E and writes of out are coalesced.
//
// Determinism: v1's backward scatter uses fp32 atomicAdd, so when one id occurs several times in
// a batch the order of its additions, and the last bits of its gradient row, vary from run to run
// (every term is added exactly once). v2 (the `_v2` backwards) is deterministic: each block owns
// `rows_per_block` consecutive table rows and writes them whole (zero, then accumulate); each of
// its warps walks every position in ascending order, 32 at a time, finds the positions whose id it
// owns with a warp ballot, and adds their dout rows in that order, each (row, column) by one
// thread. The sum of every gradient element is thus taken in ascending position order, the CPU
// reference's order, so v2 equals the CPU reference bit for bit (the mean scale is applied with
// __fmul_rn so no FMA contraction changes the rounding) and two runs give the same bits. No host
// ordering, sort or extra buffer is needed.
//
// Traffic and floor at the paper's sizes (B·n = 102400 positions, d = 256, fp32): the lookup
// reads 105 MB of rows and writes 105 MB (about 70 µs at 3.0 TB/s on an H100); the backward reads
// dout (105 MB) and does 26 M atomic adds into a table that stays in L2 for |V| ≤ 20k.
//
// v2 backward at the paper's sizes: dout is read once (105 MB) and dE written once (|V|·d·4 =
// 1.4 MB for 1,350 items, 12 MB for Beauty's 12,101); the ids are read once per warp of every block
// (the launcher picks rows_per_block = ceil(|V| / 264), so at most 264 blocks of 8 warps:
// 2112 × 410 KB ≈ 0.87 GB of L2-resident int loads, coalesced, 128 B per 32 positions). Floor:
// the dout read, ~35 µs at 3 TB/s; expected ~100-200 µs (the id walk is L2-bound, ~5 TB/s of L2
// for 0.87 GB), i.e. 20-35% of the DRAM floor. Not timed yet (no GPU here); the SASS report
// (docs/kernels-sass.md) shows no local memory and no atomics in the _v2 entry points.
//
// The forwards' per-element bodies are embedding_lookup.cuh's, shared with input_embedding.cu
// (the item lookup and one attribute type's pooling in one launch, issue 20).
//
// Versions:
//   1. grid-stride gather; atomic scatter-add backward (nondeterministic last bits).
//   2. the backwards only (`embedding_backward_v2`, `pooled_embedding_backward_v2`): row-owner
//      deterministic reduction in ascending position order, so a training step is
//      bit-reproducible (issue 20); the forwards have no v2 (a gather is already deterministic).
//
// Gates (docs/kernels-sass.md): block and dynamic shared bytes are the launch shape at the
// paper's sizes (d = 256, h = 4, n = 50, r = 16) as the launcher in src/ops/ computes it.
//   asif-gate: embedding_forward block=256 occupancy>=100%
//   asif-gate: embedding_backward block=256 occupancy>=100%
//   asif-gate: pooled_embedding_forward block=256 occupancy>=100%
//   asif-gate: pooled_embedding_backward block=256 occupancy>=100%
//   asif-gate: embedding_backward_v2 block=256 occupancy>=100%
//   asif-gate: pooled_embedding_backward_v2 block=256 occupancy>=100%
#include "common.cuh"
#include "embedding_lookup.cuh"

extern "C" __global__ void embedding_forward(const float* __restrict__ table, const int* __restrict__ ids,
                                             float* __restrict__ out, int positions, int dim, int vocab) {
    const int len = positions * dim;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) {
        out[i] = embedding_lookup_at(table, ids[i / dim], i % dim, dim, vocab);
    }
}

extern "C" __global__ void embedding_backward(const int* __restrict__ ids, const float* __restrict__ dout,
                                              float* __restrict__ dtable, int positions, int dim, int vocab) {
    const int len = positions * dim;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) {
        const int id = ids[i / dim];
        if (id > 0 && id < vocab) atomicAdd(&dtable[(size_t)id * dim + i % dim], dout[i]);
    }
}

extern "C" __global__ void pooled_embedding_forward(const float* __restrict__ table,
                                                    const int* __restrict__ tokens,
                                                    float* __restrict__ out, int rows, int max_tokens,
                                                    int dim, int vocab, int mean) {
    const int len = rows * dim;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) {
        const int row = i / dim, col = i % dim;
        out[i] = embedding_pool_at(table, tokens + (size_t)row * max_tokens, max_tokens, col, dim, vocab, mean);
    }
}

extern "C" __global__ void pooled_embedding_backward(const int* __restrict__ tokens,
                                                     const float* __restrict__ dout,
                                                     float* __restrict__ dtable, int rows, int max_tokens,
                                                     int dim, int vocab, int mean) {
    const int len = rows * dim;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) {
        const int row = i / dim, col = i % dim;
        const int* row_tokens = tokens + (size_t)row * max_tokens;
        float scale = 1.0f;
        if (mean) {
            int count = 0;
            for (int k = 0; k < max_tokens; ++k) count += (row_tokens[k] > 0 && row_tokens[k] < vocab);
            if (count == 0) continue;
            scale = 1.0f / (float)count;
        }
        const float g = dout[i] * scale;
        for (int k = 0; k < max_tokens; ++k) {
            const int t = row_tokens[k];
            if (t > 0 && t < vocab) atomicAdd(&dtable[(size_t)t * dim + col], g);
        }
    }
}

// Index of the lowest set bit of a non-zero warp ballot.
__device__ __forceinline__ int embedding_lowest_lane(unsigned mask) {
#ifdef ASIF_EMULATOR
    return __builtin_ctz(mask);
#else
    return __ffs(mask) - 1;
#endif
}

// The v2 backwards' first step: the block zeroes the table rows it owns, [first, first + owned),
// before it adds its hits into them (thread t: columns t, t + blockDim, ...).
__device__ __forceinline__ void embedding_zero_owned_rows(float* dtable, int first, int owned, int dim) {
    for (int r = 0; r < owned; ++r)
        for (int c = threadIdx.x; c < dim; c += blockDim.x) dtable[(size_t)(first + r) * dim + c] = 0.0f;
}

// v2 of embedding_backward (deterministic). Block b owns table rows [b·rows_per_block,
// (b+1)·rows_per_block) ∩ [0, vocab) and every column of them; thread t owns columns t, t + blockDim,
// ... of those rows, so each gradient element is written by one thread, in ascending position
// order. blockDim must be a multiple of 32 (the ballot walk is warp-uniform).
extern "C" __global__ void embedding_backward_v2(const int* __restrict__ ids, const float* __restrict__ dout,
                                                 float* __restrict__ dtable, int positions, int dim,
                                                 int vocab, int rows_per_block) {
    const int first = blockIdx.x * rows_per_block;
    const int owned = min(rows_per_block, vocab - first);
    if (owned <= 0) return;
    embedding_zero_owned_rows(dtable, first, owned, dim);
    const int lane = threadIdx.x & 31;
    for (int base = 0; base < positions; base += 32) {
        const int p = base + lane;
        const int id = p < positions ? ids[p] : 0;
        unsigned mask = __ballot_sync(0xffffffffu, id > 0 && id - first >= 0 && id - first < owned);
        while (mask) {
            const int hit = base + embedding_lowest_lane(mask);
            mask &= mask - 1;
            const int row = ids[hit];
            for (int c = threadIdx.x; c < dim; c += blockDim.x)
                dtable[(size_t)row * dim + c] += dout[(size_t)hit * dim + c];
        }
    }
}

// v2 of pooled_embedding_backward (deterministic): the same row-owner walk over the flattened
// rows × max_tokens token table, in ascending (row, k) order; a hit at (r, k) adds dout[r] (times
// 1/count of row r for mean).
extern "C" __global__ void pooled_embedding_backward_v2(const int* __restrict__ tokens,
                                                        const float* __restrict__ dout,
                                                        float* __restrict__ dtable, int rows, int max_tokens,
                                                        int dim, int vocab, int mean, int rows_per_block) {
    const int first = blockIdx.x * rows_per_block;
    const int owned = min(rows_per_block, vocab - first);
    if (owned <= 0) return;
    embedding_zero_owned_rows(dtable, first, owned, dim);
    const int lane = threadIdx.x & 31;
    const int entries = rows * max_tokens;
    for (int base = 0; base < entries; base += 32) {
        const int j = base + lane;
        const int t = j < entries ? tokens[j] : 0;
        unsigned mask = __ballot_sync(0xffffffffu, t > 0 && t - first >= 0 && t - first < owned);
        while (mask) {
            const int hit = base + embedding_lowest_lane(mask);
            mask &= mask - 1;
            const int token = tokens[hit], row = hit / max_tokens;
            float scale = 1.0f;
            if (mean) {
                const int* row_tokens = tokens + (size_t)row * max_tokens;
                int count = 0;
                for (int k = 0; k < max_tokens; ++k) count += (row_tokens[k] > 0 && row_tokens[k] < vocab);
                scale = 1.0f / (float)count;
            }
            for (int c = threadIdx.x; c < dim; c += blockDim.x)
                dtable[(size_t)token * dim + c] += __fmul_rn(dout[(size_t)row * dim + c], scale);
        }
    }
}
