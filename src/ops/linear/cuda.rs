//! Launches of `kernels/linear.cu` (the bias add and the bias gradient), shared by the CUDA and
//! emulated devices.
use crate::device::{Buffer, Device, LaunchConfig};
use crate::kernels::KernelRef;
use crate::{kernel_args, Result};

const BIAS_ADD: KernelRef = KernelRef::new("linear", "linear_bias_add");
const BIAS_GRAD_PARTIAL: KernelRef = KernelRef::new("linear", "linear_bias_grad_partial");
const BIAS_GRAD_FINISH: KernelRef = KernelRef::new("linear", "linear_bias_grad_finish");
/// Must match LINEAR_ROWS_PER_CHUNK in the kernel.
const ROWS_PER_CHUNK: usize = 64;

/// `y[r, c] += bias[c]`.
pub(super) fn bias_add(
    device: &Device,
    y: &mut Buffer<f32>,
    bias: &Buffer<f32>,
    cols: usize,
) -> Result<()> {
    let len = y.len();
    if len == 0 {
        return Ok(());
    }
    device.launch(
        BIAS_ADD,
        LaunchConfig::grid_stride(len),
        &mut kernel_args![y, bias, len as i32, cols as i32],
    )
}

/// `db = Σ_rows dy` for `dy` of `rows × cols`.
pub(super) fn bias_grad(
    device: &Device,
    dy: &Buffer<f32>,
    rows: usize,
    cols: usize,
) -> Result<Buffer<f32>> {
    if rows == 0 || cols == 0 {
        // Zeros: the sum over no rows, and no kernel runs.
        return device.zeros::<f32>(cols);
    }
    // The partial kernel writes every (chunk, column), the finish every column.
    let mut dbias = device.uninitialized::<f32>(cols)?;
    let chunks = rows.div_ceil(ROWS_PER_CHUNK);
    let mut partial = device.uninitialized::<f32>(chunks * cols)?;
    let config = LaunchConfig {
        grid: [cols.div_ceil(32) as u32, chunks as u32, 1],
        block: [32, 8, 1],
        shared_bytes: 0,
    };
    device.launch(
        BIAS_GRAD_PARTIAL,
        config,
        &mut kernel_args![dy, &mut partial, rows as i32, cols as i32],
    )?;
    device.launch(
        BIAS_GRAD_FINISH,
        LaunchConfig::linear(cols.div_ceil(256) as u32, 256),
        &mut kernel_args![&partial, &mut dbias, chunks as i32, cols as i32],
    )?;
    Ok(dbias)
}
