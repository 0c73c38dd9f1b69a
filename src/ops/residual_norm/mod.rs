//! The post-LN sublayer ending `y = LN(Dropout(x) + residual)` (spec §2 MHA step 5 and FFN; spec
//! §3.2 step 5), fused into one pass on the kernel devices. Kernel: `kernels/residual_norm.cu`.
//!
//! Shapes: `x` and `residual` `[.., d]`, `gamma` and `beta` `[d]`; `y` `[.., d]`.
//! Saved: `z = Dropout(x) + residual` and the layer norm's per-row mean and rstd.
//! Backward (unfused, built from the ops): `(dz, dγ, dβ) = layer_norm_backward(z, dy)`;
//! `dresidual = dz`; `dx = Dropout(dz)` with the forward's mask, regenerated from the seed.
//!
//! [`unfused_forward`] is the reference: the separate dropout, add and layer-norm ops (the CPU
//! device always takes it, so the layer norm's CPU reference is shared, not duplicated). The fused
//! kernel adds in the same order as the layer norm of the same version (v1 a block per row, v2 a
//! warp per row through `kernels/layer_norm_row.cuh`), so fused and unfused agree to rounding when
//! the `residual_norm` and `layer_norm` families select the same version.
mod cuda;

use crate::autograd::{Tape, Var};
use crate::ops::add::add_forward;
use crate::ops::dropout::{
    dropout_backward_seeded, dropout_forward_seeded, keep_scale, DropoutMode, MaskSeed,
};
use crate::ops::layer_norm::{layer_norm_backward, layer_norm_forward, LayerNormSaved};
use crate::ops::{check_kernel_len, record_one};
use crate::{Device, Error, Result, Tensor};

const OP: &str = "residual_layer_norm";

/// Dropout settings of the sublayer: drop probability, seed of the mask (by value, `seed.into()`,
/// or from a device step counter: `MaskSeed`), training or evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct DropoutSettings {
    pub p: f32,
    pub seed: MaskSeed,
    pub mode: DropoutMode,
}

#[derive(Debug, Clone)]
pub struct ResidualNormSaved {
    /// `Dropout(x) + residual`, the layer norm's input.
    pub z: Tensor,
    pub layer_norm: LayerNormSaved,
}

#[derive(Debug, Clone)]
pub struct ResidualNormGradients {
    pub dx: Tensor,
    pub dresidual: Tensor,
    pub dgamma: Tensor,
    pub dbeta: Tensor,
}

/// The reference path: `layer_norm(add(dropout(x), residual))` with the separate ops.
pub fn unfused_forward(
    x: &Tensor,
    residual: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
    dropout: DropoutSettings,
) -> Result<(Tensor, ResidualNormSaved)> {
    let dropped = dropout_forward_seeded(x, dropout.p, &dropout.seed, dropout.mode)?;
    let z = add_forward(&dropped, residual)?;
    let (y, layer_norm) = layer_norm_forward(&z, gamma, beta, eps)?;
    Ok((y, ResidualNormSaved { z, layer_norm }))
}

/// `y = LN(Dropout(x) + residual)`: fused on the CUDA and emulated devices, unfused on the CPU.
pub fn residual_layer_norm_forward(
    x: &Tensor,
    residual: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
    dropout: DropoutSettings,
) -> Result<(Tensor, ResidualNormSaved)> {
    let device = x.device();
    if matches!(device, Device::Cpu) {
        return unfused_forward(x, residual, gamma, beta, eps, dropout);
    }
    for t in [residual, gamma, beta] {
        x.same_device(OP, t)?;
    }
    let cols = *x.shape().last().unwrap_or(&0);
    if cols == 0
        || residual.shape() != x.shape()
        || gamma.shape() != [cols]
        || beta.shape() != [cols]
    {
        return Err(Error::shape(
            OP,
            format!(
                "x {:?}, residual {:?}, gamma {:?}, beta {:?}: need equal [.., d] and [d]",
                x.shape(),
                residual.shape(),
                gamma.shape(),
                beta.shape()
            ),
        ));
    }
    check_kernel_len(OP, x.len())?;
    if !(eps >= 0.0 && eps.is_finite()) {
        return Err(Error::argument(
            OP,
            format!("eps must be finite and non-negative, got {eps}"),
        ));
    }
    let scale = keep_scale(dropout.p)?;
    let (p, scale) = match dropout.mode {
        DropoutMode::Train => (dropout.p, scale),
        DropoutMode::Eval => (0.0, 1.0),
    };
    let rows = x.len() / cols;
    let out = cuda::forward(
        device,
        x.buffer(),
        residual.buffer(),
        gamma.buffer(),
        beta.buffer(),
        rows,
        cols,
        eps,
        p,
        scale,
        &dropout.seed,
    )?;
    let saved = ResidualNormSaved {
        z: Tensor::from_buffer(device, x.shape(), out.z),
        layer_norm: LayerNormSaved {
            mean: Tensor::from_buffer(device, &[rows], out.mean),
            rstd: Tensor::from_buffer(device, &[rows], out.rstd),
        },
    };
    Ok((Tensor::from_buffer(device, x.shape(), out.y), saved))
}

/// Gradients of [`residual_layer_norm_forward`] given `dy`.
pub fn residual_layer_norm_backward(
    gamma: &Tensor,
    saved: &ResidualNormSaved,
    dy: &Tensor,
    dropout: DropoutSettings,
) -> Result<ResidualNormGradients> {
    let ln = layer_norm_backward(&saved.z, gamma, &saved.layer_norm, dy)?;
    let dx = dropout_backward_seeded(&ln.dx, dropout.p, &dropout.seed, dropout.mode)?;
    Ok(ResidualNormGradients {
        dx,
        dresidual: ln.dx,
        dgamma: ln.dgamma,
        dbeta: ln.dbeta,
    })
}

/// Tape face of the fused sublayer ending.
pub fn residual_layer_norm(
    tape: &Tape,
    x: &Var,
    residual: &Var,
    gamma: &Var,
    beta: &Var,
    eps: f32,
    dropout: DropoutSettings,
) -> Result<Var> {
    let (y, saved) = residual_layer_norm_forward(
        x.value(),
        residual.value(),
        gamma.value(),
        beta.value(),
        eps,
        dropout.clone(),
    )?;
    let gamma_value = gamma.value().clone();
    Ok(record_one(
        tape,
        &[x, residual, gamma, beta],
        y,
        move |dy| {
            let g = residual_layer_norm_backward(&gamma_value, &saved, dy, dropout)?;
            Ok(vec![
                Some(g.dx),
                Some(g.dresidual),
                Some(g.dgamma),
                Some(g.dbeta),
            ])
        },
    ))
}
