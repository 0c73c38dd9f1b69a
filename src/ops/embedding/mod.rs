//! Embedding lookup `E[s]` with scatter-add backward, and pooled multi-token attributes (spec §1
//! "Embeddings": E_X with row 0 = pad; token_seq attributes pooled by sum, or mean as an option).
//! Kernel: `kernels/embedding.cu`.
//!
//! Shapes: `table` is `[vocab, d]`; `ids` any shape `[..]` with values in `[0, vocab)`; the output
//! is `[.., d]`. Pooled: `tokens` is a padded token table `[.., max_tokens]` (0 = pad), the output
//! is `[.., d]`; a row with no tokens pools to zero.
//!
//! Backward: `dE[id] += dout[p]` for every position (duplicates accumulate), except the pad id 0,
//! whose row gets no gradient. Pooled: every non-pad token of a row gets the row's gradient
//! (divided by the row's token count for mean). Kernel versions (family `embedding`,
//! `crate::kernel_version`): v1 (the default) scatters with float atomics on the GPU and the
//! emulator, so the last bits of a row hit by several positions depend on the order of the adds;
//! v2 (`ASIF_KERNEL_EMBEDDING=v2`) reduces each row in ascending position order on the device, so
//! its backwards equal the CPU reference bit for bit and a step is bit-reproducible.
mod cpu;
/// The CPU reference of this op, under the one name every op uses (docs/interop.md).
pub mod reference {
    pub use super::cpu::*;
}
mod cuda;

pub use cpu::{
    backward as backward_reference, forward as forward_reference,
    pooled_backward as pooled_backward_reference, pooled_forward as pooled_forward_reference,
};

use crate::autograd::{Tape, Var};
use crate::device::{Buffer, Device};
use crate::ops::check_indices;
use crate::{Error, IndexTensor, Result, Tensor};

const OP: &str = "embedding";
const POOLED: &str = "pooled_embedding";

/// How a row's token embeddings are pooled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Σ of the non-pad tokens' embeddings (RecBole's default `pooling_mode: sum`).
    Sum,
    /// The mean over the non-pad tokens (0 for a row without any).
    Mean,
}

fn table_dims(op: &'static str, table: &Tensor) -> Result<(usize, usize)> {
    match table.shape() {
        [vocab, dim] if *vocab > 0 && *dim > 0 && table.len() <= i32::MAX as usize => {
            Ok((*vocab, *dim))
        }
        other => Err(Error::shape(
            op,
            format!("the table must be a non-empty [vocab, d], got {other:?}"),
        )),
    }
}

fn with_last(shape: &[usize], last: usize) -> Vec<usize> {
    let mut out = shape.to_vec();
    out.push(last);
    out
}

fn check_len(op: &'static str, len: usize) -> Result<()> {
    if len > i32::MAX as usize {
        return Err(Error::shape(
            op,
            format!("{len} elements exceed the kernel's 32-bit indexing"),
        ));
    }
    Ok(())
}

/// `out[..] = table[ids[..]]`.
pub fn embedding_forward(table: &Tensor, ids: &IndexTensor) -> Result<Tensor> {
    let (vocab, dim) = table_dims(OP, table)?;
    let device = table.device();
    check_indices(OP, device, ids, 0, vocab as i64)?;
    check_len(OP, ids.len() * dim)?;
    let out = match device {
        Device::Cpu => Buffer::Host(cpu::forward(table.host(), ids.host(), dim)),
        _ => cuda::forward(device, table.buffer(), ids.buffer(), vocab, dim)?,
    };
    Ok(Tensor::from_buffer(
        device,
        &with_last(ids.shape(), dim),
        out,
    ))
}

/// `dE` `[vocab, d]` for the upstream `dout` `[.., d]` (shape of the forward's output).
pub fn embedding_backward(ids: &IndexTensor, dout: &Tensor, vocab: usize) -> Result<Tensor> {
    let device = dout.device();
    let dim = *dout.shape().last().unwrap_or(&0);
    if dout.shape() != with_last(ids.shape(), dim).as_slice() || dim == 0 || vocab == 0 {
        return Err(Error::shape(
            OP,
            format!(
                "dout {:?} must be ids {:?} with a last axis d > 0",
                dout.shape(),
                ids.shape()
            ),
        ));
    }
    check_indices(OP, device, ids, 0, vocab as i64)?;
    check_len(OP, (vocab * dim).max(ids.len() * dim))?;
    let dtable = match device {
        Device::Cpu => Buffer::Host(cpu::backward(ids.host(), dout.host(), vocab, dim)),
        _ => cuda::backward(device, ids.buffer(), dout.buffer(), vocab, dim)?,
    };
    Ok(Tensor::from_buffer(device, &[vocab, dim], dtable))
}

/// Tape face of the lookup: the gradient goes to `table` (ids are data).
pub fn embedding(tape: &Tape, table: &Var, ids: &IndexTensor) -> Result<Var> {
    let out = embedding_forward(table.value(), ids)?;
    let (ids, vocab, table_id) = (ids.clone(), table.value().shape()[0], table.id());
    Ok(tape.record(out, move |dout| {
        Ok(vec![(table_id, embedding_backward(&ids, dout, vocab)?)])
    }))
}

fn max_tokens_of(tokens: &IndexTensor) -> Result<usize> {
    match tokens.shape().last() {
        Some(&k) if k > 0 => Ok(k),
        _ => Err(Error::shape(
            POOLED,
            format!(
                "tokens must be [.., max_tokens] with max_tokens > 0, got {:?}",
                tokens.shape()
            ),
        )),
    }
}

fn pooled_shape(tokens: &IndexTensor, dim: usize) -> Vec<usize> {
    let mut shape = tokens.shape().to_vec();
    *shape.last_mut().expect("checked non-empty") = dim;
    shape
}

/// Pools each row of `tokens` `[.., max_tokens]` over `table` `[vocab, d]` into `[.., d]`.
pub fn pooled_embedding_forward(
    table: &Tensor,
    tokens: &IndexTensor,
    pooling: Pooling,
) -> Result<Tensor> {
    let (vocab, dim) = table_dims(POOLED, table)?;
    let max_tokens = max_tokens_of(tokens)?;
    let device = table.device();
    check_indices(POOLED, device, tokens, 0, vocab as i64)?;
    check_len(POOLED, (tokens.len() / max_tokens) * dim)?;
    let mean = pooling == Pooling::Mean;
    let out = match device {
        Device::Cpu => Buffer::Host(cpu::pooled_forward(
            table.host(),
            tokens.host(),
            max_tokens,
            dim,
            mean,
        )),
        _ => cuda::pooled_forward(
            device,
            table.buffer(),
            tokens.buffer(),
            max_tokens,
            vocab,
            dim,
            mean,
        )?,
    };
    Ok(Tensor::from_buffer(device, &pooled_shape(tokens, dim), out))
}

/// `dE` `[vocab, d]` of [`pooled_embedding_forward`] for the upstream `dout` `[.., d]`.
pub fn pooled_embedding_backward(
    tokens: &IndexTensor,
    dout: &Tensor,
    vocab: usize,
    pooling: Pooling,
) -> Result<Tensor> {
    let max_tokens = max_tokens_of(tokens)?;
    let device = dout.device();
    let dim = *dout.shape().last().unwrap_or(&0);
    if dim == 0 || vocab == 0 || dout.shape() != pooled_shape(tokens, dim).as_slice() {
        return Err(Error::shape(
            POOLED,
            format!(
                "dout {:?} does not match tokens {:?}",
                dout.shape(),
                tokens.shape()
            ),
        ));
    }
    check_indices(POOLED, device, tokens, 0, vocab as i64)?;
    check_len(POOLED, vocab * dim)?;
    let mean = pooling == Pooling::Mean;
    let dtable = match device {
        Device::Cpu => Buffer::Host(cpu::pooled_backward(
            tokens.host(),
            dout.host(),
            max_tokens,
            vocab,
            dim,
            mean,
        )),
        _ => cuda::pooled_backward(
            device,
            tokens.buffer(),
            dout.buffer(),
            max_tokens,
            vocab,
            dim,
            mean,
        )?,
    };
    Ok(Tensor::from_buffer(device, &[vocab, dim], dtable))
}

/// Tape face of the pooled lookup: the gradient goes to `table`.
pub fn pooled_embedding(
    tape: &Tape,
    table: &Var,
    tokens: &IndexTensor,
    pooling: Pooling,
) -> Result<Var> {
    let out = pooled_embedding_forward(table.value(), tokens, pooling)?;
    let (tokens, vocab, table_id) = (tokens.clone(), table.value().shape()[0], table.id());
    Ok(tape.record(out, move |dout| {
        Ok(vec![(
            table_id,
            pooled_embedding_backward(&tokens, dout, vocab, pooling)?,
        )])
    }))
}
