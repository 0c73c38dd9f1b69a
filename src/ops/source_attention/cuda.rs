//! Launches of `kernels/source_attention.cu`, shared by the CUDA and emulated devices.
use crate::device::{Buffer, Device, LaunchConfig};
use crate::kernels::KernelRef;
use crate::{kernel_args, Result};

const STACK: KernelRef = KernelRef::new("source_attention", "source_attention_stack");
const UNSTACK: KernelRef = KernelRef::new("source_attention", "source_attention_unstack");
const FORWARD: KernelRef = KernelRef::new("source_attention", "source_attention_forward");
const BACKWARD: KernelRef = KernelRef::new("source_attention", "source_attention_backward");
/// Rows (warps) per block of the forward and backward.
const WARPS_PER_BLOCK: usize = 8;

fn warp_per_row(rows: usize) -> LaunchConfig {
    let blocks = rows.div_ceil(WARPS_PER_BLOCK).clamp(1, 65_535) as u32;
    LaunchConfig::linear(blocks, (WARPS_PER_BLOCK * 32) as u32)
}

/// `[R, K, d]` from K sources of `R × d`.
/// `stacked_len` is the output's length R·K·d (`SourceProblem::stacked_len`).
pub(super) fn stack(
    device: &Device,
    sources: &[&Buffer<f32>],
    stacked_len: usize,
    rows: usize,
    d: usize,
) -> Result<Buffer<f32>> {
    let k_sources = sources.len();
    // One `source_attention_stack` launch per slot; together they write every element.
    let mut stacked = device.uninitialized::<f32>(stacked_len)?;
    if rows * d == 0 {
        return Ok(stacked);
    }
    for (slot, source) in sources.iter().enumerate() {
        device.launch(
            STACK,
            LaunchConfig::grid_stride(rows * d),
            &mut kernel_args![
                *source,
                &mut stacked,
                rows as i32,
                k_sources as i32,
                slot as i32,
                d as i32
            ],
        )?;
    }
    Ok(stacked)
}

/// Source `slot` (`R × d`) of a stacked `[R, K, d]` buffer.
pub(super) fn unstack(
    device: &Device,
    stacked: &Buffer<f32>,
    rows: usize,
    k_sources: usize,
    slot: usize,
    d: usize,
) -> Result<Buffer<f32>> {
    // `source_attention_unstack` writes every element.
    let mut source = device.uninitialized::<f32>(rows * d)?;
    if rows * d > 0 {
        device.launch(
            UNSTACK,
            LaunchConfig::grid_stride(rows * d),
            &mut kernel_args![
                stacked,
                &mut source,
                rows as i32,
                k_sources as i32,
                slot as i32,
                d as i32
            ],
        )?;
    }
    Ok(source)
}

/// `(out [R, d], α [R, K])`.
pub(super) fn forward(
    device: &Device,
    sources: &Buffer<f32>,
    energies: &Buffer<f32>,
    rows: usize,
    k_sources: usize,
    d: usize,
) -> Result<(Buffer<f32>, Buffer<f32>)> {
    // One warp per row writes all d columns of out and all K weights (K ≤ 32, checked by mod.rs).
    let mut out = device.uninitialized::<f32>(rows * d)?;
    let mut weights = device.uninitialized::<f32>(rows * k_sources)?;
    if rows > 0 {
        device.launch(
            FORWARD,
            warp_per_row(rows),
            &mut kernel_args![
                sources,
                energies,
                &mut out,
                &mut weights,
                rows as i32,
                k_sources as i32,
                d as i32
            ],
        )?;
    }
    Ok((out, weights))
}

/// `(dX [R, K, d], de [R, K])`.
pub(super) fn backward(
    device: &Device,
    sources: &Buffer<f32>,
    weights: &Buffer<f32>,
    dout: &Buffer<f32>,
    rows: usize,
    k_sources: usize,
    d: usize,
) -> Result<(Buffer<f32>, Buffer<f32>)> {
    // One warp per row writes all K × d entries of dX and all K of de.
    let mut dsources = device.uninitialized::<f32>(rows * k_sources * d)?;
    let mut denergies = device.uninitialized::<f32>(rows * k_sources)?;
    if rows > 0 {
        device.launch(
            BACKWARD,
            warp_per_row(rows),
            &mut kernel_args![
                sources,
                weights,
                dout,
                &mut dsources,
                &mut denergies,
                rows as i32,
                k_sources as i32,
                d as i32
            ],
        )?;
    }
    Ok((dsources, denergies))
}
