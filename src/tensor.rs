//! `Tensor`: a shape plus storage on a device: f32 values (`Tensor`) or i32 indices
//! (`IndexTensor`: lengths L_b, item ids, attribute tokens). Storage is shared (`Arc`), so cloning
//! a tensor is cheap and the tape can keep what a backward needs without copying.
use std::sync::Arc;

use crate::device::{Buffer, Device, Scalar};
use crate::{Error, Result};

#[derive(Clone)]
pub struct Tensor<T: Scalar = f32> {
    shape: Vec<usize>,
    storage: Arc<Buffer<T>>,
    device: Device,
}

/// i32 values on a device: sequence lengths L_b, item ids, attribute tokens.
pub type IndexTensor = Tensor<i32>;

impl<T: Scalar> std::fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor<{}>({:?} on {})",
            T::NAME,
            self.shape,
            self.device.name()
        )
    }
}

impl<T: Scalar> Tensor<T> {
    /// A tensor holding `data` (row-major) on `device`.
    pub fn from_vec(device: &Device, shape: &[usize], data: Vec<T>) -> Result<Tensor<T>> {
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
        let buffer = device.upload_vec(data)?;
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: Arc::new(buffer),
            device: device.clone(),
        })
    }

    pub fn zeros(device: &Device, shape: &[usize]) -> Result<Tensor<T>> {
        let buffer = device.zeros::<T>(shape.iter().product())?;
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: Arc::new(buffer),
            device: device.clone(),
        })
    }

    /// Wraps a buffer that an op filled. The caller guarantees the length.
    pub(crate) fn from_buffer(device: &Device, shape: &[usize], buffer: Buffer<T>) -> Tensor<T> {
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
    pub fn buffer(&self) -> &Buffer<T> {
        &self.storage
    }
    /// The buffer for writing, copied first (`Device::duplicate`, counted) if another tensor
    /// shares it.
    pub(crate) fn buffer_mut(&mut self) -> Result<&mut Buffer<T>> {
        if Arc::get_mut(&mut self.storage).is_none() {
            self.storage = Arc::new(self.device.duplicate(&self.storage)?);
        }
        Arc::get_mut(&mut self.storage).ok_or_else(|| {
            Error::argument(
                "Tensor::buffer_mut",
                "a buffer copied just now is still shared",
            )
        })
    }

    /// The values, copied to the host.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.device.download(&self.storage)
    }

    /// A copy on another device.
    pub fn to_device(&self, device: &Device) -> Result<Tensor<T>> {
        Tensor::from_vec(device, &self.shape, self.to_vec()?)
    }

    /// Same data, another shape of the same size.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor<T>> {
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
    #[allow(dead_code)]
    pub(crate) fn host(&self) -> &[T] {
        self.storage.host_slice()
    }

    /// Checks that `other` lives on this tensor's device.
    pub(crate) fn same_device<U: Scalar>(&self, op: &'static str, other: &Tensor<U>) -> Result<()> {
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
