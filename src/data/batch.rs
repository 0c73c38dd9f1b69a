//! Padded batches (spec §1 layout): each row holds a sample's input left-aligned in n slots
//! and right-padded with item 0, with its true length L_b, its target and its user.
//! Training batches are shuffled per epoch from (seed, epoch), so a run is reproducible and
//! each epoch sees a different order. The last batch of an epoch may be smaller (RecBole keeps it).
use crate::data::dataset::{Dataset, TokenTable};
use crate::data::error::DataError;
use crate::data::rng::SplitMix64;
use crate::data::split::Sample;

/// The order in which an epoch visits the samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// The order of the sample list (evaluation).
    Sequential,
    /// A permutation drawn from (seed, epoch): same pair, same order.
    Shuffled { seed: u64, epoch: u64 },
}

/// One batch of B samples with window n.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The window (slots per row).
    pub n: usize,
    /// The samples, in batch order.
    pub samples: Vec<Sample>,
    /// User id per row.
    pub users: Vec<u32>,
    /// B×n item ids, row-major: real items at slots 0..L_b, then 0.
    pub items: Vec<u32>,
    /// L_b per row (1..=n).
    pub lengths: Vec<u32>,
    /// Target item per row.
    pub targets: Vec<u32>,
}

impl Batch {
    /// Number of rows B.
    pub fn len(&self) -> usize {
        self.samples.len()
    }
    /// True for a batch with no rows.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
    /// Row `b`'s n slots.
    pub fn row(&self, b: usize) -> &[u32] {
        &self.items[b * self.n..(b + 1) * self.n]
    }
    /// Slot validity, B×n: 1 where `t < L_b`.
    pub fn valid_mask(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.items.len()];
        for (b, &l) in self.lengths.iter().enumerate() {
            out[b * self.n..b * self.n + l as usize].fill(1.0);
        }
        out
    }
    /// Attribute tokens per slot, B×n×width, from an item -> tokens table: slot (b, t) holds
    /// the first `width` tokens of item `items[b,t]`, right-padded with 0; padding slots are
    /// all 0, so they pool to the zero vector.
    pub fn attribute_tokens(&self, table: &TokenTable, width: usize) -> Vec<u32> {
        let mut out = vec![0u32; self.items.len() * width];
        for (s, &item) in self.items.iter().enumerate() {
            if item == 0 || item as usize >= table.n_rows() {
                continue;
            }
            let t = table.tokens(item);
            let k = t.len().min(width);
            out[s * width..s * width + k].copy_from_slice(&t[..k]);
        }
        out
    }
}

/// Cuts a list of samples into padded batches.
#[derive(Clone, Debug)]
pub struct Batcher<'a> {
    dataset: &'a Dataset,
    samples: &'a [Sample],
    batch_size: usize,
    n: usize,
}

impl<'a> Batcher<'a> {
    /// Batches of `batch_size` rows with window `n` over `samples` (which must come from
    /// `dataset`, e.g. one part of [`Dataset::leave_one_out`]).
    pub fn new(
        dataset: &'a Dataset,
        samples: &'a [Sample],
        batch_size: usize,
        n: usize,
    ) -> Result<Self, DataError> {
        if batch_size == 0 || n == 0 {
            return Err(DataError::InvalidArgument(format!(
                "batch size and window must be positive, got batch_size={batch_size}, n={n}"
            )));
        }
        for s in samples {
            let ok = s.user > 0
                && (s.user as usize) < dataset.n_user_ids()
                && s.pos >= 1
                && (s.pos as usize) < dataset.sequence(s.user).len();
            if !ok {
                return Err(DataError::InvalidArgument(format!(
                    "sample {s:?} does not belong to dataset `{}`",
                    dataset.name()
                )));
            }
        }
        Ok(Batcher {
            dataset,
            samples,
            batch_size,
            n,
        })
    }

    /// Batches per epoch.
    pub fn n_batches(&self) -> usize {
        self.samples.len().div_ceil(self.batch_size)
    }

    /// Samples per epoch.
    pub fn n_samples(&self) -> usize {
        self.samples.len()
    }

    /// One epoch's batches.
    pub fn epoch(&self, order: Order) -> Batches<'a> {
        let mut perm: Vec<u32> = (0..self.samples.len() as u32).collect();
        if let Order::Shuffled { seed, epoch } = order {
            SplitMix64::stream(seed, epoch).shuffle(&mut perm);
        }
        Batches {
            dataset: self.dataset,
            samples: self.samples,
            perm,
            next: 0,
            batch_size: self.batch_size,
            n: self.n,
        }
    }
}

/// Iterator over one epoch's batches.
#[derive(Clone, Debug)]
pub struct Batches<'a> {
    dataset: &'a Dataset,
    samples: &'a [Sample],
    perm: Vec<u32>,
    next: usize,
    batch_size: usize,
    n: usize,
}

impl Iterator for Batches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.perm.len() {
            return None;
        }
        let end = (self.next + self.batch_size).min(self.perm.len());
        let idx = &self.perm[self.next..end];
        self.next = end;
        let b = idx.len();
        let n = self.n;
        let mut batch = Batch {
            n,
            samples: Vec::with_capacity(b),
            users: Vec::with_capacity(b),
            items: vec![0; b * n],
            lengths: Vec::with_capacity(b),
            targets: Vec::with_capacity(b),
        };
        for (row, &i) in idx.iter().enumerate() {
            let s = self.samples[i as usize];
            let input = self.dataset.input(s, n);
            batch.items[row * n..row * n + input.len()].copy_from_slice(input);
            batch.samples.push(s);
            batch.users.push(s.user);
            batch.lengths.push(input.len() as u32);
            batch.targets.push(self.dataset.target(s));
        }
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.perm.len() - self.next).div_ceil(self.batch_size);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Batches<'_> {}
