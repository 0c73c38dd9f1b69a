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

use crate::autograd::{Tape, Var};
pub(crate) use crate::device::elementwise_launch;
use crate::device::{Buffer, Device};
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

/// An elementwise activation (GELU, ReLU): its op name (also its kernel_version family), its two
/// grid-stride kernels `(const float* x, float* y, int len)` and `(const float* x, const float*
/// dy, float* dx, int len)` in both versions, and its f32 reference. The checks, the device
/// dispatch, the launches and the tape face are shared here; each activation's module names its
/// pieces.
pub(crate) struct Activation {
    pub op: &'static str,
    pub forward_kernel: KernelRef,
    pub backward_kernel: KernelRef,
    pub forward_kernel_v2: KernelRef,
    pub backward_kernel_v2: KernelRef,
    pub forward_reference: fn(&[f32]) -> Vec<f32>,
    pub backward_reference: fn(&[f32], &[f32]) -> Vec<f32>,
}

impl Activation {
    /// `y = f(x)`, elementwise.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let len = check_kernel_len(self.op, x.len())?;
        let device = x.device();
        let y = match device {
            Device::Cpu => {
                let x = x.host();
                Buffer::Host(crate::parallel::elementwise(len, |r| {
                    (self.forward_reference)(&x[r])
                }))
            }
            Device::Cuda(_) | Device::Emulated(_) => {
                // The activation kernels write every element (grid-stride loop).
                let mut y = device.uninitialized::<f32>(len)?;
                if len > 0 {
                    let (kernel, launch) = elementwise_launch(
                        self.op,
                        self.forward_kernel,
                        self.forward_kernel_v2,
                        len,
                        1,
                    )?;
                    device.launch(
                        kernel,
                        launch,
                        &mut kernel_args![x.buffer(), &mut y, len as i32],
                    )?;
                }
                y
            }
        };
        Ok(Tensor::from_buffer(device, x.shape(), y))
    }

    /// `dx = f'(x) · dy`: `x` and `dy` on one device with one shape.
    pub fn backward(&self, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        x.same_device(self.op, dy)?;
        if dy.shape() != x.shape() {
            return Err(Error::shape(
                self.op,
                format!("dy {:?} must match x {:?}", dy.shape(), x.shape()),
            ));
        }
        let len = check_kernel_len(self.op, x.len())?;
        let device = x.device();
        let dx = match device {
            Device::Cpu => {
                let (x, dy) = (x.host(), dy.host());
                Buffer::Host(crate::parallel::elementwise(len, |r| {
                    (self.backward_reference)(&x[r.clone()], &dy[r])
                }))
            }
            Device::Cuda(_) | Device::Emulated(_) => {
                // Written in full, as the forward's y.
                let mut dx = device.uninitialized::<f32>(len)?;
                if len > 0 {
                    let (kernel, launch) = elementwise_launch(
                        self.op,
                        self.backward_kernel,
                        self.backward_kernel_v2,
                        len,
                        2,
                    )?;
                    device.launch(
                        kernel,
                        launch,
                        &mut kernel_args![x.buffer(), dy.buffer(), &mut dx, len as i32],
                    )?;
                }
                dx
            }
        };
        Ok(Tensor::from_buffer(device, x.shape(), dx))
    }

    /// The tape face: records `y = f(x)` with its backward.
    pub fn record(&'static self, tape: &Tape, x: &Var) -> Result<Var> {
        let y = self.forward(x.value())?;
        let (x_value, x_id) = (x.value().clone(), x.id());
        Ok(tape.record(y, move |dy| Ok(vec![(x_id, self.backward(&x_value, dy)?)])))
    }
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
