//! Inverted dropout with a counter-based mask (spec §2: input, hidden and, inside attention,
//! attention dropout). Kernel: `kernels/dropout.cu`.
//!
//! Shapes: any; the output has the input's shape. Element `i` (row-major) is kept when
//! `rng::dropout_keep(seed, i, p)`, and kept values are scaled by `1/(1 − p)`. The mask is a pure
//! function of `(seed, i)`: it is the same on every device and the backward regenerates it
//! (`dx = mask ⊙ dy / (1 − p)`) instead of storing it. Use a different seed for every dropout site
//! and step. At evaluation ([`DropoutMode::Eval`]) the op is the identity and launches nothing.
//!
//! The `_seeded` faces take a [`MaskSeed`]: a seed by value (what the plain faces pass), or a
//! [`StepSeed`] that the kernel (`dropout_apply_stepped`) derives on the device from a step
//! counter, so a CUDA graph of a training step needs no new arguments per step (issue 20). The
//! same seed gives the same mask either way.
mod cpu;
/// The CPU reference of this op, under the one name every op uses (docs/interop.md).
pub mod reference {
    pub use super::cpu::*;
}
mod cuda;

pub use cpu::apply as apply_reference;

use crate::autograd::{Tape, Var};
use crate::device::{Buffer, Device, StepSeed};
use crate::ops::{record_one, run_one, DeviceOp, Elementwise};
use crate::{Error, Result, Tensor};

const OP: &str = "dropout";

/// Training applies the mask; evaluation is the identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropoutMode {
    Train,
    Eval,
}

/// The scale `1/(1 − p)` after checking `0 ≤ p < 1`.
pub fn keep_scale(p: f32) -> Result<f32> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::argument(
            OP,
            format!("the drop probability must be in [0, 1), got {p}"),
        ));
    }
    Ok(1.0 / (1.0 - p))
}

/// Where a mask's seed comes from: a value (the public kernel API), or derived on the device
/// from a step counter (issue 20: a CUDA graph replayed without new arguments).
#[derive(Debug, Clone)]
pub enum MaskSeed {
    Value(u64),
    Stepped(StepSeed),
}

impl MaskSeed {
    /// The seed's value (a download for a step-counter seed: the CPU reference path).
    pub fn value(&self) -> Result<u64> {
        match self {
            MaskSeed::Value(seed) => Ok(*seed),
            MaskSeed::Stepped(seed) => seed.value(),
        }
    }
}

impl PartialEq for MaskSeed {
    /// Equal values, or the same site of the same stream on the same counter.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (MaskSeed::Value(a), MaskSeed::Value(b)) => a == b,
            (MaskSeed::Stepped(a), MaskSeed::Stepped(b)) => {
                a.counter.same_counter(&b.counter) && a.stream == b.stream && a.site == b.site
            }
            _ => false,
        }
    }
}

impl From<u64> for MaskSeed {
    fn from(seed: u64) -> Self {
        MaskSeed::Value(seed)
    }
}

impl From<StepSeed> for MaskSeed {
    fn from(seed: StepSeed) -> Self {
        MaskSeed::Stepped(seed)
    }
}

/// The problem descriptor: the shape, the drop probability p, its scale `1/(1 − p)` and the seed
/// of the mask.
#[derive(Debug, Clone)]
struct DropoutProblem {
    shape: Vec<usize>,
    p: f32,
    scale: f32,
    seed: MaskSeed,
}

/// The mask applied to one input (the forward's x or the backward's dy), under the op contract.
struct Apply;

impl DeviceOp for Apply {
    type Problem = DropoutProblem;
    fn name(&self) -> &'static str {
        OP
    }
    fn output_shapes(&self, problem: &DropoutProblem) -> Vec<Vec<usize>> {
        vec![problem.shape.clone()]
    }
    fn reference(
        &self,
        problem: &DropoutProblem,
        x: &[&[f32]],
        _: &[&[i32]],
    ) -> Result<Vec<Vec<f32>>> {
        let x = x[0];
        let (p, scale, seed) = (problem.p, problem.scale, problem.seed.value()?);
        Ok(vec![crate::parallel::elementwise(x.len(), |r| {
            cpu::apply_from_f32(&x[r.clone()], p, scale, seed, r.start)
        })])
    }
    fn launch(
        &self,
        problem: &DropoutProblem,
        device: &Device,
        x: &[&Buffer<f32>],
        _: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        Ok(vec![cuda::apply(
            device,
            x[0],
            problem.p,
            problem.scale,
            &problem.seed,
        )?])
    }
}

/// Applies the mask of `(seed, p)` to `x`, scaled by `1/(1 − p)`: the forward on `x`, the
/// backward on `dy`.
fn apply(x: &Tensor, p: f32, seed: MaskSeed) -> Result<Tensor> {
    let scale = keep_scale(p)?;
    let shape = Elementwise::check(OP, &[x])?.shape;
    let problem = DropoutProblem {
        shape,
        p,
        scale,
        seed,
    };
    run_one(&Apply, &problem, &[x], &[])
}

/// `y = mask ⊙ x / (1 − p)` in training, `y = x` (a cheap clone) at evaluation.
pub fn dropout_forward(x: &Tensor, p: f32, seed: u64, mode: DropoutMode) -> Result<Tensor> {
    dropout_forward_seeded(x, p, &MaskSeed::Value(seed), mode)
}

/// [`dropout_forward`] with the seed by value or from a device step counter.
pub fn dropout_forward_seeded(
    x: &Tensor,
    p: f32,
    seed: &MaskSeed,
    mode: DropoutMode,
) -> Result<Tensor> {
    keep_scale(p)?;
    match mode {
        DropoutMode::Eval => Ok(x.clone()),
        DropoutMode::Train => apply(x, p, seed.clone()),
    }
}

/// `dx = mask ⊙ dy / (1 − p)` with the mask regenerated from `seed`.
pub fn dropout_backward(dy: &Tensor, p: f32, seed: u64, mode: DropoutMode) -> Result<Tensor> {
    dropout_forward(dy, p, seed, mode)
}

/// [`dropout_backward`] with the seed by value or from a device step counter.
pub fn dropout_backward_seeded(
    dy: &Tensor,
    p: f32,
    seed: &MaskSeed,
    mode: DropoutMode,
) -> Result<Tensor> {
    dropout_forward_seeded(dy, p, seed, mode)
}

/// Tape face of dropout.
pub fn dropout(tape: &Tape, x: &Var, p: f32, seed: u64, mode: DropoutMode) -> Result<Var> {
    dropout_seeded(tape, x, p, MaskSeed::Value(seed), mode)
}

/// Tape face of dropout with the seed by value or from a device step counter.
pub fn dropout_seeded(
    tape: &Tape,
    x: &Var,
    p: f32,
    seed: MaskSeed,
    mode: DropoutMode,
) -> Result<Var> {
    let y = dropout_forward_seeded(x.value(), p, &seed, mode)?;
    Ok(record_one(tape, &[x], y, move |dy| {
        Ok(vec![Some(dropout_backward_seeded(dy, p, &seed, mode)?)])
    }))
}
