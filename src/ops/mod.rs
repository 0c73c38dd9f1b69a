//! One folder per op: `mod.rs` (public functions, checks, backward rule, tape face), `cpu.rs`
//! (the reference), `cuda.rs` (the kernel launch, shared by the CUDA and emulated devices).
pub mod adam;
pub mod add;
pub mod attention;
pub mod contrastive;
pub mod cross_entropy;
pub mod dropout;
pub mod embedding;
pub mod gather;
pub mod gelu;
pub mod hie;
pub mod layer_norm;
pub mod linear;
pub mod relu;
pub mod residual_norm;
pub mod source_attention;

use crate::device::{Buffer, Device, LaunchConfig};
use crate::kernels::KernelRef;
use crate::{kernel_args, Error, IndexTensor, Result, Tensor};

/// Elements the grid-stride kernels can index (32-bit), as a typed error past that.
pub(crate) fn check_kernel_len(op: &'static str, len: usize) -> Result<usize> {
    if len > i32::MAX as usize {
        return Err(Error::shape(
            op,
            format!("{len} elements exceed the kernel's 32-bit indexing"),
        ));
    }
    Ok(len)
}

/// The checks of an elementwise activation's backward: `x` and `dy` on one device with one
/// shape, within the kernels' indexing. Returns the length.
pub(crate) fn check_elementwise_backward(
    op: &'static str,
    x: &Tensor,
    dy: &Tensor,
) -> Result<usize> {
    x.same_device(op, dy)?;
    if dy.shape() != x.shape() {
        return Err(Error::shape(
            op,
            format!("dy {:?} must match x {:?}", dy.shape(), x.shape()),
        ));
    }
    check_kernel_len(op, x.len())
}

/// `y = f(x)` over `len` elements through a grid-stride kernel `(const float* x, float* y, int
/// len)`: the launch shared by the elementwise activations (GELU, ReLU).
pub(crate) fn launch_elementwise(
    device: &Device,
    kernel: KernelRef,
    x: &Buffer<f32>,
    len: usize,
) -> Result<Buffer<f32>> {
    let mut y = device.zeros::<f32>(len)?;
    if len > 0 {
        device.launch(
            kernel,
            LaunchConfig::grid_stride(len),
            &mut kernel_args![x, &mut y, len as i32],
        )?;
    }
    Ok(y)
}

/// `dx = f'(x) · dy` over `len` elements through a grid-stride kernel `(const float* x, const
/// float* dy, float* dx, int len)`: the backward of [`launch_elementwise`]'s activations.
pub(crate) fn launch_elementwise_backward(
    device: &Device,
    kernel: KernelRef,
    x: &Buffer<f32>,
    dy: &Buffer<f32>,
    len: usize,
) -> Result<Buffer<f32>> {
    let mut dx = device.zeros::<f32>(len)?;
    if len > 0 {
        device.launch(
            kernel,
            LaunchConfig::grid_stride(len),
            &mut kernel_args![x, dy, &mut dx, len as i32],
        )?;
    }
    Ok(dx)
}

/// Checks that `indices` live on `device` and, where they are host memory (CPU and emulated
/// devices), that every value lies in `[lower, upper)`. On the GPU the values are not read back
/// (that would synchronise every call); the kernels treat an out-of-range value as padding.
pub(crate) fn check_indices(
    op: &'static str,
    device: &Device,
    indices: &IndexTensor,
    lower: i64,
    upper: i64,
) -> Result<()> {
    if indices.device() != device {
        return Err(Error::DeviceMismatch {
            op,
            expected: device.name(),
            found: indices.device().name(),
        });
    }
    if matches!(device, Device::Cuda(_)) {
        return Ok(());
    }
    if let Some((at, &bad)) = indices
        .host()
        .iter()
        .enumerate()
        .find(|(_, &v)| !(lower..upper).contains(&(v as i64)))
    {
        return Err(Error::argument(
            op,
            format!("index {bad} at position {at} is outside [{lower}, {upper})"),
        ));
    }
    Ok(())
}
