//! The model's input lookups in one launch (issue 20): the item embedding `x = E_X[s]` and one
//! attribute type's pooled embedding `a = pool(E_A[tokens])` at the same positions (spec §1),
//! instead of the embedding op's two lookups. Kernel: `kernels/input_embedding.cu` (floor and
//! saving in its header and `docs/gpu.md`: one launch a step, no bytes).
//!
//! The forward gives the unfused lookups' bits (the same per-element code,
//! `kernels/embedding_lookup.cuh`; the CPU device runs the embedding op's references). The
//! backward is the embedding op's: each table's scatter ([`embedding_backward`],
//! [`pooled_embedding_backward`]; the `embedding` family's v2 is the deterministic one). The model
//! uses it where the kernel family `input_embedding` is at v2 (`ASIF_KERNEL_INPUT_EMBEDDING=v2`,
//! [`crate::kernel_version`]) and the data has one attribute type; v1, the two lookups, is the
//! default until a GPU run measures both.
//!
//! Plain API: [`input_embedding_forward`]. Tape API: [`input_embedding`].
mod cpu;
/// The CPU reference of this op, under the one name every op uses (docs/interop.md).
pub mod reference {
    pub use super::cpu::*;
}
mod cuda;

use crate::autograd::{Tape, Var};
use crate::device::{Buffer, Device};
use crate::ops::embedding::{embedding_backward, pooled_embedding_backward, table_dims, Pooling};
use crate::ops::{check_indices, check_kernel_len, record, run, DeviceOp};
use crate::{Error, IndexTensor, Result, Tensor};

const OP: &str = "input_embedding";
/// The kernel family, also the [`crate::kernel_version`] family whose v2 the model reads.
pub const FAMILY: &str = "input_embedding";

/// The problem: the ids' shape, the two tables' sizes, the tokens' row width and the pooling.
#[derive(Debug, Clone)]
struct Lookups {
    ids_shape: Vec<usize>,
    sizes: cuda::Sizes,
}

impl cuda::Sizes {
    /// The length of each output, `positions · d`: the launch's grid and the 32-bit check both
    /// read it here (in this file, where the ops' cargo-mutants pass reaches it).
    fn outputs(&self) -> usize {
        self.positions * self.dim
    }
}

/// The forward under the op contract: inputs E_X, E_A; ids, tokens. Outputs x, a `[.., d]`.
struct Forward;

impl DeviceOp for Forward {
    type Problem = Lookups;
    fn name(&self) -> &'static str {
        OP
    }
    fn output_shapes(&self, p: &Lookups) -> Vec<Vec<usize>> {
        let mut shape = p.ids_shape.clone();
        shape.push(p.sizes.dim);
        vec![shape.clone(), shape]
    }
    fn reference(&self, p: &Lookups, v: &[&[f32]], i: &[&[i32]]) -> Result<Vec<Vec<f32>>> {
        let s = &p.sizes;
        let (x, a) = cpu::forward(v[0], v[1], i[0], i[1], s.max_tokens, s.dim, s.mean);
        Ok(vec![x, a])
    }
    fn launch(
        &self,
        p: &Lookups,
        device: &Device,
        v: &[&Buffer<f32>],
        i: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        let (x, a) = cuda::forward(device, v[0], v[1], i[0], i[1], &p.sizes)?;
        Ok(vec![x, a])
    }
}

/// Checks the tables, the ids `[..]` and the tokens `[.., max_tokens]` (the ids' shape plus a
/// token axis), their devices and their values (on the host devices).
fn check(
    item_table: &Tensor,
    attribute_table: &Tensor,
    ids: &IndexTensor,
    tokens: &IndexTensor,
    pooling: Pooling,
) -> Result<Lookups> {
    item_table.same_device(OP, attribute_table)?;
    let (item_vocab, dim) = table_dims(OP, "item table", item_table)?;
    let (attribute_vocab, attribute_dim) = table_dims(OP, "attribute table", attribute_table)?;
    if attribute_dim != dim {
        return Err(Error::shape(
            OP,
            format!(
                "the attribute table's width {attribute_dim} differs from the item table's {dim}"
            ),
        ));
    }
    let max_tokens = match tokens.shape().split_last() {
        Some((&k, lead)) if k > 0 && lead == ids.shape() => k,
        _ => {
            return Err(Error::shape(
                OP,
                format!(
                    "tokens {:?} must be the ids' shape {:?} plus a non-empty token axis",
                    tokens.shape(),
                    ids.shape()
                ),
            ))
        }
    };
    let device = item_table.device();
    check_indices(OP, device, ids, 0, item_vocab as i64)?;
    check_indices(OP, device, tokens, 0, attribute_vocab as i64)?;
    let sizes = cuda::Sizes {
        positions: ids.len(),
        dim,
        item_vocab,
        max_tokens,
        attribute_vocab,
        mean: pooling == Pooling::Mean,
    };
    check_kernel_len(OP, sizes.outputs())?;
    Ok(Lookups {
        ids_shape: ids.shape().to_vec(),
        sizes,
    })
}

/// `(x, a)`: `x = E_X[ids]` and `a` the `pooling` of `E_A[tokens]` over each position's tokens,
/// both `[.., d]`, from one launch.
pub fn input_embedding_forward(
    item_table: &Tensor,
    attribute_table: &Tensor,
    ids: &IndexTensor,
    tokens: &IndexTensor,
    pooling: Pooling,
) -> Result<(Tensor, Tensor)> {
    let problem = check(item_table, attribute_table, ids, tokens, pooling)?;
    let mut outputs = run(
        &Forward,
        &problem,
        &[item_table, attribute_table],
        &[ids, tokens],
    )?;
    let a = outputs.pop().expect("two outputs");
    let x = outputs.pop().expect("two outputs");
    Ok((x, a))
}

/// Tape face: `(x, a)` with gradients to the two tables (the embedding op's scatters).
pub fn input_embedding(
    tape: &Tape,
    item_table: &Var,
    attribute_table: &Var,
    ids: &IndexTensor,
    tokens: &IndexTensor,
    pooling: Pooling,
) -> Result<(Var, Var)> {
    let (x, a) = input_embedding_forward(
        item_table.value(),
        attribute_table.value(),
        ids,
        tokens,
        pooling,
    )?;
    let (ids, tokens) = (ids.clone(), tokens.clone());
    let item_vocab = item_table.value().shape()[0];
    let attribute_vocab = attribute_table.value().shape()[0];
    let mut vars = record(
        tape,
        &[item_table, attribute_table],
        vec![x, a],
        move |grads| {
            // The attribute table's scatter first: the order the unfused ops' backwards run in
            // (the pooled lookup was recorded after the item lookup).
            let dattribute = match &grads[1] {
                Some(da) => Some(pooled_embedding_backward(
                    &tokens,
                    da,
                    attribute_vocab,
                    pooling,
                )?),
                None => None,
            };
            let ditem = match &grads[0] {
                Some(dx) => Some(embedding_backward(&ids, dx, item_vocab)?),
                None => None,
            };
            Ok(vec![ditem, dattribute])
        },
    );
    let a = vars.pop().expect("two outputs");
    let x = vars.pop().expect("two outputs");
    Ok((x, a))
}
