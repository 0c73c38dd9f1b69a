//! Launches of `kernels/embedding.cu`, shared by the CUDA and emulated devices.
use crate::device::{Buffer, Device, LaunchConfig};
use crate::kernels::KernelRef;
use crate::{kernel_args, Result};

const FORWARD: KernelRef = KernelRef::new("embedding", "embedding_forward");
const BACKWARD: KernelRef = KernelRef::new("embedding", "embedding_backward");
const POOLED_FORWARD: KernelRef = KernelRef::new("embedding", "pooled_embedding_forward");
const POOLED_BACKWARD: KernelRef = KernelRef::new("embedding", "pooled_embedding_backward");

pub(super) fn forward(
    device: &Device,
    table: &Buffer<f32>,
    ids: &Buffer<i32>,
    vocab: usize,
    dim: usize,
) -> Result<Buffer<f32>> {
    let positions = ids.len();
    // `embedding_forward` writes every element (0 for an id outside the table).
    let mut out = device.uninitialized::<f32>(positions * dim)?;
    if positions * dim > 0 {
        device.launch(
            FORWARD,
            LaunchConfig::grid_stride(positions * dim),
            &mut kernel_args![
                table,
                ids,
                &mut out,
                positions as i32,
                dim as i32,
                vocab as i32
            ],
        )?;
    }
    Ok(out)
}

pub(super) fn backward(
    device: &Device,
    ids: &Buffer<i32>,
    dout: &Buffer<f32>,
    vocab: usize,
    dim: usize,
) -> Result<Buffer<f32>> {
    let positions = ids.len();
    // Zeros: `embedding_backward` accumulates (atomicAdd) into the rows of the ids it meets.
    let mut dtable = device.zeros::<f32>(vocab * dim)?;
    if positions * dim > 0 {
        device.launch(
            BACKWARD,
            LaunchConfig::grid_stride(positions * dim),
            &mut kernel_args![
                ids,
                dout,
                &mut dtable,
                positions as i32,
                dim as i32,
                vocab as i32
            ],
        )?;
    }
    Ok(dtable)
}

pub(super) fn pooled_forward(
    device: &Device,
    table: &Buffer<f32>,
    tokens: &Buffer<i32>,
    max_tokens: usize,
    vocab: usize,
    dim: usize,
    mean: bool,
) -> Result<Buffer<f32>> {
    let rows = tokens.len() / max_tokens;
    // `pooled_embedding_forward` writes every element (the sum over no tokens is 0).
    let mut out = device.uninitialized::<f32>(rows * dim)?;
    if rows * dim > 0 {
        device.launch(
            POOLED_FORWARD,
            LaunchConfig::grid_stride(rows * dim),
            &mut kernel_args![
                table,
                tokens,
                &mut out,
                rows as i32,
                max_tokens as i32,
                dim as i32,
                vocab as i32,
                mean as i32
            ],
        )?;
    }
    Ok(out)
}

pub(super) fn pooled_backward(
    device: &Device,
    tokens: &Buffer<i32>,
    dout: &Buffer<f32>,
    max_tokens: usize,
    vocab: usize,
    dim: usize,
    mean: bool,
) -> Result<Buffer<f32>> {
    let rows = tokens.len() / max_tokens;
    // Zeros: `pooled_embedding_backward` accumulates (atomicAdd) into the tokens' rows.
    let mut dtable = device.zeros::<f32>(vocab * dim)?;
    if rows * dim > 0 {
        device.launch(
            POOLED_BACKWARD,
            LaunchConfig::grid_stride(rows * dim),
            &mut kernel_args![
                tokens,
                dout,
                &mut dtable,
                rows as i32,
                max_tokens as i32,
                dim as i32,
                vocab as i32,
                mean as i32
            ],
        )?;
    }
    Ok(dtable)
}
