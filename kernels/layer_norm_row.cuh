// layer_norm_row.cuh: the warp-per-row layer norm of the v2 kernels (issue 19), shared by
// layer_norm.cu (layer_norm_forward_v2, layer_norm_backward_v2) and residual_norm.cu
// (residual_dropout_layer_norm_forward_v2), so the fused and unfused paths reduce in one order.
//
// One warp owns one row. Register path (layer_norm_v2_in_registers): cols % 4 == 0, cols <=
// 4 · 32 · LAYER_NORM_V2_VECTORS and every pointer 16-byte aligned; lane `lane` holds the float4
// vectors lane, lane + 32, ... of the row (coalesced 128-bit loads), and the statistics are two
// passes over those registers with shuffle reductions only (no shared memory, no barrier).
// Otherwise the scalar path: lane holds columns lane, lane + 32, ... and re-reads the row (from L1)
// for each pass. Both are two-pass (mean, then the mean of squared deviations), numerically safe
// for eps = 1e-12 as v1.
#pragma once
#include "common.cuh"
#include "vector_io.cuh"

// float4 vectors per lane in registers: rows of up to 4 · 32 · 2 = 256 columns (the paper's d).
#define LAYER_NORM_V2_VECTORS 2
#define LAYER_NORM_V2_MAX_REGISTER_COLS (4 * ASIF_WARP_SIZE * LAYER_NORM_V2_VECTORS)
// Warps (rows at a time) per block of the v2 kernels.
#define LAYER_NORM_V2_WARPS 8

__device__ __forceinline__ bool layer_norm_v2_in_registers(int cols, bool pointers_aligned) {
    return pointers_aligned && cols % 4 == 0 && cols <= LAYER_NORM_V2_MAX_REGISTER_COLS;
}

// Whether vector k of this lane lies in a row of `cols` columns (register path).
__device__ __forceinline__ bool layer_norm_v2_active(int k, int lane, int cols) {
    return 4 * (k * ASIF_WARP_SIZE + lane) < cols;
}

// Column of the first element of vector k of this lane.
__device__ __forceinline__ int layer_norm_v2_column(int k, int lane) {
    return 4 * (k * ASIF_WARP_SIZE + lane);
}

// Mean and rstd of a row held in registers (inactive vectors are ignored).
__device__ __forceinline__ void layer_norm_v2_statistics(const asif_float4 (&v)[LAYER_NORM_V2_VECTORS],
                                                         int lane, int cols, float eps, float& mean,
                                                         float& rstd) {
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < LAYER_NORM_V2_VECTORS; ++k) {
        if (layer_norm_v2_active(k, lane, cols)) sum += (v[k].x + v[k].y) + (v[k].z + v[k].w);
    }
    mean = warp_reduce_sum(sum) / (float)cols;
    float sum_sq = 0.0f;
#pragma unroll
    for (int k = 0; k < LAYER_NORM_V2_VECTORS; ++k) {
        if (layer_norm_v2_active(k, lane, cols)) {
            const float a = v[k].x - mean, b = v[k].y - mean, c = v[k].z - mean, d = v[k].w - mean;
            sum_sq += (a * a + b * b) + (c * c + d * d);
        }
    }
    rstd = rsqrtf(warp_reduce_sum(sum_sq) / (float)cols + eps);
}

// Mean and rstd of a row read from memory by the scalar path (each lane reads columns lane,
// lane + 32, ...; residual_norm's scalar path reads back z that the same lane wrote).
__device__ __forceinline__ void layer_norm_v2_statistics_scalar(const float* row, int lane, int cols,
                                                                float eps, float& mean, float& rstd) {
    float sum = 0.0f;
    for (int c = lane; c < cols; c += ASIF_WARP_SIZE) sum += row[c];
    mean = warp_reduce_sum(sum) / (float)cols;
    float sum_sq = 0.0f;
    for (int c = lane; c < cols; c += ASIF_WARP_SIZE) {
        const float centered = row[c] - mean;
        sum_sq += centered * centered;
    }
    rstd = rsqrtf(warp_reduce_sum(sum_sq) / (float)cols + eps);
}

// y = (v − mean) · rstd · γ + β for the row in registers, stored with 128-bit stores.
__device__ __forceinline__ void layer_norm_v2_store_output(const asif_float4 (&v)[LAYER_NORM_V2_VECTORS],
                                                           const float* gamma, const float* beta,
                                                           float* y_row, int lane, int cols, float mean,
                                                           float rstd) {
#pragma unroll
    for (int k = 0; k < LAYER_NORM_V2_VECTORS; ++k) {
        if (layer_norm_v2_active(k, lane, cols)) {
            const int c = layer_norm_v2_column(k, lane);
            const asif_float4 g = asif_load4(gamma + c);
            const asif_float4 b = asif_load4(beta + c);
            asif_float4 out;
            out.x = (v[k].x - mean) * rstd * g.x + b.x;
            out.y = (v[k].y - mean) * rstd * g.y + b.y;
            out.z = (v[k].z - mean) * rstd * g.z + b.z;
            out.w = (v[k].w - mean) * rstd * g.w + b.w;
            asif_store4(y_row + c, out);
        }
    }
}

// The scalar path's output pass.
__device__ __forceinline__ void layer_norm_v2_store_output_scalar(const float* row, const float* gamma,
                                                                  const float* beta, float* y_row, int lane,
                                                                  int cols, float mean, float rstd) {
    for (int c = lane; c < cols; c += ASIF_WARP_SIZE) {
        y_row[c] = (row[c] - mean) * rstd * gamma[c] + beta[c];
    }
}
