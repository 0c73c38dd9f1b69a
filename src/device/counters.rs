//! What a device did, counted as it does it: kernel launches, cuBLAS calls, memsets, allocations
//! and the bytes that crossed between host and device.
//!
//! The CUDA and emulated devices count the same events at the same places (`Device::launch`,
//! `Device::zeros`, `Device::uninitialized`, `Device::upload`, `Device::download`, the GEMM
//! dispatch), so a test on the emulator pins what the GPU does: a lost fusion (one launch more), a
//! memset before a kernel that overwrites its output anyway, a hidden round trip through the host.
//! The CPU reference device counts nothing. Clones of one device share one set of counters.
//!
//! Each counter is a relaxed atomic add: cheap enough to stay on in release builds.
use std::ops::Sub;
use std::sync::atomic::{AtomicU64, Ordering};

/// The live counters of one device (shared by its clones). Read them with [`Counters::snapshot`].
/// `Send + Sync` (relaxed atomics).
#[derive(Debug, Default)]
pub struct Counters {
    launches: AtomicU64,
    blas_calls: AtomicU64,
    memsets: AtomicU64,
    allocations: AtomicU64,
    bytes_allocated: AtomicU64,
    fresh_allocations: AtomicU64,
    bytes_freshly_allocated: AtomicU64,
    bytes_host_to_device: AtomicU64,
    bytes_device_to_host: AtomicU64,
    bytes_device_to_device: AtomicU64,
}

/// The counters at one moment; subtract two snapshots (`after - before`, or
/// [`CounterSnapshot::since`]) for what happened in between.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Kernel launches through `Device::launch` (the crate's own `.cu` kernels).
    pub launches: u64,
    /// cuBLAS calls (`sgemm`); on the emulated device, the host GEMM that stands in for cuBLAS.
    /// Counted apart from `launches`: one cuBLAS call may launch more than one kernel.
    pub blas_calls: u64,
    /// Memsets: every zeroed allocation (`Device::zeros`) is one. The NaN fill of the poison mode
    /// is a test aid and is not counted.
    pub memsets: u64,
    /// Device allocations: zeroed, uninitialised, uploads and copies, whether the memory cache
    /// served them or not.
    pub allocations: u64,
    /// Bytes of those allocations.
    pub bytes_allocated: u64,
    /// The allocations of `allocations` that the memory cache could not serve (`cache.rs`): new
    /// memory from the driver (CUDA) or the host allocator (emulated). A step of fixed shapes
    /// makes none from its second run on.
    pub fresh_allocations: u64,
    /// Bytes of those fresh allocations.
    pub bytes_freshly_allocated: u64,
    /// Bytes copied from the host to the device (uploads).
    pub bytes_host_to_device: u64,
    /// Bytes copied from the device to the host (downloads).
    pub bytes_device_to_host: u64,
    /// Bytes copied within the device (a shared tensor's buffer copied before it is written).
    pub bytes_device_to_device: u64,
}

impl Counters {
    pub(crate) const fn new() -> Self {
        Counters {
            launches: AtomicU64::new(0),
            blas_calls: AtomicU64::new(0),
            memsets: AtomicU64::new(0),
            allocations: AtomicU64::new(0),
            bytes_allocated: AtomicU64::new(0),
            fresh_allocations: AtomicU64::new(0),
            bytes_freshly_allocated: AtomicU64::new(0),
            bytes_host_to_device: AtomicU64::new(0),
            bytes_device_to_host: AtomicU64::new(0),
            bytes_device_to_device: AtomicU64::new(0),
        }
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            launches: read(&self.launches),
            blas_calls: read(&self.blas_calls),
            memsets: read(&self.memsets),
            allocations: read(&self.allocations),
            bytes_allocated: read(&self.bytes_allocated),
            fresh_allocations: read(&self.fresh_allocations),
            bytes_freshly_allocated: read(&self.bytes_freshly_allocated),
            bytes_host_to_device: read(&self.bytes_host_to_device),
            bytes_device_to_host: read(&self.bytes_device_to_host),
            bytes_device_to_device: read(&self.bytes_device_to_device),
        }
    }

    fn add(counter: &AtomicU64, amount: usize) {
        counter.fetch_add(amount as u64, Ordering::Relaxed);
    }
    pub(crate) fn launch(&self) {
        Self::add(&self.launches, 1);
    }
    pub(crate) fn blas_call(&self) {
        Self::add(&self.blas_calls, 1);
    }
    pub(crate) fn memset(&self) {
        Self::add(&self.memsets, 1);
    }
    pub(crate) fn allocation(&self, bytes: usize) {
        Self::add(&self.allocations, 1);
        Self::add(&self.bytes_allocated, bytes);
    }
    /// One allocation of `allocation` that the memory cache could not serve.
    pub(crate) fn fresh_allocation(&self, bytes: usize) {
        Self::add(&self.fresh_allocations, 1);
        Self::add(&self.bytes_freshly_allocated, bytes);
    }
    pub(crate) fn host_to_device(&self, bytes: usize) {
        Self::add(&self.bytes_host_to_device, bytes);
    }
    pub(crate) fn device_to_host(&self, bytes: usize) {
        Self::add(&self.bytes_device_to_host, bytes);
    }
    pub(crate) fn device_to_device(&self, bytes: usize) {
        Self::add(&self.bytes_device_to_device, bytes);
    }
}

impl CounterSnapshot {
    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &CounterSnapshot) -> CounterSnapshot {
        *self - *earlier
    }

    /// Bytes copied between host and device, either way.
    pub fn bytes_copied_host_device(&self) -> u64 {
        self.bytes_host_to_device + self.bytes_device_to_host
    }
}

impl Sub for CounterSnapshot {
    type Output = CounterSnapshot;
    /// Field by field; saturating, so subtracting in the wrong order gives zeros, not a panic.
    fn sub(self, earlier: CounterSnapshot) -> CounterSnapshot {
        CounterSnapshot {
            launches: self.launches.saturating_sub(earlier.launches),
            blas_calls: self.blas_calls.saturating_sub(earlier.blas_calls),
            memsets: self.memsets.saturating_sub(earlier.memsets),
            allocations: self.allocations.saturating_sub(earlier.allocations),
            bytes_allocated: self.bytes_allocated.saturating_sub(earlier.bytes_allocated),
            fresh_allocations: self
                .fresh_allocations
                .saturating_sub(earlier.fresh_allocations),
            bytes_freshly_allocated: self
                .bytes_freshly_allocated
                .saturating_sub(earlier.bytes_freshly_allocated),
            bytes_host_to_device: self
                .bytes_host_to_device
                .saturating_sub(earlier.bytes_host_to_device),
            bytes_device_to_host: self
                .bytes_device_to_host
                .saturating_sub(earlier.bytes_device_to_host),
            bytes_device_to_device: self
                .bytes_device_to_device
                .saturating_sub(earlier.bytes_device_to_device),
        }
    }
}
