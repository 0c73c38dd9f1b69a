//! Launches of `kernels/gather.cu`, shared by the CUDA and emulated devices.
use crate::device::{Buffer, Device, LaunchConfig};
use crate::kernels::KernelRef;
use crate::{kernel_args, Result};

const FORWARD: KernelRef = KernelRef::new("gather", "gather_rows_forward");
const BACKWARD: KernelRef = KernelRef::new("gather", "gather_rows_backward");

pub(super) fn forward(
    device: &Device,
    h: &Buffer<f32>,
    index: &Buffer<i32>,
    n: usize,
    dim: usize,
    offset: i32,
) -> Result<Buffer<f32>> {
    let batch = index.len();
    // `gather_rows_forward` writes every element (0 for a position outside the sequence).
    let mut out = device.uninitialized::<f32>(batch * dim)?;
    if batch * dim > 0 {
        device.launch(
            FORWARD,
            LaunchConfig::grid_stride(batch * dim),
            &mut kernel_args![
                h,
                index,
                &mut out,
                batch as i32,
                n as i32,
                dim as i32,
                offset
            ],
        )?;
    }
    Ok(out)
}

/// `hidden_len` is dh's length B·n·d (`GatherProblem::hidden_len`).
pub(super) fn backward(
    device: &Device,
    index: &Buffer<i32>,
    dout: &Buffer<f32>,
    hidden_len: usize,
    n: usize,
    dim: usize,
    offset: i32,
) -> Result<Buffer<f32>> {
    let batch = index.len();
    // Zeros: `gather_rows_backward` scatters into one row per sequence; the others stay zero.
    let mut dh = device.zeros::<f32>(hidden_len)?;
    if batch * dim > 0 {
        device.launch(
            BACKWARD,
            LaunchConfig::grid_stride(batch * dim),
            &mut kernel_args![
                index,
                dout,
                &mut dh,
                batch as i32,
                n as i32,
                dim as i32,
                offset
            ],
        )?;
    }
    Ok(dh)
}
