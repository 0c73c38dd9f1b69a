//! Reference: `y += x` and `out = a + b`.
pub fn add_assign<F: num_traits::Float>(y: &mut [F], x: &[F]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = *y + x;
    }
}

/// `a + b`, elementwise.
pub fn add<F: num_traits::Float>(a: &[F], b: &[F]) -> Vec<F> {
    a.iter().zip(b).map(|(&a, &b)| a + b).collect()
}
