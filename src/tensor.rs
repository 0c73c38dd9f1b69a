//! `Tensor`: a shape plus f32 storage on a device. Storage is shared (`Arc`), so cloning a tensor
//! is cheap and the tape can keep what a backward needs without copying.
use std::sync::Arc;

use crate::device::{Buffer, Device};
use crate::{Error, Result};

#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Arc<Buffer<f32>>,
    device: Device,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?} on {})", self.shape, self.device.name())
    }
}

impl Tensor {
    /// A tensor holding `data` (row-major) on `device`.
    pub fn from_vec(device: &Device, shape: &[usize], data: Vec<f32>) -> Result<Tensor> {
        let expected: usize = shape.iter().product();
        if data.len() != expected {
            return Err(Error::shape(
                "Tensor::from_vec",
                format!(
                    "{} values for shape {shape:?} ({expected} expected)",
                    data.len()
                ),
            ));
        }
        let buffer = match device {
            Device::Cuda(_) => device.upload(&data)?,
            Device::Cpu | Device::Emulated(_) => Buffer::Host(data),
        };
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: Arc::new(buffer),
            device: device.clone(),
        })
    }

    pub fn zeros(device: &Device, shape: &[usize]) -> Result<Tensor> {
        let buffer = device.zeros::<f32>(shape.iter().product())?;
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: Arc::new(buffer),
            device: device.clone(),
        })
    }

    /// Wraps a buffer that an op filled. The caller guarantees the length.
    pub(crate) fn from_buffer(device: &Device, shape: &[usize], buffer: Buffer<f32>) -> Tensor {
        debug_assert_eq!(buffer.len(), shape.iter().product::<usize>());
        Tensor {
            shape: shape.to_vec(),
            storage: Arc::new(buffer),
            device: device.clone(),
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn len(&self) -> usize {
        self.storage.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn buffer(&self) -> &Buffer<f32> {
        &self.storage
    }
    /// The buffer for writing, copied first if another tensor shares it.
    pub(crate) fn buffer_mut(&mut self) -> &mut Buffer<f32> {
        Arc::make_mut(&mut self.storage)
    }

    /// The values, copied to the host.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        self.device.download(&self.storage)
    }

    /// A copy on another device.
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        Tensor::from_vec(device, &self.shape, self.to_vec()?)
    }

    /// Same data, another shape of the same size.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if shape.iter().product::<usize>() != self.len() {
            return Err(Error::shape(
                "Tensor::reshape",
                format!("{:?} cannot become {shape:?}", self.shape),
            ));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: self.storage.clone(),
            device: self.device.clone(),
        })
    }

    /// The host values of a tensor on the CPU device (the reference path of every op).
    pub(crate) fn host(&self) -> &[f32] {
        self.storage.host_slice()
    }

    /// Checks that `other` lives on this tensor's device.
    pub(crate) fn same_device(&self, op: &'static str, other: &Tensor) -> Result<()> {
        if self.device != other.device {
            return Err(Error::DeviceMismatch {
                op,
                expected: self.device.name(),
                found: other.device.name(),
            });
        }
        Ok(())
    }
}
