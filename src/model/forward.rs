//! What a forward pass carries through the blocks: the tape, the config, the parameter leaves
//! and the dropout seed stream, and the training/evaluation mode that picks the seeds.
use std::cell::Cell;

use crate::autograd::{Tape, Var};
use crate::device::{StepCounter, StepSeed};
use crate::ops::attention::AttentionConfig;
use crate::ops::dropout::{dropout_seeded, DropoutMode, MaskSeed};
use crate::rng::{self, hash64};
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
    /// Seeds derived on the device from a step counter and the model's dropout stream
    /// ([`DropoutSeeds::stepped`]) instead of by value from `base`.
    stepped: Option<(StepCounter, u64)>,
}

impl DropoutSeeds {
    /// Seeds `hash64(base, 0)`, `hash64(base, 1)`, … in `mode`.
    pub fn new(base: u64, mode: DropoutMode) -> DropoutSeeds {
        DropoutSeeds {
            base,
            counter: Cell::new(0),
            mode,
            stepped: None,
        }
    }

    /// Training seeds that the kernels derive on the device from `counter` (Adam steps taken:
    /// issue 20, a CUDA graph replayed without new arguments): at every step the same seeds as
    /// `for_model(model_seed, Mode::Train { step })` with `step` the counter's value
    /// (`rng::step_seed`).
    pub fn stepped(model_seed: u64, counter: StepCounter) -> DropoutSeeds {
        DropoutSeeds {
            stepped: Some((counter, rng::dropout_stream(model_seed))),
            ..DropoutSeeds::new(0, DropoutMode::Train)
        }
    }

    /// The seeds [`super::Model::forward`] and [`super::Model::scores`] use for a model seeded
    /// `model_seed`: in training a base from (model seed, step), so each step draws new masks.
    pub fn for_model(model_seed: u64, mode: Mode) -> DropoutSeeds {
        match mode {
            Mode::Train { step } => DropoutSeeds::new(
                hash64(crate::rng::dropout_stream(model_seed), step),
                DropoutMode::Train,
            ),
            Mode::Eval => DropoutSeeds::new(0, DropoutMode::Eval),
        }
    }

    /// The next site's seed: by value, or a step-counter seed of this site.
    pub fn next_seed(&self) -> MaskSeed {
        let c = self.counter.get();
        self.counter.set(c + 1);
        match &self.stepped {
            None => MaskSeed::Value(hash64(self.base, c)),
            Some((counter, stream)) => MaskSeed::Stepped(StepSeed {
                counter: counter.clone(),
                stream: *stream,
                site: c,
            }),
        }
    }

    /// The next site's seed by value (a step-counter seed is read back: a download).
    pub fn next(&self) -> Result<u64> {
        self.next_seed().value()
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
        dropout_seeded(
            self.tape,
            x,
            self.config.hidden_dropout,
            self.seeds.next_seed(),
            self.seeds.mode,
        )
    }

    /// The attention op's heads and dropout (none in evaluation), with the next seed (by value
    /// also in the config; 0 there for a step-counter seed, which the op takes apart).
    pub fn attention_config(&self) -> (AttentionConfig, MaskSeed) {
        let seed = self.seeds.next_seed();
        let config = AttentionConfig {
            heads: self.config.heads,
            dropout: match self.seeds.mode {
                DropoutMode::Train => self.config.attention_dropout,
                DropoutMode::Eval => 0.0,
            },
            seed: match seed {
                MaskSeed::Value(value) => value,
                MaskSeed::Stepped(_) => 0,
            },
            precision: Precision::Fp32,
        };
        (config, seed)
    }
}
