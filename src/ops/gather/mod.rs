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
use crate::ops::check_indices;
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

fn dims(h_shape: &[usize], index: &GatherIndex, device: &Device) -> Result<(usize, usize, usize)> {
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
    if batch * n * dim > i32::MAX as usize {
        return Err(Error::shape(
            OP,
            format!(
                "{} elements exceed the kernel's 32-bit indexing",
                batch * n * dim
            ),
        ));
    }
    let lower = -offset as i64;
    check_indices(OP, device, tensor, lower, lower + n as i64)?;
    Ok((batch, n, dim))
}

fn host_positions(index: &GatherIndex) -> Vec<usize> {
    let (tensor, offset) = index.tensor_and_offset();
    tensor
        .host()
        .iter()
        .map(|&v| (v + offset) as usize)
        .collect()
}

/// `out[b] = h[b, position_b]`.
pub fn gather_forward(h: &Tensor, index: &GatherIndex) -> Result<Tensor> {
    let device = h.device();
    let (batch, n, dim) = dims(h.shape(), index, device)?;
    let out = match device {
        Device::Cpu => Buffer::Host(cpu::forward(h.host(), &host_positions(index), n, dim)),
        _ => {
            let (tensor, offset) = index.tensor_and_offset();
            cuda::forward(device, h.buffer(), tensor.buffer(), n, dim, offset)?
        }
    };
    Ok(Tensor::from_buffer(device, &[batch, dim], out))
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
    dims(&[batch, n, dim], index, device)?;
    let dh = match device {
        Device::Cpu => Buffer::Host(cpu::backward(&host_positions(index), dout.host(), n, dim)),
        _ => {
            let (tensor, offset) = index.tensor_and_offset();
            cuda::backward(device, tensor.buffer(), dout.buffer(), n, dim, offset)?
        }
    };
    Ok(Tensor::from_buffer(device, &[batch, n, dim], dh))
}

/// Tape face: the gathered rows, with the scatter backward.
pub fn gather(tape: &Tape, h: &Var, index: &GatherIndex) -> Result<Var> {
    let out = gather_forward(h.value(), index)?;
    let (index, n, h_id) = (index.clone(), h.value().shape()[1], h.id());
    Ok(tape.record(out, move |dout| {
        Ok(vec![(h_id, gather_backward(&index, dout, n)?)])
    }))
}

/// Tape face of the usual case: the hidden state at L_b − 1.
pub fn gather_last(tape: &Tape, h: &Var, lengths: &IndexTensor) -> Result<Var> {
    gather(tape, h, &GatherIndex::Last(lengths.clone()))
}
