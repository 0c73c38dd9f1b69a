//! GELU, exact erf form: `y = x · Φ(x)` (RecBole's `gelu`, spec §1). Kernel: `kernels/gelu.cu`.
//!
//! Plain kernel API: [`gelu_forward`], [`gelu_backward`] (the backward needs only `x`).
//! Tape API: [`gelu`].
mod cpu;
mod cuda;

pub use cpu::{backward as backward_reference, erf_f64, forward as forward_reference};

use crate::autograd::{Tape, Var};
use crate::device::{Buffer, Device};
use crate::ops::{check_elementwise_backward, check_kernel_len};
use crate::{Result, Tensor};

const OP: &str = "gelu";

pub fn gelu_forward(x: &Tensor) -> Result<Tensor> {
    let len = check_kernel_len(OP, x.len())?;
    let device = x.device();
    let y = match device {
        Device::Cpu => Buffer::Host(cpu::forward(x.host())),
        Device::Cuda(_) | Device::Emulated(_) => cuda::forward(device, x.buffer(), len)?,
    };
    Ok(Tensor::from_buffer(device, x.shape(), y))
}

pub fn gelu_backward(x: &Tensor, dy: &Tensor) -> Result<Tensor> {
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

/// Tape face of GELU.
pub fn gelu(tape: &Tape, x: &Var) -> Result<Var> {
    let y = gelu_forward(x.value())?;
    let (x_value, x_id) = (x.value().clone(), x.id());
    Ok(tape.record(y, move |dy| Ok(vec![(x_id, gelu_backward(&x_value, dy)?)])))
}
