//! Launch of `kernels/dropout.cu`, shared by the CUDA and emulated devices.
use crate::device::{Buffer, Device, LaunchConfig};
use crate::kernels::KernelRef;
use crate::{kernel_args, Result};

const APPLY: KernelRef = KernelRef::new("dropout", "dropout_apply");

pub(super) fn apply(
    device: &Device,
    x: &Buffer<f32>,
    p: f32,
    scale: f32,
    seed: u64,
) -> Result<Buffer<f32>> {
    let len = x.len();
    // `dropout_apply` writes every element, kept or dropped.
    let mut y = device.uninitialized::<f32>(len)?;
    if len > 0 {
        device.launch(
            APPLY,
            LaunchConfig::grid_stride(len),
            &mut kernel_args![x, &mut y, len as i32, p, scale, seed],
        )?;
    }
    Ok(y)
}
