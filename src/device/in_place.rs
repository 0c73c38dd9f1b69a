//! The in-place face of the op contract (docs/architecture.md, item 5): a pass whose outputs
//! are (some of) its inputs, overwritten. `crate::ops::DeviceOp` allocates its outputs; the
//! passes here write into buffers the caller owns: cross-entropy's loss-and-gradient pass (the
//! logits become G), Adam's step (parameters and moments), the bias add after the GEMM, `y += x`
//! (the tape's gradient accumulation) and the scaling by an upstream scalar.
//!
//! It lives with the devices, below the tensor and autograd layers, so that gradient
//! accumulation (`crate::accumulate`, which the tape imports) can use it without importing the
//! ops; `crate::ops` re-exports it beside `DeviceOp`.
use super::{Buffer, Device};
use crate::{Error, Result};

/// An in-place pass. Its checks build the problem descriptor (sizes, scalars); it supplies its
/// reference over host slices (what the CPU device runs) and its launch over device buffers (what
/// the CUDA and emulated devices run). Arguments come in the op's own order: the `targets` it
/// overwrites, then the f32 `values` and i32 `indices` it only reads.
///
/// Besides the targets, a pass may produce new outputs (cross-entropy's loss), whose lengths
/// [`DeviceInPlaceOp::output_lens`] names; most produce none.
pub trait DeviceInPlaceOp {
    /// Sizes, flags and scalars, established by the op's checks.
    type Problem;
    /// The op's name in errors.
    fn name(&self) -> &'static str;
    /// The length of every new output, in order (none by default).
    fn output_lens(&self, _problem: &Self::Problem) -> Vec<usize> {
        Vec::new()
    }
    /// The CPU reference: overwrites `targets`, returns one host vector per new output.
    fn reference(
        &self,
        problem: &Self::Problem,
        targets: &mut [&mut [f32]],
        values: &[&[f32]],
        indices: &[&[i32]],
    ) -> Result<Vec<Vec<f32>>>;
    /// The kernel launch on a CUDA or emulated `device`: overwrites `targets`, returns one buffer
    /// per new output.
    fn launch(
        &self,
        problem: &Self::Problem,
        device: &Device,
        targets: &mut [&mut Buffer<f32>],
        values: &[&Buffer<f32>],
        indices: &[&Buffer<i32>],
    ) -> Result<Vec<Buffer<f32>>>;
}

/// The device dispatch of every in-place pass: checks that every buffer lives on `device`, runs
/// the reference on the CPU and the launch on CUDA and the emulator, and checks what came back
/// (the targets keep their lengths; the new outputs have the lengths
/// `op.output_lens(problem)` names, else [`Error::Shape`]).
pub fn run_in_place<O: DeviceInPlaceOp + ?Sized>(
    op: &O,
    problem: &O::Problem,
    device: &Device,
    targets: &mut [&mut Buffer<f32>],
    values: &[&Buffer<f32>],
    indices: &[&Buffer<i32>],
) -> Result<Vec<Buffer<f32>>> {
    let name = op.name();
    let expected = device.memory_location();
    let locations = targets
        .iter()
        .map(|b| b.location())
        .chain(values.iter().map(|b| b.location()))
        .chain(indices.iter().map(|b| b.location()));
    for found in locations {
        if found != expected {
            return Err(Error::DeviceMismatch {
                op: name,
                expected: device.name(),
                found: found.into(),
            });
        }
    }
    let target_lens: Vec<usize> = targets.iter().map(|b| b.len()).collect();
    let lens = op.output_lens(problem);
    let outputs = match device {
        Device::Cpu => {
            let mut host_targets: Vec<&mut [f32]> =
                targets.iter_mut().map(|b| b.host_slice_mut()).collect();
            let host_values: Vec<&[f32]> = values.iter().map(|b| b.host_slice()).collect();
            let host_indices: Vec<&[i32]> = indices.iter().map(|b| b.host_slice()).collect();
            op.reference(problem, &mut host_targets, &host_values, &host_indices)?
                .into_iter()
                .map(Buffer::Host)
                .collect::<Vec<_>>()
        }
        Device::Cuda(_) | Device::Emulated(_) => {
            op.launch(problem, device, targets, values, indices)?
        }
    };
    if let Some((at, (before, target))) = target_lens
        .iter()
        .zip(targets.iter())
        .enumerate()
        .find(|(_, (&before, target))| target.len() != before)
    {
        return Err(Error::shape(
            name,
            format!(
                "target {at} of {before} values came back with {}",
                target.len()
            ),
        ));
    }
    if outputs.len() != lens.len() {
        return Err(Error::shape(
            name,
            format!("{} new outputs for {} lengths", outputs.len(), lens.len()),
        ));
    }
    if let Some((output, len)) = outputs.iter().zip(&lens).find(|(o, &l)| o.len() != l) {
        return Err(Error::shape(
            name,
            format!("a new output of {} values, expected {len}", output.len()),
        ));
    }
    Ok(outputs)
}

/// Copies `src[src_offset..src_offset + len]` into `dst[dst_offset..]` within `device`'s memory
/// (a device-to-device copy on CUDA, a host copy elsewhere), counted as a copy within the device.
/// A range past either end is an [`Error::Shape`] naming `op`.
pub(crate) fn copy_range(
    op: &'static str,
    device: &Device,
    src: &Buffer<f32>,
    src_offset: usize,
    dst: &mut Buffer<f32>,
    dst_offset: usize,
    len: usize,
) -> Result<()> {
    if src_offset + len > src.len() || dst_offset + len > dst.len() {
        return Err(Error::shape(
            op,
            format!(
                "copying {len} values from {src_offset} of {} into {dst_offset} of {}",
                src.len(),
                dst.len()
            ),
        ));
    }
    device.count_device_to_device(len * size_of::<f32>());
    match (device, src, dst) {
        (Device::Cuda(backend), Buffer::Cuda(s), Buffer::Cuda(d)) => {
            backend.stream().memcpy_dtod(
                &s.slice(src_offset..src_offset + len),
                &mut d.slice_mut(dst_offset..dst_offset + len),
            )?;
            Ok(())
        }
        (Device::Cpu | Device::Emulated(_), Buffer::Host(s), Buffer::Host(d)) => {
            d[dst_offset..dst_offset + len].copy_from_slice(&s[src_offset..src_offset + len]);
            Ok(())
        }
        (device, src, _) => Err(Error::DeviceMismatch {
            op,
            expected: device.name(),
            found: src.location().into(),
        }),
    }
}
