//! Reference RSA contrastive loss and its gradients, generic over the float type so the same code
//! serves f32 parity tests and f64 finite-difference checks. Written for clarity: it forms x̃, ã,
//! S, both softmaxes and G explicitly, per sequence, as the docs derive them.
use num_traits::Float;

use super::{ContrastiveReduction, LOGIT_SCALE_MAX, NORM_EPS};

/// Loss and gradients of the reference.
#[derive(Debug, Clone)]
pub struct ContrastiveReference<F> {
    pub loss: F,
    pub dx: Vec<F>,
    pub da: Vec<F>,
    pub ds: F,
    /// Σ_tu |G_tu S_tu|: the size of the terms that ds sums (they cancel, at small κ nearly
    /// completely), so the scale that rounding errors in ds are measured against.
    pub ds_terms: F,
}

fn constant<F: Float>(value: f64) -> F {
    F::from(value).expect("a float constant")
}

/// `v / max(‖v‖, ε)`, `1 / max(‖v‖, ε)` and whether ‖v‖ > ε (the norm's backward projects only then).
fn normalise<F: Float>(v: &[F]) -> (Vec<F>, F, bool) {
    let norm = v.iter().fold(F::zero(), |s, &e| s + e * e).sqrt();
    let eps = constant::<F>(NORM_EPS as f64);
    let above = norm > eps;
    let inv = F::one() / if above { norm } else { eps };
    (v.iter().map(|&e| e * inv).collect(), inv, above)
}

/// Log-sum-exp of the entries of `values` where `valid` holds (at least one does).
fn log_sum_exp<F: Float>(values: impl Iterator<Item = (F, bool)> + Clone) -> F {
    let max = values
        .clone()
        .filter(|&(_, valid)| valid)
        .fold(F::neg_infinity(), |m, (v, _)| m.max(v));
    let sum = values
        .filter(|&(_, valid)| valid)
        .fold(F::zero(), |s, (v, _)| s + (v - max).exp());
    max + sum.ln()
}

/// κ = min(exp s, 100) and whether exp s was clamped (then ∂/∂s is zero).
fn kappa<F: Float>(logit_scale: F) -> (F, bool) {
    let exp_s = logit_scale.exp();
    let max_scale = constant::<F>(LOGIT_SCALE_MAX as f64);
    let clamped = exp_s > max_scale;
    (if clamped { max_scale } else { exp_s }, clamped)
}

/// What the loop over sequences shares: κ, whether exp s was clamped, and the batch size.
#[derive(Clone, Copy)]
struct Shared<'a, F> {
    x: &'a [F],
    a: &'a [F],
    groups: Option<&'a [i32]>,
    kappa: F,
    clamped: bool,
    batch: usize,
    n: usize,
    d: usize,
    reduction: ContrastiveReduction,
    upstream: F,
}

/// Sequence `b`'s part: its loss term into `out.loss`, its rows of dX and dA into `out.dx` and
/// `out.da` (`[n, d]`), and its terms of ∂/∂s added onto `out.ds` and `out.ds_terms` (the running
/// sums of the serial loop, or zero for a per-sequence partial).
fn sequence<F: Float>(
    shared: Shared<'_, F>,
    b: usize,
    length: i32,
    out: &mut ContrastiveReference<F>,
) {
    let Shared {
        x,
        a,
        groups,
        kappa,
        clamped,
        batch,
        n,
        d,
        reduction,
        upstream,
    } = shared;
    let two = constant::<F>(2.0);
    let batch_f = constant::<F>(batch as f64);
    let len = (length.max(0) as usize).min(n);
    if len == 0 {
        return;
    }
    let row = |data: &[F], t: usize| {
        let at = (b * n + t) * d;
        data[at..at + d].to_vec()
    };
    let xs: Vec<_> = (0..len).map(|t| normalise(&row(x, t))).collect();
    let as_: Vec<_> = (0..len).map(|t| normalise(&row(a, t))).collect();
    let allowed = |t: usize, u: usize| match groups {
        Some(g) => t == u || g[b * n + t] != g[b * n + u],
        None => true,
    };
    let dot = |p: &[F], q: &[F]| p.iter().zip(q).fold(F::zero(), |s, (&e, &f)| s + e * f);
    let scores: Vec<Vec<F>> = (0..len)
        .map(|t| (0..len).map(|u| kappa * dot(&xs[t].0, &as_[u].0)).collect())
        .collect();
    let lse_row: Vec<F> = (0..len)
        .map(|t| log_sum_exp((0..len).map(|u| (scores[t][u], allowed(t, u)))))
        .collect();
    let lse_col: Vec<F> = (0..len)
        .map(|u| log_sum_exp((0..len).map(|t| (scores[t][u], allowed(t, u)))))
        .collect();

    let weight = match reduction {
        ContrastiveReduction::MeanPerSequence => {
            F::one() / (two * batch_f * constant::<F>(len as f64))
        }
        ContrastiveReduction::Sum => F::one() / (two * batch_f),
    };
    let sequence_loss = (0..len).fold(F::zero(), |s, t| {
        s + (lse_row[t] - scores[t][t]) + (lse_col[t] - scores[t][t])
    });
    out.loss = weight * sequence_loss;

    // G_tu = g·w_b·(P_tu + Q_tu − 2δ_tu) on valid entries, 0 elsewhere.
    let grad_weight = upstream * weight;
    let g: Vec<Vec<F>> = (0..len)
        .map(|t| {
            (0..len)
                .map(|u| {
                    if !allowed(t, u) {
                        return F::zero();
                    }
                    let p = (scores[t][u] - lse_row[t]).exp();
                    let q = (scores[t][u] - lse_col[u]).exp();
                    let delta = if t == u { two } else { F::zero() };
                    grad_weight * (p + q - delta)
                })
                .collect()
        })
        .collect();

    for t in 0..len {
        // dX̃_t = κ Σ_u G_tu ã_u, c_t = Σ_u G_tu S_tu = x̃_t·dX̃_t.
        let (x_tilde, inv, above) = &xs[t];
        let c = (0..len).fold(F::zero(), |s, u| s + g[t][u] * scores[t][u]);
        if !clamped {
            out.ds = out.ds + c;
            out.ds_terms = (0..len).fold(out.ds_terms, |s, u| s + (g[t][u] * scores[t][u]).abs());
        }
        for (k, &x_tilde_k) in x_tilde.iter().enumerate() {
            let dx_tilde = (0..len).fold(F::zero(), |s, u| s + g[t][u] * as_[u].0[k]) * kappa;
            let projection = if *above { x_tilde_k * c } else { F::zero() };
            out.dx[t * d + k] = *inv * (dx_tilde - projection);
        }
    }
    for u in 0..len {
        // dÃ_u = κ Σ_t G_tu x̃_t, r_u = Σ_t G_tu S_tu = ã_u·dÃ_u.
        let (a_tilde, inv, above) = &as_[u];
        let r = (0..len).fold(F::zero(), |s, t| s + g[t][u] * scores[t][u]);
        for (k, &a_tilde_k) in a_tilde.iter().enumerate() {
            let da_tilde = (0..len).fold(F::zero(), |s, t| s + g[t][u] * xs[t].0[k]) * kappa;
            let projection = if *above { a_tilde_k * r } else { F::zero() };
            out.da[u * d + k] = *inv * (da_tilde - projection);
        }
    }
}

/// The loss (eqs. 6 to 9, spec §3.4) over `x` and `a` of shape `[B, n, d]` (row-major) with
/// lengths `lengths[b]` (clamped into `0..=n`, as the kernel does), optional dedup group ids of
/// shape `[B, n]`, logit-scale parameter `s` (κ = min(exp s, 100)), and the gradients of
/// `upstream · loss` with respect to `x`, `a` and `s`.
#[allow(clippy::too_many_arguments)]
pub fn forward_backward<F: Float>(
    x: &[F],
    a: &[F],
    lengths: &[i32],
    groups: Option<&[i32]>,
    logit_scale: F,
    n: usize,
    d: usize,
    reduction: ContrastiveReduction,
    upstream: F,
) -> ContrastiveReference<F> {
    let batch = lengths.len();
    let (kappa, clamped) = kappa(logit_scale);
    let shared = Shared {
        x,
        a,
        groups,
        kappa,
        clamped,
        batch,
        n,
        d,
        reduction,
        upstream,
    };
    let mut out = ContrastiveReference {
        loss: F::zero(),
        dx: Vec::with_capacity(x.len()),
        da: Vec::with_capacity(a.len()),
        ds: F::zero(),
        ds_terms: F::zero(),
    };
    for (b, &length) in lengths.iter().enumerate() {
        let mut part = ContrastiveReference {
            loss: F::zero(),
            dx: vec![F::zero(); n * d],
            da: vec![F::zero(); n * d],
            ds: out.ds,
            ds_terms: out.ds_terms,
        };
        sequence(shared, b, length, &mut part);
        out.loss = out.loss + part.loss;
        out.dx.extend(part.dx);
        out.da.extend(part.da);
        (out.ds, out.ds_terms) = (part.ds, part.ds_terms);
    }
    out
}

/// [`forward_backward`] with the sequences on the CPU path's threads (`crate::parallel`): per
/// sequence, its rows of dX and dA and its partial sums of the loss and of ∂/∂s; the partials
/// added in sequence order, so the result does not depend on the thread count (it may differ
/// from [`forward_backward`]'s ∂/∂s in the last bits).
#[allow(clippy::too_many_arguments)]
pub fn forward_backward_threaded<F: Float + Send + Sync>(
    x: &[F],
    a: &[F],
    lengths: &[i32],
    groups: Option<&[i32]>,
    logit_scale: F,
    n: usize,
    d: usize,
    reduction: ContrastiveReduction,
    upstream: F,
) -> ContrastiveReference<F> {
    let batch = lengths.len();
    let (kappa, clamped) = kappa(logit_scale);
    let shared = Shared {
        x,
        a,
        groups,
        kappa,
        clamped,
        batch,
        n,
        d,
        reduction,
        upstream,
    };
    let parts = crate::parallel::map_units(batch, |b| {
        let mut part = ContrastiveReference {
            loss: F::zero(),
            dx: vec![F::zero(); n * d],
            da: vec![F::zero(); n * d],
            ds: F::zero(),
            ds_terms: F::zero(),
        };
        sequence(shared, b, lengths[b], &mut part);
        part
    });
    let mut out = ContrastiveReference {
        loss: F::zero(),
        dx: Vec::with_capacity(x.len()),
        da: Vec::with_capacity(a.len()),
        ds: F::zero(),
        ds_terms: F::zero(),
    };
    for part in parts {
        out.loss = out.loss + part.loss;
        out.dx.extend(part.dx);
        out.da.extend(part.da);
        out.ds = out.ds + part.ds;
        out.ds_terms = out.ds_terms + part.ds_terms;
    }
    out
}
