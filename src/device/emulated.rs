//! The emulated device: kernels run on the host through `asif_emulator::launch`.
use std::ffi::c_void;
use std::sync::Arc;

use super::{Counters, KernelArg, LaunchConfig, MemoryCache};
use crate::kernels::KernelRef;
use crate::{Error, Result};

/// `asif_emulator::launch`: kernel name, grid, block, dynamic shared bytes, CUDA-style argument
/// pointers (`args[i]` points at the i-th argument's value).
pub type EmulatorLaunchFn =
    unsafe fn(&str, [u32; 3], [u32; 3], u32, &[*mut c_void]) -> std::result::Result<(), String>;

/// The emulator's launch function, this device's counters and its memory cache (host vectors,
/// `cache.rs`), shared by its clones.
#[derive(Clone)]
pub struct Emulator {
    launch: EmulatorLaunchFn,
    counters: Arc<Counters>,
    cache: Arc<MemoryCache>,
    /// Set while `Device::run_step_graph` runs a step: the emulator has no graphs and runs it
    /// eagerly, but refuses what a CUDA capture would (`graph.rs`), so the emulated tests check
    /// that a step can be captured.
    pub(crate) capturing: Arc<std::sync::atomic::AtomicBool>,
    /// While `Device::run_step_graph` runs a step, and while `TrainStep` checks a replay here:
    /// every launch and GEMM with its arguments, the launches a CUDA graph of the step would hold.
    pub(crate) trace: Arc<std::sync::Mutex<Option<Vec<LaunchRecord>>>>,
}

/// One kernel launch (or host GEMM standing in for a cuBLAS call) as a CUDA graph would hold it:
/// the kernel, its launch shape and every argument's value (buffer addresses and scalars, each in
/// a 64-bit slot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchRecord {
    pub kernel: &'static str,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
    pub arguments: Vec<u64>,
}

impl Emulator {
    pub fn new(launch: EmulatorLaunchFn) -> Self {
        Emulator {
            launch,
            counters: Arc::new(Counters::default()),
            cache: MemoryCache::host(),
            capturing: Arc::default(),
            trace: Arc::default(),
        }
    }

    /// Starts recording launches (`LaunchRecord`), dropping any recorded before.
    pub(crate) fn start_trace(&self) {
        *self.traced() = Some(Vec::new());
    }

    /// Stops recording and returns what was recorded since `start_trace`.
    pub(crate) fn take_trace(&self) -> Vec<LaunchRecord> {
        self.traced().take().unwrap_or_default()
    }

    fn traced(&self) -> std::sync::MutexGuard<'_, Option<Vec<LaunchRecord>>> {
        self.trace.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one launch while a trace is on.
    pub(crate) fn record(&self, record: impl FnOnce() -> LaunchRecord) {
        if let Some(trace) = self.traced().as_mut() {
            trace.push(record());
        }
    }

    /// This device's memory cache.
    pub fn memory_cache(&self) -> &Arc<MemoryCache> {
        &self.cache
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub(crate) fn launch(
        &self,
        kernel: KernelRef,
        config: LaunchConfig,
        args: &mut [KernelArg<'_>],
    ) -> Result<()> {
        // Each argument's value in its own 8-byte slot; scalars sit in the low bytes, which is
        // where a 4-byte read of the slot finds them on a little-endian host.
        let mut slots: Vec<u64> = args
            .iter_mut()
            .map(|arg| match arg {
                KernelArg::F32In(b) => b.host_slice().as_ptr() as u64,
                KernelArg::F32Out(b) => b.host_slice_mut().as_mut_ptr() as u64,
                KernelArg::I32In(b) => b.host_slice().as_ptr() as u64,
                KernelArg::I32Out(b) => b.host_slice_mut().as_mut_ptr() as u64,
                KernelArg::U64In(b) => b.host_slice().as_ptr() as u64,
                KernelArg::U64Out(b) => b.host_slice_mut().as_mut_ptr() as u64,
                KernelArg::I32(v) => *v as u32 as u64,
                KernelArg::U32(v) => *v as u64,
                KernelArg::U64(v) => *v,
                KernelArg::F32(v) => v.to_bits() as u64,
            })
            .collect();
        self.record(|| LaunchRecord {
            kernel: kernel.name,
            grid: config.grid,
            block: config.block,
            shared_bytes: config.shared_bytes,
            arguments: slots.clone(),
        });
        let pointers: Vec<*mut c_void> = slots
            .iter_mut()
            .map(|slot| slot as *mut u64 as *mut c_void)
            .collect();
        // A family another crate registered runs through its own host build (`kernels::register`).
        if let Some(result) = crate::kernels::launch_registered_emulated(
            kernel,
            config.grid,
            config.block,
            config.shared_bytes,
            &pointers,
        ) {
            return result.map_err(Error::Emulator);
        }
        // SAFETY: the op's launcher passes arguments in the kernel's parameter order and type, and
        // checked every buffer's length against what the kernel touches; `Device::launch` checked
        // that every buffer is host memory. The buffers outlive the (synchronous) call.
        unsafe {
            (self.launch)(
                kernel.name,
                config.grid,
                config.block,
                config.shared_bytes,
                &pointers,
            )
        }
        .map_err(Error::Emulator)
    }
}
