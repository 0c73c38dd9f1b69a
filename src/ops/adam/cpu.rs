//! Reference Adam step (torch.optim.Adam with L2 weight decay folded into the gradient), generic
//! over the float type, in the kernel's order of operations.
use num_traits::Float;

use super::AdamConfig;

/// One step `t` (1-based) over flat `params`, `grads`, and the moments `m`, `v`, in place.
pub fn step<F: Float>(
    config: &AdamConfig,
    t: u64,
    params: &mut [F],
    grads: &[F],
    m: &mut [F],
    v: &mut [F],
) {
    let f = |x: f64| F::from(x).unwrap_or(F::zero());
    let (beta1, beta2) = (f(config.beta1 as f64), f(config.beta2 as f64));
    let (eps, weight_decay) = (f(config.eps as f64), f(config.weight_decay as f64));
    let (step_size, bias_correction2_sqrt) = config.corrections(t);
    let (step_size, bias_correction2_sqrt) = (f(step_size), f(bias_correction2_sqrt));
    for i in 0..params.len() {
        let g = grads[i] + weight_decay * params[i];
        m[i] = beta1 * m[i] + (F::one() - beta1) * g;
        v[i] = beta2 * v[i] + (F::one() - beta2) * g * g;
        params[i] = params[i] - step_size * m[i] / (v[i].sqrt() / bias_correction2_sqrt + eps);
    }
}

/// [`step`] on the CPU path's threads (`crate::parallel`) over fixed blocks of parameters: every
/// element is updated as in [`step`], so the result is the same for every thread count.
pub fn step_threaded<F: Float + Send + Sync>(
    config: &AdamConfig,
    t: u64,
    params: &mut [F],
    grads: &[F],
    m: &mut [F],
    v: &mut [F],
) {
    use rayon::prelude::*;
    let block = crate::parallel::ELEMENTS_PER_UNIT;
    params
        .par_chunks_mut(block)
        .zip(grads.par_chunks(block))
        .zip(m.par_chunks_mut(block))
        .zip(v.par_chunks_mut(block))
        .for_each(|(((params, grads), m), v)| step(config, t, params, grads, m, v));
}
