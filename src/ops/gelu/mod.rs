//! GELU, exact erf form: `y = x · Φ(x)` (RecBole's `gelu`, spec §1). Kernel: `kernels/gelu.cu`.
//!
//! Plain kernel API: [`gelu_forward`], [`gelu_backward`] (the backward needs only `x`).
//! Tape API: [`gelu`].
mod cpu;
/// The CPU reference of this op, under the one name every op uses (docs/interop.md).
pub mod reference {
    pub use super::cpu::*;
}

pub use cpu::{backward as backward_reference, erf_f64, forward as forward_reference};

use crate::autograd::{Tape, Var};
use crate::kernels::KernelRef;
use crate::ops::Activation;
use crate::{Result, Tensor};

static GELU: Activation = Activation {
    op: "gelu",
    forward_kernel: KernelRef::new("gelu", "gelu_forward"),
    backward_kernel: KernelRef::new("gelu", "gelu_backward"),
    forward_kernel_v2: KernelRef::new("gelu", "gelu_forward_v2"),
    backward_kernel_v2: KernelRef::new("gelu", "gelu_backward_v2"),
    forward_reference: cpu::forward_f32,
    backward_reference: cpu::backward_f32,
};

/// `GELU(x)`, elementwise.
pub fn gelu_forward(x: &Tensor) -> Result<Tensor> {
    GELU.forward(x)
}

/// `GELU'(x) · dy` (the backward needs only `x`).
pub fn gelu_backward(x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    GELU.backward(x, dy)
}

/// Tape face of GELU.
pub fn gelu(tape: &Tape, x: &Var) -> Result<Var> {
    GELU.record(tape, x)
}
