//! The FFN's bias add fused with its GELU (issue 20): `h = GELU(y + b)` for `y = x W_1` from the
//! GEMM without its bias (spec §2, the position-wise FFN), one elementwise pass instead of the
//! linear layer's bias add and GELU's forward; the backward gives the GEMM's gradient
//! `dy = GELU'(y + b) · dh` and the bias gradient `db = Σ_rows dy` from one pass over y and dh
//! plus a finish over the column partials, instead of GELU's backward and the linear layer's
//! two bias-gradient passes. Kernel: `kernels/bias_gelu.cu` (floors and savings in its header
//! and `docs/gpu.md`).
//!
//! Results equal the unfused path's bit for bit on every device (the same GELU and column-sum
//! code, `kernels/gelu.cuh` and `kernels/column_sum.cuh`; the CPU device runs the unfused
//! references). The model uses it where the kernel family `bias_gelu` is at v2
//! (`ASIF_KERNEL_BIAS_GELU=v2`, [`crate::kernel_version`]); v1, the unfused launches, is the
//! default until a GPU run measures both.
//!
//! Plain API: [`bias_gelu_forward`], [`bias_gelu_backward`]. Tape API: [`bias_gelu`].
mod cpu;
/// The CPU reference of this op, under the one name every op uses (docs/interop.md).
pub mod reference {
    pub use super::cpu::*;
}
mod cuda;

pub use cpu::{backward as backward_reference, forward as forward_reference};

use crate::autograd::{Tape, Var};
use crate::device::{Buffer, Device};
use crate::ops::{check_kernel_len, record_one, run, run_one, DeviceOp};
use crate::{Error, Result, Tensor};

const OP: &str = "bias_gelu";
/// The kernel family, also the [`crate::kernel_version`] family whose v2 the model's FFN reads.
pub const FAMILY: &str = "bias_gelu";

/// The problem: `y` as `rows × cols` (its shape kept for the outputs), the bias `[cols]`.
#[derive(Debug, Clone)]
struct BiasRows {
    shape: Vec<usize>,
    rows: usize,
    cols: usize,
}

/// The forward under the op contract: inputs y, b; output h (shape of y).
struct Forward;
/// The backward under the op contract: inputs y, b, dh; outputs dy (shape of y), db `[cols]`.
struct Backward;

impl DeviceOp for Forward {
    type Problem = BiasRows;
    fn name(&self) -> &'static str {
        OP
    }
    fn output_shapes(&self, p: &BiasRows) -> Vec<Vec<usize>> {
        vec![p.shape.clone()]
    }
    fn reference(&self, p: &BiasRows, v: &[&[f32]], _: &[&[i32]]) -> Result<Vec<Vec<f32>>> {
        Ok(vec![cpu::forward_f32(v[0], v[1], p.cols)])
    }
    fn launch(
        &self,
        p: &BiasRows,
        device: &Device,
        v: &[&Buffer<f32>],
        _: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        Ok(vec![cuda::forward(device, v[0], v[1], p.cols)?])
    }
}

impl DeviceOp for Backward {
    type Problem = BiasRows;
    fn name(&self) -> &'static str {
        OP
    }
    fn output_shapes(&self, p: &BiasRows) -> Vec<Vec<usize>> {
        vec![p.shape.clone(), vec![p.cols]]
    }
    fn reference(&self, p: &BiasRows, v: &[&[f32]], _: &[&[i32]]) -> Result<Vec<Vec<f32>>> {
        let (dy, db) = cpu::backward_f32(v[0], v[1], v[2], p.cols);
        Ok(vec![dy, db])
    }
    fn launch(
        &self,
        p: &BiasRows,
        device: &Device,
        v: &[&Buffer<f32>],
        _: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        let (dy, db) = cuda::backward(device, v[0], v[1], v[2], p.rows, p.cols)?;
        Ok(vec![dy, db])
    }
}

/// Checks `y` `[.., cols]` against `bias` `[cols]` (one device, a non-empty last axis, sizes the
/// kernels can index) and gives the problem.
fn check(y: &Tensor, bias: &Tensor) -> Result<BiasRows> {
    y.same_device(OP, bias)?;
    let cols = match (y.shape().last(), bias.shape()) {
        (Some(&cols), &[b]) if cols == b && cols > 0 => cols,
        (last, b) => {
            return Err(Error::shape(
                OP,
                format!(
                    "bias {b:?} must be [d] for y {:?} ending in d > 0 (last axis {last:?})",
                    y.shape()
                ),
            ))
        }
    };
    check_kernel_len(OP, y.len())?;
    let rows = y.len() / cols;
    if rows.div_ceil(cuda::ROWS_PER_CHUNK) > 65_535 {
        return Err(Error::shape(
            OP,
            format!("{rows} rows exceed the bias gradient's grid (at most 4194240)"),
        ));
    }
    Ok(BiasRows {
        shape: y.shape().to_vec(),
        rows,
        cols,
    })
}

/// `h = GELU(y + b)`, `b` added along the last axis of `y`.
pub fn bias_gelu_forward(y: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let problem = check(y, bias)?;
    run_one(&Forward, &problem, &[y, bias], &[])
}

/// `(dy, db)` of [`bias_gelu_forward`] for the upstream `dh` (shape of `y`): `dy = GELU'(y + b) ·
/// dh` and `db = Σ_rows dy`.
pub fn bias_gelu_backward(y: &Tensor, bias: &Tensor, dh: &Tensor) -> Result<(Tensor, Tensor)> {
    let problem = check(y, bias)?;
    y.same_device(OP, dh)?;
    if dh.shape() != y.shape() {
        return Err(Error::shape(
            OP,
            format!("dh {:?} must match y {:?}", dh.shape(), y.shape()),
        ));
    }
    let mut outputs = run(&Backward, &problem, &[y, bias, dh], &[])?;
    let db = outputs.pop().expect("two outputs");
    let dy = outputs.pop().expect("two outputs");
    Ok((dy, db))
}

/// Tape face: `GELU(y + b)` with gradients to `y` and `b`.
pub fn bias_gelu(tape: &Tape, y: &Var, bias: &Var) -> Result<Var> {
    let h = bias_gelu_forward(y.value(), bias.value())?;
    let (y_value, bias_value) = (y.value().clone(), bias.value().clone());
    Ok(record_one(tape, &[y, bias], h, move |dh| {
        let (dy, db) = bias_gelu_backward(&y_value, &bias_value, dh)?;
        Ok(vec![Some(dy), Some(db)])
    }))
}
