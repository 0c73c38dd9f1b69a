//! Prefix augmentation and the leave-one-out split (spec §5.2).
//!
//! For a user's chronological items i_1..i_K, every k = 2..K is a sample: the target is i_k
//! and the input is the last ≤ n items before it, i_{max(1,k−n)}..i_{k−1}. A [`Sample`] stores
//! only (user, position of the target), so the window n is chosen when batching.
//!
//! Leave-one-out (RecBole `{'LS': 'valid_and_test'}`), per user over the samples in time
//! order: the last is test, the second-to-last is validation, the rest are training. A user
//! with s samples holds out min(2, s−1): with 2 samples the second is test and nothing is
//! validation; with 1 sample it is training.
use crate::data::dataset::Dataset;

/// One prefix sample: the target is item `pos` (0-based) of `user`'s sequence, `pos ≥ 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sample {
    pub user: u32,
    pub pos: u32,
}

/// The three parts of the leave-one-out split, each in (user, time) order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<Sample>,
    pub valid: Vec<Sample>,
    pub test: Vec<Sample>,
}

impl Dataset {
    /// Every prefix sample, in (user, time) order.
    pub fn samples(&self) -> impl Iterator<Item = Sample> + '_ {
        (1..self.n_user_ids() as u32).flat_map(move |u| {
            (1..self.sequence(u).len() as u32).map(move |pos| Sample { user: u, pos })
        })
    }

    /// Number of prefix samples (interactions minus one per user).
    pub fn n_samples(&self) -> usize {
        (1..self.n_user_ids() as u32)
            .map(|u| self.sequence(u).len().saturating_sub(1))
            .sum()
    }

    /// The leave-one-out split. It has no randomness: the same files give the same split.
    pub fn leave_one_out(&self) -> Split {
        let mut split = Split::default();
        split
            .train
            .reserve(self.n_samples().saturating_sub(2 * self.n_users()));
        for u in 1..self.n_user_ids() as u32 {
            let len = self.sequence(u).len() as u32;
            let samples = len.saturating_sub(1);
            if samples == 0 {
                continue;
            }
            let held = 2.min(samples - 1);
            let first_held = samples - held + 1; // pos of the first held-out target
            for pos in 1..first_held {
                split.train.push(Sample { user: u, pos });
            }
            match held {
                2 => {
                    split.valid.push(Sample {
                        user: u,
                        pos: len - 2,
                    });
                    split.test.push(Sample {
                        user: u,
                        pos: len - 1,
                    });
                }
                1 => split.test.push(Sample {
                    user: u,
                    pos: len - 1,
                }),
                _ => {}
            }
        }
        split
    }

    /// The target item of `s`.
    pub fn target(&self, s: Sample) -> u32 {
        self.sequence(s.user)[s.pos as usize]
    }

    /// The input of `s` with window `n`: the last ≤ n items before the target, oldest first.
    pub fn input(&self, s: Sample, n: usize) -> &[u32] {
        let seq = self.sequence(s.user);
        let end = s.pos as usize;
        &seq[end.saturating_sub(n)..end]
    }

    /// Everything the user interacted with before the target (for masking interacted items).
    pub fn history(&self, s: Sample) -> &[u32] {
        &self.sequence(s.user)[..s.pos as usize]
    }

    /// The histories of `samples`, e.g. a batch's, for
    /// [`crate::metrics::Evaluator::add_batch_with_history`].
    pub fn histories(&self, samples: &[Sample]) -> Vec<&[u32]> {
        samples.iter().map(|&s| self.history(s)).collect()
    }

    /// The timestamp of the target interaction.
    pub fn target_time(&self, s: Sample) -> f64 {
        self.times(s.user)[s.pos as usize]
    }
}
