//! Reference gather of one row per sequence, generic over the float type. Positions are assumed
//! checked (in `[0, n)`).
use num_traits::Float;

/// `out[b] = h[b, positions[b]]` for `h` `[batch, n, dim]`.
pub fn forward<F: Float>(h: &[F], positions: &[usize], n: usize, dim: usize) -> Vec<F> {
    let mut out = Vec::with_capacity(positions.len() * dim);
    for (b, &t) in positions.iter().enumerate() {
        out.extend_from_slice(&h[(b * n + t) * dim..(b * n + t + 1) * dim]);
    }
    out
}

/// `dh` `[batch, n, dim]`: zeros except `dh[b, positions[b]] = dout[b]`.
pub fn backward<F: Float>(positions: &[usize], dout: &[F], n: usize, dim: usize) -> Vec<F> {
    let mut dh = vec![F::zero(); positions.len() * n * dim];
    for (b, &t) in positions.iter().enumerate() {
        dh[(b * n + t) * dim..(b * n + t + 1) * dim].copy_from_slice(&dout[b * dim..(b + 1) * dim]);
    }
    dh
}
