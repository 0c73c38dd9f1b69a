// adam.cu: one Adam step over every parameter of the model in one launch.
//
// What it computes (spec §2 "Optimiser": Adam, β 0.9/0.999, ε 1e-8, weight decay 0 by default;
// torch.optim.Adam's update with L2 weight decay folded into the gradient), per element, step t:
//   g = grad + λ θ
//   m = β1 m + (1 − β1) g,   v = β2 v + (1 − β2) g²
//   θ = θ − (lr / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + ε)
// The host computes step_size = lr/(1 − β1^t) and sqrt(1 − β2^t) in f64.
// Every parameter lives in one flat buffer for the launch (src/ops/adam/mod.rs packs the
// parameters and gradients in and the parameters back out with device-to-device copies).
//
// Launch shape (src/ops/adam/cuda.rs): 1-D grid-stride, 256 threads.
// Traffic: reads θ, g, m, v and writes θ, m, v: 28 bytes per parameter (the ASIF model's ~4 M
// parameters at d = 256, L = 3: 112 MB, about 40 µs on an H100), plus the packing copies.
//
// Versions:
//   1. flat buffer, one launch.
//
// Gates (docs/kernels-sass.md): block and dynamic shared bytes are the launch shape at the
// paper's sizes (d = 256, h = 4, n = 50, r = 16) as the launcher in src/ops/ computes it.
//   asif-gate: adam_update block=256 occupancy>=100%
#include "common.cuh"

extern "C" __global__ void adam_update(float* __restrict__ params, const float* __restrict__ grads,
                                       float* __restrict__ m, float* __restrict__ v, int len, float beta1,
                                       float beta2, float eps, float weight_decay, float step_size,
                                       float bias_correction2_sqrt) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) {
        const float theta = params[i];
        const float g = grads[i] + weight_decay * theta;
        const float m_i = beta1 * m[i] + (1.0f - beta1) * g;
        const float v_i = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = m_i;
        v[i] = v_i;
        params[i] = theta - step_size * m_i / (sqrtf(v_i) / bias_correction2_sqrt + eps);
    }
}
