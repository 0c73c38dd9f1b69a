//! Device memory: a host `Vec` on the CPU and emulated devices, a `CudaSlice` on CUDA.
use cudarc::driver::{CudaSlice, DevicePtr, DeviceRepr, ValidAsZeroBits};

/// Element types that can live on every device.
pub trait Scalar:
    bytemuck::Pod + DeviceRepr + ValidAsZeroBits + Default + std::fmt::Debug + Send + Sync + 'static
{
    const NAME: &'static str;
    /// What an uninitialised buffer holds in the poison mode (`Device::uninitialized`): a value
    /// no kernel computes on purpose, so a slot the kernel forgot to write shows in a parity test.
    const POISON: Self;
}
impl Scalar for f32 {
    const NAME: &'static str = "f32";
    /// NaN: it propagates through any arithmetic that reads it and fails every finite check.
    const POISON: Self = f32::NAN;
}
impl Scalar for i32 {
    const NAME: &'static str = "i32";
    /// The most negative value: out of range as an index, length or id.
    const POISON: Self = i32::MIN;
}
impl Scalar for u32 {
    const NAME: &'static str = "u32";
    const POISON: Self = u32::MAX;
}
/// Device step counters (`StepCounter`: the per-step scalars a replayed CUDA graph reads).
impl Scalar for u64 {
    const NAME: &'static str = "u64";
    const POISON: Self = u64::MAX;
}

/// A buffer of `T` on some device. Not `Clone`: a copy goes through `Device::duplicate`, which
/// counts it (`Device::counters`). `Send + Sync`.
///
/// A buffer that the CUDA or emulated device handed out goes back to that device's memory cache
/// when it drops (`cache.rs`), instead of being freed; its memory leaves the crate through
/// [`Buffer::into_cuda_slice`] or [`Buffer::into_host_vec`] (a `Drop` type cannot be taken apart
/// by a pattern).
#[derive(Debug)]
pub enum Buffer<T: Scalar> {
    /// Host memory: the CPU reference device, and the emulated device's "device memory".
    Host(Vec<T>),
    Cuda(CudaSlice<T>),
}

impl<T: Scalar> Buffer<T> {
    pub fn len(&self) -> usize {
        match self {
            Buffer::Host(v) => v.len(),
            Buffer::Cuda(s) => s.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// "host" or "cuda", for error messages.
    pub fn location(&self) -> &'static str {
        match self {
            Buffer::Host(_) => "host",
            Buffer::Cuda(_) => "cuda",
        }
    }

    /// Where the buffer's memory starts: the device pointer of a CUDA buffer, the host pointer of
    /// a host one; 0 for an empty buffer (empty vectors share one dangling address). A stable
    /// identity of the memory: a kernel argument, and so a captured CUDA graph, refers to it.
    pub fn address(&self) -> u64 {
        if self.is_empty() {
            return 0;
        }
        match self {
            Buffer::Host(v) => v.as_ptr() as u64,
            Buffer::Cuda(s) => {
                let (ptr, _record) = s.device_ptr(s.stream());
                ptr
            }
        }
    }

    /// The host memory of a host buffer (empty for a CUDA buffer; `Device::launch` rules that out).
    pub(crate) fn host_slice(&self) -> &[T] {
        match self {
            Buffer::Host(v) => v,
            Buffer::Cuda(_) => &[],
        }
    }
    pub(crate) fn host_slice_mut(&mut self) -> &mut [T] {
        match self {
            Buffer::Host(v) => v,
            Buffer::Cuda(_) => &mut [],
        }
    }

    /// The buffer's memory, moved out without running `Drop` (so without returning to a
    /// cache): the caller owns it from now on.
    pub(crate) fn into_memory(self) -> Memory<T> {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so the field read here is owned exactly once.
        match &*this {
            Buffer::Host(v) => Memory::Host(unsafe { std::ptr::read(v) }),
            Buffer::Cuda(s) => Memory::Cuda(unsafe { std::ptr::read(s) }),
        }
    }

    /// The CUDA slice of a CUDA buffer (it leaves the memory cache: the caller frees it); a host
    /// buffer comes back as `Err(self)`.
    pub fn into_cuda_slice(self) -> std::result::Result<CudaSlice<T>, Buffer<T>> {
        if !matches!(self, Buffer::Cuda(_)) {
            return Err(self);
        }
        super::cache::forget(&self);
        match self.into_memory() {
            Memory::Cuda(s) => Ok(s),
            Memory::Host(v) => Err(Buffer::Host(v)),
        }
    }

    /// The vector of a host buffer (it leaves the memory cache); a CUDA buffer comes back as
    /// `Err(self)`.
    pub fn into_host_vec(self) -> std::result::Result<Vec<T>, Buffer<T>> {
        if !matches!(self, Buffer::Host(_)) {
            return Err(self);
        }
        super::cache::forget(&self);
        match self.into_memory() {
            Memory::Host(v) => Ok(v),
            Memory::Cuda(s) => Err(Buffer::Cuda(s)),
        }
    }
}

/// A buffer's memory outside its `Drop` wrapper (`Buffer::into_memory`).
pub(crate) enum Memory<T: Scalar> {
    Host(Vec<T>),
    Cuda(CudaSlice<T>),
}

impl<T: Scalar> Drop for Buffer<T> {
    fn drop(&mut self) {
        super::cache::on_drop(self);
    }
}
