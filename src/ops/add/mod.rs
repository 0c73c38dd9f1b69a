//! Elementwise addition: the residual add `out = a + b` (spec §2: `LN(Drop(O W_o) + X)`), whose backward passes `dout` to both inputs.
//! Kernels: `kernels/elementwise.cu`. The fused residual + dropout + layer norm is
//! `ops::residual_norm`. `y += x` (the tape's gradient accumulation) is the tensor-level
//! [`crate::accumulate::add_assign`], re-exported here.
mod cpu;
/// The CPU reference of this op, under the one name every op uses (docs/interop.md).
pub mod reference {
    pub use super::cpu::*;
}
mod cuda;

pub use crate::accumulate::{add_assign, add_assign_reference};
pub use cpu::add as add_reference;

use crate::autograd::{Tape, Var};
use crate::device::{Buffer, Device};
use crate::{Error, Result, Tensor};

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
        Device::Cpu => {
            let (a, b) = (a.host(), b.host());
            Buffer::Host(crate::parallel::elementwise(a.len(), |r| {
                cpu::add(&a[r.clone()], &b[r])
            }))
        }
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
