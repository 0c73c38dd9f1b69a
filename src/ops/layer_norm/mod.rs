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
pub(crate) use cuda::warp_per_row_launch;

use crate::autograd::{Tape, Var};
use crate::device::{Buffer, Device};
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
    if x.len() > i32::MAX as usize {
        return Err(Error::shape(
            OP,
            format!("{} elements exceed the kernel's 32-bit indexing", x.len()),
        ));
    }
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
    let device = x.device();
    let stats_shape = [rows];
    match device {
        Device::Cpu => {
            let (y, mean, rstd) =
                cpu::forward_threaded(x.host(), gamma.host(), beta.host(), cols, eps);
            Ok((
                Tensor::from_buffer(device, x.shape(), Buffer::Host(y)),
                LayerNormSaved {
                    mean: Tensor::from_buffer(device, &stats_shape, Buffer::Host(mean)),
                    rstd: Tensor::from_buffer(device, &stats_shape, Buffer::Host(rstd)),
                },
            ))
        }
        Device::Cuda(_) | Device::Emulated(_) => {
            let out = cuda::forward(
                device,
                x.buffer(),
                gamma.buffer(),
                beta.buffer(),
                rows,
                cols,
                eps,
            )?;
            Ok((
                Tensor::from_buffer(device, x.shape(), out.y),
                LayerNormSaved {
                    mean: Tensor::from_buffer(device, &stats_shape, out.mean),
                    rstd: Tensor::from_buffer(device, &stats_shape, out.rstd),
                },
            ))
        }
    }
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
    let device = x.device();
    let (dx, dgamma, dbeta) = match device {
        Device::Cpu => {
            let (dx, dgamma, dbeta) = cpu::backward_threaded(
                x.host(),
                gamma.host(),
                saved.mean.host(),
                saved.rstd.host(),
                dy.host(),
                cols,
            );
            (Buffer::Host(dx), Buffer::Host(dgamma), Buffer::Host(dbeta))
        }
        Device::Cuda(_) | Device::Emulated(_) => {
            let out = cuda::backward(
                device,
                x.buffer(),
                gamma.buffer(),
                saved.mean.buffer(),
                saved.rstd.buffer(),
                dy.buffer(),
                rows,
                cols,
            )?;
            (out.dx, out.dgamma, out.dbeta)
        }
    };
    Ok(LayerNormGradients {
        dx: Tensor::from_buffer(device, x.shape(), dx),
        dgamma: Tensor::from_buffer(device, &[cols], dgamma),
        dbeta: Tensor::from_buffer(device, &[cols], dbeta),
    })
}

/// Tape face of layer norm: records the backward on `tape`.
pub fn layer_norm(tape: &Tape, x: &Var, gamma: &Var, beta: &Var, eps: f32) -> Result<Var> {
    let (y, saved) = layer_norm_forward(x.value(), gamma.value(), beta.value(), eps)?;
    let (x_value, gamma_value) = (x.value().clone(), gamma.value().clone());
    let (x_id, gamma_id, beta_id) = (x.id(), gamma.id(), beta.id());
    Ok(tape.record(y, move |dy| {
        let grads = layer_norm_backward(&x_value, &gamma_value, &saved, dy)?;
        Ok(vec![
            (x_id, grads.dx),
            (gamma_id, grads.dgamma),
            (beta_id, grads.dbeta),
        ])
    }))
}
