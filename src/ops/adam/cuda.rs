//! Launch of `kernels/adam.cu` and the packing copies, shared by the CUDA and emulated devices.
use crate::device::{Buffer, Device, LaunchConfig};
use crate::kernels::KernelRef;
use crate::{kernel_args, Error, Result};

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

/// Copies all of `src` into `dst[offset..]` (device to device on CUDA).
pub(super) fn copy_into(
    device: &Device,
    src: &Buffer<f32>,
    dst: &mut Buffer<f32>,
    offset: usize,
) -> Result<()> {
    let len = src.len();
    device.count_device_to_device(len * size_of::<f32>());
    match (device, src, dst) {
        (Device::Cuda(backend), Buffer::Cuda(s), Buffer::Cuda(d)) => {
            backend
                .stream()
                .memcpy_dtod(s, &mut d.slice_mut(offset..offset + len))?;
            Ok(())
        }
        (_, Buffer::Host(s), Buffer::Host(d)) => {
            d[offset..offset + len].copy_from_slice(s);
            Ok(())
        }
        _ => Err(Error::DeviceMismatch {
            op: "adam",
            expected: device.name(),
            found: src.location().into(),
        }),
    }
}

/// Copies `src[offset..offset + dst.len()]` into all of `dst`.
pub(super) fn copy_out(
    device: &Device,
    src: &Buffer<f32>,
    offset: usize,
    dst: &mut Buffer<f32>,
) -> Result<()> {
    let len = dst.len();
    device.count_device_to_device(len * size_of::<f32>());
    match (device, src, dst) {
        (Device::Cuda(backend), Buffer::Cuda(s), Buffer::Cuda(d)) => {
            backend
                .stream()
                .memcpy_dtod(&s.slice(offset..offset + len), d)?;
            Ok(())
        }
        (_, Buffer::Host(s), Buffer::Host(d)) => {
            d.copy_from_slice(&s[offset..offset + len]);
            Ok(())
        }
        _ => Err(Error::DeviceMismatch {
            op: "adam",
            expected: device.name(),
            found: src.location().into(),
        }),
    }
}
