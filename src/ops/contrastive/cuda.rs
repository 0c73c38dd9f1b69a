//! Launches of `kernels/contrastive.cu`, shared by the CUDA and emulated devices.
use super::ContrastiveReduction;
use crate::device::{Buffer, Device, LaunchConfig};
use crate::kernel_version::{self, KernelVersion};
use crate::kernels::KernelRef;
use crate::{kernel_args, Result};

const FORWARD_BACKWARD: KernelRef = KernelRef::new("contrastive", "contrastive_forward_backward");
/// Version 2: the three products on tensor cores (3xTF32) with x and a staged in dynamic shared
/// memory (over 48 KB at the paper's sizes: opted in); v1's arguments and outputs, then the
/// staged width.
const FORWARD_BACKWARD_V2: KernelRef =
    KernelRef::new("contrastive", "contrastive_forward_backward_v2").with_large_shared();
/// Shared memory v2 leaves for its static arrays (S and the per-row vectors: 19.8 KB in the
/// ptxas report) when it sizes the staged width.
const V2_STATIC_RESERVE: usize = 24 * 1024;

/// Columns of x and a v2 stages at a time and its dynamic shared bytes, with at most
/// `opt_in_limit` bytes of shared memory per block: d rounded up to 32 (each staged once) when
/// that fits, else the widest multiple of 32 that does (x and a are then streamed twice, in
/// chunks of that width). Rows ⌈n/16⌉·16, stride width + 4 (`contrastive_v2_stride`).
pub(super) fn v2_staging(n: usize, d: usize, opt_in_limit: usize) -> (usize, usize) {
    let rows = n.div_ceil(16).max(1) * 16;
    let bytes = |width: usize| 2 * rows * (width + 4) * 4;
    let budget = opt_in_limit.saturating_sub(V2_STATIC_RESERVE);
    let full = d.div_ceil(32).max(1) * 32;
    let width = if bytes(full) <= budget {
        full
    } else {
        ((budget / (8 * rows)).saturating_sub(4) / 32 * 32).clamp(32, full)
    };
    (width, bytes(width))
}
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
    let mut config = LaunchConfig::linear(batch as u32, THREADS);
    let (kernel, width) = match kernel_version::selected(super::KERNEL_FAMILY)? {
        KernelVersion::V1 => (FORWARD_BACKWARD, None),
        // v3: HIE only (`kernel_version::selected` refuses it here).
        KernelVersion::V2 | KernelVersion::V3 => {
            let (width, bytes) = v2_staging(n, d, device.max_opt_in_shared_bytes() as usize);
            config.shared_bytes = bytes as u32;
            (FORWARD_BACKWARD_V2, Some(width as i32))
        }
    };
    let mut args = kernel_args![
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
        upstream,
        width.unwrap_or(0)
    ];
    // v1 takes no staged width.
    let arg_count = args.len() - usize::from(width.is_none());
    device.launch(kernel, config, &mut args[..arg_count])?;
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

#[cfg(test)]
mod tests {
    use super::v2_staging;
    use crate::device::{MAX_DEFAULT_SHARED_BYTES, MAX_OPT_IN_SHARED_BYTES};

    #[test]
    fn v2_stages_x_and_a_once_when_they_fit_and_in_chunks_when_not() {
        let limit = MAX_OPT_IN_SHARED_BYTES as usize;
        // The paper's sizes: 2 · 64 rows · 260 floats, over the 48 KB default (opted in).
        assert_eq!(v2_staging(50, 256, limit), (256, 133_120));
        assert_eq!(v2_staging(5, 416, limit), (416, 53_760));
        assert!(v2_staging(5, 416, limit).1 > MAX_DEFAULT_SHARED_BYTES as usize);
        assert_eq!(v2_staging(7, 5, limit), (32, 4608));
        // Too wide to stage once: the widest multiple of 32 that fits.
        let (width, bytes) = v2_staging(64, 480, limit);
        assert_eq!(width, 384);
        assert!(bytes + 24 * 1024 <= limit);
        // A device with less opt-in shared memory (sm_80: 163 KB) stages narrower chunks.
        assert_eq!(v2_staging(64, 256, 163 * 1024).0, 256);
        assert_eq!(v2_staging(64, 480, 100 * 1024).0, 128);
    }
}
