//! Reference layer norm, generic over the float type so the same code serves f32 parity tests and
//! f64 finite-difference checks. Written for clarity: two passes per row, as the kernel.
use num_traits::Float;

/// Returns `(y, mean, rstd)` for `x` of `rows × cols` (row-major).
pub fn forward<F: Float>(
    x: &[F],
    gamma: &[F],
    beta: &[F],
    cols: usize,
    eps: F,
) -> (Vec<F>, Vec<F>, Vec<F>) {
    let rows = x.len().checked_div(cols).unwrap_or(0);
    let n = F::from(cols).unwrap_or(F::one());
    let mut y = vec![F::zero(); x.len()];
    let mut means = vec![F::zero(); rows];
    let mut rstds = vec![F::zero(); rows];
    for row in 0..rows {
        let x_row = &x[row * cols..(row + 1) * cols];
        let mean = x_row.iter().fold(F::zero(), |s, &v| s + v) / n;
        let variance = x_row
            .iter()
            .fold(F::zero(), |s, &v| s + (v - mean) * (v - mean))
            / n;
        let rstd = F::one() / (variance + eps).sqrt();
        for c in 0..cols {
            y[row * cols + c] = (x_row[c] - mean) * rstd * gamma[c] + beta[c];
        }
        means[row] = mean;
        rstds[row] = rstd;
    }
    (y, means, rstds)
}

/// Returns `(dx, dgamma, dbeta)` given the forward's saved `mean` and `rstd` and the upstream `dy`.
pub fn backward<F: Float>(
    x: &[F],
    gamma: &[F],
    mean: &[F],
    rstd: &[F],
    dy: &[F],
    cols: usize,
) -> (Vec<F>, Vec<F>, Vec<F>) {
    let rows = mean.len();
    let n = F::from(cols).unwrap_or(F::one());
    let mut dx = vec![F::zero(); x.len()];
    let mut dgamma = vec![F::zero(); cols];
    let mut dbeta = vec![F::zero(); cols];
    for row in 0..rows {
        let at = row * cols;
        let x_hat = |c: usize| (x[at + c] - mean[row]) * rstd[row];
        let mut sum_g = F::zero();
        let mut sum_g_xhat = F::zero();
        for c in 0..cols {
            let g = dy[at + c] * gamma[c];
            sum_g = sum_g + g;
            sum_g_xhat = sum_g_xhat + g * x_hat(c);
            dgamma[c] = dgamma[c] + dy[at + c] * x_hat(c);
            dbeta[c] = dbeta[c] + dy[at + c];
        }
        for c in 0..cols {
            let g = dy[at + c] * gamma[c];
            dx[at + c] = rstd[row] * (g - sum_g / n - x_hat(c) * sum_g_xhat / n);
        }
    }
    (dx, dgamma, dbeta)
}

/// Lanes of the f32 fast path's row sums: sixteen partial sums (one zmm register), added in a
/// fixed order at the end of the row.
const LANES: usize = 16;

/// `Σ f(v)` over `row` in [`LANES`] partial sums (element c into lane c mod 16), the partials
/// then added pairwise in a fixed order: a vectorisable sum whose order depends on `row.len()`
/// only.
#[inline(always)]
fn lane_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    for (lane, &v) in lanes.iter_mut().zip(chunks.remainder()) {
        *lane += f(v);
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            lanes[l] += lanes[l + width];
        }
    }
    lanes[0]
}

/// The CPU device's layer norm forward in f32: [`forward`]'s formula, with each row's mean and
/// variance summed by [`lane_sum`] (a different order from the reference's, so within a few
/// ulps of it: tested against the f64 reference), written straight into the outputs (no
/// per-block vectors to concatenate), on the CPU path's threads over fixed blocks of rows, each
/// row by itself: the same bits for every thread count. Compiled a second time for AVX-512 and
/// picked at run time where the CPU has it (no fused multiply-add in either: the same bits).
pub fn forward_f32(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    cols: usize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let rows = x.len().checked_div(cols).unwrap_or(0);
    let mut y = vec![0.0f32; rows * cols];
    let mut means = vec![0.0f32; rows];
    let mut rstds = vec![0.0f32; rows];
    let block = crate::parallel::rows_per_unit(cols);
    let (mean_out, rstd_out) = (
        crate::parallel::SharedMut(means.as_mut_ptr()),
        crate::parallel::SharedMut(rstds.as_mut_ptr()),
    );
    crate::parallel::for_each_block(&mut y, block * cols.max(1), |u, y_block| {
        let r0 = u * block;
        let n_rows = y_block.len() / cols.max(1);
        // SAFETY: rows r0..r0 + n_rows of `means` and `rstds` belong to this block only.
        let (mean, rstd) = unsafe {
            (
                std::slice::from_raw_parts_mut(mean_out.get().add(r0), n_rows),
                std::slice::from_raw_parts_mut(rstd_out.get().add(r0), n_rows),
            )
        };
        let x_block = &x[r0 * cols..(r0 + n_rows) * cols];
        forward_rows_f32(x_block, gamma, beta, cols, eps, y_block, mean, rstd);
    });
    (y, means, rstds)
}

#[allow(clippy::too_many_arguments)]
fn forward_rows_f32(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    cols: usize,
    eps: f32,
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has the feature the function is compiled for (checked above).
        return unsafe { forward_rows_avx512(x, gamma, beta, cols, eps, y, mean, rstd) };
    }
    forward_rows_portable(x, gamma, beta, cols, eps, y, mean, rstd)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_rows_avx512(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    cols: usize,
    eps: f32,
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    forward_rows_portable(x, gamma, beta, cols, eps, y, mean, rstd)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_rows_portable(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    cols: usize,
    eps: f32,
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    let n = cols as f32;
    for (((x_row, y_row), mean), rstd) in x
        .chunks_exact(cols)
        .zip(y.chunks_exact_mut(cols))
        .zip(mean.iter_mut())
        .zip(rstd.iter_mut())
    {
        let m = lane_sum(x_row, |v| v) / n;
        let variance = lane_sum(x_row, |v| (v - m) * (v - m)) / n;
        let r = 1.0 / (variance + eps).sqrt();
        for (((out, &v), &g), &b) in y_row.iter_mut().zip(x_row).zip(gamma).zip(beta) {
            *out = (v - m) * r * g + b;
        }
        *mean = m;
        *rstd = r;
    }
}

/// The CPU device's layer norm backward in f32: [`backward`]'s formula, each row's two sums by
/// [`lane_sum`] order (within a few ulps of the reference: tested), dx written straight into its
/// output; dγ and dβ summed per fixed block of rows, the block sums added in block order (the
/// same bits for every thread count). AVX-512 dispatched as [`forward_f32`].
pub fn backward_f32(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    cols: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let rows = mean.len();
    let mut dx = vec![0.0f32; rows * cols];
    let block = crate::parallel::rows_per_unit(cols);
    let units = rows.div_ceil(block);
    // Per block: dγ then dβ, 2 · cols values.
    let mut partials = vec![0.0f32; units * 2 * cols];
    let partial_out = crate::parallel::SharedMut(partials.as_mut_ptr());
    crate::parallel::for_each_block(&mut dx, block * cols.max(1), |u, dx_block| {
        let r0 = u * block;
        let n_rows = dx_block.len() / cols.max(1);
        // SAFETY: block u's 2 · cols partials belong to this block only.
        let partial = unsafe {
            std::slice::from_raw_parts_mut(partial_out.get().add(u * 2 * cols), 2 * cols)
        };
        let values = r0 * cols..(r0 + n_rows) * cols;
        let (dgamma, dbeta) = partial.split_at_mut(cols);
        backward_rows_f32(
            &x[values.clone()],
            gamma,
            &mean[r0..r0 + n_rows],
            &rstd[r0..r0 + n_rows],
            &dy[values],
            cols,
            dx_block,
            dgamma,
            dbeta,
        );
    });
    let mut dgamma = vec![0.0f32; cols];
    let mut dbeta = vec![0.0f32; cols];
    for partial in partials.chunks_exact(2 * cols.max(1)) {
        let (pg, pb) = partial.split_at(cols);
        for (s, &p) in dgamma.iter_mut().zip(pg) {
            *s += p;
        }
        for (s, &p) in dbeta.iter_mut().zip(pb) {
            *s += p;
        }
    }
    (dx, dgamma, dbeta)
}

#[allow(clippy::too_many_arguments)]
fn backward_rows_f32(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    cols: usize,
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has the feature the function is compiled for (checked above).
        return unsafe { backward_rows_avx512(x, gamma, mean, rstd, dy, cols, dx, dgamma, dbeta) };
    }
    backward_rows_portable(x, gamma, mean, rstd, dy, cols, dx, dgamma, dbeta)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn backward_rows_avx512(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    cols: usize,
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    backward_rows_portable(x, gamma, mean, rstd, dy, cols, dx, dgamma, dbeta)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_rows_portable(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    cols: usize,
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let n = cols as f32;
    // One row's x̂ and g = dy · γ, reused by its three passes.
    let mut x_hat = vec![0.0f32; cols];
    let mut g = vec![0.0f32; cols];
    for ((((x_row, dy_row), dx_row), &m), &r) in x
        .chunks_exact(cols)
        .zip(dy.chunks_exact(cols))
        .zip(dx.chunks_exact_mut(cols))
        .zip(mean)
        .zip(rstd)
    {
        for ((((h, gc), &v), &d), &gamma_c) in x_hat
            .iter_mut()
            .zip(g.iter_mut())
            .zip(x_row)
            .zip(dy_row)
            .zip(gamma)
        {
            *h = (v - m) * r;
            *gc = d * gamma_c;
        }
        for (((dg, db), &d), &h) in dgamma
            .iter_mut()
            .zip(dbeta.iter_mut())
            .zip(dy_row)
            .zip(&x_hat)
        {
            *dg += d * h;
            *db += d;
        }
        let sum_g = lane_sum(&g, |v| v);
        let mut lanes = [0.0f32; LANES];
        for (c, (&gc, &h)) in g.iter().zip(&x_hat).enumerate() {
            lanes[c % LANES] += gc * h;
        }
        let mut width = LANES;
        while width > 1 {
            width /= 2;
            for l in 0..width {
                lanes[l] += lanes[l + width];
            }
        }
        let sum_g_xhat = lanes[0];
        for ((out, &gc), &h) in dx_row.iter_mut().zip(&g).zip(&x_hat) {
            *out = r * (gc - sum_g / n - h * sum_g_xhat / n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u64, scale: f32) -> Vec<f32> {
        (0..len as u64)
            .map(|i| ((crate::rng::hash64(seed, i) >> 40) as f32 / 8_388_608.0 - 1.0) * scale)
            .collect()
    }

    /// The f32 fast path against the f64 reference at the widths of the models (32, 64) and
    /// odd ones (1, 17, 200: a remainder after the 16 lanes), with a row offset far from zero
    /// (the two-pass variance must not cancel): within 2e-5 · (1 + |value|).
    #[test]
    fn f32_fast_path_matches_the_f64_reference() {
        for cols in [1, 17, 32, 64, 200] {
            let rows = 3000 / cols + 5;
            let x: Vec<f32> = values(rows * cols, 1, 3.0)
                .iter()
                .enumerate()
                .map(|(e, v)| v + if (e / cols) % 2 == 0 { 100.0 } else { 0.0 })
                .collect();
            let (gamma, beta) = (values(cols, 2, 1.0), values(cols, 3, 1.0));
            let dy = values(rows * cols, 4, 1.0);
            let f64s = |v: &[f32]| v.iter().map(|&e| e as f64).collect::<Vec<_>>();
            let eps = 1e-5;
            let (y, mean, rstd) = forward_f32(&x, &gamma, &beta, cols, eps);
            let (y64, mean64, rstd64) =
                forward(&f64s(&x), &f64s(&gamma), &f64s(&beta), cols, eps as f64);
            let (dx, dgamma, dbeta) = backward_f32(&x, &gamma, &mean, &rstd, &dy, cols);
            let (dx64, dgamma64, dbeta64) =
                backward(&f64s(&x), &f64s(&gamma), &mean64, &rstd64, &f64s(&dy), cols);
            let pairs: [(&str, &[f32], &[f64], f64); 6] = [
                ("y", &y, &y64, 2e-5),
                ("mean", &mean, &mean64, 2e-5),
                ("rstd", &rstd, &rstd64, 2e-5),
                ("dx", &dx, &dx64, 2e-4),
                ("dgamma", &dgamma, &dgamma64, 2e-5 * rows as f64),
                ("dbeta", &dbeta, &dbeta64, 2e-5 * rows as f64),
            ];
            for (name, fast, reference, tolerance) in pairs {
                assert_eq!(fast.len(), reference.len(), "{name}, cols {cols}");
                for (e, (&f, &r)) in fast.iter().zip(reference).enumerate() {
                    assert!(
                        (f as f64 - r).abs() <= tolerance * (1.0 + r.abs()),
                        "{name}[{e}], cols {cols}: fast {f}, f64 reference {r}"
                    );
                }
            }
        }
    }

    /// The AVX-512 copies give the portable code's bits (no fused multiply-add in either).
    #[test]
    fn the_avx512_rows_give_the_portable_bits() {
        let (rows, cols) = (37, 64);
        let x = values(rows * cols, 5, 2.0);
        let (gamma, beta, dy) = (
            values(cols, 6, 1.0),
            values(cols, 7, 1.0),
            values(rows * cols, 8, 1.0),
        );
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let (mut y1, mut m1, mut r1) = (vec![0.0; rows * cols], vec![0.0; rows], vec![0.0; rows]);
        let (mut y2, mut m2, mut r2) = (y1.clone(), m1.clone(), r1.clone());
        forward_rows_f32(&x, &gamma, &beta, cols, 1e-12, &mut y1, &mut m1, &mut r1);
        forward_rows_portable(&x, &gamma, &beta, cols, 1e-12, &mut y2, &mut m2, &mut r2);
        assert_eq!(
            (bits(&y1), bits(&m1), bits(&r1)),
            (bits(&y2), bits(&m2), bits(&r2))
        );
        let (mut d1, mut g1, mut b1) = (vec![0.0; rows * cols], vec![0.0; cols], vec![0.0; cols]);
        let (mut d2, mut g2, mut b2) = (d1.clone(), g1.clone(), b1.clone());
        backward_rows_f32(&x, &gamma, &m1, &r1, &dy, cols, &mut d1, &mut g1, &mut b1);
        backward_rows_portable(&x, &gamma, &m1, &r1, &dy, cols, &mut d2, &mut g2, &mut b2);
        assert_eq!(
            (bits(&d1), bits(&g1), bits(&b1)),
            (bits(&d2), bits(&g2), bits(&b2))
        );
    }
}
