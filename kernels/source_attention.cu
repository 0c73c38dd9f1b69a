// source_attention.cu: the fusion gate 𝓕_gate of spec §3.1 (RecBole's VanillaAttention over the
// stacked item and attribute embeddings), everything except its two projections (those run on the
// linear op: H = X W₁ + b₁ and e = ReLU(H) w₂; the ReLU between them is kernels/relu.cu).
//
// What it computes, for R rows (r = (b, t)), K = m + 1 sources x_0 = E_X[s], x_j = A_j, width d:
//   source_attention_stack     X[r, k, :] = x_k[r, :]     (one launch per source k; [R, K, d])
//   source_attention_unstack   dx_k[r, :] = dX[r, k, :]   (its backward)
//   source_attention_forward   α[r, :] = softmax_k(e[r, :]),  out[r, :] = Σ_k α[r, k] X[r, k, :]
//                              (saves α, [R, K])
//   source_attention_backward  dX[r, k, :] = α[r, k] · dout[r, :]
//                              g_k = dout[r, :] · X[r, k, :]
//                              de[r, k] = α[r, k] · (g_k − Σ_j α[r, j] g_j)
//
// Launch shapes (src/ops/source_attention/cuda.rs):
//   stack, unstack: 1-D grid-stride loop, 256 threads per block.
//   forward, backward: one warp per row (lane k < K holds e_k / α_k, so K ≤ 32 = MAX_SOURCES in
//   src/ops/source_attention), 8 warps per block,
//   grid.x = min(ceil(R/8), 65535), grid-stride over rows. The d axis is walked in strides of 32
//   lanes, uniformly across the warp (every lane takes part in every shuffle).
//
// Traffic and floor at the paper's sizes (R = B·n = 102400, d = 256, m = 1 so K = 2, fp32; one
// [R, d] tensor is 105 MB; 3.0 TB/s on an H100): forward reads X (210 MB) and writes out (105 MB):
// about 105 µs; backward reads X and dout and writes dX: 525 MB, about 175 µs. Stacking costs a read
// and a write of X (420 MB, 140 µs). (The ReLU over H, [R, K, d], is relu.cu's.)
//
// Versions:
//   1. separate stack, ReLU and pooling kernels; the projections on cuBLAS through the linear op.
//   2. the ReLU moved to its own family, kernels/relu.cu (one kernel family per .cu).
//
// Gates (docs/kernels-sass.md): block and dynamic shared bytes are the launch shape at the
// paper's sizes (d = 256, h = 4, n = 50, r = 16) as the launcher in src/ops/ computes it.
//   asif-gate: source_attention_stack block=256 occupancy>=100%
//   asif-gate: source_attention_unstack block=256 occupancy>=100%
//   asif-gate: source_attention_forward block=256 occupancy>=62%
//   asif-gate: source_attention_backward block=256 occupancy>=100%
#include "common.cuh"


extern "C" __global__ void source_attention_stack(const float* __restrict__ source,
                                                  float* __restrict__ stacked, int rows,
                                                  int k_sources, int slot, int d) {
    const int len = rows * d;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) {
        const int r = i / d;
        const int c = i - r * d;
        stacked[((size_t)r * k_sources + slot) * d + c] = source[i];
    }
}

extern "C" __global__ void source_attention_unstack(const float* __restrict__ stacked,
                                                    float* __restrict__ source, int rows,
                                                    int k_sources, int slot, int d) {
    const int len = rows * d;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) {
        const int r = i / d;
        const int c = i - r * d;
        source[i] = stacked[((size_t)r * k_sources + slot) * d + c];
    }
}

extern "C" __global__ void source_attention_forward(const float* __restrict__ sources,
                                                    const float* __restrict__ energies,
                                                    float* __restrict__ out,
                                                    float* __restrict__ weights, int rows,
                                                    int k_sources, int d) {
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    const int warps_per_block = blockDim.x / ASIF_WARP_SIZE;
    const int total_warps = gridDim.x * warps_per_block;
    for (int r = blockIdx.x * warps_per_block + threadIdx.x / ASIF_WARP_SIZE; r < rows;
         r += total_warps) {
        const float e = lane < k_sources ? energies[(size_t)r * k_sources + lane] : -asif_infinity();
        const float top = warp_reduce_max(e);
        const float p = lane < k_sources ? expf(e - top) : 0.0f;
        const float alpha = p / warp_reduce_sum(p);
        if (lane < k_sources) weights[(size_t)r * k_sources + lane] = alpha;
        const float* x = sources + (size_t)r * k_sources * d;
        for (int base = 0; base < d; base += ASIF_WARP_SIZE) {
            const int c = base + lane;
            float acc = 0.0f;
            for (int k = 0; k < k_sources; ++k) {
                const float a_k = __shfl_sync(ASIF_FULL_MASK, alpha, k);
                if (c < d) acc += a_k * x[(size_t)k * d + c];
            }
            if (c < d) out[(size_t)r * d + c] = acc;
        }
    }
}

extern "C" __global__ void source_attention_backward(const float* __restrict__ sources,
                                                     const float* __restrict__ weights,
                                                     const float* __restrict__ dout,
                                                     float* __restrict__ dsources,
                                                     float* __restrict__ denergies, int rows,
                                                     int k_sources, int d) {
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    const int warps_per_block = blockDim.x / ASIF_WARP_SIZE;
    const int total_warps = gridDim.x * warps_per_block;
    for (int r = blockIdx.x * warps_per_block + threadIdx.x / ASIF_WARP_SIZE; r < rows;
         r += total_warps) {
        const float alpha = lane < k_sources ? weights[(size_t)r * k_sources + lane] : 0.0f;
        const float* x = sources + (size_t)r * k_sources * d;
        float* dx = dsources + (size_t)r * k_sources * d;
        const float* g = dout + (size_t)r * d;
        float my_dot = 0.0f;  // lane k: g_k = dout · X[r, k, :]
        for (int k = 0; k < k_sources; ++k) {
            const float a_k = __shfl_sync(ASIF_FULL_MASK, alpha, k);
            float partial = 0.0f;
            for (int c = lane; c < d; c += ASIF_WARP_SIZE) {
                const float gc = g[c];
                partial += gc * x[(size_t)k * d + c];
                dx[(size_t)k * d + c] = a_k * gc;
            }
            const float dot = warp_reduce_sum(partial);
            if (lane == k) my_dot = dot;
        }
        const float mean = warp_reduce_sum(alpha * my_dot);
        if (lane < k_sources) denergies[(size_t)r * k_sources + lane] = alpha * (my_dot - mean);
    }
}
