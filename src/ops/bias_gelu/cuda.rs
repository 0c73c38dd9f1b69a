//! Launches of `kernels/bias_gelu.cu`, shared by the CUDA and emulated devices.
use crate::device::{Buffer, Device, LaunchConfig};
use crate::kernels::KernelRef;
use crate::{kernel_args, Result};

const FORWARD: KernelRef = KernelRef::new("bias_gelu", "bias_gelu_forward");
const BACKWARD: KernelRef = KernelRef::new("bias_gelu", "bias_gelu_backward");
const FINISH: KernelRef = KernelRef::new("bias_gelu", "bias_gelu_backward_finish");
/// Rows per partial column sum: ASIF_COLUMN_ROWS_PER_CHUNK in `kernels/column_sum.cuh`.
pub(super) const ROWS_PER_CHUNK: usize = 64;
/// Elements per thread of the forward's v2 loop (`vector_io.cuh`: 4 float4 of one input), and
/// its block.
const FORWARD_ELEMENTS_PER_THREAD: usize = 16;
const FORWARD_BLOCK: usize = 256;

/// `h = GELU(y + b)`: one v2 elementwise pass.
pub(super) fn forward(
    device: &Device,
    y: &Buffer<f32>,
    bias: &Buffer<f32>,
    cols: usize,
) -> Result<Buffer<f32>> {
    let len = y.len();
    // `bias_gelu_forward` writes every element.
    let mut h = device.uninitialized::<f32>(len)?;
    if len > 0 {
        let blocks = len
            .div_ceil(FORWARD_BLOCK * FORWARD_ELEMENTS_PER_THREAD)
            .clamp(1, 65_535) as u32;
        device.launch(
            FORWARD,
            LaunchConfig::linear(blocks, FORWARD_BLOCK as u32),
            &mut kernel_args![y, bias, &mut h, len as i32, cols as i32],
        )?;
    }
    Ok(h)
}

/// `(dy, db)`: `dy = GELU'(y + b) · dh` with the column partials of `db` in the same pass, then
/// the partials summed in chunk order.
pub(super) fn backward(
    device: &Device,
    y: &Buffer<f32>,
    bias: &Buffer<f32>,
    dh: &Buffer<f32>,
    rows: usize,
    cols: usize,
) -> Result<(Buffer<f32>, Buffer<f32>)> {
    // The partial kernel writes every element of dy and every (chunk, column) partial, the finish
    // every column of db.
    let mut dy = device.uninitialized::<f32>(rows * cols)?;
    if rows == 0 {
        // Zeros: the sum over no rows, and no kernel runs.
        return Ok((dy, device.zeros::<f32>(cols)?));
    }
    let chunks = rows.div_ceil(ROWS_PER_CHUNK);
    let mut partial = device.uninitialized::<f32>(chunks * cols)?;
    let mut dbias = device.uninitialized::<f32>(cols)?;
    let config = LaunchConfig {
        grid: [cols.div_ceil(32) as u32, chunks as u32, 1],
        block: [32, 8, 1],
        shared_bytes: 0,
    };
    device.launch(
        BACKWARD,
        config,
        &mut kernel_args![y, bias, dh, &mut dy, &mut partial, rows as i32, cols as i32],
    )?;
    device.launch(
        FINISH,
        LaunchConfig::linear(cols.div_ceil(256) as u32, 256),
        &mut kernel_args![&partial, &mut dbias, chunks as i32, cols as i32],
    )?;
    Ok((dy, dbias))
}
