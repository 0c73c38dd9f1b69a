//! Elementwise addition: `y += x` (the tape's gradient accumulation) and the residual add
//! `out = a + b` (spec §2: `LN(Drop(O W_o) + X)`), whose backward passes `dout` to both inputs.
//! Kernels: `kernels/elementwise.cu`. The fused residual + dropout + layer norm is
//! `ops::residual_norm`.
mod cpu;
/// The CPU reference of this op, under the one name every op uses (docs/interop.md).
pub mod reference {
    pub use super::cpu::*;
}
mod cuda;

pub use cpu::{add as add_reference, add_assign as add_assign_reference};

use crate::autograd::{Tape, Var};
use crate::device::{Buffer, Device};
use crate::{Error, Result, Tensor};

/// `y += x`, elementwise, same shape and device.
pub fn add_assign(y: &mut Tensor, x: &Tensor) -> Result<()> {
    y.same_device("add_assign", x)?;
    if y.shape() != x.shape() {
        return Err(Error::shape(
            "add_assign",
            format!("{:?} += {:?}", y.shape(), x.shape()),
        ));
    }
    let device = y.device().clone();
    match &device {
        Device::Cpu => {
            let x_values = x.host().to_vec();
            cpu::add_assign(y.buffer_mut()?.host_slice_mut(), &x_values);
            Ok(())
        }
        Device::Cuda(_) | Device::Emulated(_) => {
            cuda::add_assign(&device, y.buffer_mut()?, x.buffer(), x.len())
        }
    }
}

/// `a + b`, elementwise, same shape and device (the residual add).
pub fn add_forward(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.same_device("add", b)?;
    if a.shape() != b.shape() {
        return Err(Error::shape(
            "add",
            format!("{:?} + {:?}", a.shape(), b.shape()),
        ));
    }
    if a.len() > i32::MAX as usize {
        return Err(Error::shape(
            "add",
            format!("{} elements exceed the kernel's 32-bit indexing", a.len()),
        ));
    }
    let device = a.device();
    let out = match device {
        Device::Cpu => Buffer::Host(cpu::add(a.host(), b.host())),
        _ => cuda::add_out(device, a.buffer(), b.buffer())?,
    };
    Ok(Tensor::from_buffer(device, a.shape(), out))
}

/// Tape face of the residual add: both inputs receive `dout`.
pub fn add(tape: &Tape, a: &Var, b: &Var) -> Result<Var> {
    let out = add_forward(a.value(), b.value())?;
    let (a_id, b_id) = (a.id(), b.id());
    Ok(tape.record(out, move |dout| {
        Ok(vec![(a_id, dout.clone()), (b_id, dout.clone())])
    }))
}
