//! Gather at index: the hidden state at one position of each sequence (spec §2 "Prediction":
//! u_b = H_X^{(L)}[b, L_b − 1], RecBole's `gather_indexes`). Kernel: `kernels/gather.cu`.
//!
//! Shapes: `h` is `[B, n, d]`; [`gather_last`] takes the lengths L_b `[B]` (1..=n) and reads
//! position L_b − 1; [`gather_at`] takes positions `[B]` (0..n). The output is `[B, d]`.
//! Backward: `dh` is zero except `dh[b, position_b] = dout[b]` (a scatter into zeros).
mod cpu;
/// The CPU reference of this op, under the one name every op uses (docs/interop.md).
pub mod reference {
    pub use super::cpu::*;
}
mod cuda;

pub use cpu::{backward as backward_reference, forward as forward_reference};

use crate::autograd::{Tape, Var};
use crate::device::{Buffer, Device};
use crate::ops::{check_indices, check_kernel_len, record_one, run_one, DeviceOp};
use crate::{Error, IndexTensor, Result, Tensor};

const OP: &str = "gather";

/// Which position of each sequence to read.
#[derive(Debug, Clone)]
pub enum GatherIndex {
    /// Position L_b − 1 for the lengths L_b (1..=n).
    Last(IndexTensor),
    /// The positions themselves (0..n).
    At(IndexTensor),
}

impl GatherIndex {
    fn tensor_and_offset(&self) -> (&IndexTensor, i32) {
        match self {
            GatherIndex::Last(lengths) => (lengths, -1),
            GatherIndex::At(positions) => (positions, 0),
        }
    }
}

/// Checks `h`'s shape `[B, n, d]` against the index and its values; the problem to run.
fn problem(h_shape: &[usize], index: &GatherIndex, device: &Device) -> Result<GatherProblem> {
    let (tensor, offset) = index.tensor_and_offset();
    let (batch, n, dim) = match h_shape {
        [batch, n, dim] if *n > 0 && *dim > 0 => (*batch, *n, *dim),
        other => {
            return Err(Error::shape(
                OP,
                format!("h must be [B, n, d] with n, d > 0, got {other:?}"),
            ))
        }
    };
    if tensor.shape() != [batch] {
        return Err(Error::shape(
            OP,
            format!("the index must be [{batch}], got {:?}", tensor.shape()),
        ));
    }
    let problem = GatherProblem {
        batch,
        n,
        dim,
        offset,
    };
    check_kernel_len(OP, problem.hidden_len())?;
    let lower = -offset as i64;
    check_indices(OP, device, tensor, lower, lower + n as i64)?;
    Ok(problem)
}

/// The problem descriptor: `batch` sequences of `n` rows of `dim`, and the offset added to each
/// index (−1 for L_b, 0 for a position).
#[derive(Debug, Clone, Copy)]
struct GatherProblem {
    batch: usize,
    n: usize,
    dim: usize,
    offset: i32,
}

impl GatherProblem {
    /// B·n·d, the length of h and dh: the 32-bit check and the backward's allocation both read
    /// it here.
    fn hidden_len(&self) -> usize {
        self.batch * self.n * self.dim
    }
}

/// The forward under the op contract: inputs h; the index. Output `[B, d]`.
struct Forward;
/// The backward under the op contract: inputs dout; the index. Output dh `[B, n, d]`.
struct Backward;

fn host_positions(index: &[i32], offset: i32) -> Vec<usize> {
    index.iter().map(|&v| (v + offset) as usize).collect()
}

impl DeviceOp for Forward {
    type Problem = GatherProblem;
    fn name(&self) -> &'static str {
        OP
    }
    fn output_shapes(&self, p: &GatherProblem) -> Vec<Vec<usize>> {
        vec![vec![p.batch, p.dim]]
    }
    fn reference(
        &self,
        p: &GatherProblem,
        h: &[&[f32]],
        index: &[&[i32]],
    ) -> Result<Vec<Vec<f32>>> {
        let positions = host_positions(index[0], p.offset);
        Ok(vec![cpu::forward(h[0], &positions, p.n, p.dim)])
    }
    fn launch(
        &self,
        p: &GatherProblem,
        device: &Device,
        h: &[&Buffer<f32>],
        index: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        Ok(vec![cuda::forward(
            device, h[0], index[0], p.n, p.dim, p.offset,
        )?])
    }
}

impl DeviceOp for Backward {
    type Problem = GatherProblem;
    fn name(&self) -> &'static str {
        OP
    }
    fn output_shapes(&self, p: &GatherProblem) -> Vec<Vec<usize>> {
        vec![vec![p.batch, p.n, p.dim]]
    }
    fn reference(
        &self,
        p: &GatherProblem,
        dout: &[&[f32]],
        index: &[&[i32]],
    ) -> Result<Vec<Vec<f32>>> {
        let positions = host_positions(index[0], p.offset);
        Ok(vec![cpu::backward(&positions, dout[0], p.n, p.dim)])
    }
    fn launch(
        &self,
        p: &GatherProblem,
        device: &Device,
        dout: &[&Buffer<f32>],
        index: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        Ok(vec![cuda::backward(
            device,
            index[0],
            dout[0],
            p.hidden_len(),
            p.n,
            p.dim,
            p.offset,
        )?])
    }
}

/// `out[b] = h[b, position_b]`.
pub fn gather_forward(h: &Tensor, index: &GatherIndex) -> Result<Tensor> {
    let problem = problem(h.shape(), index, h.device())?;
    run_one(&Forward, &problem, &[h], &[index.tensor_and_offset().0])
}

/// `dh` `[B, n, d]` for the upstream `dout` `[B, d]`.
pub fn gather_backward(index: &GatherIndex, dout: &Tensor, n: usize) -> Result<Tensor> {
    let device = dout.device();
    let (batch, dim) = match dout.shape() {
        [batch, dim] => (*batch, *dim),
        other => {
            return Err(Error::shape(
                OP,
                format!("dout must be [B, d], got {other:?}"),
            ))
        }
    };
    let problem = problem(&[batch, n, dim], index, device)?;
    run_one(&Backward, &problem, &[dout], &[index.tensor_and_offset().0])
}

/// Tape face: the gathered rows, with the scatter backward.
pub fn gather(tape: &Tape, h: &Var, index: &GatherIndex) -> Result<Var> {
    let out = gather_forward(h.value(), index)?;
    let (index, n) = (index.clone(), h.value().shape()[1]);
    Ok(record_one(tape, &[h], out, move |dout| {
        Ok(vec![Some(gather_backward(&index, dout, n)?)])
    }))
}
/// Tape face of the usual case: the hidden state at L_b − 1.
pub fn gather_last(tape: &Tape, h: &Var, lengths: &IndexTensor) -> Result<Var> {
    gather(tape, h, &GatherIndex::Last(lengths.clone()))
}
