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
// Step counter (issue 20, src/device/step_counter.rs): adam_update_stepped reads step t from a
// device counter and computes the corrections itself, bit-identical to the host's; then
// adam_advance_step advances the counter (one more launch per step), so a CUDA graph of the
// whole step replays without new arguments. adam_update (corrections by value) stays the API.
//
// Gates (docs/kernels-sass.md): block and dynamic shared bytes are the launch shape at the
// paper's sizes (d = 256, h = 4, n = 50, r = 16) as the launcher in src/ops/ computes it.
//   asif-gate: adam_update block=256 occupancy>=100%
//   asif-gate: adam_update_stepped block=256 occupancy>=100%
//   asif-gate: adam_advance_step block=32 occupancy>=50%
#include "common.cuh"

// One element's update; both entry points below run it, so they differ only in where the step's
// scalars come from.
__device__ __forceinline__ void adam_update_elements(float* __restrict__ params, const float* __restrict__ grads,
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

// By value: the host computed the corrections of step t (the public kernel API).
extern "C" __global__ void adam_update(float* __restrict__ params, const float* __restrict__ grads,
                                       float* __restrict__ m, float* __restrict__ v, int len, float beta1,
                                       float beta2, float eps, float weight_decay, float step_size,
                                       float bias_correction2_sqrt) {
    adam_update_elements(params, grads, m, v, len, beta1, beta2, eps, weight_decay, step_size, bias_correction2_sqrt);
}

// a^b for b ≥ 0 by square and multiply, in the order of Rust's f64::powi (LLVM's powi lowers to
// compiler-rt's __powidf2: multiply by a when the low bit is set, halve b, square a), with
// products the GPU compiler may not fuse, so the result is the host's bit for bit.
__device__ __forceinline__ double adam_powi(double a, int b) {
    double r = 1.0;
    while (true) {
        if (b & 1) r = __dmul_rn(r, a);
        b /= 2;
        if (b == 0) break;
        a = __dmul_rn(a, a);
    }
    return r;
}

// Step counter: the step t = steps_taken + 1 read from device memory (src/device/step_counter.rs),
// the corrections computed as AdamConfig::corrections does on the host (f64, t clamped to
// i32::MAX, then rounded to f32 as the host's launch does), so the update is bit-identical to
// adam_update's and a CUDA graph replays it unchanged. Every thread computes them (~60 f64
// operations at t ~ 10^4, under the element loop's memory time).
extern "C" __global__ void adam_update_stepped(float* __restrict__ params, const float* __restrict__ grads,
                                               float* __restrict__ m, float* __restrict__ v, int len, float beta1,
                                               float beta2, float eps, float weight_decay, float lr,
                                               const unsigned long long* __restrict__ steps_taken) {
    const unsigned long long taken = *steps_taken;
    const int t = taken >= 2147483647ull ? 2147483647 : (int)(taken + 1);
    const double bias_correction1 = __dsub_rn(1.0, adam_powi((double)beta1, t));
    const double bias_correction2 = __dsub_rn(1.0, adam_powi((double)beta2, t));
    const float step_size = (float)((double)lr / bias_correction1);
    const float bias_correction2_sqrt = (float)sqrt(bias_correction2);
    adam_update_elements(params, grads, m, v, len, beta1, beta2, eps, weight_decay, step_size, bias_correction2_sqrt);
}

// The end of a step with a device step counter: steps_taken += 1 (one thread), after the update
// and every kernel of the step that read the counter.
extern "C" __global__ void adam_advance_step(unsigned long long* __restrict__ steps_taken) {
    if (blockIdx.x == 0 && threadIdx.x == 0) *steps_taken += 1;
}
