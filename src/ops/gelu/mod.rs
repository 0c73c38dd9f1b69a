//! GELU, exact erf form: `y = x · Φ(x)` (RecBole's `gelu`, spec §1). Kernel: `kernels/gelu.cu`.
//!
//! Plain kernel API: [`gelu_forward`], [`gelu_backward`] (the backward needs only `x`).
//! Tape API: [`gelu`].
mod cpu;
mod cuda;

pub use cpu::{backward as backward_reference, erf_f64, forward as forward_reference};

use crate::autograd::{Tape, Var};
use crate::device::{Buffer, Device};
use crate::{Error, Result, Tensor};

const OP: &str = "gelu";

fn check_len(x: &Tensor) -> Result<usize> {
    if x.len() > i32::MAX as usize {
        return Err(Error::shape(
            OP,
            format!("{} elements exceed the kernel's 32-bit indexing", x.len()),
        ));
    }
    Ok(x.len())
}

pub fn gelu_forward(x: &Tensor) -> Result<Tensor> {
    let len = check_len(x)?;
    let device = x.device();
    let y = match device {
        Device::Cpu => Buffer::Host(cpu::forward(x.host())),
        Device::Cuda(_) | Device::Emulated(_) => cuda::forward(device, x.buffer(), len)?,
    };
    Ok(Tensor::from_buffer(device, x.shape(), y))
}

pub fn gelu_backward(x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let len = check_len(x)?;
    x.same_device(OP, dy)?;
    if dy.shape() != x.shape() {
        return Err(Error::shape(
            OP,
            format!("dy {:?} must match x {:?}", dy.shape(), x.shape()),
        ));
    }
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
