// column_sum.cuh: the column sums of a rows × cols row-major matrix in two deterministic passes
// (no atomics), shared by linear.cu (the bias gradient db = Σ_rows dy) and bias_gelu.cu (the same
// sum over GELU'(y + b) · dh, computed as it is written), so both add in one order and give the
// same bits.
//   asif_column_partial: block (32, 8), grid (ceil(cols/32), ceil(rows/64)); thread (x, y) of
//     block (bx, chunk) sums value(r, c) for c = 32·bx + x over the rows r = 64·chunk + y, + 8,
//     ... of its chunk, then row-lane 0 adds the 8 lane sums in lane order into
//     partial[chunk, c].
//   asif_column_finish: db[c] = Σ_chunk partial[chunk, c], in chunk order, one thread a column.
#pragma once

#define ASIF_COLUMN_ROWS_PER_CHUNK 64

// `tile` is the caller's __shared__ float[8][33] (+1 column: no bank conflicts on the transposed
// read); value(at, col) gives element (row, col) at offset at = row·cols + col (and may write
// elsewhere as a side effect: bias_gelu_backward writes dz there).
template <typename F>
__device__ __forceinline__ void asif_column_partial(float (*tile)[33], float* __restrict__ partial,
                                                    int rows, int cols, F value) {
    const int col = blockIdx.x * 32 + threadIdx.x;
    const int chunk = blockIdx.y;
    const int row_begin = chunk * ASIF_COLUMN_ROWS_PER_CHUNK;
    const int row_end = min(rows, row_begin + ASIF_COLUMN_ROWS_PER_CHUNK);
    float sum = 0.0f;
    if (col < cols) {
        for (int row = row_begin + threadIdx.y; row < row_end; row += blockDim.y) {
            sum += value((size_t)row * cols + col, col);
        }
    }
    tile[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && col < cols) {
        float total = 0.0f;
        for (int lane = 0; lane < (int)blockDim.y; ++lane) total += tile[lane][threadIdx.x];
        partial[(size_t)chunk * cols + col] = total;
    }
}

__device__ __forceinline__ void asif_column_finish(const float* __restrict__ partial, float* __restrict__ out,
                                                   int chunks, int cols) {
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= cols) return;
    float total = 0.0f;
    for (int chunk = 0; chunk < chunks; ++chunk) total += partial[(size_t)chunk * cols + col];
    out[col] = total;
}
