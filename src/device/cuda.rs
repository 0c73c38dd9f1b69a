//! The CUDA device: context, stream, cuBLAS handle (lazy) and a lazy per-family module cache.
//!
//! cudarc loads the driver and libraries by name at run time and panics when one is absent, so
//! every entry point here checks presence first and returns [`Error::CudaUnavailable`].
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, PushKernelArg};
use cudarc::nvrtc::Ptx;

use super::{Buffer, Counters, KernelArg, LaunchConfig, MemoryCache, Scalar};
use crate::kernels::{self, KernelRef};
use crate::{Error, Result};

pub struct CudaBackend {
    ordinal: usize,
    name: String,
    compute_capability: (i32, i32),
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: Mutex<Option<Arc<CudaBlas>>>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    counters: Counters,
    poison_uninitialized: AtomicBool,
    /// Shared memory one block may opt in to (`CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN`,
    /// at most `MAX_OPT_IN_SHARED_BYTES`).
    max_opt_in_shared: u32,
    /// Per opted-in kernel, the dynamic shared bytes its function attribute allows so far: the
    /// attribute is set once per function (again only for a larger launch).
    shared_opt_ins: Mutex<HashMap<&'static str, u32>>,
    /// Free device memory kept for reuse (`cache.rs`).
    cache: Arc<MemoryCache>,
    /// Set while `Device::run_step_graph` captures the stream (`graph.rs`): fresh allocations,
    /// downloads, synchronisation and general uploads are refused.
    pub(crate) capturing: AtomicBool,
    /// cuBLAS's fixed workspace (`blas`), kept as long as the handle.
    blas_workspace: Mutex<Option<cudarc::driver::CudaSlice<u8>>>,
}

/// cuBLAS's workspace: 32 MiB, what NVIDIA recommends on Hopper; a fixed workspace keeps cuBLAS
/// from allocating during a graph capture.
const BLAS_WORKSPACE_BYTES: usize = 32 << 20;

/// The environment variable that turns the poison mode on for every CUDA device the process
/// opens (`Device::uninitialized`); the GPU script sets it.
pub const POISON_UNINITIALIZED_ENV: &str = "ASIF_POISON_UNINIT";

/// Whether a CUDA library can be opened, asked before cudarc's first call into it (under cudarc's
/// `dynamic-loading`, that call panics on a missing library). Under cudarc's `dynamic-linking`
/// (this crate's feature `cuda-dynamic-linking`, which `candle-cuda` turns on, as candle's CUDA
/// build does) the libraries are linked into the program and cudarc has no probe: they are
/// present whenever the program runs.
macro_rules! library_present {
    ($library:ident) => {{
        #[cfg(feature = "cuda-dynamic-linking")]
        let present = true;
        // SAFETY: only probes whether the library can be opened.
        #[cfg(not(feature = "cuda-dynamic-linking"))]
        let present = unsafe { cudarc::$library::sys::is_culib_present() };
        present
    }};
}

impl CudaBackend {
    pub fn new(ordinal: usize) -> Result<Self> {
        if !library_present!(driver) {
            return Err(Error::CudaUnavailable(
                "the CUDA driver library (libcuda.so) is not installed on this machine".into(),
            ));
        }
        let context = CudaContext::new(ordinal)
            .map_err(|e| Error::CudaUnavailable(format!("cannot open GPU {ordinal}: {e}")))?;
        let stream = context.default_stream();
        Self::with_stream(stream)
    }

    /// A backend on a caller's stream (and so on that stream's context): every launch, cuBLAS
    /// call, allocation and copy of this backend queues on `stream` (docs/interop.md).
    pub fn from_stream(stream: Arc<CudaStream>) -> Result<Self> {
        Self::with_stream(stream)
    }

    fn with_stream(stream: Arc<CudaStream>) -> Result<Self> {
        let context = stream.context().clone();
        let ordinal = context.ordinal();
        let compute_capability = context.compute_capability()?;
        let name = context.name().unwrap_or_else(|_| "unknown GPU".into());
        let max_opt_in_shared = context
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_or(super::MAX_DEFAULT_SHARED_BYTES, |bytes| bytes.max(0) as u32)
            .min(super::MAX_OPT_IN_SHARED_BYTES);
        Ok(CudaBackend {
            ordinal,
            name,
            compute_capability,
            context,
            blas: Mutex::new(None),
            modules: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            poison_uninitialized: AtomicBool::new(
                std::env::var(POISON_UNINITIALIZED_ENV).is_ok_and(|v| !v.is_empty() && v != "0"),
            ),
            max_opt_in_shared,
            shared_opt_ins: Mutex::new(HashMap::new()),
            cache: MemoryCache::cuda(stream.clone()),
            capturing: AtomicBool::new(false),
            blas_workspace: Mutex::new(None),
            stream,
        })
    }

    /// Shared memory (static plus dynamic) one block of an opted-in kernel may use here.
    pub fn max_opt_in_shared_bytes(&self) -> u32 {
        self.max_opt_in_shared
    }

    /// Raises `function`'s dynamic shared-memory limit to `bytes` unless an earlier launch of the
    /// kernel raised it as far already.
    fn opt_in_shared(&self, kernel: KernelRef, function: &CudaFunction, bytes: u32) -> Result<()> {
        let mut allowed = self
            .shared_opt_ins
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let entry = allowed
            .entry(kernel.name)
            .or_insert(super::MAX_DEFAULT_SHARED_BYTES);
        if bytes > *entry {
            function.set_attribute(
                cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                bytes as i32,
            )?;
            *entry = bytes;
        }
        Ok(())
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// This device's memory cache (`cache.rs`).
    pub fn memory_cache(&self) -> &Arc<MemoryCache> {
        &self.cache
    }

    /// Fills `slice` with `T::POISON` on the stream: a 32-bit memset for the 4-byte scalars (no
    /// host memory involved, so it can be captured in a CUDA graph), else a copy from the host.
    pub(crate) fn fill_poison<T: Scalar>(
        &self,
        slice: &mut cudarc::driver::CudaSlice<T>,
    ) -> Result<()> {
        self.fill_word(slice, T::POISON)
    }

    /// Fills `slice` with `value`: a 32-bit memset for a 4-byte `T` (capturable), else a copy
    /// from the host.
    pub(crate) fn fill_word<T: Scalar>(
        &self,
        slice: &mut cudarc::driver::CudaSlice<T>,
        value: T,
    ) -> Result<()> {
        use cudarc::driver::DevicePtrMut;
        let len = slice.len();
        let poison = [value];
        match bytemuck::try_cast_slice::<T, u32>(&poison) {
            Ok(&[bits]) => {
                self.context.bind_to_thread()?;
                let (ptr, _record) = slice.device_ptr_mut(&self.stream);
                // SAFETY: `ptr` holds `len` 4-byte elements; the memset is queued on the stream
                // the slice is used on.
                unsafe {
                    cudarc::driver::sys::cuMemsetD32Async(ptr, bits, len, self.stream.cu_stream())
                }
                .result()?;
            }
            _ => self.stream.memcpy_htod(&vec![value; len], slice)?,
        }
        Ok(())
    }

    /// Whether `Device::uninitialized` fills its buffers with `Scalar::POISON` first.
    pub fn poison_uninitialized(&self) -> bool {
        self.poison_uninitialized.load(Ordering::Relaxed)
    }
    pub fn set_poison_uninitialized(&self, poison: bool) {
        self.poison_uninitialized.store(poison, Ordering::Relaxed);
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }
    pub fn device_name(&self) -> &str {
        &self.name
    }
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.context
    }
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The cuBLAS handle, created on first use.
    pub fn blas(&self) -> Result<Arc<CudaBlas>> {
        let mut slot = self.blas.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(blas) = slot.as_ref() {
            return Ok(blas.clone());
        }
        if !library_present!(cublas) {
            return Err(Error::CudaUnavailable(
                "the cuBLAS library (libcublas.so) is not on the loader path".into(),
            ));
        }
        let blas = Arc::new(CudaBlas::new(self.stream.clone())?);
        // A fixed workspace, eager or captured (`graph.rs`).
        // SAFETY: cuBLAS's scratch memory; nothing reads it before cuBLAS writes it.
        let workspace = unsafe { self.stream.alloc::<u8>(BLAS_WORKSPACE_BYTES) }?;
        {
            use cudarc::driver::DevicePtr;
            let (ptr, _record) = workspace.device_ptr(&self.stream);
            // SAFETY: a live allocation of `BLAS_WORKSPACE_BYTES` on the handle's stream, kept
            // in `blas_workspace` as long as the handle.
            unsafe {
                cudarc::cublas::sys::cublasSetWorkspace_v2(
                    *blas.handle(),
                    ptr as *mut std::ffi::c_void,
                    BLAS_WORKSPACE_BYTES,
                )
            }
            .result()?;
        }
        *self
            .blas_workspace
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(workspace);
        *slot = Some(blas.clone());
        Ok(blas)
    }

    /// The module of a kernel family: the sm_90 cubin on sm_90, else the embedded PTX, else the
    /// embedded source compiled now with NVRTC.
    fn module(&self, family_name: &'static str) -> Result<Arc<CudaModule>> {
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(module) = modules.get(family_name) {
            return Ok(module.clone());
        }
        let family = kernels::family(family_name).ok_or(Error::KernelNotFound {
            family: family_name,
            name: "",
        })?;
        let image = match (family.cubin_sm90, family.ptx) {
            (Some(cubin), _) if self.compute_capability == (9, 0) => {
                Ptx::from_binary(cubin.to_vec())
            }
            (_, Some(ptx)) => Ptx::from_src(ptx),
            _ => self.compile_at_run_time(family)?,
        };
        let module = self.context.load_module(image)?;
        modules.insert(family_name, module.clone());
        Ok(module)
    }

    fn compile_at_run_time(&self, family: &kernels::KernelFamily) -> Result<Ptx> {
        if !library_present!(nvrtc) {
            return Err(Error::CudaUnavailable(format!(
                "kernel family `{}` was built without NVRTC and libnvrtc.so is not on the loader path to compile it now",
                family.name
            )));
        }
        let (major, minor) = self.compute_capability;
        let options = cudarc::nvrtc::CompileOptions {
            options: vec![
                format!("--gpu-architecture=compute_{major}{minor}"),
                "--std=c++17".into(),
            ],
            ..Default::default()
        };
        cudarc::nvrtc::compile_ptx_with_opts(family.source, options)
            .map_err(|e| Error::Nvrtc(format!("{}: {e:?}", family.name)))
    }

    fn function(&self, kernel: KernelRef) -> Result<CudaFunction> {
        let module = self.module(kernel.family)?;
        module
            .load_function(kernel.name)
            .map_err(|_| Error::KernelNotFound {
                family: kernel.family,
                name: kernel.name,
            })
    }

    pub(crate) fn launch(
        &self,
        kernel: KernelRef,
        config: LaunchConfig,
        args: &mut [KernelArg<'_>],
    ) -> Result<()> {
        let function = self.function(kernel)?;
        if kernel.large_shared {
            self.opt_in_shared(kernel, &function, config.shared_bytes)?;
        }
        let mut builder = self.stream.launch_builder(&function);
        for arg in args.iter_mut() {
            match arg {
                KernelArg::F32In(b) => builder.arg(cuda_slice(b)?),
                KernelArg::F32Out(b) => builder.arg(cuda_slice_mut(b)?),
                KernelArg::I32In(b) => builder.arg(cuda_slice(b)?),
                KernelArg::I32Out(b) => builder.arg(cuda_slice_mut(b)?),
                KernelArg::U64In(b) => builder.arg(cuda_slice(b)?),
                KernelArg::U64Out(b) => builder.arg(cuda_slice_mut(b)?),
                KernelArg::I32(v) => builder.arg(&*v),
                KernelArg::U32(v) => builder.arg(&*v),
                KernelArg::U64(v) => builder.arg(&*v),
                KernelArg::F32(v) => builder.arg(&*v),
            };
        }
        let config = cudarc::driver::LaunchConfig {
            grid_dim: (config.grid[0], config.grid[1], config.grid[2]),
            block_dim: (config.block[0], config.block[1], config.block[2]),
            shared_mem_bytes: config.shared_bytes,
        };
        // SAFETY: the op's launcher passes arguments in the kernel's parameter order and type and
        // checked every buffer's length against what the kernel touches.
        unsafe { builder.launch(config) }?;
        Ok(())
    }
}

fn cuda_slice<T: super::Scalar>(buffer: &Buffer<T>) -> Result<&cudarc::driver::CudaSlice<T>> {
    match buffer {
        Buffer::Cuda(s) => Ok(s),
        Buffer::Host(_) => Err(location_error()),
    }
}

fn cuda_slice_mut<T: super::Scalar>(
    buffer: &mut Buffer<T>,
) -> Result<&mut cudarc::driver::CudaSlice<T>> {
    match buffer {
        Buffer::Cuda(s) => Ok(s),
        Buffer::Host(_) => Err(location_error()),
    }
}

fn location_error() -> Error {
    Error::DeviceMismatch {
        op: "launch",
        expected: "cuda".into(),
        found: "host".into(),
    }
}
