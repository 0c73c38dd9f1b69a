//! `IndexTensor`: i32 values on a device (sequence lengths L_b, item ids, attribute tokens).
use std::sync::Arc;

use crate::device::{Buffer, Device};
use crate::{Error, Result};

#[derive(Clone)]
pub struct IndexTensor {
    shape: Vec<usize>,
    storage: Arc<Buffer<i32>>,
    device: Device,
}

impl std::fmt::Debug for IndexTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IndexTensor({:?} on {})", self.shape, self.device.name())
    }
}

impl IndexTensor {
    pub fn from_vec(device: &Device, shape: &[usize], data: Vec<i32>) -> Result<IndexTensor> {
        let expected: usize = shape.iter().product();
        if data.len() != expected {
            return Err(Error::shape(
                "IndexTensor::from_vec",
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
        Ok(IndexTensor {
            shape: shape.to_vec(),
            storage: Arc::new(buffer),
            device: device.clone(),
        })
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
    pub fn buffer(&self) -> &Buffer<i32> {
        &self.storage
    }
    pub fn to_vec(&self) -> Result<Vec<i32>> {
        self.device.download(&self.storage)
    }
    /// The host values of an index tensor on the CPU device (the reference path of ops that take
    /// lengths or ids).
    #[allow(dead_code)]
    pub(crate) fn host(&self) -> &[i32] {
        self.storage.host_slice()
    }
}
