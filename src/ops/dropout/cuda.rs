//! Launch of `kernels/dropout.cu`, shared by the CUDA and emulated devices (kernel_version
//! family "dropout": v1 scalar, v2 128-bit; the same mask).
use crate::device::{Buffer, Device};
use crate::kernels::KernelRef;
use crate::ops::elementwise_launch;
use crate::{kernel_args, Result};

const APPLY: KernelRef = KernelRef::new("dropout", "dropout_apply");
const APPLY_V2: KernelRef = KernelRef::new("dropout", "dropout_apply_v2");

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
        let (kernel, launch) = elementwise_launch("dropout", APPLY, APPLY_V2, len, 1)?;
        device.launch(
            kernel,
            launch,
            &mut kernel_args![x, &mut y, len as i32, p, scale, seed],
        )?;
    }
    Ok(y)
}
