// embedding_lookup.cuh: one element of the item lookup and of the pooled attribute lookup
// (spec §1), shared by embedding.cu (embedding_forward, pooled_embedding_forward) and
// input_embedding.cu (both in one launch, issue 20), so the fused and unfused lookups give the
// same bits. Ids and tokens outside [0, vocab) read as the pad: 0 for a lookup, skipped by the
// pooling.
#pragma once

// E[id, col], or 0 for an id outside the table.
__device__ __forceinline__ float embedding_lookup_at(const float* __restrict__ table, int id, int col, int dim,
                                                     int vocab) {
    return (id >= 0 && id < vocab) ? table[(size_t)id * dim + col] : 0.0f;
}

// Σ_{k: 0 < tokens[k] < vocab} E[tokens[k], col] over one row's max_tokens tokens, divided by their
// count when mean (0 for a row without any).
__device__ __forceinline__ float embedding_pool_at(const float* __restrict__ table,
                                                   const int* __restrict__ row_tokens, int max_tokens, int col,
                                                   int dim, int vocab, int mean) {
    float sum = 0.0f;
    int count = 0;
    for (int k = 0; k < max_tokens; ++k) {
        const int t = row_tokens[k];
        if (t > 0 && t < vocab) {
            sum += table[(size_t)t * dim + col];
            ++count;
        }
    }
    return (mean && count > 0) ? sum / (float)count : sum;
}
