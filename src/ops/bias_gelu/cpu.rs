//! The reference of the fused bias + GELU: the unfused composition (the linear layer's bias add,
//! then GELU; GELU's backward, then the linear layer's bias gradient), from those ops' own
//! references, so nothing is computed twice in two ways.
use num_traits::Float;

use crate::ops::gelu::reference as gelu;
use crate::ops::linear::reference as linear;

/// `z = y + b` over rows of `cols` (`b[c]` added to column c).
fn add_bias<F: Float>(y: &[F], bias: &[F], offset: usize, cols: usize) -> Vec<F> {
    y.iter()
        .enumerate()
        .map(|(i, &v)| v + bias[(offset + i) % cols])
        .collect()
}

/// `h = GELU(y + b)` (f64 or f32, serial; the finite-difference checks' reference).
pub fn forward<F: Float>(y: &[F], bias: &[F], cols: usize) -> Vec<F> {
    gelu::forward(&add_bias(y, bias, 0, cols))
}

/// `(dy, db)`: `dy = GELU'(y + b) · dh`, `db = Σ_rows dy` (serial).
pub fn backward<F: Float>(y: &[F], bias: &[F], dh: &[F], cols: usize) -> (Vec<F>, Vec<F>) {
    let dy = gelu::backward(&add_bias(y, bias, 0, cols), dh);
    let db = linear::column_sum(&dy, cols);
    (dy, db)
}

/// [`forward`] on the CPU device: GELU's f32 path over blocks of elements on the pool's threads,
/// the bits of the unfused CPU path (its GEMM epilogue adds the bias as `y + b`, then GELU's f32
/// path).
pub fn forward_f32(y: &[f32], bias: &[f32], cols: usize) -> Vec<f32> {
    crate::parallel::elementwise(y.len(), |r| {
        gelu::forward_f32(&add_bias(&y[r.clone()], bias, r.start, cols))
    })
}

/// [`backward`] on the CPU device: GELU's f32 backward per block, then the linear layer's
/// threaded column sum (the unfused CPU path's bits).
pub fn backward_f32(y: &[f32], bias: &[f32], dh: &[f32], cols: usize) -> (Vec<f32>, Vec<f32>) {
    let dy = crate::parallel::elementwise(y.len(), |r| {
        gelu::backward_f32(&add_bias(&y[r.clone()], bias, r.start, cols), &dh[r])
    });
    let db = linear::column_sum_threaded(&dy, cols);
    (dy, db)
}
