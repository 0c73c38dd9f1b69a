//! Reference: `y += x`.
pub fn add_assign<F: num_traits::Float>(y: &mut [F], x: &[F]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = *y + x;
    }
}
