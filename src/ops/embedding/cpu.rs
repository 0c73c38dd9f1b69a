//! Reference embedding lookup and pooling, generic over the float type. Ids are assumed checked
//! (in `[0, vocab)`); pad id 0 reads row 0 and gets no gradient.
use num_traits::Float;

/// `out[p] = table[ids[p]]`, rows of `dim`.
pub fn forward<F: Float>(table: &[F], ids: &[i32], dim: usize) -> Vec<F> {
    let mut out = Vec::with_capacity(ids.len() * dim);
    for &id in ids {
        let id = id as usize;
        out.extend_from_slice(&table[id * dim..(id + 1) * dim]);
    }
    out
}

/// `dtable[ids[p]] += dout[p]` for every non-pad id; `vocab` rows.
pub fn backward<F: Float>(ids: &[i32], dout: &[F], vocab: usize, dim: usize) -> Vec<F> {
    let mut dtable = vec![F::zero(); vocab * dim];
    for (p, &id) in ids.iter().enumerate() {
        if id == 0 {
            continue;
        }
        let id = id as usize;
        for c in 0..dim {
            dtable[id * dim + c] = dtable[id * dim + c] + dout[p * dim + c];
        }
    }
    dtable
}

/// Non-pad tokens of each row of a padded `rows × max_tokens` token table.
fn row_tokens(tokens: &[i32], max_tokens: usize) -> impl Iterator<Item = Vec<usize>> + '_ {
    tokens.chunks(max_tokens.max(1)).map(|row| {
        row.iter()
            .filter(|&&t| t != 0)
            .map(|&t| t as usize)
            .collect()
    })
}

/// Sum (or mean, `mean = true`) of each row's non-pad token embeddings; zero for a row without.
pub fn pooled_forward<F: Float>(
    table: &[F],
    tokens: &[i32],
    max_tokens: usize,
    dim: usize,
    mean: bool,
) -> Vec<F> {
    let mut out = Vec::new();
    for row in row_tokens(tokens, max_tokens) {
        let mut sum = vec![F::zero(); dim];
        for &t in &row {
            for c in 0..dim {
                sum[c] = sum[c] + table[t * dim + c];
            }
        }
        if mean && !row.is_empty() {
            let count = F::from(row.len()).unwrap_or(F::one());
            sum.iter_mut().for_each(|v| *v = *v / count);
        }
        out.extend(sum);
    }
    out
}

/// `dtable[t] += dout[r]` (÷ count for mean) for every non-pad token t of row r.
pub fn pooled_backward<F: Float>(
    tokens: &[i32],
    dout: &[F],
    max_tokens: usize,
    vocab: usize,
    dim: usize,
    mean: bool,
) -> Vec<F> {
    let mut dtable = vec![F::zero(); vocab * dim];
    for (r, row) in row_tokens(tokens, max_tokens).enumerate() {
        let scale = if mean && !row.is_empty() {
            F::one() / F::from(row.len()).unwrap_or(F::one())
        } else {
            F::one()
        };
        for &t in &row {
            for c in 0..dim {
                dtable[t * dim + c] = dtable[t * dim + c] + dout[r * dim + c] * scale;
            }
        }
    }
    dtable
}
