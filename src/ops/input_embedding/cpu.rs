//! The reference of the fused input lookups: the item lookup and the pooled attribute lookup of
//! the embedding op's reference, one after the other (the same bits as the unfused lookups).
use crate::ops::embedding::reference as embedding;

/// `(x, a)`: `x = E_X[ids]`, `a` the pooled `E_A[tokens]` (each row of `max_tokens` tokens).
pub fn forward(
    item_table: &[f32],
    attribute_table: &[f32],
    ids: &[i32],
    tokens: &[i32],
    max_tokens: usize,
    dim: usize,
    mean: bool,
) -> (Vec<f32>, Vec<f32>) {
    (
        embedding::forward(item_table, ids, dim),
        embedding::pooled_forward(attribute_table, tokens, max_tokens, dim, mean),
    )
}
