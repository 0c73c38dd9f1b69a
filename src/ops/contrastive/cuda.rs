//! Launches of `kernels/contrastive.cu`, shared by the CUDA and emulated devices.
use super::ContrastiveReduction;
use crate::device::{Buffer, Device, LaunchConfig};
use crate::kernel_version::{self, KernelVersion};
use crate::kernels::KernelRef;
use crate::{kernel_args, Result};

const FORWARD_BACKWARD: KernelRef = KernelRef::new("contrastive", "contrastive_forward_backward");
/// Version 2: the three products on tensor cores (3xTF32); same arguments and outputs as v1.
const FORWARD_BACKWARD_V2: KernelRef =
    KernelRef::new("contrastive", "contrastive_forward_backward_v2");
const REDUCE: KernelRef = KernelRef::new("contrastive", "contrastive_reduce");
const SCALE: KernelRef = KernelRef::new("contrastive", "contrastive_scale");
/// Must match CONTRASTIVE_THREADS in the kernel (v1's register tiles assume 16 × 16 threads, v2's
/// mma tiles 8 warps).
const THREADS: u32 = 256;

pub(super) struct Inputs<'a> {
    pub x: &'a Buffer<f32>,
    pub a: &'a Buffer<f32>,
    pub lengths: &'a Buffer<i32>,
    pub groups: Option<&'a Buffer<i32>>,
    pub logit_scale: &'a Buffer<f32>,
}

pub(super) struct Output {
    pub loss: Buffer<f32>,
    pub dx: Buffer<f32>,
    pub da: Buffer<f32>,
    pub ds: Buffer<f32>,
}

pub(super) fn forward_backward(
    device: &Device,
    inputs: Inputs<'_>,
    batch: usize,
    n: usize,
    d: usize,
    reduction: ContrastiveReduction,
    upstream: f32,
) -> Result<Output> {
    if batch == 0 {
        // Zeros: the loss and ds of no sequences are empty sums, and no kernel runs.
        return Ok(Output {
            loss: device.zeros::<f32>(1)?,
            dx: device.uninitialized::<f32>(0)?,
            da: device.uninitialized::<f32>(0)?,
            ds: device.zeros::<f32>(1)?,
        });
    }
    // One block per sequence (both versions) writes all n × d of its dx and da (zeros past L_b and for L_b = 0)
    // and its two partials; the reduce writes loss and ds.
    let mut dx = device.uninitialized::<f32>(batch * n * d)?;
    let mut da = device.uninitialized::<f32>(batch * n * d)?;
    let mut loss = device.uninitialized::<f32>(1)?;
    let mut ds = device.uninitialized::<f32>(1)?;
    let mut loss_partial = device.uninitialized::<f32>(batch)?;
    let mut ds_partial = device.uninitialized::<f32>(batch)?;
    // Without group ids the kernel never reads the pointer; the lengths stand in for it.
    let (groups, use_groups) = match inputs.groups {
        Some(groups) => (groups, 1i32),
        None => (inputs.lengths, 0i32),
    };
    let literal_sum = i32::from(reduction == ContrastiveReduction::Sum);
    let kernel = match kernel_version::selected(super::KERNEL_FAMILY)? {
        KernelVersion::V1 => FORWARD_BACKWARD,
        KernelVersion::V2 => FORWARD_BACKWARD_V2,
    };
    device.launch(
        kernel,
        LaunchConfig::linear(batch as u32, THREADS),
        &mut kernel_args![
            inputs.x,
            inputs.a,
            inputs.lengths,
            groups,
            inputs.logit_scale,
            &mut dx,
            &mut da,
            &mut loss_partial,
            &mut ds_partial,
            batch as i32,
            n as i32,
            d as i32,
            use_groups,
            literal_sum,
            upstream
        ],
    )?;
    device.launch(
        REDUCE,
        LaunchConfig::linear(1, THREADS),
        &mut kernel_args![&loss_partial, &ds_partial, &mut loss, &mut ds, batch as i32],
    )?;
    Ok(Output { loss, dx, da, ds })
}

pub(super) fn scale(
    device: &Device,
    value: &Buffer<f32>,
    factor: &Buffer<f32>,
    len: usize,
) -> Result<Buffer<f32>> {
    // `contrastive_scale` writes every element.
    let mut out = device.uninitialized::<f32>(len)?;
    if len > 0 {
        device.launch(
            SCALE,
            LaunchConfig::grid_stride(len),
            &mut kernel_args![value, factor, &mut out, len as i32],
        )?;
    }
    Ok(out)
}
