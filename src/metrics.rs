//! Full-ranking HR@K and NDCG@K (spec §5.3).
//!
//! Every item is scored; column 0 (the padding item) never competes. With one positive per
//! sample, the rank is pessimistic: ρ = 1 + #{j ∉ {0, target} : s_j ≥ s_target}, so an item
//! tied with the target ranks above it and constant scores rank the target last. A NaN target
//! score is a miss (no rank); other items with NaN scores never rank above the target.
//! HR@K = 1[ρ ≤ K], NDCG@K = 1[ρ ≤ K] / log2(ρ + 1), both averaged over samples.
//!
//! Interacted items are not masked by default (RecBole does not mask them for sequential
//! models); [`Evaluator::with_mask_interacted`] excludes the items a caller passes as the
//! row's history from the count (as if their scores were −∞), except the target itself.
use crate::data::DataError;

/// The padding item, excluded from every ranking.
pub const PAD_ITEM: u32 = 0;

/// The pessimistic 1-based rank of `target` in `scores` (one row over all item ids), or
/// `None` when the target's score is NaN. `masked` items (besides 0 and the target) do not
/// count; duplicates in `masked` are fine.
pub fn pessimistic_rank(
    scores: &[f32],
    target: u32,
    masked: &[u32],
) -> Result<Option<usize>, DataError> {
    let mut seen = Vec::new();
    rank_with(scores, target, masked, &mut seen)
}

/// Rank with a reusable scratch buffer for de-duplicating `masked`.
fn rank_with(
    scores: &[f32],
    target: u32,
    masked: &[u32],
    seen: &mut Vec<bool>,
) -> Result<Option<usize>, DataError> {
    let t = target as usize;
    if t == PAD_ITEM as usize || t >= scores.len() {
        return Err(DataError::InvalidArgument(format!(
            "target item {target} is padding or outside a score row of {} items",
            scores.len()
        )));
    }
    let st = scores[t];
    if st.is_nan() {
        return Ok(None);
    }
    // Count over all real items, then take back the target itself.
    let mut above = scores[1..].iter().filter(|&&s| s >= st).count() - 1;
    if !masked.is_empty() {
        seen.clear();
        seen.resize(scores.len(), false);
        for &m in masked {
            let j = m as usize;
            if j >= scores.len() {
                return Err(DataError::InvalidArgument(format!(
                    "masked item {m} is outside a score row of {} items",
                    scores.len()
                )));
            }
            if j == 0 || j == t || seen[j] {
                continue;
            }
            seen[j] = true;
            if scores[j] >= st {
                above -= 1;
            }
        }
    }
    Ok(Some(above + 1))
}

/// HR@K and NDCG@K, averaged over the rows seen.
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    /// Rows evaluated.
    pub count: u64,
    /// (K, HR@K), in the order the Ks were given.
    pub hr: Vec<(usize, f64)>,
    /// (K, NDCG@K), same order.
    pub ndcg: Vec<(usize, f64)>,
}

impl Metrics {
    /// HR@k, if k was evaluated.
    pub fn hr(&self, k: usize) -> Option<f64> {
        self.hr.iter().find(|(kk, _)| *kk == k).map(|p| p.1)
    }
    /// NDCG@k, if k was evaluated.
    pub fn ndcg(&self, k: usize) -> Option<f64> {
        self.ndcg.iter().find(|(kk, _)| *kk == k).map(|p| p.1)
    }
}

impl std::fmt::Display for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for ((k, h), (_, n)) in self.hr.iter().zip(&self.ndcg) {
            if !first {
                f.write_str("  ")?;
            }
            first = false;
            write!(f, "hit@{k} {h:.4}  ndcg@{k} {n:.4}")?;
        }
        Ok(())
    }
}

/// Accumulates full-ranking metrics batch by batch from plain score rows.
#[derive(Clone, Debug)]
pub struct Evaluator {
    ks: Vec<usize>,
    mask_interacted: bool,
    count: u64,
    hits: Vec<u64>,
    dcg: Vec<f64>,
    seen: Vec<bool>,
}

impl Evaluator {
    /// An evaluator for the cut-offs `ks` (each ≥ 1), interacted items not masked.
    pub fn new(ks: &[usize]) -> Result<Evaluator, DataError> {
        if ks.is_empty() || ks.contains(&0) {
            return Err(DataError::InvalidArgument(format!(
                "cut-offs must be a non-empty list of K ≥ 1, got {ks:?}"
            )));
        }
        Ok(Evaluator {
            ks: ks.to_vec(),
            mask_interacted: false,
            count: 0,
            hits: vec![0; ks.len()],
            dcg: vec![0.0; ks.len()],
            seen: Vec::new(),
        })
    }

    /// Switch masking of interacted items on or off (off is RecBole's behaviour).
    pub fn with_mask_interacted(mut self, on: bool) -> Evaluator {
        self.mask_interacted = on;
        self
    }

    /// The cut-offs.
    pub fn ks(&self) -> &[usize] {
        &self.ks
    }

    /// Adds one row: `scores` over all item ids (index 0 is padding and ignored), its target,
    /// and the items the user interacted with before it (used only when masking is on).
    /// Returns the rank, or `None` for a miss (NaN target score).
    pub fn add(
        &mut self,
        scores: &[f32],
        target: u32,
        interacted: &[u32],
    ) -> Result<Option<usize>, DataError> {
        let masked = if self.mask_interacted {
            interacted
        } else {
            &[]
        };
        let rank = rank_with(scores, target, masked, &mut self.seen)?;
        self.add_rank(rank);
        Ok(rank)
    }

    /// Adds a precomputed rank (`None` = miss).
    pub fn add_rank(&mut self, rank: Option<usize>) {
        self.count += 1;
        if let Some(r) = rank {
            let gain = 1.0 / ((r + 1) as f64).log2();
            for (k, (h, d)) in self
                .ks
                .iter()
                .zip(self.hits.iter_mut().zip(self.dcg.iter_mut()))
            {
                if r <= *k {
                    *h += 1;
                    *d += gain;
                }
            }
        }
    }

    /// Adds a batch: `scores` is B rows of `n_items` (row-major, n_items = items + padding),
    /// `targets` has B entries. No masking.
    pub fn add_batch(
        &mut self,
        scores: &[f32],
        n_items: usize,
        targets: &[u32],
    ) -> Result<(), DataError> {
        self.check_batch(scores, n_items, targets.len())?;
        for (b, &t) in targets.iter().enumerate() {
            self.add(&scores[b * n_items..(b + 1) * n_items], t, &[])?;
        }
        Ok(())
    }

    /// Like [`Evaluator::add_batch`], with each row's interacted items (used when masking is on).
    pub fn add_batch_with_history(
        &mut self,
        scores: &[f32],
        n_items: usize,
        targets: &[u32],
        interacted: &[&[u32]],
    ) -> Result<(), DataError> {
        self.check_batch(scores, n_items, targets.len())?;
        if interacted.len() != targets.len() {
            return Err(DataError::InvalidArgument(format!(
                "{} targets but {} interacted-item lists",
                targets.len(),
                interacted.len()
            )));
        }
        for (b, (&t, h)) in targets.iter().zip(interacted).enumerate() {
            self.add(&scores[b * n_items..(b + 1) * n_items], t, h)?;
        }
        Ok(())
    }

    fn check_batch(&self, scores: &[f32], n_items: usize, rows: usize) -> Result<(), DataError> {
        if n_items == 0 || scores.len() != rows * n_items {
            return Err(DataError::InvalidArgument(format!(
                "score matrix has {} values, expected {rows} rows × {n_items} items",
                scores.len()
            )));
        }
        Ok(())
    }

    /// Adds another evaluator's rows (same cut-offs), e.g. from another thread.
    pub fn merge(&mut self, other: &Evaluator) -> Result<(), DataError> {
        if other.ks != self.ks {
            return Err(DataError::InvalidArgument(format!(
                "cannot merge evaluators with cut-offs {:?} and {:?}",
                self.ks, other.ks
            )));
        }
        self.count += other.count;
        for k in 0..self.ks.len() {
            self.hits[k] += other.hits[k];
            self.dcg[k] += other.dcg[k];
        }
        Ok(())
    }

    /// Rows seen so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The averages so far (0 for every metric before any row).
    pub fn metrics(&self) -> Metrics {
        let c = self.count.max(1) as f64;
        Metrics {
            count: self.count,
            hr: self
                .ks
                .iter()
                .zip(&self.hits)
                .map(|(&k, &h)| (k, h as f64 / c))
                .collect(),
            ndcg: self
                .ks
                .iter()
                .zip(&self.dcg)
                .map(|(&k, &d)| (k, d / c))
                .collect(),
        }
    }
}
