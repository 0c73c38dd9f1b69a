//! Launch of `kernels/adam.cu`, shared by the CUDA and emulated devices.
use crate::device::{Buffer, Device, LaunchConfig};
use crate::kernels::KernelRef;
use crate::{kernel_args, Result};

use super::AdamConfig;

const UPDATE: KernelRef = KernelRef::new("adam", "adam_update");

#[allow(clippy::too_many_arguments)]
pub(super) fn update(
    device: &Device,
    config: &AdamConfig,
    t: u64,
    params: &mut Buffer<f32>,
    grads: &Buffer<f32>,
    m: &mut Buffer<f32>,
    v: &mut Buffer<f32>,
) -> Result<()> {
    let len = params.len();
    if len == 0 {
        return Ok(());
    }
    let (step_size, bias_correction2_sqrt) = config.corrections(t);
    device.launch(
        UPDATE,
        LaunchConfig::grid_stride(len),
        &mut kernel_args![
            params,
            grads,
            m,
            v,
            len as i32,
            config.beta1,
            config.beta2,
            config.eps,
            config.weight_decay,
            step_size as f32,
            bias_correction2_sqrt as f32
        ],
    )
}
