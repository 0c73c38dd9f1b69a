//! The model's parameters: one flat list in creation order (the order of
//! [`super::Model::parameters`], of a forward pass's leaves and of the optimiser's state), each
//! with its checkpoint name, and the typed handles the blocks hold into it.
//!
//! Parameters are named once, when a block's constructor creates them; a forward pass reads
//! them through [`ParameterId`] handles, never by name.
use crate::autograd::Var;
use crate::rng::{hash64, uniform};
use crate::{Device, Result, Tensor};

use super::ModelConfig;

/// One named parameter.
#[derive(Debug, Clone)]
pub struct Parameter {
    pub name: String,
    pub value: Tensor,
}

/// A parameter's place in the model's list: what a block holds instead of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ParameterId(usize);

impl ParameterId {
    /// Its place in the list.
    pub fn index(self) -> usize {
        self.0
    }
}

/// How a parameter is initialised (RecBole's `_init_weights`).
pub(super) enum Init {
    /// N(0, σ) with σ the config's init std; `zero_pad_row` zeroes row 0 (embedding tables).
    Normal {
        zero_pad_row: bool,
    },
    /// N(0, 1) (HIE's fixed random W_r, spec §3.3).
    StandardNormal,
    Constant(f32),
}

impl Init {
    /// N(0, σ), no row zeroed.
    pub const NORMAL: Init = Init::Normal {
        zero_pad_row: false,
    };
    /// N(0, σ) with the pad row 0 zeroed (embedding tables).
    pub const EMBEDDING: Init = Init::Normal { zero_pad_row: true };
}

/// Creates parameters in order. A parameter's initial values depend on the model seed and its
/// place in the list, so the blocks' constructors must keep their creation order (checkpoints
/// and the optimiser's state also follow it).
pub(super) struct ParameterBuilder<'a> {
    config: &'a ModelConfig,
    device: &'a Device,
    parameters: Vec<Parameter>,
}

impl<'a> ParameterBuilder<'a> {
    pub fn new(config: &'a ModelConfig, device: &'a Device) -> ParameterBuilder<'a> {
        ParameterBuilder {
            config,
            device,
            parameters: Vec::new(),
        }
    }

    pub fn config(&self) -> &ModelConfig {
        self.config
    }

    /// Creates parameter `name` of `shape`, initialised by `init`.
    pub fn add(&mut self, name: String, shape: &[usize], init: Init) -> Result<ParameterId> {
        let len: usize = shape.iter().product();
        let seed = hash64(
            self.config.seed ^ 0xA51F_0000_0000_0000,
            self.parameters.len() as u64,
        );
        let normal = |i: usize, std: f32| -> f32 {
            // Box-Muller from two counter-based uniforms: the same values on every platform.
            let u1 = 1.0 - uniform(seed, 2 * i as u64) as f64;
            let u2 = uniform(seed, 2 * i as u64 + 1) as f64;
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32 * std
        };
        let mut values: Vec<f32> = match init {
            Init::Normal { .. } => (0..len).map(|i| normal(i, self.config.init_std)).collect(),
            Init::StandardNormal => (0..len).map(|i| normal(i, 1.0)).collect(),
            Init::Constant(c) => vec![c; len],
        };
        if let Init::Normal { zero_pad_row: true } = init {
            values[..shape[1]].fill(0.0);
        }
        let id = ParameterId(self.parameters.len());
        self.parameters.push(Parameter {
            name,
            value: Tensor::from_vec(self.device, shape, values)?,
        });
        Ok(id)
    }

    pub fn finish(self) -> Vec<Parameter> {
        self.parameters
    }
}

/// One forward pass's parameter leaves, one per parameter in list order, read by handle.
#[derive(Clone, Copy)]
pub(super) struct Leaves<'a>(pub &'a [Var]);

impl<'a> Leaves<'a> {
    pub fn get(&self, id: ParameterId) -> &'a Var {
        &self.0[id.0]
    }
}

/// A typed block of parameters: visits the handles of the parameters it holds, in creation
/// order (the model's visit covers every parameter exactly once, in list order).
pub(super) trait Block {
    fn visit(&self, visitor: &mut dyn FnMut(ParameterId));
}

impl Block for ParameterId {
    fn visit(&self, visitor: &mut dyn FnMut(ParameterId)) {
        visitor(*self)
    }
}

impl<B: Block> Block for Option<B> {
    fn visit(&self, visitor: &mut dyn FnMut(ParameterId)) {
        if let Some(block) = self {
            block.visit(visitor)
        }
    }
}

impl<B: Block> Block for [B] {
    fn visit(&self, visitor: &mut dyn FnMut(ParameterId)) {
        for block in self {
            block.visit(visitor)
        }
    }
}

impl<B: Block> Block for Vec<B> {
    fn visit(&self, visitor: &mut dyn FnMut(ParameterId)) {
        self.as_slice().visit(visitor)
    }
}
