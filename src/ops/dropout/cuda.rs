//! Launch of `kernels/dropout.cu`, shared by the CUDA and emulated devices (kernel_version
//! family "dropout": v1 scalar, v2 128-bit; the same mask), with the seed by value or derived on
//! the device from a step counter (`dropout_apply_stepped`, the same mask for the same seed).
use crate::device::{Buffer, Device};
use crate::kernels::KernelRef;
use crate::ops::elementwise_launch;
use crate::{kernel_args, Result};

use super::MaskSeed;

const APPLY: KernelRef = KernelRef::new("dropout", "dropout_apply");
const APPLY_V2: KernelRef = KernelRef::new("dropout", "dropout_apply_v2");
const APPLY_STEPPED: KernelRef = KernelRef::new("dropout", "dropout_apply_stepped");
const APPLY_STEPPED_V2: KernelRef = KernelRef::new("dropout", "dropout_apply_stepped_v2");

pub(super) fn apply(
    device: &Device,
    x: &Buffer<f32>,
    p: f32,
    scale: f32,
    seed: &MaskSeed,
) -> Result<Buffer<f32>> {
    let len = x.len();
    // `dropout_apply` writes every element, kept or dropped.
    let mut y = device.uninitialized::<f32>(len)?;
    if len > 0 {
        match seed {
            MaskSeed::Value(seed) => {
                let (kernel, launch) = elementwise_launch("dropout", APPLY, APPLY_V2, len, 1)?;
                device.launch(
                    kernel,
                    launch,
                    &mut kernel_args![x, &mut y, len as i32, p, scale, *seed],
                )?;
            }
            MaskSeed::Stepped(seed) => {
                let (kernel, launch) =
                    elementwise_launch("dropout", APPLY_STEPPED, APPLY_STEPPED_V2, len, 1)?;
                let counter = seed.counter.lock();
                device.launch(
                    kernel,
                    launch,
                    &mut kernel_args![
                        x,
                        &mut y,
                        len as i32,
                        p,
                        scale,
                        &*counter,
                        seed.stream,
                        seed.site
                    ],
                )?;
            }
        }
    }
    Ok(y)
}
