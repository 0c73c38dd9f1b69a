//! Layer normalisation over the last axis (RecBole's LayerNorm, spec §2; eps 1e-12 by default
//! there). Kernel: `kernels/layer_norm.cu`.
//!
//! Plain kernel API: [`layer_norm_forward`] returns the output and the per-row statistics the
//! backward needs; [`layer_norm_backward`] returns the gradients. Tape API: [`layer_norm`].
mod cpu;
/// The CPU reference of this op, under the one name every op uses (docs/interop.md).
pub mod reference {
    pub use super::cpu::*;
}
mod cuda;

pub use cpu::{backward as backward_reference, forward as forward_reference};

use crate::autograd::{Tape, Var};
use crate::device::{Buffer, Device};
use crate::ops::{check_kernel_len, record_one, run, DeviceOp};
use crate::{Error, Result, Tensor};

/// What the backward needs from the forward: per-row mean and 1/sqrt(var + eps).
#[derive(Debug, Clone)]
pub struct LayerNormSaved {
    pub mean: Tensor,
    pub rstd: Tensor,
}

#[derive(Debug, Clone)]
pub struct LayerNormGradients {
    pub dx: Tensor,
    pub dgamma: Tensor,
    pub dbeta: Tensor,
}

const OP: &str = "layer_norm";

/// The problem descriptor: `x` (of `shape`) as `rows` rows of `cols` columns, normalised with
/// `eps` (the forward's; unused by the backward).
#[derive(Debug, Clone)]
struct LayerNormProblem {
    shape: Vec<usize>,
    rows: usize,
    cols: usize,
    eps: f32,
}

/// The forward under the op contract: inputs x, γ, β; outputs y, mean, rstd.
struct Forward;
/// The backward under the op contract: inputs x, γ, mean, rstd, dy; outputs dx, dγ, dβ.
struct Backward;

impl DeviceOp for Forward {
    type Problem = LayerNormProblem;
    fn name(&self) -> &'static str {
        OP
    }
    fn output_shapes(&self, p: &LayerNormProblem) -> Vec<Vec<usize>> {
        vec![p.shape.clone(), vec![p.rows], vec![p.rows]]
    }
    fn reference(&self, p: &LayerNormProblem, v: &[&[f32]], _: &[&[i32]]) -> Result<Vec<Vec<f32>>> {
        let (y, mean, rstd) = cpu::forward_f32(v[0], v[1], v[2], p.cols, p.eps);
        Ok(vec![y, mean, rstd])
    }
    fn launch(
        &self,
        p: &LayerNormProblem,
        device: &Device,
        v: &[&Buffer<f32>],
        _: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        let out = cuda::forward(device, v[0], v[1], v[2], p.rows, p.cols, p.eps)?;
        Ok(vec![out.y, out.mean, out.rstd])
    }
}

impl DeviceOp for Backward {
    type Problem = LayerNormProblem;
    fn name(&self) -> &'static str {
        OP
    }
    fn output_shapes(&self, p: &LayerNormProblem) -> Vec<Vec<usize>> {
        vec![p.shape.clone(), vec![p.cols], vec![p.cols]]
    }
    fn reference(&self, p: &LayerNormProblem, v: &[&[f32]], _: &[&[i32]]) -> Result<Vec<Vec<f32>>> {
        let (dx, dgamma, dbeta) = cpu::backward_f32(v[0], v[1], v[2], v[3], v[4], p.cols);
        Ok(vec![dx, dgamma, dbeta])
    }
    fn launch(
        &self,
        p: &LayerNormProblem,
        device: &Device,
        v: &[&Buffer<f32>],
        _: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>> {
        let out = cuda::backward(device, v[0], v[1], v[2], v[3], v[4], p.rows, p.cols)?;
        Ok(vec![out.dx, out.dgamma, out.dbeta])
    }
}

/// Rows and columns of `x` for a parameter `gamma` of length `cols`.
fn rows_cols(x: &Tensor, gamma: &Tensor) -> Result<(usize, usize)> {
    x.same_device(OP, gamma)?;
    let cols = *x
        .shape()
        .last()
        .ok_or_else(|| Error::shape(OP, "x must have at least one axis"))?;
    if cols == 0 {
        return Err(Error::shape(OP, "the normalised axis is empty"));
    }
    if gamma.shape() != [cols] {
        return Err(Error::shape(
            OP,
            format!(
                "x {:?} needs gamma of shape [{cols}], got {:?}",
                x.shape(),
                gamma.shape()
            ),
        ));
    }
    check_kernel_len(OP, x.len())?;
    Ok((x.len() / cols, cols))
}

/// `y = (x - mean) / sqrt(var + eps) · gamma + beta` over the last axis of `x`.
pub fn layer_norm_forward(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
) -> Result<(Tensor, LayerNormSaved)> {
    let (rows, cols) = rows_cols(x, gamma)?;
    x.same_device(OP, beta)?;
    if beta.shape() != [cols] {
        return Err(Error::shape(
            OP,
            format!(
                "x {:?} needs beta of shape [{cols}], got {:?}",
                x.shape(),
                beta.shape()
            ),
        ));
    }
    if !(eps >= 0.0 && eps.is_finite()) {
        return Err(Error::argument(
            OP,
            format!("eps must be finite and non-negative, got {eps}"),
        ));
    }
    let problem = LayerNormProblem {
        shape: x.shape().to_vec(),
        rows,
        cols,
        eps,
    };
    let [y, mean, rstd]: [Tensor; 3] = run(&Forward, &problem, &[x, gamma, beta], &[])?
        .try_into()
        .map_err(|_| Error::shape(OP, "the forward makes y, mean and rstd"))?;
    Ok((y, LayerNormSaved { mean, rstd }))
}

/// Gradients of layer norm given the upstream gradient `dy` (same shape as `x`).
pub fn layer_norm_backward(
    x: &Tensor,
    gamma: &Tensor,
    saved: &LayerNormSaved,
    dy: &Tensor,
) -> Result<LayerNormGradients> {
    let (rows, cols) = rows_cols(x, gamma)?;
    x.same_device(OP, dy)?;
    if dy.shape() != x.shape() {
        return Err(Error::shape(
            OP,
            format!("dy {:?} must match x {:?}", dy.shape(), x.shape()),
        ));
    }
    if saved.mean.shape() != [rows] || saved.rstd.shape() != [rows] {
        return Err(Error::shape(
            OP,
            format!("saved statistics must have shape [{rows}]"),
        ));
    }
    let problem = LayerNormProblem {
        shape: x.shape().to_vec(),
        rows,
        cols,
        eps: 0.0,
    };
    let [dx, dgamma, dbeta]: [Tensor; 3] = run(
        &Backward,
        &problem,
        &[x, gamma, &saved.mean, &saved.rstd, dy],
        &[],
    )?
    .try_into()
    .map_err(|_| Error::shape(OP, "the backward makes dx, dγ and dβ"))?;
    Ok(LayerNormGradients { dx, dgamma, dbeta })
}

/// Tape face of layer norm: records the backward on `tape`.
pub fn layer_norm(tape: &Tape, x: &Var, gamma: &Var, beta: &Var, eps: f32) -> Result<Var> {
    let (y, saved) = layer_norm_forward(x.value(), gamma.value(), beta.value(), eps)?;
    let (x_value, gamma_value) = (x.value().clone(), gamma.value().clone());
    Ok(record_one(tape, &[x, gamma, beta], y, move |dy| {
        let grads = layer_norm_backward(&x_value, &gamma_value, &saved, dy)?;
        Ok(vec![Some(grads.dx), Some(grads.dgamma), Some(grads.dbeta)])
    }))
}
