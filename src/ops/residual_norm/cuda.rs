//! Launch of `kernels/residual_norm.cu`, shared by the CUDA and emulated devices
//! (kernel_version family "residual_norm": v1 a block per row, v2 a warp per row).
use crate::device::{Buffer, Device, LaunchConfig};
use crate::kernel_version::{self, KernelVersion};
use crate::kernels::KernelRef;
use crate::ops::dropout::MaskSeed;
use crate::ops::warp_per_row_launch;
use crate::{kernel_args, Result};

const FORWARD: KernelRef = KernelRef::new("residual_norm", "residual_dropout_layer_norm_forward");
const FORWARD_V2: KernelRef =
    KernelRef::new("residual_norm", "residual_dropout_layer_norm_forward_v2");
const FORWARD_STEPPED: KernelRef = KernelRef::new(
    "residual_norm",
    "residual_dropout_layer_norm_forward_stepped",
);
const FORWARD_STEPPED_V2: KernelRef = KernelRef::new(
    "residual_norm",
    "residual_dropout_layer_norm_forward_stepped_v2",
);

pub(super) struct Forward {
    pub z: Buffer<f32>,
    pub y: Buffer<f32>,
    pub mean: Buffer<f32>,
    pub rstd: Buffer<f32>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    device: &Device,
    x: &Buffer<f32>,
    residual: &Buffer<f32>,
    gamma: &Buffer<f32>,
    beta: &Buffer<f32>,
    rows: usize,
    cols: usize,
    eps: f32,
    p: f32,
    scale: f32,
    seed: &MaskSeed,
) -> Result<Forward> {
    // The kernel writes every row of z, y, mean and rstd (one block per row).
    let mut z = device.uninitialized::<f32>(rows * cols)?;
    let mut y = device.uninitialized::<f32>(rows * cols)?;
    let mut mean = device.uninitialized::<f32>(rows)?;
    let mut rstd = device.uninitialized::<f32>(rows)?;
    if rows > 0 {
        // Same launch as layer_norm's for the same version, so the reductions match the unfused
        // path (compare the two with the same version selected for both families).
        let stepped = matches!(seed, MaskSeed::Stepped(_));
        let (kernel, launch) = match kernel_version::selected("residual_norm")? {
            KernelVersion::V1 => {
                let threads = cols.div_ceil(32).clamp(1, 8) as u32 * 32;
                let kernel = if stepped { FORWARD_STEPPED } else { FORWARD };
                (kernel, LaunchConfig::linear(rows as u32, threads))
            }
            // v3: HIE only (`kernel_version::selected` refuses it here).
            KernelVersion::V2 | KernelVersion::V3 => {
                let kernel = if stepped {
                    FORWARD_STEPPED_V2
                } else {
                    FORWARD_V2
                };
                (kernel, warp_per_row_launch(rows))
            }
        };
        let (rows, cols) = (rows as i32, cols as i32);
        match seed {
            MaskSeed::Value(seed) => device.launch(
                kernel,
                launch,
                &mut kernel_args![
                    x, residual, gamma, beta, &mut z, &mut y, &mut mean, &mut rstd, rows, cols,
                    eps, p, scale, *seed
                ],
            )?,
            MaskSeed::Stepped(seed) => {
                let counter = seed.counter.lock();
                device.launch(
                    kernel,
                    launch,
                    &mut kernel_args![
                        x,
                        residual,
                        gamma,
                        beta,
                        &mut z,
                        &mut y,
                        &mut mean,
                        &mut rstd,
                        rows,
                        cols,
                        eps,
                        p,
                        scale,
                        &*counter,
                        seed.stream,
                        seed.site
                    ],
                )?
            }
        }
    }
    Ok(Forward { z, y, mean, rstd })
}
