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
// Determinism: the backward scatter uses fp32 atomicAdd, so when one id occurs several times in a
// batch the order of its additions, and the last bits of its gradient row, vary from run to run
// (every term is added exactly once; tests use the 1e-5 tolerance). A deterministic version would
// sort positions by id and reduce segments (v2).
//
// Traffic and floor at the paper's sizes (B·n = 102400 positions, d = 256, fp32): the lookup
// reads 105 MB of rows and writes 105 MB (about 70 µs at 3.0 TB/s on an H100); the backward reads
// dout (105 MB) and does 26 M atomic adds into a table that stays in L2 for |V| ≤ 20k.
//
// Versions:
//   1. grid-stride gather; atomic scatter-add backward.
//
// Gates (docs/kernels-sass.md): block and dynamic shared bytes are the launch shape at the
// paper's sizes (d = 256, h = 4, n = 50, r = 16) as the launcher in src/ops/ computes it.
//   asif-gate: embedding_forward block=256 occupancy>=100%
//   asif-gate: embedding_backward block=256 occupancy>=100%
//   asif-gate: pooled_embedding_forward block=256 occupancy>=100%
//   asif-gate: pooled_embedding_backward block=256 occupancy>=100%
#include "common.cuh"

extern "C" __global__ void embedding_forward(const float* __restrict__ table, const int* __restrict__ ids,
                                             float* __restrict__ out, int positions, int dim, int vocab) {
    const int len = positions * dim;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) {
        const int id = ids[i / dim];
        out[i] = (id >= 0 && id < vocab) ? table[(size_t)id * dim + i % dim] : 0.0f;
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
        const int* row_tokens = tokens + (size_t)row * max_tokens;
        float sum = 0.0f;
        int count = 0;
        for (int k = 0; k < max_tokens; ++k) {
            const int t = row_tokens[k];
            if (t > 0 && t < vocab) {
                sum += table[(size_t)t * dim + col];
                ++count;
            }
        }
        out[i] = (mean && count > 0) ? sum / (float)count : sum;
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
