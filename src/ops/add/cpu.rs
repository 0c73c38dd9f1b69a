//! Reference: `out = a + b`.

/// `a + b`, elementwise.
pub fn add<F: num_traits::Float>(a: &[F], b: &[F]) -> Vec<F> {
    a.iter().zip(b).map(|(&a, &b)| a + b).collect()
}
