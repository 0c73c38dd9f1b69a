//! Reference fusion gate pieces, generic over the float type (f32 parity tests, f64 finite
//! differences). Layout as the kernels: stacked sources `[R, K, d]`, energies and weights `[R, K]`.
use num_traits::Float;

/// `stacked[r, k, :] = sources[k][r, :]` for K sources of `R × d`.
pub fn stack<F: Float>(sources: &[&[F]], d: usize) -> Vec<F> {
    let k_sources = sources.len();
    let rows = sources
        .first()
        .map_or(0, |s| s.len().checked_div(d).unwrap_or(0));
    let mut out = vec![F::zero(); rows * k_sources * d];
    for (k, source) in sources.iter().enumerate() {
        for r in 0..rows {
            out[(r * k_sources + k) * d..(r * k_sources + k + 1) * d]
                .copy_from_slice(&source[r * d..(r + 1) * d]);
        }
    }
    out
}

/// Source `slot` of a stacked `[R, K, d]` tensor (the backward of [`stack`]).
pub fn unstack<F: Float>(stacked: &[F], k_sources: usize, slot: usize, d: usize) -> Vec<F> {
    let rows = stacked.len().checked_div(k_sources * d).unwrap_or(0);
    let mut out = Vec::with_capacity(rows * d);
    for r in 0..rows {
        out.extend_from_slice(&stacked[(r * k_sources + slot) * d..(r * k_sources + slot + 1) * d]);
    }
    out
}

/// `(out [R, d], α [R, K])`: α = softmax_k(e), out = Σ_k α_k X[r, k, :].
pub fn forward<F: Float>(
    sources: &[F],
    energies: &[F],
    k_sources: usize,
    d: usize,
) -> (Vec<F>, Vec<F>) {
    let rows = energies.len().checked_div(k_sources).unwrap_or(0);
    let mut out = vec![F::zero(); rows * d];
    let mut weights = vec![F::zero(); rows * k_sources];
    for r in 0..rows {
        let e = &energies[r * k_sources..(r + 1) * k_sources];
        let top = e.iter().fold(F::neg_infinity(), |m, &v| m.max(v));
        let p: Vec<F> = e.iter().map(|&v| (v - top).exp()).collect();
        let total = p.iter().fold(F::zero(), |s, &v| s + v);
        for k in 0..k_sources {
            let alpha = p[k] / total;
            weights[r * k_sources + k] = alpha;
            let x = &sources[(r * k_sources + k) * d..(r * k_sources + k + 1) * d];
            for (o, &v) in out[r * d..(r + 1) * d].iter_mut().zip(x) {
                *o = *o + alpha * v;
            }
        }
    }
    (out, weights)
}

/// `(dX [R, K, d], de [R, K])` from the saved α and the upstream `dout [R, d]`:
/// dX[r, k] = α_k dout[r], de_k = α_k (g_k − Σ_j α_j g_j) with g_k = dout[r] · X[r, k].
pub fn backward<F: Float>(
    sources: &[F],
    weights: &[F],
    dout: &[F],
    k_sources: usize,
    d: usize,
) -> (Vec<F>, Vec<F>) {
    let rows = weights.len().checked_div(k_sources).unwrap_or(0);
    let mut dsources = vec![F::zero(); sources.len()];
    let mut denergies = vec![F::zero(); weights.len()];
    for r in 0..rows {
        let g = &dout[r * d..(r + 1) * d];
        let alpha = &weights[r * k_sources..(r + 1) * k_sources];
        let mut dots = vec![F::zero(); k_sources];
        for k in 0..k_sources {
            let at = (r * k_sources + k) * d;
            let x = &sources[at..at + d];
            dots[k] = x.iter().zip(g).fold(F::zero(), |s, (&a, &b)| s + a * b);
            for (dx, &gc) in dsources[at..at + d].iter_mut().zip(g) {
                *dx = alpha[k] * gc;
            }
        }
        let mean = alpha
            .iter()
            .zip(&dots)
            .fold(F::zero(), |s, (&a, &b)| s + a * b);
        for k in 0..k_sources {
            denergies[r * k_sources + k] = alpha[k] * (dots[k] - mean);
        }
    }
    (dsources, denergies)
}
