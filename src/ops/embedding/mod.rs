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
use crate::ops::{check_indices, check_kernel_len, record_one, run_one, DeviceOp};
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

/// The problem descriptor of a lookup: the table `[vocab, dim]`, the shape of the forward's
/// output (`[.., d]`) and, for the pooled lookup, the token table's row width and the pooling.
#[derive(Debug, Clone)]
struct LookupProblem {
    vocab: usize,
    dim: usize,
    out_shape: Vec<usize>,
    /// `Some((max_tokens, mean))` for the pooled lookup.
    pooled: Option<(usize, bool)>,
}

/// The forward under the op contract (named `embedding` or `pooled_embedding` in errors): inputs
/// table; ids (or tokens). Output `[.., d]`.
struct Forward(&'static str);
/// The backward under the op contract: inputs dout; ids (or tokens). Output dE `[vocab, d]`.
struct Backward(&'static str);

impl DeviceOp for Forward {
    type Problem = LookupProblem;
    fn name(&self) -> &'static str {
        self.0
    }
    fn output_shapes(&self, p: &LookupProblem) -> Vec<Vec<usize>> {
        vec![p.out_shape.clone()]
    }
    fn reference(
        &self,
        p: &LookupProblem,
        table: &[&[f32]],
        ids: &[&[i32]],
    ) -> Result<Vec<Vec<f32>>> {
        Ok(vec![match p.pooled {
            None => cpu::forward(table[0], ids[0], p.dim),
            Some((max_tokens, mean)) => {
                cpu::pooled_forward(table[0], ids[0], max_tokens, p.dim, mean)
            }
        }])
    }
    fn launch(
        &self,
        p: &LookupProblem,
        device: &Device,
        table: &[&Buffer<f32>],
        ids: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        Ok(vec![match p.pooled {
            None => cuda::forward(device, table[0], ids[0], p.vocab, p.dim)?,
            Some((max_tokens, mean)) => {
                cuda::pooled_forward(device, table[0], ids[0], max_tokens, p.vocab, p.dim, mean)?
            }
        }])
    }
}

impl DeviceOp for Backward {
    type Problem = LookupProblem;
    fn name(&self) -> &'static str {
        self.0
    }
    fn output_shapes(&self, p: &LookupProblem) -> Vec<Vec<usize>> {
        vec![vec![p.vocab, p.dim]]
    }
    fn reference(
        &self,
        p: &LookupProblem,
        dout: &[&[f32]],
        ids: &[&[i32]],
    ) -> Result<Vec<Vec<f32>>> {
        Ok(vec![match p.pooled {
            None => cpu::backward(ids[0], dout[0], p.vocab, p.dim),
            Some((max_tokens, mean)) => {
                cpu::pooled_backward(ids[0], dout[0], max_tokens, p.vocab, p.dim, mean)
            }
        }])
    }
    fn launch(
        &self,
        p: &LookupProblem,
        device: &Device,
        dout: &[&Buffer<f32>],
        ids: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        Ok(vec![match p.pooled {
            None => cuda::backward(device, ids[0], dout[0], p.vocab, p.dim)?,
            Some((max_tokens, mean)) => {
                cuda::pooled_backward(device, ids[0], dout[0], max_tokens, p.vocab, p.dim, mean)?
            }
        }])
    }
}

/// `(vocab, d)` of a non-empty `[vocab, d]` table that the kernels can index (`what` names
/// it in the error: "table", or the fused lookups' "item table" and "attribute table").
pub(crate) fn table_dims(op: &'static str, what: &str, table: &Tensor) -> Result<(usize, usize)> {
    match table.shape() {
        [vocab, dim] if *vocab > 0 && *dim > 0 => {
            check_kernel_len(op, table.len())?;
            Ok((*vocab, *dim))
        }
        other => Err(Error::shape(
            op,
            format!("the {what} must be a non-empty [vocab, d], got {other:?}"),
        )),
    }
}

fn with_last(shape: &[usize], last: usize) -> Vec<usize> {
    let mut out = shape.to_vec();
    out.push(last);
    out
}

/// `out[..] = table[ids[..]]`.
pub fn embedding_forward(table: &Tensor, ids: &IndexTensor) -> Result<Tensor> {
    let (vocab, dim) = table_dims(OP, "table", table)?;
    check_indices(OP, table.device(), ids, 0, vocab as i64)?;
    check_kernel_len(OP, ids.len() * dim)?;
    let problem = LookupProblem {
        vocab,
        dim,
        out_shape: with_last(ids.shape(), dim),
        pooled: None,
    };
    run_one(&Forward(OP), &problem, &[table], &[ids])
}

/// `dE` `[vocab, d]` for the upstream `dout` `[.., d]` (shape of the forward's output).
pub fn embedding_backward(ids: &IndexTensor, dout: &Tensor, vocab: usize) -> Result<Tensor> {
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
    check_indices(OP, dout.device(), ids, 0, vocab as i64)?;
    check_kernel_len(OP, (vocab * dim).max(dout.len()))?;
    let problem = LookupProblem {
        vocab,
        dim,
        out_shape: dout.shape().to_vec(),
        pooled: None,
    };
    run_one(&Backward(OP), &problem, &[dout], &[ids])
}

/// Tape face of the lookup: the gradient goes to `table` (ids are data).
pub fn embedding(tape: &Tape, table: &Var, ids: &IndexTensor) -> Result<Var> {
    let out = embedding_forward(table.value(), ids)?;
    let (ids, vocab) = (ids.clone(), table.value().shape()[0]);
    Ok(record_one(tape, &[table], out, move |dout| {
        Ok(vec![Some(embedding_backward(&ids, dout, vocab)?)])
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
    let (vocab, dim) = table_dims(POOLED, "table", table)?;
    let max_tokens = max_tokens_of(tokens)?;
    check_indices(POOLED, table.device(), tokens, 0, vocab as i64)?;
    check_kernel_len(POOLED, (tokens.len() / max_tokens) * dim)?;
    let problem = LookupProblem {
        vocab,
        dim,
        out_shape: pooled_shape(tokens, dim),
        pooled: Some((max_tokens, pooling == Pooling::Mean)),
    };
    run_one(&Forward(POOLED), &problem, &[table], &[tokens])
}

/// `dE` `[vocab, d]` of [`pooled_embedding_forward`] for the upstream `dout` `[.., d]`.
pub fn pooled_embedding_backward(
    tokens: &IndexTensor,
    dout: &Tensor,
    vocab: usize,
    pooling: Pooling,
) -> Result<Tensor> {
    let max_tokens = max_tokens_of(tokens)?;
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
    check_indices(POOLED, dout.device(), tokens, 0, vocab as i64)?;
    check_kernel_len(POOLED, vocab * dim)?;
    let problem = LookupProblem {
        vocab,
        dim,
        out_shape: dout.shape().to_vec(),
        pooled: Some((max_tokens, pooling == Pooling::Mean)),
    };
    run_one(&Backward(POOLED), &problem, &[dout], &[tokens])
}

/// Tape face of the pooled lookup: the gradient goes to `table`.
pub fn pooled_embedding(
    tape: &Tape,
    table: &Var,
    tokens: &IndexTensor,
    pooling: Pooling,
) -> Result<Var> {
    let out = pooled_embedding_forward(table.value(), tokens, pooling)?;
    let (tokens, vocab) = (tokens.clone(), table.value().shape()[0]);
    Ok(record_one(tape, &[table], out, move |dout| {
        Ok(vec![Some(pooled_embedding_backward(
            &tokens, dout, vocab, pooling,
        )?)])
    }))
}
