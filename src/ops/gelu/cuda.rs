//! Launches of `kernels/gelu.cu`, shared by the CUDA and emulated devices.
use crate::device::{Buffer, Device, LaunchConfig};
use crate::kernels::KernelRef;
use crate::{kernel_args, Result};

const FORWARD: KernelRef = KernelRef::new("gelu", "gelu_forward");
const BACKWARD: KernelRef = KernelRef::new("gelu", "gelu_backward");

pub(super) fn forward(device: &Device, x: &Buffer<f32>, len: usize) -> Result<Buffer<f32>> {
    let mut y = device.zeros::<f32>(len)?;
    if len > 0 {
        device.launch(
            FORWARD,
            LaunchConfig::grid_stride(len),
            &mut kernel_args![x, &mut y, len as i32],
        )?;
    }
    Ok(y)
}

pub(super) fn backward(
    device: &Device,
    x: &Buffer<f32>,
    dy: &Buffer<f32>,
    len: usize,
) -> Result<Buffer<f32>> {
    let mut dx = device.zeros::<f32>(len)?;
    if len > 0 {
        device.launch(
            BACKWARD,
            LaunchConfig::grid_stride(len),
            &mut kernel_args![x, dy, &mut dx, len as i32],
        )?;
    }
    Ok(dx)
}
