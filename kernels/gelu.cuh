// gelu.cuh: GELU, exact erf form (RecBole's `gelu`, spec §1), and its derivative, per element.
// Shared by gelu.cu (the activation) and bias_gelu.cu (the FFN's bias add fused with it), so the
// fused and the unfused paths compute the same bits.
//   gelu_value(v)        = v · Φ(v) = 0.5 · v · (1 + erf(v / √2))
//   gelu_gradient(v, dy) = dy · (Φ(v) + v · φ(v)),  φ(v) = exp(-v²/2) / √(2π)
#pragma once

#define GELU_INV_SQRT2 0.70710678118654752440f
#define GELU_INV_SQRT_2PI 0.39894228040143267794f

__device__ __forceinline__ float gelu_value(float v) {
    return 0.5f * v * (1.0f + erff(v * GELU_INV_SQRT2));
}

__device__ __forceinline__ float gelu_gradient(float v, float dy) {
    const float cdf = 0.5f * (1.0f + erff(v * GELU_INV_SQRT2));
    const float pdf = GELU_INV_SQRT_2PI * expf(-0.5f * v * v);
    return dy * (cdf + v * pdf);
}
