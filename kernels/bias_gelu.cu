// bias_gelu.cu: the FFN's first linear layer's bias add fused with its GELU (spec §2, the
// position-wise FFN GELU(x W_1 + b_1) W_2 + b_2), forward and backward (issue 20).
//
// What it computes (y = x W_1 from the GEMM, without its bias: rows × cols row-major; b: cols):
//   bias_gelu_forward          h[r, c] = GELU(y[r, c] + b[c])
//   bias_gelu_backward         dz[r, c] = GELU'(y[r, c] + b[c]) · dh[r, c]   (the GEMM's dy)
//                              partial[chunk, c] = Σ_{r in chunk of 64 rows} dz[r, c]
//   bias_gelu_backward_finish  db[c] = Σ_chunk partial[chunk, c]
// GELU and GELU' are gelu.cuh's (gelu.cu's), the column sums column_sum.cuh's (linear.cu's bias
// gradient), so every output equals the unfused path's bit for bit: linear_bias_add then
// gelu_forward, and gelu_backward then linear_bias_grad_partial/_finish (tests/linear.rs).
// Nothing is saved for the backward but y (the GEMM's output), where the unfused path keeps
// z = y + b: the same bytes.
//
// Launch shapes (src/ops/bias_gelu/cuda.rs): forward: vector_io.cuh's v2 loop, 256 threads, grid
// min(ceil(len/4096), 65535) (4 float4 per thread and step); backward: block (32, 8), grid
// (ceil(cols/32), ceil(rows/64)), as linear_bias_grad_partial; finish: one thread per column.
//
// Traffic and floor at the paper's size, per FFN (B·n = 102,400 rows, inner = d = 256 columns:
// N = 26.2 M floats, 104.9 MB fp32), H200 at 4.8 TB/s (../shared/design/perf-floors.md):
//   forward   unfused: linear_bias_add reads and writes y (209.7 MB), gelu_forward reads z and
//             writes h (209.7 MB): 419.4 MB, 2 launches, floor 87.4 µs.
//             fused: reads y, writes h: 209.7 MB (+ 1 KB of b), 1 launch, floor 43.7 µs.
//   backward  unfused: gelu_backward reads z and dh, writes dz (314.6 MB); the bias partial reads
//             dz again (104.9 MB) and writes 1600 × 256 partials (1.6 MB), the finish reads them:
//             422.6 MB, 3 launches, floor 88.0 µs.
//             fused: reads y and dh, writes dz and the partials (316.2 MB), the finish reads the
//             partials (1.6 MB): 317.8 MB, 2 launches, floor 66.2 µs.
//   saving    per FFN 314.6 MB (65.5 µs at the floor) and 2 launches; an ASIF step at the paper's
//             size (3 layers: X, A and P streams in layers 1 and 2, X alone in layer 3: 7 FFNs)
//             2.2 GB (459 µs) and 14 launches; SASRec (3 FFNs) 944 MB (197 µs) and 6 launches.
//   expected  at the elementwise kernels' measured 43 % of copy bandwidth (GELU forward, H200
//             2026-11-27) the saving is about 175 µs per FFN, 1.2 ms of the 96.7 ms ASIF step;
//             at v2's ≥ 80 % target about 95 µs per FFN. Unmeasured: no GPU here. The forward is
//             one v2 elementwise pass (its floor as gelu_forward_v2's); the backward keeps the
//             partial kernel's scalar, coalesced rows (32 columns × 8 rows per block step).
//
// Versions (kernel_version family "bias_gelu", read by the model's FFN, src/model/blocks.rs):
//   1. no kernel of this file: linear's bias add, then GELU, as separate launches (the default).
//   2. bias_gelu_forward, bias_gelu_backward, bias_gelu_backward_finish: the fused passes above.
//      Default only after a GPU run shows it faster (benches/train_step.rs, row `-fused`).
//
// Occupancy: the forward holds gelu_forward_v2's 4 float4 per thread plus the bias column of each
// element (56 registers: 50 % theoretical occupancy, gelu_forward_v2 62 %); by vector_io.cuh's
// Little's-law estimate that is still 64 KB in flight per SM against the ~22 KB an H200 needs.
//
// Gates (docs/kernels-sass.md): block and dynamic shared bytes are the launch shape at the
// paper's sizes (d = 256, h = 4, n = 50, r = 16) as the launcher in src/ops/ computes it.
//   asif-gate: bias_gelu_forward block=256 occupancy>=50% vector_io
//   asif-gate: bias_gelu_backward block=256 occupancy>=100%
//   asif-gate: bias_gelu_backward_finish block=256 occupancy>=100%
#include "common.cuh"
#include "vector_io.cuh"
#include "gelu.cuh"
#include "column_sum.cuh"

extern "C" __global__ void bias_gelu_forward(const float* __restrict__ y, const float* __restrict__ bias,
                                             float* __restrict__ h, int len, int cols) {
    asif_map_v2(y, h, len, [bias, cols](float v, float, long long i) {
        return gelu_value(v + bias[(int)i % cols]);
    });
}

extern "C" __global__ void bias_gelu_backward(const float* __restrict__ y, const float* __restrict__ bias,
                                              const float* __restrict__ dh, float* __restrict__ dz,
                                              float* __restrict__ partial, int rows, int cols) {
    __shared__ float tile[8][33];
    asif_column_partial(tile, partial, rows, cols, [y, bias, dh, dz](size_t at, int col) {
        const float g = gelu_gradient(y[at] + bias[col], dh[at]);
        dz[at] = g;
        return g;
    });
}

extern "C" __global__ void bias_gelu_backward_finish(const float* __restrict__ partial,
                                                     float* __restrict__ dbias, int chunks, int cols) {
    asif_column_finish(partial, dbias, chunks, cols);
}
