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

/// [`forward`] on the CPU path's threads (`crate::parallel`) over fixed blocks of rows: every row
/// is computed as in [`forward`], so the result is the same, bit for bit, for every thread count.
pub fn forward_threaded<F: Float + Send + Sync + Copy>(
    x: &[F],
    gamma: &[F],
    beta: &[F],
    cols: usize,
    eps: F,
) -> (Vec<F>, Vec<F>, Vec<F>) {
    let rows = x.len().checked_div(cols).unwrap_or(0);
    let block = crate::parallel::rows_per_unit(cols);
    let parts = crate::parallel::map_units(rows.div_ceil(block), |u| {
        let (r0, r1) = (u * block, ((u + 1) * block).min(rows));
        forward(&x[r0 * cols..r1 * cols], gamma, beta, cols, eps)
    });
    let (mut ys, mut means, mut rstds) = (Vec::new(), Vec::new(), Vec::new());
    for (part_y, part_mean, part_rstd) in parts {
        ys.push(part_y);
        means.push(part_mean);
        rstds.push(part_rstd);
    }
    (
        crate::parallel::concat_parallel(ys),
        means.concat(),
        rstds.concat(),
    )
}

/// [`backward`] on the CPU path's threads over fixed blocks of rows: dx per row as in
/// [`backward`]; dγ and dβ summed per block, the block sums added in block order (so the result
/// does not depend on the thread count; it may differ from [`backward`]'s in the last bits).
pub fn backward_threaded<F: Float + Send + Sync>(
    x: &[F],
    gamma: &[F],
    mean: &[F],
    rstd: &[F],
    dy: &[F],
    cols: usize,
) -> (Vec<F>, Vec<F>, Vec<F>) {
    let rows = mean.len();
    let block = crate::parallel::rows_per_unit(cols);
    let parts = crate::parallel::map_units(rows.div_ceil(block), |u| {
        let (r0, r1) = (u * block, ((u + 1) * block).min(rows));
        let values = r0 * cols..r1 * cols;
        backward(
            &x[values.clone()],
            gamma,
            &mean[r0..r1],
            &rstd[r0..r1],
            &dy[values],
            cols,
        )
    });
    let (mut dxs, mut dgammas, mut dbetas) = (Vec::new(), Vec::new(), Vec::new());
    for (part_dx, part_dgamma, part_dbeta) in parts {
        dxs.push(part_dx);
        dgammas.push(part_dgamma);
        dbetas.push(part_dbeta);
    }
    (
        crate::parallel::concat_parallel(dxs),
        crate::parallel::sum_in_order(&dgammas, cols),
        crate::parallel::sum_in_order(&dbetas, cols),
    )
}
