//! Elementwise addition: `y += x` (the tape's gradient accumulation; the model's residual add).
mod cpu;
mod cuda;

pub use cpu::add_assign as add_assign_reference;

use crate::device::Device;
use crate::{Error, Result, Tensor};

/// `y += x`, elementwise, same shape and device.
pub fn add_assign(y: &mut Tensor, x: &Tensor) -> Result<()> {
    y.same_device("add_assign", x)?;
    if y.shape() != x.shape() {
        return Err(Error::shape(
            "add_assign",
            format!("{:?} += {:?}", y.shape(), x.shape()),
        ));
    }
    let device = y.device().clone();
    match &device {
        Device::Cpu => {
            let x_values = x.host().to_vec();
            cpu::add_assign(y.buffer_mut().host_slice_mut(), &x_values);
            Ok(())
        }
        Device::Cuda(_) | Device::Emulated(_) => {
            cuda::add_assign(&device, y.buffer_mut(), x.buffer(), x.len())
        }
    }
}
