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
use crate::ops::{record_one, run_one, DeviceOp, Elementwise};
use crate::{Error, Result, Tensor};

/// The residual add under the op contract ([`DeviceOp`]): reference `cpu::add` per block of
/// elements, launch `cuda::add_out`.
struct Add;

impl DeviceOp for Add {
    type Problem = Elementwise;
    fn name(&self) -> &'static str {
        "add"
    }
    fn output_shapes(&self, problem: &Elementwise) -> Vec<Vec<usize>> {
        vec![problem.shape.clone()]
    }
    fn reference(
        &self,
        problem: &Elementwise,
        inputs: &[&[f32]],
        _: &[&[i32]],
    ) -> Result<Vec<Vec<f32>>> {
        Ok(problem.reference_of_two(inputs, cpu::add::<f32>))
    }
    fn launch(
        &self,
        _: &Elementwise,
        device: &Device,
        inputs: &[&Buffer<f32>],
        _: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        Ok(vec![cuda::add_out(device, inputs[0], inputs[1])?])
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
    let problem = Elementwise::check("add", &[a, b])?;
    run_one(&Add, &problem, &[a, b], &[])
}

/// Tape face of the residual add: both inputs receive `dout`.
pub fn add(tape: &Tape, a: &Var, b: &Var) -> Result<Var> {
    let out = add_forward(a.value(), b.value())?;
    Ok(record_one(tape, &[a, b], out, move |dout| {
        Ok(vec![Some(dout.clone()), Some(dout.clone())])
    }))
}
