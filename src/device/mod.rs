//! The three devices every op dispatches on (docs/architecture.md):
//! - [`Device::Cpu`]: the plain-Rust reference implementations;
//! - [`Device::Cuda`]: a cudarc context, stream, cuBLAS handle and lazy module cache;
//! - [`Device::Emulated`]: the same `.cu` kernels compiled for the host (test-only, provided by
//!   the `asif-emulator` crate), device memory being host memory.
//!
//! CUDA and emulated devices share [`Device::launch`]; only its last step differs. Both count
//! what they do in the same way ([`Device::counters`], `counters.rs`).
mod buffer;
mod cache;
mod counters;
mod cuda;
mod emulated;
mod graph;
mod in_place;
mod launch;
mod step_counter;

use std::sync::Arc;

pub use buffer::{Buffer, Scalar};
pub use cache::MemoryCache;
pub use counters::{CounterSnapshot, Counters};
pub use cuda::{CudaBackend, POISON_UNINITIALIZED_ENV};
pub use emulated::{Emulator, EmulatorLaunchFn, LaunchRecord};
pub use graph::{GraphRun, StepGraph};
pub(crate) use in_place::copy_range;
pub use in_place::{run_in_place, DeviceInPlaceOp};
pub(crate) use launch::elementwise_launch;
pub use launch::{KernelArg, LaunchConfig, MAX_DEFAULT_SHARED_BYTES, MAX_OPT_IN_SHARED_BYTES};
pub use step_counter::{StepCounter, StepSeed};

use crate::kernels::{self, KernelRef};
use crate::{Error, Result};

/// Whether `values` is non-empty, 4-byte and one repeated bit pattern (an upload that a graph
/// capture takes as a memset).
fn one_repeated_word<T: Scalar>(values: &[T]) -> bool {
    size_of::<T>() == 4
        && values.first().is_some_and(|first| {
            values
                .iter()
                .all(|v| bytemuck::bytes_of(v) == bytemuck::bytes_of(first))
        })
}

/// `Send + Sync`. Clones share one backend (stream, module cache, counters): clones used from
/// several threads queue on the one stream, in the order the threads call.
#[derive(Clone)]
pub enum Device {
    Cpu,
    Cuda(Arc<CudaBackend>),
    Emulated(Emulator),
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl PartialEq for Device {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) | (Device::Emulated(_), Device::Emulated(_)) => true,
            (Device::Cuda(a), Device::Cuda(b)) => a.ordinal() == b.ordinal(),
            _ => false,
        }
    }
}

impl Device {
    /// The CPU reference device.
    pub fn cpu() -> Self {
        Device::Cpu
    }

    /// GPU `ordinal`. A missing driver, missing library or missing GPU is
    /// [`Error::CudaUnavailable`], never a panic.
    pub fn cuda(ordinal: usize) -> Result<Self> {
        Ok(Device::Cuda(Arc::new(CudaBackend::new(ordinal)?)))
    }

    /// A CUDA device on a caller's cudarc stream, for a trainer that owns its context, stream and
    /// memory (docs/interop.md). The device works on `stream` and on `stream.context()`: every
    /// kernel launch, cuBLAS call, allocation and copy of this device (and of its clones) queues
    /// on `stream`, in order with the caller's own work there, and nothing synchronises the host
    /// unless the caller asks ([`Device::synchronize`], or a download). The caller keeps its
    /// `Arc`; the device holds a clone, so the stream lives as long as either. The device's
    /// counters start at zero and are its own (not shared with [`Device::cuda`] on the same GPU).
    ///
    /// Memory the caller allocated on this context enters with [`Tensor::from_cuda_slice`]
    /// (no copy) and leaves with [`Tensor::into_cuda_slice`].
    ///
    /// [`Tensor::from_cuda_slice`]: crate::Tensor::from_cuda_slice
    /// [`Tensor::into_cuda_slice`]: crate::Tensor::into_cuda_slice
    pub fn from_cuda_stream(stream: Arc<cudarc::driver::CudaStream>) -> Result<Self> {
        Ok(Device::Cuda(Arc::new(CudaBackend::from_stream(stream)?)))
    }

    /// The host emulator; `launch` is `asif_emulator::launch` (a dev-dependency of tests).
    pub fn emulated(launch: EmulatorLaunchFn) -> Self {
        Device::Emulated(Emulator::new(launch))
    }

    /// GPU 0 when it can be used, else the CPU reference.
    pub fn best_available() -> Self {
        Device::cuda(0).unwrap_or(Device::Cpu)
    }

    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            Device::Cuda(backend) => {
                format!("cuda:{} ({})", backend.ordinal(), backend.device_name())
            }
            Device::Emulated(_) => "emulated".into(),
        }
    }

    /// Where this device's buffers live ("host" or "cuda").
    pub(crate) fn memory_location(&self) -> &'static str {
        match self {
            Device::Cuda(_) => "cuda",
            Device::Cpu | Device::Emulated(_) => "host",
        }
    }

    /// What this device has done so far (launches, memsets, allocations, copies); shared by its
    /// clones. The CPU device counts nothing: its counters stay at zero.
    pub fn counters(&self) -> &Counters {
        static CPU_COUNTS_NOTHING: Counters = Counters::new();
        match self {
            Device::Cpu => &CPU_COUNTS_NOTHING,
            Device::Cuda(backend) => backend.counters(),
            Device::Emulated(emulator) => emulator.counters(),
        }
    }

    /// The counters of the CUDA and emulated devices; `None` on the CPU.
    fn counting(&self) -> Option<&Counters> {
        match self {
            Device::Cpu => None,
            Device::Cuda(backend) => Some(backend.counters()),
            Device::Emulated(emulator) => Some(emulator.counters()),
        }
    }

    /// The memory cache of the CUDA and emulated devices (`cache.rs`); `None` on the CPU.
    pub fn memory_cache(&self) -> Option<&Arc<MemoryCache>> {
        match self {
            Device::Cpu => None,
            Device::Cuda(backend) => Some(backend.memory_cache()),
            Device::Emulated(emulator) => Some(emulator.memory_cache()),
        }
    }

    /// Frees every block the memory cache holds (buffers in use stay; they come back to the
    /// cache when they drop). No-op on the CPU.
    pub fn empty_cache(&self) {
        if let Some(cache) = self.memory_cache() {
            cache.release_all();
        }
    }

    /// A buffer of `len` elements from the memory cache, counted as an allocation (not a fresh
    /// one), with whatever its last user left in it; `None` when the cache holds no block of that
    /// size (and on the CPU).
    fn cached<T: Scalar>(&self, len: usize) -> Option<Buffer<T>> {
        let cache = self.memory_cache()?;
        let buffer = cache.take::<T>(len)?;
        if let Some(counters) = self.counting() {
            counters.allocation(len * size_of::<T>());
        }
        cache.lend(&buffer);
        Some(buffer)
    }

    /// A freshly allocated buffer, counted as an allocation and a fresh one (an empty buffer
    /// holds no memory and is not fresh), entered in the cache's lent table so that it comes back
    /// to the cache when it drops.
    fn fresh<T: Scalar>(&self, buffer: Buffer<T>) -> Result<Buffer<T>> {
        let bytes = buffer.len() * size_of::<T>();
        if bytes > 0 {
            self.refuse_in_capture("a fresh allocation")?;
        }
        if let Some(counters) = self.counting() {
            counters.allocation(bytes);
            if bytes > 0 {
                counters.fresh_allocation(bytes);
            }
        }
        if let Some(cache) = self.memory_cache() {
            cache.lend(&buffer);
        }
        Ok(buffer)
    }

    /// Whether `Device::run_step_graph` is capturing a step on this device (`graph.rs`).
    pub(crate) fn capturing(&self) -> bool {
        let flag = match self {
            Device::Cpu => return false,
            Device::Cuda(backend) => &backend.capturing,
            Device::Emulated(emulator) => &*emulator.capturing,
        };
        flag.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// An error when a step is being captured (`graph.rs`): `what` cannot be captured.
    pub(crate) fn refuse_in_capture(&self, what: &str) -> Result<()> {
        if self.capturing() {
            return Err(Error::argument(
                "CUDA graph step",
                format!("{what} inside a captured step (docs/gpu.md, CUDA graphs)"),
            ));
        }
        Ok(())
    }

    /// A buffer of `len` zeros: one allocation (from the memory cache when it can) and one
    /// memset. Ops use it only where a kernel accumulates into its output (or leaves some of it
    /// untouched on purpose); a buffer that a kernel overwrites entirely comes from
    /// [`Device::uninitialized`].
    pub fn zeros<T: Scalar>(&self, len: usize) -> Result<Buffer<T>> {
        if let Some(counters) = self.counting() {
            counters.memset();
        }
        match self {
            Device::Cuda(backend) => {
                let stream = backend.stream();
                let mut buffer = match self.cached::<T>(len) {
                    Some(buffer) => buffer,
                    None => {
                        self.refuse_in_capture("a fresh allocation")?;
                        // SAFETY: `T` is plain old data; the memset below writes every byte.
                        self.fresh(Buffer::Cuda(unsafe { stream.alloc::<T>(len) }?))?
                    }
                };
                if let Buffer::Cuda(slice) = &mut buffer {
                    stream.memset_zeros(slice)?;
                }
                Ok(buffer)
            }
            Device::Emulated(_) => Ok(match self.cached::<T>(len) {
                Some(mut buffer) => {
                    buffer.host_slice_mut().fill(T::default());
                    buffer
                }
                None => self.fresh(Buffer::Host(vec![T::default(); len]))?,
            }),
            Device::Cpu => Ok(Buffer::Host(vec![T::default(); len])),
        }
    }

    /// A buffer of `len` elements whose values are unspecified: one allocation (from the memory
    /// cache when it holds a block of this size, `cache.rs`), no memset.
    ///
    /// Invariant: only for a buffer that the next kernel writes in full (every element, whatever
    /// the input) before anything reads it; a buffer that a kernel accumulates into, or leaves
    /// partly untouched, comes from [`Device::zeros`]. To make a break of that invariant visible,
    /// the poison mode fills the buffer with [`Scalar::POISON`] (NaN for f32) first, a reused one
    /// as well as a fresh one: always on the emulated and CPU devices, and on CUDA when
    /// [`POISON_UNINITIALIZED_ENV`] is set or [`Device::set_poison_uninitialized`] turned it on
    /// (the GPU parity tests do). A slot the kernel skips then reads back NaN and fails its
    /// parity test. The fill is not counted.
    pub fn uninitialized<T: Scalar>(&self, len: usize) -> Result<Buffer<T>> {
        match self {
            Device::Cuda(backend) => {
                let stream = backend.stream();
                let mut buffer = match self.cached::<T>(len) {
                    Some(buffer) => buffer,
                    None => {
                        self.refuse_in_capture("a fresh allocation")?;
                        // SAFETY: `T` is plain old data (`Scalar: Pod`), so any bytes are a
                        // valid `T`; the invariant above says a kernel writes every element
                        // before it is read.
                        self.fresh(Buffer::Cuda(unsafe { stream.alloc::<T>(len) }?))?
                    }
                };
                if backend.poison_uninitialized() && len > 0 {
                    if let Buffer::Cuda(slice) = &mut buffer {
                        backend.fill_poison(slice)?;
                    }
                }
                Ok(buffer)
            }
            // On the CPU the fill runs on the CPU path's threads: a serial fill of every GEMM
            // output was one of the largest serial costs of a training step (issue 23).
            Device::Cpu => Ok(Buffer::Host(crate::parallel::filled(len, T::POISON))),
            Device::Emulated(_) => Ok(match self.cached::<T>(len) {
                Some(mut buffer) => {
                    buffer.host_slice_mut().fill(T::POISON);
                    buffer
                }
                None => self.fresh(Buffer::Host(vec![T::POISON; len]))?,
            }),
        }
    }

    /// Turns the poison mode of [`Device::uninitialized`] on or off for this CUDA device (and its
    /// clones). The emulated and CPU devices always poison; there it does nothing.
    pub fn set_poison_uninitialized(&self, poison: bool) {
        if let Device::Cuda(backend) = self {
            backend.set_poison_uninitialized(poison);
        }
    }

    /// Whether [`Device::uninitialized`] fills its buffers with [`Scalar::POISON`].
    pub fn poisons_uninitialized(&self) -> bool {
        match self {
            Device::Cuda(backend) => backend.poison_uninitialized(),
            Device::Cpu | Device::Emulated(_) => true,
        }
    }

    /// Copies host data to this device (into a buffer from the memory cache when it can).
    pub fn upload<T: Scalar>(&self, host: &[T]) -> Result<Buffer<T>> {
        self.count_upload::<T>(host.len());
        match self {
            Device::Cuda(backend) => {
                let stream = backend.stream();
                let capturing = self.capturing();
                if capturing && !one_repeated_word(host) {
                    self.refuse_in_capture("an upload of varying values")?;
                }
                match self.cached::<T>(host.len()) {
                    Some(mut buffer) => {
                        if let Buffer::Cuda(slice) = &mut buffer {
                            if capturing {
                                // One repeated 32-bit value: a memset, which captures without
                                // host memory (the backward's loss seeds).
                                backend.fill_word(slice, host[0])?;
                            } else {
                                stream.memcpy_htod(host, slice)?;
                            }
                        }
                        Ok(buffer)
                    }
                    None => {
                        self.refuse_in_capture("a fresh allocation")?;
                        Ok(self.fresh(Buffer::Cuda(stream.clone_htod(host)?))?)
                    }
                }
            }
            Device::Emulated(_) => {
                if !one_repeated_word(host) {
                    self.refuse_in_capture("an upload of varying values")?;
                }
                Ok(match self.cached::<T>(host.len()) {
                    Some(mut buffer) => {
                        buffer.host_slice_mut().copy_from_slice(host);
                        buffer
                    }
                    None => self.fresh(Buffer::Host(host.to_vec()))?,
                })
            }
            Device::Cpu => Ok(Buffer::Host(host.to_vec())),
        }
    }

    /// Moves host data to this device: an upload on CUDA; on the emulated device the vector
    /// itself, or its values copied into a cached buffer of the same size, as CUDA does (counted
    /// as an upload, so it counts what CUDA does); the vector itself on the CPU.
    pub fn upload_vec<T: Scalar>(&self, host: Vec<T>) -> Result<Buffer<T>> {
        match self {
            Device::Cuda(_) => self.upload(&host),
            Device::Emulated(_) => {
                if !one_repeated_word(&host) {
                    self.refuse_in_capture("an upload of varying values")?;
                }
                self.count_upload::<T>(host.len());
                Ok(match self.cached::<T>(host.len()) {
                    Some(mut buffer) => {
                        buffer.host_slice_mut().copy_from_slice(&host);
                        buffer
                    }
                    None => self.fresh(Buffer::Host(host))?,
                })
            }
            Device::Cpu => Ok(Buffer::Host(host)),
        }
    }

    /// Counts the copy of an upload (its allocation is counted where it is made).
    fn count_upload<T: Scalar>(&self, len: usize) {
        if let Some(counters) = self.counting() {
            counters.host_to_device(len * size_of::<T>());
        }
    }

    /// Copies host data into an existing buffer of this device of the same length, in place: its
    /// address stays (the staging copy before a replayed CUDA graph, `StepCounter::set`). Counted
    /// as an upload; refused inside a captured step, as an upload of varying values is.
    pub fn write<T: Scalar>(&self, host: &[T], into: &mut Buffer<T>) -> Result<()> {
        if host.len() != into.len() {
            return Err(Error::shape(
                "write",
                format!("{} host values into a buffer of {}", host.len(), into.len()),
            ));
        }
        self.refuse_in_capture("a copy from the host")?;
        self.count_upload::<T>(host.len());
        match (self, into) {
            (Device::Cuda(backend), Buffer::Cuda(slice)) => {
                backend.stream().memcpy_htod(host, slice)?;
                Ok(())
            }
            (Device::Cpu | Device::Emulated(_), Buffer::Host(v)) => {
                v.copy_from_slice(host);
                Ok(())
            }
            (other, buffer) => Err(Error::DeviceMismatch {
                op: "write",
                expected: other.memory_location().into(),
                found: buffer.location().into(),
            }),
        }
    }

    /// Copies a buffer of this device to the host.
    pub fn download<T: Scalar>(&self, buffer: &Buffer<T>) -> Result<Vec<T>> {
        if let Some(counters) = self.counting() {
            counters.device_to_host(buffer.len() * size_of::<T>());
        }
        self.refuse_in_capture("a download")?;
        match (self, buffer) {
            (_, Buffer::Host(v)) => Ok(v.clone()),
            (Device::Cuda(backend), Buffer::Cuda(s)) => Ok(backend.stream().clone_dtoh(s)?),
            (other, Buffer::Cuda(_)) => Err(Error::DeviceMismatch {
                op: "download",
                expected: other.memory_location().into(),
                found: "cuda".into(),
            }),
        }
    }

    /// A copy of a buffer of this device, on this device (one allocation, a device-to-device
    /// copy).
    pub fn duplicate<T: Scalar>(&self, buffer: &Buffer<T>) -> Result<Buffer<T>> {
        if let Some(counters) = self.counting() {
            counters.device_to_device(buffer.len() * size_of::<T>());
        }
        match (self, buffer) {
            (Device::Cuda(backend), Buffer::Cuda(s)) => {
                let stream = backend.stream();
                Ok(match self.cached::<T>(s.len()) {
                    Some(mut copy) => {
                        if let Buffer::Cuda(d) = &mut copy {
                            stream.memcpy_dtod(s, d)?;
                        }
                        copy
                    }
                    None => {
                        self.refuse_in_capture("a fresh allocation")?;
                        self.fresh(Buffer::Cuda(stream.clone_dtod(s)?))?
                    }
                })
            }
            (Device::Emulated(_), Buffer::Host(v)) => Ok(match self.cached::<T>(v.len()) {
                Some(mut copy) => {
                    copy.host_slice_mut().copy_from_slice(v);
                    copy
                }
                None => self.fresh(Buffer::Host(v.clone()))?,
            }),
            (Device::Cpu, Buffer::Host(v)) => Ok(Buffer::Host(v.clone())),
            (other, buffer) => Err(Error::DeviceMismatch {
                op: "duplicate",
                expected: other.memory_location().into(),
                found: buffer.location().into(),
            }),
        }
    }

    /// Counts a copy within the device's memory (a packing copy between buffers).
    pub(crate) fn count_device_to_device(&self, bytes: usize) {
        if let Some(counters) = self.counting() {
            counters.device_to_device(bytes);
        }
    }

    /// Counts one cuBLAS call (or the host GEMM that stands in for it on the emulated device).
    pub(crate) fn count_blas_call(&self) {
        if let Some(counters) = self.counting() {
            counters.blas_call();
        }
    }

    /// Shared memory (static plus dynamic) one block of a kernel that opts in
    /// ([`KernelRef::with_large_shared`]) may use on this device: the CUDA device's opt-in limit,
    /// [`MAX_OPT_IN_SHARED_BYTES`] (sm_90's) on the emulated and CPU devices.
    pub fn max_opt_in_shared_bytes(&self) -> u32 {
        match self {
            Device::Cuda(backend) => backend.max_opt_in_shared_bytes(),
            _ => MAX_OPT_IN_SHARED_BYTES,
        }
    }

    /// Waits for queued work (no-op off CUDA).
    pub fn synchronize(&self) -> Result<()> {
        self.refuse_in_capture("a host synchronisation")?;
        if let Device::Cuda(backend) = self {
            backend.stream().synchronize()?;
        }
        Ok(())
    }

    /// Launches `kernel` with `config` and `args` (in the kernel's parameter order). The shared
    /// launch path of the CUDA and emulated devices: it checks the kernel exists, the launch
    /// shape is legal and every buffer lives on this device, then hands over.
    pub fn launch(
        &self,
        kernel: KernelRef,
        config: LaunchConfig,
        args: &mut [KernelArg<'_>],
    ) -> Result<()> {
        let family = kernels::family(kernel.family).ok_or(Error::KernelNotFound {
            family: kernel.family,
            name: kernel.name,
        })?;
        if !family.entry_points.contains(&kernel.name) {
            return Err(Error::KernelNotFound {
                family: kernel.family,
                name: kernel.name,
            });
        }
        let threads = config.threads_per_block();
        if threads == 0 || threads > 1024 || config.grid.contains(&0) {
            return Err(Error::argument(
                "launch",
                format!(
                    "{}: grid {:?} × block {:?} (1..1024 threads per block, no empty grid)",
                    kernel.name, config.grid, config.block
                ),
            ));
        }
        let static_bytes = family
            .resources
            .iter()
            .find(|r| r.kernel == kernel.name)
            .map_or(0, |r| r.shared_bytes);
        launch::check_shared_bytes(
            kernel,
            &config,
            static_bytes,
            self.max_opt_in_shared_bytes(),
        )?;
        let expected = self.memory_location();
        if let Some(found) = args
            .iter()
            .filter_map(KernelArg::location)
            .find(|l| *l != expected)
        {
            return Err(Error::DeviceMismatch {
                op: kernel.name,
                expected: expected.into(),
                found: found.into(),
            });
        }
        if let Some(counters) = self.counting() {
            counters.launch();
        }
        match self {
            Device::Cuda(backend) => backend.launch(kernel, config, args),
            Device::Emulated(emulator) => emulator.launch(kernel, config, args),
            Device::Cpu => Err(Error::argument(
                "launch",
                format!(
                    "{}: the CPU device runs the reference implementations, not kernels",
                    kernel.name
                ),
            )),
        }
    }
}
