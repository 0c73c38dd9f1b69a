//! Reference ReLU, generic over the float type.
use num_traits::Float;

pub fn forward<F: Float>(x: &[F]) -> Vec<F> {
    x.iter().map(|&v| v.max(F::zero())).collect()
}

/// `dy · 1[x > 0]` (zero at x = 0, as PyTorch).
pub fn backward<F: Float>(x: &[F], dy: &[F]) -> Vec<F> {
    x.iter()
        .zip(dy)
        .map(|(&v, &g)| if v > F::zero() { g } else { F::zero() })
        .collect()
}
