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
