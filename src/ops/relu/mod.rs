//! ReLU: `y = max(x, 0)`, the fusion gate's activation (spec §3.1, e_k = w₂ᵀ ReLU(W₁ x_k + b₁);
//! RecBole's `VanillaAttention`). Kernel: `kernels/relu.cu`.
//!
//! Plain kernel API: [`relu_forward`], [`relu_backward`] (the backward needs only `x`).
//! Tape API: [`relu`].
mod cpu;
/// The CPU reference of this op, under the one name every op uses (docs/interop.md).
pub mod reference {
    pub use super::cpu::*;
}

pub use cpu::{backward as backward_reference, forward as forward_reference};

use crate::autograd::{Tape, Var};
use crate::kernels::KernelRef;
use crate::ops::Activation;
use crate::{Result, Tensor};

static RELU: Activation = Activation {
    op: "relu",
    forward_kernel: KernelRef::new("relu", "relu_forward"),
    backward_kernel: KernelRef::new("relu", "relu_backward"),
    forward_kernel_v2: KernelRef::new("relu", "relu_forward_v2"),
    backward_kernel_v2: KernelRef::new("relu", "relu_backward_v2"),
    forward_reference: cpu::forward::<f32>,
    backward_reference: cpu::backward::<f32>,
};

/// `max(x, 0)`, elementwise.
pub fn relu_forward(x: &Tensor) -> Result<Tensor> {
    RELU.forward(x)
}

/// `dy · 1[x > 0]` (the gradient at x = 0 is 0, as PyTorch's).
pub fn relu_backward(x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    RELU.backward(x, dy)
}

/// Tape face of the ReLU.
pub fn relu(tape: &Tape, x: &Var) -> Result<Var> {
    RELU.record(tape, x)
}
