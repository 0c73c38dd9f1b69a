//! Inverted dropout with a counter-based mask (spec §2: input, hidden and, inside attention,
//! attention dropout). Kernel: `kernels/dropout.cu`.
//!
//! Shapes: any; the output has the input's shape. Element `i` (row-major) is kept when
//! `rng::dropout_keep(seed, i, p)`, and kept values are scaled by `1/(1 − p)`. The mask is a pure
//! function of `(seed, i)`: it is the same on every device and the backward regenerates it
//! (`dx = mask ⊙ dy / (1 − p)`) instead of storing it. Use a different seed for every dropout site
//! and step. At evaluation ([`DropoutMode::Eval`]) the op is the identity and launches nothing.
mod cpu;
/// The CPU reference of this op, under the one name every op uses (docs/interop.md).
pub mod reference {
    pub use super::cpu::*;
}
mod cuda;

pub use cpu::apply as apply_reference;

use crate::autograd::{Tape, Var};
use crate::device::{Buffer, Device};
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

/// Applies the mask of `(seed, p)` to `x`, scaled by `1/(1 − p)`: the forward on `x`, the
/// backward on `dy`.
fn apply(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    let scale = keep_scale(p)?;
    if x.len() > i32::MAX as usize {
        return Err(Error::shape(
            OP,
            format!("{} elements exceed the kernel's 32-bit indexing", x.len()),
        ));
    }
    let device = x.device();
    let y = match device {
        Device::Cpu => {
            let x = x.host();
            Buffer::Host(crate::parallel::elementwise(x.len(), |r| {
                cpu::apply_from_f32(&x[r.clone()], p, scale, seed, r.start)
            }))
        }
        _ => cuda::apply(device, x.buffer(), p, scale, seed)?,
    };
    Ok(Tensor::from_buffer(device, x.shape(), y))
}

/// `y = mask ⊙ x / (1 − p)` in training, `y = x` (a cheap clone) at evaluation.
pub fn dropout_forward(x: &Tensor, p: f32, seed: u64, mode: DropoutMode) -> Result<Tensor> {
    keep_scale(p)?;
    match mode {
        DropoutMode::Eval => Ok(x.clone()),
        DropoutMode::Train => apply(x, p, seed),
    }
}

/// `dx = mask ⊙ dy / (1 − p)` with the mask regenerated from `seed`.
pub fn dropout_backward(dy: &Tensor, p: f32, seed: u64, mode: DropoutMode) -> Result<Tensor> {
    dropout_forward(dy, p, seed, mode)
}

/// Tape face of dropout.
pub fn dropout(tape: &Tape, x: &Var, p: f32, seed: u64, mode: DropoutMode) -> Result<Var> {
    let y = dropout_forward(x.value(), p, seed, mode)?;
    let x_id = x.id();
    Ok(tape.record(y, move |dy| {
        Ok(vec![(x_id, dropout_backward(dy, p, seed, mode)?)])
    }))
}
