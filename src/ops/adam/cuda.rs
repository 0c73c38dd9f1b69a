//! Launch of `kernels/adam.cu`, shared by the CUDA and emulated devices: the update with the
//! corrections by value (`adam_update`) or read from a device step counter
//! (`adam_update_stepped`), and the counter's advance (`adam_advance_step`).
use crate::device::{Buffer, Device, LaunchConfig, StepCounter};
use crate::kernels::KernelRef;
use crate::{kernel_args, Result};

use super::AdamConfig;

const UPDATE: KernelRef = KernelRef::new("adam", "adam_update");
const UPDATE_STEPPED: KernelRef = KernelRef::new("adam", "adam_update_stepped");
const ADVANCE: KernelRef = KernelRef::new("adam", "adam_advance_step");

/// Where the update's step comes from.
pub(super) enum StepSource<'a> {
    /// Step t (1-based), the corrections computed here.
    Value(u64),
    /// t = the counter's value + 1, the corrections computed by the kernel.
    Counter(&'a StepCounter),
}

#[allow(clippy::too_many_arguments)]
pub(super) fn update(
    device: &Device,
    config: &AdamConfig,
    step: StepSource<'_>,
    params: &mut Buffer<f32>,
    grads: &Buffer<f32>,
    m: &mut Buffer<f32>,
    v: &mut Buffer<f32>,
) -> Result<()> {
    let len = params.len();
    if len == 0 {
        return Ok(());
    }
    let shape = LaunchConfig::grid_stride(len);
    match step {
        StepSource::Value(t) => {
            let (step_size, bias_correction2_sqrt) = config.corrections(t);
            device.launch(
                UPDATE,
                shape,
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
        StepSource::Counter(counter) => {
            let counter = counter.lock();
            device.launch(
                UPDATE_STEPPED,
                shape,
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
                    config.lr,
                    &*counter
                ],
            )
        }
    }
}

/// `steps_taken += 1` on the device (one launch of 32 threads; one writes).
pub(super) fn advance(device: &Device, counter: &StepCounter) -> Result<()> {
    let mut counter = counter.lock();
    device.launch(
        ADVANCE,
        LaunchConfig::linear(1, 32),
        &mut kernel_args![&mut *counter],
    )
}
