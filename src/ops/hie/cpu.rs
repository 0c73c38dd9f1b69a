//! Reference HIE (spec §3.3, eqs. 10 to 12), generic over the float type so the same code serves
//! f32 parity tests and f64 finite-difference checks. Written for clarity, one sequence at a time,
//! in the same order of operations as `kernels/hie.cu`.
//!
//! Layouts (row-major): H_X, H_A, h_A* `[B, n, d]`; W_r `[n, r]`; Q `[B, d, r]`; R `[B, r, r]`
//! (row j, column k); the sign mask φ `[B, n, r]` (1.0 or 0.0).
use num_traits::Float;

/// What the forward returns: h_A* and the state the backward needs.
#[derive(Debug, Clone)]
pub struct Forward<F> {
    pub output: Vec<F>,
    pub q: Vec<F>,
    pub r: Vec<F>,
    pub mask: Vec<F>,
}

/// Gradients; `dh_x` and `dw_r` are empty in the Q-constant mode.
#[derive(Debug, Clone)]
pub struct Backward<F> {
    pub dh_a: Vec<F>,
    pub dh_x: Vec<F>,
    pub dw_r: Vec<F>,
}

pub use super::Dims;

/// Number of rows of sequence `b` that take part: L_b with padding masked, n when kept.
pub fn valid_rows(lengths: &[i32], b: usize, n: usize, keep_padding: bool) -> usize {
    if keep_padding {
        n
    } else {
        (lengths[b].max(0) as usize).min(n)
    }
}

/// Thin Householder QR of the d×r matrix `m` (row-major) with the rank guard, returning `(Q, R)`
/// (Q d×r row-major, R r×r row-major).
///
/// Column k is dropped when its residual norm (its part orthogonal to the kept columns before it)
/// is at most `tolerance` times the largest residual norm seen so far (columns 0..=k), or when
/// `max_rank` columns are kept already (M = H_Xᵀ W_r over L_b rows has rank ≤ L_b: the forward
/// passes L_b, so the common short-sequence case is decided exactly, not by rounding noise). A dropped
/// column gets no reflector and does not advance the pivot row, so the kept columns of Q are the
/// Gram–Schmidt basis of the kept columns of M taken in order, and `M_K = Q_K R_KK` on the kept set
/// K. Dropped columns are zero in Q and their rows and columns are zero in R. An all-zero M drops
/// every column.
pub fn householder_qr<F: Float>(
    m: &[F],
    d: usize,
    r: usize,
    tolerance: F,
    max_rank: usize,
) -> (Vec<F>, Vec<F>) {
    let mut a = m.to_vec();
    let mut kept = vec![false; r];
    let mut pivot = vec![0usize; r];
    let mut tau = vec![F::zero(); r];
    let mut alpha = vec![F::zero(); r];
    let mut largest = F::zero();
    let mut p = 0usize;
    for k in 0..r {
        let norm = (p..d)
            .fold(F::zero(), |s, i| s + a[i * r + k] * a[i * r + k])
            .sqrt();
        largest = largest.max(norm);
        if p >= max_rank || norm <= tolerance * largest {
            continue;
        }
        let x_p = a[p * r + k];
        let alpha_k = if x_p >= F::zero() { -norm } else { norm };
        let v_p = x_p - alpha_k; // |v_p| = |x_p| + norm: no cancellation
        a[p * r + k] = v_p;
        let tau_k = F::one() / (norm * v_p.abs()); // 2 / vᵀv
        for j in k + 1..r {
            let w = (p..d).fold(F::zero(), |s, i| s + a[i * r + k] * a[i * r + j]);
            for i in p..d {
                a[i * r + j] = a[i * r + j] - tau_k * w * a[i * r + k];
            }
        }
        kept[k] = true;
        pivot[k] = p;
        tau[k] = tau_k;
        alpha[k] = alpha_k;
        p += 1;
    }

    let mut r_mat = vec![F::zero(); r * r];
    for k in (0..r).filter(|&k| kept[k]) {
        for j in (0..k).filter(|&j| kept[j]) {
            r_mat[j * r + k] = a[pivot[j] * r + k];
        }
        r_mat[k * r + k] = alpha[k];
    }

    // Q e_{p_k} = H_1 ⋯ H_last e_{p_k}: apply the reflectors in reverse to the unit columns.
    let mut q = vec![F::zero(); d * r];
    for k in (0..r).filter(|&k| kept[k]) {
        q[pivot[k] * r + k] = F::one();
    }
    for s in (0..r).rev().filter(|&s| kept[s]) {
        let p = pivot[s];
        for j in (0..r).filter(|&j| kept[j]) {
            let w = (p..d).fold(F::zero(), |acc, i| acc + a[i * r + s] * q[i * r + j]);
            for i in p..d {
                q[i * r + j] = q[i * r + j] - tau[s] * w * a[i * r + s];
            }
        }
    }
    (q, r_mat)
}

/// The independent check: modified Gram–Schmidt with one re-orthogonalisation pass and the same
/// drop rules (residual norm ≤ tolerance · largest residual norm so far, at most `max_rank`
/// kept). R has a positive
/// diagonal on kept columns; Householder's kept columns equal these up to sign.
pub fn gram_schmidt_qr<F: Float>(
    m: &[F],
    d: usize,
    r: usize,
    tolerance: F,
    max_rank: usize,
) -> (Vec<F>, Vec<F>) {
    let mut q = vec![F::zero(); d * r];
    let mut r_mat = vec![F::zero(); r * r];
    let mut kept = vec![false; r];
    let mut largest = F::zero();
    for k in 0..r {
        let mut u: Vec<F> = (0..d).map(|i| m[i * r + k]).collect();
        for _pass in 0..2 {
            for j in (0..k).filter(|&j| kept[j]) {
                let c = (0..d).fold(F::zero(), |s, i| s + q[i * r + j] * u[i]);
                for (i, value) in u.iter_mut().enumerate() {
                    *value = *value - c * q[i * r + j];
                }
                r_mat[j * r + k] = r_mat[j * r + k] + c;
            }
        }
        let norm = u.iter().fold(F::zero(), |s, &v| s + v * v).sqrt();
        largest = largest.max(norm);
        let rank = kept.iter().filter(|&&k| k).count();
        if rank >= max_rank || norm <= tolerance * largest {
            for j in 0..k {
                r_mat[j * r + k] = F::zero();
            }
            continue;
        }
        kept[k] = true;
        r_mat[k * r + k] = norm;
        for (i, value) in u.iter().enumerate() {
            q[i * r + k] = *value / norm;
        }
    }
    (q, r_mat)
}

/// M_b = H_Xᵀ W_r over the first `rows` rows of the sequence (d×r row-major).
fn reduce<F: Float>(h_x: &[F], w_r: &[F], rows: usize, d: usize, r: usize) -> Vec<F> {
    let mut m = vec![F::zero(); d * r];
    for t in 0..rows {
        for i in 0..d {
            for k in 0..r {
                m[i * r + k] = m[i * r + k] + h_x[t * d + i] * w_r[t * r + k];
            }
        }
    }
    m
}

/// `row · Q` for a d-vector `row` (r-vector). Walks Q by rows (contiguous) rather than by
/// columns; each coordinate still sums over i = 0..d in order.
fn coordinates<F: Float>(row: &[F], q: &[F], d: usize, r: usize) -> Vec<F> {
    let mut out = vec![F::zero(); r];
    for (&x, q_row) in row[..d].iter().zip(q.chunks_exact(r)) {
        for (o, &q_ik) in out.iter_mut().zip(q_row) {
            *o = *o + x * q_ik;
        }
    }
    out
}

/// `c · Qᵀ` for an r-vector `c` (d-vector).
fn back_project<F: Float>(c: &[F], q: &[F], d: usize, r: usize) -> Vec<F> {
    (0..d)
        .map(|i| (0..r).fold(F::zero(), |s, k| s + c[k] * q[i * r + k]))
        .collect()
}

/// Eqs. 10 to 12 for one sequence given its basis Q: returns `(h_A*, φ)` for the first `rows`
/// rows (the rest are zero). Public so a test can show the result ignores the signs of Q's columns.
pub fn project<F: Float>(
    h_x: &[F],
    h_a: &[F],
    q: &[F],
    rows: usize,
    n: usize,
    d: usize,
    r: usize,
) -> (Vec<F>, Vec<F>) {
    let mut output = vec![F::zero(); n * d];
    let mut mask = vec![F::zero(); n * r];
    for t in 0..rows {
        let c_x = coordinates(&h_x[t * d..(t + 1) * d], q, d, r);
        let c_a = coordinates(&h_a[t * d..(t + 1) * d], q, d, r);
        let filtered: Vec<F> = (0..r)
            .map(|k| {
                if c_x[k] * c_a[k] > F::zero() {
                    mask[t * r + k] = F::one();
                    c_a[k]
                } else {
                    F::zero()
                }
            })
            .collect();
        output[t * d..(t + 1) * d].copy_from_slice(&back_project(&filtered, q, d, r));
    }
    (output, mask)
}

/// One sequence's forward: (h_A* rows `[n, d]`, Q `[d, r]`, R `[r, r]`, φ `[n, r]`).
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
fn forward_sequence<F: Float>(
    h_x: &[F],
    h_a: &[F],
    w_r: &[F],
    lengths: &[i32],
    dims: Dims,
    keep_padding: bool,
    tolerance: F,
    b: usize,
) -> (Vec<F>, Vec<F>, Vec<F>, Vec<F>) {
    let Dims { n, d, r, .. } = dims;
    let rows = valid_rows(lengths, b, n, keep_padding);
    let (x, a) = (
        &h_x[b * n * d..(b + 1) * n * d],
        &h_a[b * n * d..(b + 1) * n * d],
    );
    let m = reduce(x, w_r, rows, d, r);
    let (q, r_mat) = householder_qr(&m, d, r, tolerance, rows);
    let (output, mask) = project(x, a, &q, rows, n, d, r);
    (output, q, r_mat, mask)
}

#[allow(clippy::type_complexity)]
fn assemble_forward<F: Float>(
    dims: Dims,
    sequences: Vec<(Vec<F>, Vec<F>, Vec<F>, Vec<F>)>,
) -> Forward<F> {
    let Dims { batch, n, d, r } = dims;
    let mut out = Forward {
        output: Vec::with_capacity(batch * n * d),
        q: Vec::with_capacity(batch * d * r),
        r: Vec::with_capacity(batch * r * r),
        mask: Vec::with_capacity(batch * n * r),
    };
    for (output, q, r_mat, mask) in sequences {
        out.output.extend(output);
        out.q.extend(q);
        out.r.extend(r_mat);
        out.mask.extend(mask);
    }
    out
}

/// The forward of the whole batch.
pub fn forward<F: Float>(
    h_x: &[F],
    h_a: &[F],
    w_r: &[F],
    lengths: &[i32],
    dims: Dims,
    keep_padding: bool,
    tolerance: F,
) -> Forward<F> {
    let sequences = (0..dims.batch)
        .map(|b| forward_sequence(h_x, h_a, w_r, lengths, dims, keep_padding, tolerance, b))
        .collect();
    assemble_forward(dims, sequences)
}

/// [`forward`] with the sequences on the CPU path's threads (`crate::parallel`): each sequence is
/// computed as in [`forward`], so the result is the same, bit for bit, for every thread count.
pub fn forward_threaded<F: Float + Send + Sync>(
    h_x: &[F],
    h_a: &[F],
    w_r: &[F],
    lengths: &[i32],
    dims: Dims,
    keep_padding: bool,
    tolerance: F,
) -> Forward<F> {
    let sequences = crate::parallel::map_units(dims.batch, |b| {
        forward_sequence(h_x, h_a, w_r, lengths, dims, keep_padding, tolerance, b)
    });
    assemble_forward(dims, sequences)
}

/// One sequence's backward: its rows of dH_A and dH_X (`[n, d]`) and its term of dW_r (`[n, r]`;
/// zero on the rows it does not use).
#[allow(clippy::too_many_arguments)]
fn backward_sequence<F: Float>(
    h_x: &[F],
    h_a: &[F],
    w_r: &[F],
    lengths: &[i32],
    saved: &Forward<F>,
    dy: &[F],
    dims: Dims,
    keep_padding: bool,
    full: bool,
    b: usize,
) -> Backward<F> {
    let Dims { n, d, r, .. } = dims;
    let mut grads = Backward {
        dh_a: vec![F::zero(); n * d],
        dh_x: if full {
            vec![F::zero(); n * d]
        } else {
            Vec::new()
        },
        dw_r: if full {
            vec![F::zero(); n * r]
        } else {
            Vec::new()
        },
    };
    let rows = valid_rows(lengths, b, n, keep_padding);
    let q = &saved.q[b * d * r..(b + 1) * d * r];
    let r_mat = &saved.r[b * r * r..(b + 1) * r * r];
    let mask = &saved.mask[b * n * r..(b + 1) * n * r];
    let base = b * n * d;
    // C̄_A = φ ⊙ (dh Q) and G = φ ⊙ C_A, per valid row.
    let mut c_bar = vec![F::zero(); rows * r];
    let mut filtered = vec![F::zero(); rows * r];
    for t in 0..rows {
        let g = coordinates(&dy[base + t * d..base + (t + 1) * d], q, d, r);
        for k in 0..r {
            c_bar[t * r + k] = mask[t * r + k] * g[k];
        }
        let dh_a = back_project(&c_bar[t * r..(t + 1) * r], q, d, r);
        grads.dh_a[t * d..(t + 1) * d].copy_from_slice(&dh_a);
        if full {
            let c_a = coordinates(&h_a[base + t * d..base + (t + 1) * d], q, d, r);
            for k in 0..r {
                filtered[t * r + k] = mask[t * r + k] * c_a[k];
            }
        }
    }
    if !full {
        return grads;
    }
    let kept: Vec<bool> = (0..r).map(|k| r_mat[k * r + k] != F::zero()).collect();
    // Q̄ on the kept columns.
    let mut q_bar = vec![F::zero(); d * r];
    for i in 0..d {
        for k in (0..r).filter(|&k| kept[k]) {
            q_bar[i * r + k] = (0..rows).fold(F::zero(), |s, t| {
                s + dy[base + t * d + i] * filtered[t * r + k]
                    + h_a[base + t * d + i] * c_bar[t * r + k]
            });
        }
    }
    // N = −Q̄ᵀQ, only its lower triangle is used: copyltu(N)[j][l] = N[max][min].
    let mut n_lower = vec![F::zero(); r * r];
    for j in 0..r {
        for l in 0..=j {
            n_lower[j * r + l] =
                -(0..d).fold(F::zero(), |s, i| s + q_bar[i * r + j] * q[i * r + l]);
        }
    }
    let copyltu = |j: usize, l: usize| {
        if j >= l {
            n_lower[j * r + l]
        } else {
            n_lower[l * r + j]
        }
    };
    // M̄ = (Q̄ + Q copyltu(N)) R⁻ᵀ: per row i, back substitution over the kept columns.
    let mut m_bar = vec![F::zero(); d * r];
    for i in 0..d {
        let rhs: Vec<F> = (0..r)
            .map(|k| (0..r).fold(q_bar[i * r + k], |s, j| s + q[i * r + j] * copyltu(j, k)))
            .collect();
        for j in (0..r).rev().filter(|&j| kept[j]) {
            let mut value = rhs[j];
            for k in j + 1..r {
                value = value - m_bar[i * r + k] * r_mat[j * r + k];
            }
            m_bar[i * r + j] = value / r_mat[j * r + j];
        }
    }
    // M = H_Xᵀ W_r over the valid rows.
    for t in 0..rows {
        for i in 0..d {
            grads.dh_x[t * d + i] =
                (0..r).fold(F::zero(), |s, k| s + w_r[t * r + k] * m_bar[i * r + k]);
        }
        for k in 0..r {
            let contribution = (0..d).fold(F::zero(), |s, i| {
                s + h_x[base + t * d + i] * m_bar[i * r + k]
            });
            grads.dw_r[t * r + k] = contribution;
        }
    }
    grads
}

/// Concatenates the sequences' dH_A and dH_X and adds their dW_r terms in sequence order.
fn assemble_backward<F: Float>(dims: Dims, full: bool, sequences: Vec<Backward<F>>) -> Backward<F> {
    let Dims { batch, n, d, r } = dims;
    let mut grads = Backward {
        dh_a: Vec::with_capacity(batch * n * d),
        dh_x: Vec::new(),
        dw_r: if full {
            vec![F::zero(); n * r]
        } else {
            Vec::new()
        },
    };
    for sequence in sequences {
        grads.dh_a.extend(sequence.dh_a);
        grads.dh_x.extend(sequence.dh_x);
        for (total, term) in grads.dw_r.iter_mut().zip(&sequence.dw_r) {
            *total = *total + *term;
        }
    }
    grads
}

/// The backward of the whole batch. With `full` false, Q is a constant: only dH_A =
/// ((dh·Q) ⊙ φ) Qᵀ. With `full` true, also the thin-QR backward on the kept columns:
/// Q̄ = dhᵀ(φ ⊙ C_A) + H_Aᵀ(φ ⊙ dh·Q), N = −Q̄ᵀQ, M̄ = (Q̄ + Q·copyltu(N)) R⁻ᵀ, then
/// dH_X = W_r M̄ᵀ (valid rows) and dW_r = Σ_b H_X,b M̄_b. Dropped columns get zero gradient.
#[allow(clippy::too_many_arguments)]
pub fn backward<F: Float>(
    h_x: &[F],
    h_a: &[F],
    w_r: &[F],
    lengths: &[i32],
    saved: &Forward<F>,
    dy: &[F],
    dims: Dims,
    keep_padding: bool,
    full: bool,
) -> Backward<F> {
    let sequences = (0..dims.batch)
        .map(|b| {
            backward_sequence(
                h_x,
                h_a,
                w_r,
                lengths,
                saved,
                dy,
                dims,
                keep_padding,
                full,
                b,
            )
        })
        .collect();
    assemble_backward(dims, full, sequences)
}

/// [`backward`] with the sequences on the CPU path's threads (`crate::parallel`): per-sequence
/// rows as in [`backward`], dW_r's per-sequence terms added in sequence order, so the result is
/// the same for every thread count.
#[allow(clippy::too_many_arguments)]
pub fn backward_threaded<F: Float + Send + Sync>(
    h_x: &[F],
    h_a: &[F],
    w_r: &[F],
    lengths: &[i32],
    saved: &Forward<F>,
    dy: &[F],
    dims: Dims,
    keep_padding: bool,
    full: bool,
) -> Backward<F> {
    let sequences = crate::parallel::map_units(dims.batch, |b| {
        backward_sequence(
            h_x,
            h_a,
            w_r,
            lengths,
            saved,
            dy,
            dims,
            keep_padding,
            full,
            b,
        )
    });
    assemble_backward(dims, full, sequences)
}
