//! Reference dropout: the same counter-based mask as the kernel (`crate::rng`, bit for bit).
use num_traits::Float;

/// `y[i] = keep(seed, i) ? x[i] · scale : 0` with `scale = 1/(1 − p)` (computed by the caller
/// in f32, as the kernel receives it). Applied to x in the forward and to dy in the backward.
pub fn apply<F: Float>(x: &[F], p: f32, scale: F, seed: u64) -> Vec<F> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            if crate::rng::dropout_keep(seed, i as u64, p) {
                v * scale
            } else {
                F::zero()
            }
        })
        .collect()
}
