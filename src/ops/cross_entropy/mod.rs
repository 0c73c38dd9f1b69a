//! Softmax cross-entropy over all items (spec §2 "Prediction": logits = u E_Xᵀ over every row of
//! E_X, pad included; L_ce = mean_b CE(logits_b, target_b)). Kernel: `kernels/cross_entropy.cu`.
//!
//! Shapes: `logits` `[B, |V|]` (or `u` `[B, d]` and `E_X` `[|V|, d]`), `targets` `[B]` in
//! `[0, |V|)`; the loss is a scalar (shape `[]`).
//!
//! Forward and backward in one pass: the fused kernel computes each row's log-sum-exp (online
//! max and sum, so logits of ±1e4 are fine), the row's NLL `lse_b − ℓ_bt`, and overwrites the
//! logits with `G = (softmax(ℓ_b) − onehot(t_b)) / B = ∂L_ce/∂ℓ`, which is all the backward needs:
//! `dℓ = g · G` for the upstream scalar g; through the prediction layer `du = g · G E_X`,
//! `dE_X = g · Gᵀ u`. [`cross_entropy_over_items_forward`] computes the logits into the one
//! `B × |V|` buffer that becomes G, so only one such matrix ever exists.
mod cpu;
/// The CPU reference of this op, under the one name every op uses (docs/interop.md).
pub mod reference {
    pub use super::cpu::*;
}
mod cuda;

pub use cpu::forward as forward_reference;

use crate::autograd::{Tape, Var};
use crate::device::{Buffer, Device};
use crate::gemm::{gemm, gemm_output, Gemm};
use crate::ops::{check_indices, check_kernel_len, record_one, run_in_place, DeviceInPlaceOp};
use crate::{Error, IndexTensor, Result, Tensor};

const OP: &str = "cross_entropy";

/// What the backward needs: `G = ∂L_ce/∂logits` `[B, |V|]` (for an upstream gradient of 1).
#[derive(Debug, Clone)]
pub struct CrossEntropySaved {
    pub gradient: Tensor,
}

/// Checks the targets `[B]` against `rows × items` logits (both > 0) and the kernel's bounds;
/// the problem of the fused pass.
fn check_targets(
    device: &Device,
    targets: &IndexTensor,
    rows: usize,
    items: usize,
) -> Result<Logits> {
    if targets.shape() != [rows] || rows == 0 || items == 0 {
        return Err(Error::shape(
            OP,
            format!(
                "targets must be [B] for {rows} rows of {items} items (both > 0), got {:?}",
                targets.shape()
            ),
        ));
    }
    if rows > 65_535 {
        return Err(Error::shape(
            OP,
            format!("{rows} rows exceed the kernel's grid (B ≤ 65535)"),
        ));
    }
    let logits = Logits { rows, items };
    check_kernel_len(OP, logits.len())?;
    check_indices(OP, device, targets, 0, items as i64)?;
    Ok(logits)
}

/// The problem of the fused pass: the logits as `rows × items`.
#[derive(Debug, Clone, Copy)]
struct Logits {
    rows: usize,
    items: usize,
}

impl Logits {
    /// B·|V|: the 32-bit check and the allocation of the logits made from u E_Xᵀ both read it
    /// here.
    fn len(&self) -> usize {
        self.rows * self.items
    }
}

/// The fused loss-and-gradient pass under the op contract's in-place face: it overwrites the
/// logits (its one target) with G and returns the loss (one new output of one value); the
/// targets t_b are its index input.
struct LossAndGradient;

impl DeviceInPlaceOp for LossAndGradient {
    type Problem = Logits;
    fn name(&self) -> &'static str {
        OP
    }
    fn output_lens(&self, _: &Logits) -> Vec<usize> {
        vec![1]
    }
    fn reference(
        &self,
        &Logits { items, .. }: &Logits,
        logits: &mut [&mut [f32]],
        _: &[&[f32]],
        targets: &[&[i32]],
    ) -> Result<Vec<Vec<f32>>> {
        let (loss, grad) = cpu::forward_threaded(logits[0], targets[0], items);
        let block = crate::parallel::ELEMENTS_PER_UNIT;
        crate::parallel::for_each_block(logits[0], block, |u, out| {
            out.copy_from_slice(&grad[u * block..u * block + out.len()]);
        });
        Ok(vec![vec![loss]])
    }
    fn launch(
        &self,
        &Logits { rows, items }: &Logits,
        device: &Device,
        logits: &mut [&mut Buffer<f32>],
        _: &[&Buffer<f32>],
        targets: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        let loss = cuda::loss_and_gradient_in_place(device, logits[0], targets[0], rows, items)?;
        Ok(vec![loss])
    }
}

/// Loss and G from a logits buffer that the call may overwrite.
fn loss_from_logits(
    device: &Device,
    mut logits: Buffer<f32>,
    targets: &IndexTensor,
    problem: Logits,
) -> Result<(Tensor, CrossEntropySaved)> {
    let loss = run_in_place(
        &LossAndGradient,
        &problem,
        device,
        &mut [&mut logits],
        &[],
        &[targets.buffer()],
    )?
    .remove(0);
    Ok((
        Tensor::from_buffer(device, &[], loss),
        CrossEntropySaved {
            gradient: Tensor::from_buffer(device, &[problem.rows, problem.items], logits),
        },
    ))
}

/// `L_ce` for `logits` `[B, |V|]`. Copies the logits once (into G); use
/// [`cross_entropy_over_items_forward`] to avoid holding two matrices.
pub fn softmax_cross_entropy_forward(
    logits: &Tensor,
    targets: &IndexTensor,
) -> Result<(Tensor, CrossEntropySaved)> {
    let (rows, items) = match logits.shape() {
        [rows, items] => (*rows, *items),
        other => {
            return Err(Error::shape(
                OP,
                format!("logits must be [B, |V|], got {other:?}"),
            ))
        }
    };
    let device = logits.device();
    let problem = check_targets(device, targets, rows, items)?;
    loss_from_logits(device, device.duplicate(logits.buffer())?, targets, problem)
}

fn check_scalar(device: &Device, dloss: &Tensor) -> Result<()> {
    if dloss.len() != 1 || dloss.device() != device {
        return Err(Error::shape(
            OP,
            format!(
                "the upstream gradient must be one value on {}, got {:?} on {}",
                device.name(),
                dloss.shape(),
                dloss.device().name()
            ),
        ));
    }
    Ok(())
}

/// `x *= g` in place for the upstream scalar g (one value, read on the device by the kernel
/// devices), under the op contract's in-place face: target x, value g.
struct ScaleByScalar;

impl DeviceInPlaceOp for ScaleByScalar {
    type Problem = ();
    fn name(&self) -> &'static str {
        OP
    }
    fn reference(
        &self,
        _: &(),
        x: &mut [&mut [f32]],
        scalar: &[&[f32]],
        _: &[&[i32]],
    ) -> Result<Vec<Vec<f32>>> {
        let g = scalar[0][0];
        crate::parallel::for_each_block(x[0], crate::parallel::ELEMENTS_PER_UNIT, |_, block| {
            block.iter_mut().for_each(|v| *v *= g)
        });
        Ok(Vec::new())
    }
    fn launch(
        &self,
        _: &(),
        device: &Device,
        x: &mut [&mut Buffer<f32>],
        scalar: &[&Buffer<f32>],
        _: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        cuda::scale_in_place(device, x[0], scalar[0])?;
        Ok(Vec::new())
    }
}

/// Multiplies `buffer` by the scalar `dloss` in place (checked: one value on `device`).
fn scale(device: &Device, buffer: &mut Buffer<f32>, dloss: &Tensor) -> Result<()> {
    run_in_place(
        &ScaleByScalar,
        &(),
        device,
        &mut [buffer],
        &[dloss.buffer()],
        &[],
    )?;
    Ok(())
}

/// `dlogits = dloss · G`.
pub fn softmax_cross_entropy_backward(saved: &CrossEntropySaved, dloss: &Tensor) -> Result<Tensor> {
    let device = saved.gradient.device();
    check_scalar(device, dloss)?;
    let mut dlogits = device.duplicate(saved.gradient.buffer())?;
    scale(device, &mut dlogits, dloss)?;
    Ok(Tensor::from_buffer(device, saved.gradient.shape(), dlogits))
}

/// Tape face for given logits.
pub fn softmax_cross_entropy(tape: &Tape, logits: &Var, targets: &IndexTensor) -> Result<Var> {
    let (loss, saved) = softmax_cross_entropy_forward(logits.value(), targets)?;
    Ok(record_one(tape, &[logits], loss, move |dloss| {
        Ok(vec![Some(softmax_cross_entropy_backward(&saved, dloss)?)])
    }))
}

/// `L_ce` of `logits = u E_Xᵀ` for `u` `[B, d]` and `table` = E_X `[|V|, d]`, holding one
/// `B × |V|` matrix (the logits, overwritten by G).
pub fn cross_entropy_over_items_forward(
    u: &Tensor,
    table: &Tensor,
    targets: &IndexTensor,
) -> Result<(Tensor, CrossEntropySaved)> {
    u.same_device(OP, table)?;
    let (rows, items, d) = match (u.shape(), table.shape()) {
        ([rows, d], [items, d2]) if d == d2 && *d > 0 => (*rows, *items, *d),
        (a, b) => {
            return Err(Error::shape(
                OP,
                format!("u must be [B, d] and the table [|V|, d]; got {a:?} and {b:?}"),
            ))
        }
    };
    let device = u.device();
    let problem = check_targets(device, targets, rows, items)?;
    let product = Gemm {
        transpose_a: false,
        transpose_b: true,
        m: rows,
        n: items,
        k: d,
        alpha: 1.0,
        beta: 0.0,
    };
    // The fresh C of a β = 0 product (`gemm_output` makes the same for k = d > 0), of the length
    // the 32-bit check read: `gemm` refuses any other.
    let mut logits = device.uninitialized::<f32>(problem.len())?;
    gemm(device, product, u.buffer(), table.buffer(), &mut logits)?;
    loss_from_logits(device, logits, targets, problem)
}

/// `(du, dE_X) = (g · G E_X, g · Gᵀ u)` for the upstream scalar `dloss` = g.
pub fn cross_entropy_over_items_backward(
    u: &Tensor,
    table: &Tensor,
    saved: &CrossEntropySaved,
    dloss: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let device = u.device();
    check_scalar(device, dloss)?;
    let (rows, d) = (u.shape()[0], u.shape()[1]);
    let items = table.shape()[0];
    if saved.gradient.shape() != [rows, items] {
        return Err(Error::shape(
            OP,
            format!(
                "saved G {:?} does not match u {:?} and the table {:?}",
                saved.gradient.shape(),
                u.shape(),
                table.shape()
            ),
        ));
    }
    let g = saved.gradient.buffer();
    let du_product = Gemm {
        transpose_a: false,
        transpose_b: false,
        m: rows,
        n: d,
        k: items,
        alpha: 1.0,
        beta: 0.0,
    };
    let mut du = gemm_output(device, du_product)?;
    gemm(device, du_product, g, table.buffer(), &mut du)?;
    let dtable_product = Gemm {
        transpose_a: true,
        transpose_b: false,
        m: items,
        n: d,
        k: rows,
        alpha: 1.0,
        beta: 0.0,
    };
    let mut dtable = gemm_output(device, dtable_product)?;
    gemm(device, dtable_product, g, u.buffer(), &mut dtable)?;
    scale(device, &mut du, dloss)?;
    scale(device, &mut dtable, dloss)?;
    Ok((
        Tensor::from_buffer(device, &[rows, d], du),
        Tensor::from_buffer(device, &[items, d], dtable),
    ))
}

/// Tape face of the prediction layer and its loss together.
pub fn cross_entropy_over_items(
    tape: &Tape,
    u: &Var,
    table: &Var,
    targets: &IndexTensor,
) -> Result<Var> {
    let (loss, saved) = cross_entropy_over_items_forward(u.value(), table.value(), targets)?;
    let (u_value, table_value) = (u.value().clone(), table.value().clone());
    Ok(record_one(tape, &[u, table], loss, move |dloss| {
        let (du, dtable) =
            cross_entropy_over_items_backward(&u_value, &table_value, &saved, dloss)?;
        Ok(vec![Some(du), Some(dtable)])
    }))
}
