//! Reference linear layer and matrix product, generic over the float type: the plain triple loop
//! (f64 for finite-difference checks and as the parity reference of the GEMM paths).
use num_traits::Float;

/// `C = A · B` for row-major `A` (m × k) and `B` (k × n).
pub fn matmul<F: Float>(a: &[F], b: &[F], m: usize, k: usize, n: usize) -> Vec<F> {
    let mut c = vec![F::zero(); m * n];
    for i in 0..m {
        for p in 0..k {
            let a_ip = a[i * k + p];
            for j in 0..n {
                c[i * n + j] = c[i * n + j] + a_ip * b[p * n + j];
            }
        }
    }
    c
}

/// The transpose of a row-major `rows × cols` matrix.
pub fn transpose<F: Float>(a: &[F], rows: usize, cols: usize) -> Vec<F> {
    let mut t = vec![F::zero(); a.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = a[r * cols + c];
        }
    }
    t
}

/// `y = x W + b` for `x` (rows × d_in), `W` (d_in × d_out), `b` (d_out, optional).
pub fn linear_forward<F: Float>(
    x: &[F],
    weight: &[F],
    bias: Option<&[F]>,
    d_in: usize,
    d_out: usize,
) -> Vec<F> {
    let rows = x.len().checked_div(d_in).unwrap_or(0);
    let mut y = matmul(x, weight, rows, d_in, d_out);
    if let Some(bias) = bias {
        for row in y.chunks_mut(d_out) {
            for (v, &b) in row.iter_mut().zip(bias) {
                *v = *v + b;
            }
        }
    }
    y
}

/// `(dx, dW, db)`: `dx = dy Wᵀ`, `dW = xᵀ dy`, `db = Σ_rows dy`.
pub fn linear_backward<F: Float>(
    x: &[F],
    weight: &[F],
    dy: &[F],
    d_in: usize,
    d_out: usize,
) -> (Vec<F>, Vec<F>, Vec<F>) {
    let rows = x.len().checked_div(d_in).unwrap_or(0);
    let dx = matmul(dy, &transpose(weight, d_in, d_out), rows, d_out, d_in);
    let dweight = matmul(&transpose(x, rows, d_in), dy, d_in, rows, d_out);
    (dx, dweight, column_sum(dy, d_out))
}

/// Σ over rows of a row-major matrix with `cols` columns.
pub fn column_sum<F: Float>(a: &[F], cols: usize) -> Vec<F> {
    let mut sum = vec![F::zero(); cols];
    for row in a.chunks(cols.max(1)) {
        for (s, &v) in sum.iter_mut().zip(row) {
            *s = *s + v;
        }
    }
    sum
}

/// [`column_sum`] on the CPU path's threads (`crate::parallel`): per fixed block of rows, the
/// block sums added in block order (independent of the thread count).
pub fn column_sum_threaded<F: Float + Send + Sync>(a: &[F], cols: usize) -> Vec<F> {
    let block = crate::parallel::rows_per_unit(cols) * cols.max(1);
    let partials = crate::parallel::map_units(a.len().div_ceil(block), |u| {
        column_sum(&a[u * block..((u + 1) * block).min(a.len())], cols)
    });
    crate::parallel::sum_in_order(&partials, cols)
}

/// `logits = u Eᵀ` for `u` (rows × d) and the table `E` (items × d).
pub fn matmul_transposed_forward<F: Float>(u: &[F], table: &[F], d: usize) -> Vec<F> {
    let rows = u.len().checked_div(d).unwrap_or(0);
    let items = table.len().checked_div(d).unwrap_or(0);
    matmul(u, &transpose(table, items, d), rows, d, items)
}

/// `(du, dE)`: `du = dlogits E`, `dE = dlogitsᵀ u`.
pub fn matmul_transposed_backward<F: Float>(
    u: &[F],
    table: &[F],
    dlogits: &[F],
    d: usize,
) -> (Vec<F>, Vec<F>) {
    let rows = u.len().checked_div(d).unwrap_or(0);
    let items = table.len().checked_div(d).unwrap_or(0);
    let du = matmul(dlogits, table, rows, items, d);
    let dtable = matmul(&transpose(dlogits, rows, items), u, items, rows, d);
    (du, dtable)
}
