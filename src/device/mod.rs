//! The three devices every op dispatches on (docs/architecture.md):
//! - [`Device::Cpu`]: the plain-Rust reference implementations;
//! - [`Device::Cuda`]: a cudarc context, stream, cuBLAS handle and lazy module cache;
//! - [`Device::Emulated`]: the same `.cu` kernels compiled for the host (test-only, provided by
//!   the `asif-emulator` crate), device memory being host memory.
//!
//! CUDA and emulated devices share [`Device::launch`]; only its last step differs.
mod buffer;
mod cuda;
mod emulated;
mod launch;

use std::sync::Arc;

pub use buffer::{Buffer, Scalar};
pub use cuda::CudaBackend;
pub use emulated::{Emulator, EmulatorLaunchFn};
pub use launch::{KernelArg, LaunchConfig, MAX_DEFAULT_SHARED_BYTES};

use crate::kernels::{self, KernelRef};
use crate::{Error, Result};

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

    /// A buffer of `len` zeros.
    pub fn zeros<T: Scalar>(&self, len: usize) -> Result<Buffer<T>> {
        match self {
            Device::Cuda(backend) => Ok(Buffer::Cuda(backend.stream().alloc_zeros::<T>(len)?)),
            Device::Cpu | Device::Emulated(_) => Ok(Buffer::Host(vec![T::default(); len])),
        }
    }

    /// Copies host data to this device.
    pub fn upload<T: Scalar>(&self, host: &[T]) -> Result<Buffer<T>> {
        match self {
            Device::Cuda(backend) => Ok(Buffer::Cuda(backend.stream().clone_htod(host)?)),
            Device::Cpu | Device::Emulated(_) => Ok(Buffer::Host(host.to_vec())),
        }
    }

    /// Copies a buffer of this device to the host.
    pub fn download<T: Scalar>(&self, buffer: &Buffer<T>) -> Result<Vec<T>> {
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

    /// Waits for queued work (no-op off CUDA).
    pub fn synchronize(&self) -> Result<()> {
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
        if config.shared_bytes > MAX_DEFAULT_SHARED_BYTES {
            return Err(Error::argument(
                "launch",
                format!(
                    "{}: {} bytes of dynamic shared memory (at most {MAX_DEFAULT_SHARED_BYTES})",
                    kernel.name, config.shared_bytes
                ),
            ));
        }
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
