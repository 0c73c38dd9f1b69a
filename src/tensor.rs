//! `Tensor`: a shape plus storage on a device: f32 values (`Tensor`) or i32 indices
//! (`IndexTensor`: lengths L_b, item ids, attribute tokens). Storage is shared (`Arc`), so cloning
//! a tensor is cheap and the tape can keep what a backward needs without copying.
use std::sync::Arc;

use crate::device::{Buffer, Device, Scalar};
use crate::{Error, Result};

/// `Send + Sync`: a tensor may move to or be shared with another thread (its storage is an `Arc`
/// over a host `Vec` or a cudarc `CudaSlice`).
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

    /// A tensor over memory the caller already has on `device`, without a copy: a
    /// [`Buffer::Cuda`] on a CUDA device, a [`Buffer::Host`] on the CPU and emulated devices
    /// (where host memory is the device memory). The tensor owns the buffer from now on and frees
    /// it when its last clone drops; [`Tensor::into_buffer`] gives it back. Nothing is counted: no
    /// allocation, no transfer (`Device::counters`).
    ///
    /// A buffer of the wrong length for `shape`, or one that does not live on `device`, is an
    /// [`Error::Shape`] or [`Error::DeviceMismatch`].
    pub fn from_device_buffer(
        device: &Device,
        shape: &[usize],
        buffer: Buffer<T>,
    ) -> Result<Tensor<T>> {
        const OP: &str = "Tensor::from_device_buffer";
        let expected: usize = shape.iter().product();
        if buffer.len() != expected {
            return Err(Error::shape(
                OP,
                format!(
                    "{} values for shape {shape:?} ({expected} expected)",
                    buffer.len()
                ),
            ));
        }
        if buffer.location() != device.memory_location() {
            return Err(Error::DeviceMismatch {
                op: OP,
                expected: device.memory_location().into(),
                found: buffer.location().into(),
            });
        }
        if let (Device::Cuda(backend), Buffer::Cuda(slice)) = (device, &buffer) {
            if slice.context().cu_ctx() != backend.context().cu_ctx() {
                return Err(Error::DeviceMismatch {
                    op: OP,
                    expected: device.name(),
                    found: format!("a CUDA context of GPU {}", slice.ordinal()),
                });
            }
        }
        Ok(Tensor::from_buffer(device, shape, buffer))
    }

    /// A tensor over a caller's cudarc slice, without a copy ([`Tensor::from_device_buffer`] with
    /// [`Buffer::Cuda`]). `device` is a CUDA device on the slice's context, typically
    /// [`Device::from_cuda_stream`] on the caller's stream.
    ///
    /// Synchronisation: the slice may have been written on any stream of that context. cudarc
    /// records an event on each slice it launches with and makes the next launch on another
    /// stream wait for it (its event tracking, on by default), so our kernels see the caller's
    /// writes and the caller's next kernels see ours. A caller who turned event tracking off
    /// (`CudaContext::disable_event_tracking`) synchronises by hand: our work is queued on the
    /// device's stream.
    pub fn from_cuda_slice(
        device: &Device,
        shape: &[usize],
        slice: cudarc::driver::CudaSlice<T>,
    ) -> Result<Tensor<T>> {
        Tensor::from_device_buffer(device, shape, Buffer::Cuda(slice))
    }

    /// The tensor's buffer, handed to the caller: moved out without a copy when this is the only
    /// tensor over it; when other tensors (clones, reshapes, what a tape saved) share it, a copy
    /// on the device (counted as `bytes_device_to_device`, never through the host) so theirs
    /// stays valid.
    pub fn into_buffer(self) -> Result<Buffer<T>> {
        match Arc::try_unwrap(self.storage) {
            Ok(buffer) => Ok(buffer),
            Err(shared) => self.device.duplicate(&shared),
        }
    }

    /// The tensor's memory as a cudarc slice ([`Tensor::into_buffer`]; no copy unless the buffer
    /// is shared). The slice keeps the stream it was allocated on and frees itself there when
    /// dropped. A tensor that is not on a CUDA device is an [`Error::DeviceMismatch`].
    pub fn into_cuda_slice(self) -> Result<cudarc::driver::CudaSlice<T>> {
        if !matches!(self.device, Device::Cuda(_)) {
            return Err(Error::DeviceMismatch {
                op: "Tensor::into_cuda_slice",
                expected: "cuda".into(),
                found: self.device.name(),
            });
        }
        self.into_buffer()?
            .into_cuda_slice()
            .map_err(|_| Error::DeviceMismatch {
                op: "Tensor::into_cuda_slice",
                expected: "cuda".into(),
                found: "host".into(),
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

    /// Whether another tensor (a clone, a reshape, what a tape saved) shares this one's buffer,
    /// so that a write to it copies first.
    pub fn shares_buffer(&self) -> bool {
        Arc::strong_count(&self.storage) > 1
    }

    /// The buffer for a write that overwrites every value: the tensor's own buffer, in place
    /// (its address stays), when no other tensor shares it; when one does (a clone kept, such as
    /// the trainer's best-epoch weights), a new buffer of the same length, uninitialised and not
    /// copied, so the sharers keep the old values (copy on write, without the copy).
    pub(crate) fn buffer_for_overwrite(&mut self) -> Result<&mut Buffer<T>> {
        if Arc::get_mut(&mut self.storage).is_none() {
            self.storage = Arc::new(self.device.uninitialized(self.storage.len())?);
        }
        Arc::get_mut(&mut self.storage).ok_or_else(|| {
            Error::argument(
                "Tensor::buffer_for_overwrite",
                "a buffer allocated just now is still shared",
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
