//! Reference dropout: the same counter-based mask as the kernel (`crate::rng`, bit for bit).
use num_traits::Float;

/// `y[i] = keep(seed, i) ? x[i] · scale : 0` with `scale = 1/(1 − p)` (computed by the caller
/// in f32, as the kernel receives it). Applied to x in the forward and to dy in the backward.
pub fn apply<F: Float>(x: &[F], p: f32, scale: F, seed: u64) -> Vec<F> {
    apply_from(x, p, scale, seed, 0)
}

/// [`apply`] to the elements `first..first + x.len()` of a larger tensor `x` is part of (the
/// counter is the element's index in the whole tensor).
pub fn apply_from<F: Float>(x: &[F], p: f32, scale: F, seed: u64, first: usize) -> Vec<F> {
    let threshold = crate::rng::keep_threshold(p);
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let i = first + i;
            // Written so it compiles to a select, not a branch: the keep decision is a coin flip
            // that a branch predictor misses about half the time at p = 0.5.
            let kept = (crate::rng::hash64(seed, i as u64) >> 40) >= threshold;
            let scaled = v * scale;
            if kept {
                scaled
            } else {
                F::zero()
            }
        })
        .collect()
}
