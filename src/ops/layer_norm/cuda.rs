//! Launches of `kernels/layer_norm.cu`, shared by the CUDA and emulated devices (kernel_version
//! family "layer_norm": v1 a block per row, v2 a warp per row; the file's header says why).
use crate::device::{Buffer, Device, LaunchConfig};
use crate::kernel_version::{self, KernelVersion};
use crate::kernels::KernelRef;
use crate::ops::{warp_per_row_launch, LAYER_NORM_WARPS_PER_BLOCK as WARPS_PER_BLOCK};
use crate::{kernel_args, Result};

const FAMILY: &str = "layer_norm";
const FORWARD_V2: KernelRef = KernelRef::new("layer_norm", "layer_norm_forward_v2");
const BACKWARD_V2: KernelRef = KernelRef::new("layer_norm", "layer_norm_backward_v2");

const FORWARD: KernelRef = KernelRef::new("layer_norm", "layer_norm_forward");
const BACKWARD_INPUT: KernelRef = KernelRef::new("layer_norm", "layer_norm_backward_input");
const BACKWARD_PARAMS_PARTIAL: KernelRef =
    KernelRef::new("layer_norm", "layer_norm_backward_params_partial");
const BACKWARD_PARAMS_FINISH: KernelRef =
    KernelRef::new("layer_norm", "layer_norm_backward_params_finish");
/// Must match LAYER_NORM_ROWS_PER_CHUNK in the kernel.
const ROWS_PER_CHUNK: usize = 64;

/// One block per row with about one thread per column: a multiple of 32, at most 256.
fn row_block(rows: usize, cols: usize) -> LaunchConfig {
    let threads = cols.div_ceil(32).clamp(1, 8) as u32 * 32;
    LaunchConfig::linear(rows as u32, threads)
}

pub(super) struct Forward {
    pub y: Buffer<f32>,
    pub mean: Buffer<f32>,
    pub rstd: Buffer<f32>,
}

pub(super) fn forward(
    device: &Device,
    x: &Buffer<f32>,
    gamma: &Buffer<f32>,
    beta: &Buffer<f32>,
    rows: usize,
    cols: usize,
    eps: f32,
) -> Result<Forward> {
    // `layer_norm_forward` writes every row of y, mean and rstd (one block per row).
    let mut y = device.uninitialized::<f32>(rows * cols)?;
    let mut mean = device.uninitialized::<f32>(rows)?;
    let mut rstd = device.uninitialized::<f32>(rows)?;
    if rows > 0 {
        let (kernel, launch) = match kernel_version::selected(FAMILY)? {
            KernelVersion::V1 => (FORWARD, row_block(rows, cols)),
            // v3: HIE only (`kernel_version::selected` refuses it here).
            KernelVersion::V2 | KernelVersion::V3 => (FORWARD_V2, warp_per_row_launch(rows)),
        };
        device.launch(
            kernel,
            launch,
            &mut kernel_args![
                x,
                gamma,
                beta,
                &mut y,
                &mut mean,
                &mut rstd,
                rows as i32,
                cols as i32,
                eps
            ],
        )?;
    }
    Ok(Forward { y, mean, rstd })
}

pub(super) struct Backward {
    pub dx: Buffer<f32>,
    pub dgamma: Buffer<f32>,
    pub dbeta: Buffer<f32>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    device: &Device,
    x: &Buffer<f32>,
    gamma: &Buffer<f32>,
    mean: &Buffer<f32>,
    rstd: &Buffer<f32>,
    dy: &Buffer<f32>,
    rows: usize,
    cols: usize,
) -> Result<Backward> {
    if rows == 0 {
        // Zeros: with no rows, dγ and dβ are empty sums and no kernel runs.
        return Ok(Backward {
            dx: device.uninitialized::<f32>(0)?,
            dgamma: device.zeros::<f32>(cols)?,
            dbeta: device.zeros::<f32>(cols)?,
        });
    }
    // Each kernel below writes every element of its outputs: dx one block (v1) or warp (v2) per
    // row, the partials every (chunk, column), the finish every column.
    let mut dx = device.uninitialized::<f32>(rows * cols)?;
    let mut dgamma = device.uninitialized::<f32>(cols)?;
    let mut dbeta = device.uninitialized::<f32>(cols)?;
    let (rows_i, cols_i) = (rows as i32, cols as i32);
    let chunks = rows.div_ceil(ROWS_PER_CHUNK);
    let mut dgamma_partial = device.uninitialized::<f32>(chunks * cols)?;
    let mut dbeta_partial = device.uninitialized::<f32>(chunks * cols)?;
    if kernel_version::selected(FAMILY)? == KernelVersion::V2 {
        // One fused pass: dx and one (dγ, dβ) partial per chunk of 64 rows.
        device.launch(
            BACKWARD_V2,
            LaunchConfig::linear(chunks as u32, (WARPS_PER_BLOCK * 32) as u32),
            &mut kernel_args![
                x,
                gamma,
                mean,
                rstd,
                dy,
                &mut dx,
                &mut dgamma_partial,
                &mut dbeta_partial,
                rows_i,
                cols_i
            ],
        )?;
    } else {
        device.launch(
            BACKWARD_INPUT,
            row_block(rows, cols),
            &mut kernel_args![x, gamma, mean, rstd, dy, &mut dx, rows_i, cols_i],
        )?;
        let partial = LaunchConfig {
            grid: [cols.div_ceil(32) as u32, chunks as u32, 1],
            block: [32, 8, 1],
            shared_bytes: 0,
        };
        device.launch(
            BACKWARD_PARAMS_PARTIAL,
            partial,
            &mut kernel_args![
                x,
                mean,
                rstd,
                dy,
                &mut dgamma_partial,
                &mut dbeta_partial,
                rows_i,
                cols_i
            ],
        )?;
    }
    // Both versions end with the same ordered reduction of the per-chunk partials.
    device.launch(
        BACKWARD_PARAMS_FINISH,
        LaunchConfig::linear(cols.div_ceil(256) as u32, 256),
        &mut kernel_args![
            &dgamma_partial,
            &dbeta_partial,
            &mut dgamma,
            &mut dbeta,
            chunks as i32,
            cols_i
        ],
    )?;
    Ok(Backward { dx, dgamma, dbeta })
}
