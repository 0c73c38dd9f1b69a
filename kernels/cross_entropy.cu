// cross_entropy.cu: softmax cross-entropy over all items, fused row-wise log-softmax + NLL +
// gradient.
//
// What it computes (spec §2 "Prediction": logits = u E_Xᵀ over all |V| rows, pad included;
// L_ce = mean_b CE(logits_b, target_b)), per row b with t = target_b:
//   M_b = max_j ℓ_bj,  S_b = Σ_j exp(ℓ_bj − M_b)                   (stable for |ℓ| ~ 1e4)
//   loss_b = (M_b − ℓ_bt) + log S_b                                (= lse_b − ℓ_bt)
//   G_bj = (exp(ℓ_bj − M_b) / S_b − 1[j = t]) / B                  (∂L_ce/∂ℓ_bj)
// cross_entropy_rows overwrites the logits with G in place, so the whole loss holds one
// B × |V| matrix; cross_entropy_mean sums loss_b in one block (deterministic) and divides by B;
// scale_by_scalar multiplies by the upstream gradient read from device memory (no host sync).
// A target outside [0, |V|) contributes log S_b and no one-hot (the host devices reject it first).
//
// Launch shapes (src/ops/cross_entropy/cuda.rs): cross_entropy_rows one block of 256 threads per
// row; each thread keeps a running (max, sum) over its strided columns (online softmax), the block
// merges them, then a second pass writes G. cross_entropy_mean: one block of 256. scale_by_scalar:
// grid-stride.
//
// Traffic and floor at the paper's sizes (B = 2048, |V| = 20k as Yelp, fp32: 164 MB of logits):
// two reads and one write, 492 MB, about 165 µs at 3.0 TB/s on an H100. The GEMM that makes the
// logits (and the two backward GEMMs) dominate: 2·B·|V|·d = 21 GFLOP each.
//
// Versions:
//   1. online max/sum per thread, block merge, in-place gradient.
//
// Gates (docs/kernels-sass.md): block and dynamic shared bytes are the launch shape at the
// paper's sizes (d = 256, h = 4, n = 50, r = 16) as the launcher in src/ops/ computes it.
//   asif-gate: cross_entropy_rows block=256 occupancy>=100%
//   asif-gate: cross_entropy_mean block=256 occupancy>=100%
//   asif-gate: scale_by_scalar block=256 occupancy>=100%
#include "common.cuh"

__device__ __forceinline__ float block_reduce_max(float value, float* scratch) {
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    const int warp = threadIdx.x / ASIF_WARP_SIZE;
    const int warps = blockDim.x / ASIF_WARP_SIZE;
    value = warp_reduce_max(value);
    if (lane == 0) scratch[warp] = value;
    __syncthreads();
    float total = lane < warps ? scratch[lane] : -asif_infinity();
    total = warp_reduce_max(total);
    __syncthreads();
    return total;
}

extern "C" __global__ void cross_entropy_rows(float* logits_to_grad, const int* __restrict__ targets,
                                              float* __restrict__ row_loss, int rows, int items,
                                              float inv_rows) {
    __shared__ float scratch[32];
    const int row = blockIdx.x;
    if (row >= rows) return;  // uniform across the block
    float* logits = logits_to_grad + (size_t)row * items;

    // Online softmax per thread: running max m and Σ exp(ℓ − m).
    float m = -asif_infinity(), s = 0.0f;
    for (int j = threadIdx.x; j < items; j += blockDim.x) {
        const float l = logits[j];
        if (l > m) {
            s = s * expf(m - l) + 1.0f;
            m = l;
        } else {
            s += expf(l - m);
        }
    }
    const float row_max = block_reduce_max(m, scratch);
    const float sum = block_reduce_sum(m == -asif_infinity() ? 0.0f : s * expf(m - row_max), scratch);
    // Softmax as exp(ℓ − max) / sum rather than exp(ℓ − lse): ℓ − max is exact for nearby
    // values, while lse itself would be rounded to fp32's ulp at |ℓ| ~ 1e4 (about 1e-3), an error
    // every probability would inherit.
    const float inv_sum = 1.0f / sum;
    const int target = targets[row];
    const bool valid = target >= 0 && target < items;
    // Read the target logit before the second pass overwrites it.
    const float target_logit = valid ? logits[target] : row_max;
    __syncthreads();
    for (int j = threadIdx.x; j < items; j += blockDim.x) {
        const float p = expf(logits[j] - row_max) * inv_sum;
        logits[j] = (p - (j == target ? 1.0f : 0.0f)) * inv_rows;
    }
    if (threadIdx.x == 0) row_loss[row] = (row_max - target_logit) + logf(sum);
}

extern "C" __global__ void cross_entropy_mean(const float* __restrict__ row_loss, float* __restrict__ loss,
                                              int rows) {
    __shared__ float scratch[32];
    float sum = 0.0f;
    for (int b = threadIdx.x; b < rows; b += blockDim.x) sum += row_loss[b];
    sum = block_reduce_sum(sum, scratch);
    if (threadIdx.x == 0) loss[0] = sum / (float)rows;
}

extern "C" __global__ void scale_by_scalar(float* __restrict__ x, const float* __restrict__ scalar, int len) {
    const float s = scalar[0];
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) x[i] *= s;
}
