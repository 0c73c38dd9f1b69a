//! Reference softmax cross-entropy over all items, generic over the float type (stable: the row
//! maximum is subtracted before exponentiating). Targets are assumed checked (in `[0, items)`).
use num_traits::Float;

/// `(L_ce, G)`: the mean over rows of `lse_b − ℓ_bt`, and `G = ∂L_ce/∂ℓ` (`[rows, items]`).
pub fn forward<F: Float>(logits: &[F], targets: &[i32], items: usize) -> (F, Vec<F>) {
    let inv_rows = inverse_rows::<F>(targets.len());
    let (loss, grad) = forward_rows(logits, targets, items, inv_rows);
    (loss * inv_rows, grad)
}

fn inverse_rows<F: Float>(rows: usize) -> F {
    F::one() / F::from(rows.max(1)).unwrap_or(F::one())
}

/// Rows `targets.len()` of a batch of `1/inv_rows` rows: `(Σ_rows lse_b − ℓ_bt, G)`.
fn forward_rows<F: Float>(logits: &[F], targets: &[i32], items: usize, inv_rows: F) -> (F, Vec<F>) {
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
    (loss, grad)
}

/// [`forward`] on the CPU path's threads (`crate::parallel`) over fixed blocks of rows: G per row
/// as in [`forward`]; the loss summed per block, the block sums added in block order (so it does
/// not depend on the thread count; it may differ from [`forward`]'s in the last bits).
pub fn forward_threaded<F: Float + Send + Sync>(
    logits: &[F],
    targets: &[i32],
    items: usize,
) -> (F, Vec<F>) {
    let rows = targets.len();
    let inv_rows = inverse_rows::<F>(rows);
    let block = crate::parallel::rows_per_unit(items);
    let parts = crate::parallel::map_units(rows.div_ceil(block), |u| {
        let (r0, r1) = (u * block, ((u + 1) * block).min(rows));
        forward_rows(
            &logits[r0 * items..r1 * items],
            &targets[r0..r1],
            items,
            inv_rows,
        )
    });
    let mut loss = F::zero();
    let mut grads = Vec::with_capacity(parts.len());
    for (part_loss, part_grad) in parts {
        loss = loss + part_loss;
        grads.push(part_grad);
    }
    (loss * inv_rows, crate::parallel::concat_parallel(grads))
}
