//! ReLU: `y = max(x, 0)`, the fusion gate's activation (spec §3.1, e_k = w₂ᵀ ReLU(W₁ x_k + b₁);
//! RecBole's `VanillaAttention`). Kernel: `kernels/relu.cu`.
//!
//! Plain kernel API: [`relu_forward`], [`relu_backward`] (the backward needs only `x`).
//! Tape API: [`relu`].
mod cpu;
mod cuda;

pub use cpu::{backward as backward_reference, forward as forward_reference};

use crate::autograd::{Tape, Var};
use crate::device::{Buffer, Device};
use crate::ops::{check_elementwise_backward, check_kernel_len};
use crate::{Result, Tensor};

const OP: &str = "relu";

/// `max(x, 0)`, elementwise.
pub fn relu_forward(x: &Tensor) -> Result<Tensor> {
    let len = check_kernel_len(OP, x.len())?;
    let device = x.device();
    let y = match device {
        Device::Cpu => Buffer::Host(cpu::forward(x.host())),
        Device::Cuda(_) | Device::Emulated(_) => cuda::forward(device, x.buffer(), len)?,
    };
    Ok(Tensor::from_buffer(device, x.shape(), y))
}

/// `dy · 1[x > 0]` (the gradient at x = 0 is 0, as PyTorch's).
pub fn relu_backward(x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let len = check_elementwise_backward(OP, x, dy)?;
    let device = x.device();
    let dx = match device {
        Device::Cpu => Buffer::Host(cpu::backward(x.host(), dy.host())),
        Device::Cuda(_) | Device::Emulated(_) => {
            cuda::backward(device, x.buffer(), dy.buffer(), len)?
        }
    };
    Ok(Tensor::from_buffer(device, x.shape(), dx))
}

/// Tape face of the ReLU.
pub fn relu(tape: &Tape, x: &Var) -> Result<Var> {
    let y = relu_forward(x.value())?;
    let (x_value, x_id) = (x.value().clone(), x.id());
    Ok(tape.record(y, move |dy| Ok(vec![(x_id, relu_backward(&x_value, dy)?)])))
}
