//! Launch of `kernels/elementwise.cu: add_assign`.
use crate::device::{Buffer, Device, LaunchConfig};
use crate::kernels::KernelRef;
use crate::{kernel_args, Result};

const ADD_ASSIGN: KernelRef = KernelRef::new("elementwise", "add_assign");

pub(super) fn add_assign(
    device: &Device,
    y: &mut Buffer<f32>,
    x: &Buffer<f32>,
    len: usize,
) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    device.launch(
        ADD_ASSIGN,
        LaunchConfig::grid_stride(len),
        &mut kernel_args![y, x, len as i32],
    )
}

const ADD_OUT: KernelRef = KernelRef::new("elementwise", "add_out");

pub(super) fn add_out(device: &Device, a: &Buffer<f32>, b: &Buffer<f32>) -> Result<Buffer<f32>> {
    let len = a.len();
    // `add_out` writes every element (grid-stride loop over `len`).
    let mut out = device.uninitialized::<f32>(len)?;
    if len > 0 {
        device.launch(
            ADD_OUT,
            LaunchConfig::grid_stride(len),
            &mut kernel_args![a, b, &mut out, len as i32],
        )?;
    }
    Ok(out)
}
