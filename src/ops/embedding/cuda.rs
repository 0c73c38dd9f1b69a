//! Launches of `kernels/embedding.cu`, shared by the CUDA and emulated devices.
use crate::device::{Buffer, Device, LaunchConfig};
use crate::kernel_version::{self, KernelVersion};
use crate::kernels::KernelRef;
use crate::{kernel_args, Result};

/// The kernel family's name for [`kernel_version`] (`ASIF_KERNEL_EMBEDDING=v2`).
pub(super) const FAMILY: &str = "embedding";

const FORWARD: KernelRef = KernelRef::new("embedding", "embedding_forward");
const BACKWARD: KernelRef = KernelRef::new("embedding", "embedding_backward");
const POOLED_FORWARD: KernelRef = KernelRef::new("embedding", "pooled_embedding_forward");
const POOLED_BACKWARD: KernelRef = KernelRef::new("embedding", "pooled_embedding_backward");
const BACKWARD_V2: KernelRef = KernelRef::new("embedding", "embedding_backward_v2");
const POOLED_BACKWARD_V2: KernelRef = KernelRef::new("embedding", "pooled_embedding_backward_v2");

/// Blocks the v2 backwards aim for: two per SM of a 132-SM H100/H200. Each block walks every id of
/// the batch, so more blocks means more (L2-resident) id reads; fewer leaves SMs idle.
const V2_TARGET_BLOCKS: usize = 264;

/// The launch of a v2 backward over a `[vocab, dim]` table: `rows_per_block` consecutive rows per
/// block, one thread per column up to 256 (a multiple of 32: the kernel's ballot walk is
/// warp-uniform), so tiny tables on the emulator do not start idle threads.
fn v2_launch(vocab: usize, dim: usize) -> (LaunchConfig, usize) {
    let rows_per_block = vocab.div_ceil(V2_TARGET_BLOCKS).max(1);
    let blocks = vocab.div_ceil(rows_per_block) as u32;
    let threads = (dim.div_ceil(32) * 32).clamp(32, 256) as u32;
    (LaunchConfig::linear(blocks, threads), rows_per_block)
}

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
    if kernel_version::selected(FAMILY)? == KernelVersion::V2 {
        // `embedding_backward_v2` writes every element of the table (zero rows included).
        let mut dtable = device.uninitialized::<f32>(vocab * dim)?;
        let (config, rows_per_block) = v2_launch(vocab, dim);
        device.launch(
            BACKWARD_V2,
            config,
            &mut kernel_args![
                ids,
                dout,
                &mut dtable,
                positions as i32,
                dim as i32,
                vocab as i32,
                rows_per_block as i32
            ],
        )?;
        return Ok(dtable);
    }
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
    if kernel_version::selected(FAMILY)? == KernelVersion::V2 {
        // `pooled_embedding_backward_v2` writes every element of the table.
        let mut dtable = device.uninitialized::<f32>(vocab * dim)?;
        let (config, rows_per_block) = v2_launch(vocab, dim);
        device.launch(
            POOLED_BACKWARD_V2,
            config,
            &mut kernel_args![
                tokens,
                dout,
                &mut dtable,
                rows as i32,
                max_tokens as i32,
                dim as i32,
                vocab as i32,
                mean as i32,
                rows_per_block as i32
            ],
        )?;
        return Ok(dtable);
    }
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
