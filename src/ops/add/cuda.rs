//! Launch of `kernels/elementwise.cu: add_out` (kernel_version family "elementwise": v1 scalar,
//! v2 128-bit; `add_assign` is launched by `crate::accumulate`).
use crate::device::{elementwise_launch, Buffer, Device};
use crate::kernels::KernelRef;
use crate::{kernel_args, Result};

const FAMILY: &str = "elementwise";
const ADD_OUT: KernelRef = KernelRef::new("elementwise", "add_out");
const ADD_OUT_V2: KernelRef = KernelRef::new("elementwise", "add_out_v2");

pub(super) fn add_out(device: &Device, a: &Buffer<f32>, b: &Buffer<f32>) -> Result<Buffer<f32>> {
    let len = a.len();
    // `add_out` writes every element (grid-stride loop over `len`).
    let mut out = device.uninitialized::<f32>(len)?;
    if len > 0 {
        let (kernel, launch) = elementwise_launch(FAMILY, ADD_OUT, ADD_OUT_V2, len, 2)?;
        device.launch(
            kernel,
            launch,
            &mut kernel_args![a, b, &mut out, len as i32],
        )?;
    }
    Ok(out)
}
