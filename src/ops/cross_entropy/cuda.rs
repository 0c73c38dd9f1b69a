//! Launches of `kernels/cross_entropy.cu`, shared by the CUDA and emulated devices.
use crate::device::{Buffer, Device, LaunchConfig};
use crate::kernels::KernelRef;
use crate::{kernel_args, Result};

const ROWS: KernelRef = KernelRef::new("cross_entropy", "cross_entropy_rows");
const MEAN: KernelRef = KernelRef::new("cross_entropy", "cross_entropy_mean");
const SCALE: KernelRef = KernelRef::new("cross_entropy", "scale_by_scalar");

/// Turns `logits` (`rows × items`) into the gradient G in place and returns the loss `[1]`.
pub(super) fn loss_and_gradient_in_place(
    device: &Device,
    logits: &mut Buffer<f32>,
    targets: &Buffer<i32>,
    rows: usize,
    items: usize,
) -> Result<Buffer<f32>> {
    // `cross_entropy_rows` writes every row's loss (one block per row), `cross_entropy_mean` the
    // one mean.
    let mut row_loss = device.uninitialized::<f32>(rows)?;
    let mut loss = device.uninitialized::<f32>(1)?;
    device.launch(
        ROWS,
        LaunchConfig::linear(rows as u32, 256),
        &mut kernel_args![
            logits,
            targets,
            &mut row_loss,
            rows as i32,
            items as i32,
            1.0f32 / rows as f32
        ],
    )?;
    device.launch(
        MEAN,
        LaunchConfig::linear(1, 256),
        &mut kernel_args![&row_loss, &mut loss, rows as i32],
    )?;
    Ok(loss)
}

/// `x *= scalar[0]`, the scalar read on the device.
pub(super) fn scale_in_place(
    device: &Device,
    x: &mut Buffer<f32>,
    scalar: &Buffer<f32>,
) -> Result<()> {
    let len = x.len();
    if len == 0 {
        return Ok(());
    }
    device.launch(
        SCALE,
        LaunchConfig::grid_stride(len),
        &mut kernel_args![x, scalar, len as i32],
    )
}
