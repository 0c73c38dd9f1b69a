//! What a forward pass carries through the blocks: the tape, the config, the parameter leaves
//! and the dropout seed stream, and the training/evaluation mode that picks the seeds.
use std::cell::Cell;

use crate::autograd::{Tape, Var};
use crate::ops::attention::AttentionConfig;
use crate::ops::dropout::{dropout, DropoutMode};
use crate::rng::hash64;
use crate::{Precision, Result};

use super::parameters::{Leaves, ParameterId};
use super::ModelConfig;

/// Training (dropout on, masks from the step) or evaluation (dropout off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `step` selects the dropout masks: a different step gives different masks.
    Train {
        step: u64,
    },
    Eval,
}

/// Where a forward pass's dropout masks come from: a fresh seed per dropout site, drawn in
/// order from (base seed, site counter), and the dropout mode (training or evaluation).
///
/// The model draws its sites in a fixed order (input dropouts, then per layer: attention, the
/// three sublayer ends, the FFNs), so the same [`DropoutSeeds`] gives the same masks.
#[derive(Debug)]
pub struct DropoutSeeds {
    base: u64,
    counter: Cell<u64>,
    /// Training (masks drawn) or evaluation (dropout is the identity).
    pub mode: DropoutMode,
}

impl DropoutSeeds {
    /// Seeds `hash64(base, 0)`, `hash64(base, 1)`, … in `mode`.
    pub fn new(base: u64, mode: DropoutMode) -> DropoutSeeds {
        DropoutSeeds {
            base,
            counter: Cell::new(0),
            mode,
        }
    }

    /// The seeds [`super::Model::forward`] and [`super::Model::scores`] use for a model seeded
    /// `model_seed`: in training a base from (model seed, step), so each step draws new masks.
    pub fn for_model(model_seed: u64, mode: Mode) -> DropoutSeeds {
        match mode {
            Mode::Train { step } => {
                DropoutSeeds::new(hash64(model_seed ^ 0xD50_0000, step), DropoutMode::Train)
            }
            Mode::Eval => DropoutSeeds::new(0, DropoutMode::Eval),
        }
    }

    /// The next site's seed.
    pub fn next(&self) -> u64 {
        let c = self.counter.get();
        self.counter.set(c + 1);
        hash64(self.base, c)
    }
}

/// One forward pass in progress: what every block's forward reads.
pub(super) struct Forward<'a> {
    pub tape: &'a Tape,
    pub config: &'a ModelConfig,
    pub leaves: Leaves<'a>,
    pub seeds: &'a DropoutSeeds,
}

impl<'a> Forward<'a> {
    /// The leaf of parameter `id` on this pass's tape.
    pub fn parameter(&self, id: ParameterId) -> &'a Var {
        self.leaves.get(id)
    }

    /// Dropout at the hidden rate (one seed).
    pub fn hidden_dropout(&self, x: &Var) -> Result<Var> {
        dropout(
            self.tape,
            x,
            self.config.hidden_dropout,
            self.seeds.next(),
            self.seeds.mode,
        )
    }

    /// The attention op's heads and dropout (none in evaluation), with the next seed.
    pub fn attention_config(&self) -> AttentionConfig {
        AttentionConfig {
            heads: self.config.heads,
            dropout: match self.seeds.mode {
                DropoutMode::Train => self.config.attention_dropout,
                DropoutMode::Eval => 0.0,
            },
            seed: self.seeds.next(),
            precision: Precision::Fp32,
        }
    }
}
