//! Reference softmax cross-entropy over all items, generic over the float type (stable: the row
//! maximum is subtracted before exponentiating). Targets are assumed checked (in `[0, items)`).
use num_traits::Float;

/// `(L_ce, G)`: the mean over rows of `lse_b − ℓ_bt`, and `G = ∂L_ce/∂ℓ` (`[rows, items]`).
pub fn forward<F: Float>(logits: &[F], targets: &[i32], items: usize) -> (F, Vec<F>) {
    let rows = targets.len();
    let inv_rows = F::one() / F::from(rows.max(1)).unwrap_or(F::one());
    let mut loss = F::zero();
    let mut grad = vec![F::zero(); logits.len()];
    for (b, &target) in targets.iter().enumerate() {
        let row = &logits[b * items..(b + 1) * items];
        let max = row.iter().fold(F::neg_infinity(), |m, &v| m.max(v));
        let sum = row.iter().fold(F::zero(), |s, &v| s + (v - max).exp());
        let t = target as usize;
        // (max − ℓ_t) + ln sum and exp(ℓ − max)/sum, as the kernel: no rounded lse in between.
        loss = loss + ((max - row[t]) + sum.ln());
        for (j, &v) in row.iter().enumerate() {
            let one_hot = if j == t { F::one() } else { F::zero() };
            grad[b * items + j] = ((v - max).exp() / sum - one_hot) * inv_rows;
        }
    }
    (loss * inv_rows, grad)
}
