// input_embedding.cu: the model's input lookups in one launch (issue 20): the item embedding E_X[s]
// and one attribute type's pooled embedding A = pool(E_A[tokens]) at the same positions (spec §1;
// the model runs them back to back on every model with side information).
//
// What it computes (positions p = B·n, d columns; tokens [p, max_tokens], 0 = pad):
//   input_embedding_forward   x[p, c] = E_X[ids[p], c]
//                             a[p, c] = Σ_{k: tokens[p,k] ≠ 0} E_A[tokens[p,k], c] (/ count for mean)
// Both bodies are embedding_lookup.cuh's (embedding.cu's embedding_forward and
// pooled_embedding_forward), so x and a are the unfused lookups' bits. The backward is not fused:
// each table's gradient is embedding.cu's scatter (v2: the deterministic row-owner reduction), as
// unfused; the two scatters write different tables of different sizes.
//
// Launch shape (src/ops/input_embedding/cuda.rs): 1-D grid-stride over p·d, 256 threads;
// consecutive threads take consecutive columns of one position (coalesced).
//
// Traffic and floor at the paper's size (p = 102,400, d = 256, one attribute type of up to 2
// tokens, the bench's and Beauty's categories), H200 at 4.8 TB/s:
//   unfused  embedding_forward reads the ids (0.4 MB) and the table's rows (L2-resident: 1.4 MB at
//            1,350 items, 12.4 MB at 12,101) and writes x (104.9 MB); pooled_embedding_forward
//            reads the tokens (0.8 MB) and rows and writes a (104.9 MB): 211 MB, 2 launches, floor
//            44 µs.
//   fused    the same reads and writes: 211 MB, 1 launch, floor 44 µs.
//   saving   one launch per training step (the inputs are looked up once a step), no bytes: each
//            output must be written either way. Folding the sum fusion's E_X + A (F⁰) in as a third
//            output would save its 209.7 MB of reads (44 µs) and one more launch, but the tape
//            would then add that gradient into x's in another order (not the unfused bits): not
//            done (docs/gpu.md, "Fusions").
//   expected at the measured 40-56 % of copy bandwidth of the elementwise kernels, about 100 µs for
//            the fused launch, as for the two unfused ones together. Unmeasured (no GPU here).
//
// Versions (kernel_version family "input_embedding", read by the model, src/model/mod.rs):
//   1. no kernel of this file: the two lookups of embedding.cu (the default).
//   2. input_embedding_forward: both in one launch, for models with one attribute type (more
//      types keep the unfused lookups). Default only after a GPU run measures it.
//
// Gates (docs/kernels-sass.md): block and dynamic shared bytes are the launch shape at the
// paper's sizes (d = 256, h = 4, n = 50, r = 16) as the launcher in src/ops/ computes it.
//   asif-gate: input_embedding_forward block=256 occupancy>=100%
#include "common.cuh"
#include "embedding_lookup.cuh"

extern "C" __global__ void input_embedding_forward(const float* __restrict__ item_table,
                                                   const float* __restrict__ attribute_table,
                                                   const int* __restrict__ ids, const int* __restrict__ tokens,
                                                   float* __restrict__ x, float* __restrict__ a, int positions,
                                                   int dim, int item_vocab, int max_tokens, int attribute_vocab,
                                                   int mean) {
    const int len = positions * dim;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) {
        const int position = i / dim, col = i % dim;
        x[i] = embedding_lookup_at(item_table, ids[position], col, dim, item_vocab);
        a[i] = embedding_pool_at(attribute_table, tokens + (size_t)position * max_tokens, max_tokens, col, dim,
                                 attribute_vocab, mean);
    }
}
