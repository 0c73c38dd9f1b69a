//! The launch path shared by the CUDA and emulated devices: a kernel name, a launch shape and the
//! arguments in the kernel's order. Only the last step differs (cudarc vs. the host emulator), so
//! every emulated test exercises the real grid, block, shared-memory and argument code.
use super::buffer::Buffer;
use crate::kernel_version::{self, KernelVersion};
use crate::kernels::KernelRef;
use crate::Result;

/// Grid, block and dynamic shared memory of one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
}

/// Largest dynamic shared memory a launch may ask for without an opt-in attribute.
pub const MAX_DEFAULT_SHARED_BYTES: u32 = 48 * 1024;

/// Largest shared memory (static plus dynamic) one block of a kernel that opts in
/// ([`KernelRef::with_large_shared`]) may use: sm_90's 227 KB. A CUDA device with less
/// (`CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN`) lowers it.
pub const MAX_OPT_IN_SHARED_BYTES: u32 = 227 * 1024;

/// Checks a launch's dynamic shared memory: at most [`MAX_DEFAULT_SHARED_BYTES`] unless the
/// kernel opts in, then at most `opt_in_limit` together with the kernel's static shared memory
/// (`static_bytes`, from ptxas' report when NVRTC built the kernels, else 0).
pub(crate) fn check_shared_bytes(
    kernel: KernelRef,
    config: &LaunchConfig,
    static_bytes: u32,
    opt_in_limit: u32,
) -> Result<()> {
    let dynamic = config.shared_bytes;
    if !kernel.large_shared && dynamic > MAX_DEFAULT_SHARED_BYTES {
        return Err(crate::Error::argument(
            "launch",
            format!(
                "{}: {dynamic} bytes of dynamic shared memory (at most {MAX_DEFAULT_SHARED_BYTES} for a kernel that does not opt in)",
                kernel.name
            ),
        ));
    }
    if kernel.large_shared && u64::from(dynamic) + u64::from(static_bytes) > u64::from(opt_in_limit)
    {
        return Err(crate::Error::argument(
            "launch",
            format!(
                "{}: {dynamic} bytes of dynamic and {static_bytes} of static shared memory (at most {opt_in_limit} in all on this device)",
                kernel.name
            ),
        ));
    }
    Ok(())
}

impl LaunchConfig {
    /// A 1-D launch.
    pub fn linear(blocks: u32, threads: u32) -> Self {
        LaunchConfig {
            grid: [blocks, 1, 1],
            block: [threads, 1, 1],
            shared_bytes: 0,
        }
    }
    /// A 1-D grid-stride launch over `len` elements with 256 threads per block.
    pub fn grid_stride(len: usize) -> Self {
        let blocks = len.div_ceil(256).clamp(1, 65_535) as u32;
        Self::linear(blocks, 256)
    }
    pub fn threads_per_block(&self) -> u32 {
        self.block.iter().product()
    }
}

/// One kernel argument, in the kernel's parameter order.
#[derive(Debug)]
pub enum KernelArg<'a> {
    /// `const float*`
    F32In(&'a Buffer<f32>),
    /// `float*`
    F32Out(&'a mut Buffer<f32>),
    /// `const int*`
    I32In(&'a Buffer<i32>),
    /// `int*`
    I32Out(&'a mut Buffer<i32>),
    /// `const unsigned long long*` (a device step counter the kernel reads: `StepCounter`)
    U64In(&'a Buffer<u64>),
    /// `unsigned long long*` (a device step counter the kernel advances)
    U64Out(&'a mut Buffer<u64>),
    I32(i32),
    U32(u32),
    /// `unsigned long long` (seeds of counter-based RNGs).
    U64(u64),
    F32(f32),
}

impl<'a> From<&'a Buffer<f32>> for KernelArg<'a> {
    fn from(b: &'a Buffer<f32>) -> Self {
        KernelArg::F32In(b)
    }
}
impl<'a> From<&'a mut Buffer<f32>> for KernelArg<'a> {
    fn from(b: &'a mut Buffer<f32>) -> Self {
        KernelArg::F32Out(b)
    }
}
impl<'a> From<&'a Buffer<i32>> for KernelArg<'a> {
    fn from(b: &'a Buffer<i32>) -> Self {
        KernelArg::I32In(b)
    }
}
impl<'a> From<&'a mut Buffer<i32>> for KernelArg<'a> {
    fn from(b: &'a mut Buffer<i32>) -> Self {
        KernelArg::I32Out(b)
    }
}
impl<'a> From<&'a Buffer<u64>> for KernelArg<'a> {
    fn from(b: &'a Buffer<u64>) -> Self {
        KernelArg::U64In(b)
    }
}
impl<'a> From<&'a mut Buffer<u64>> for KernelArg<'a> {
    fn from(b: &'a mut Buffer<u64>) -> Self {
        KernelArg::U64Out(b)
    }
}
impl From<i32> for KernelArg<'_> {
    fn from(v: i32) -> Self {
        KernelArg::I32(v)
    }
}
impl From<u32> for KernelArg<'_> {
    fn from(v: u32) -> Self {
        KernelArg::U32(v)
    }
}
impl From<u64> for KernelArg<'_> {
    fn from(v: u64) -> Self {
        KernelArg::U64(v)
    }
}
impl From<f32> for KernelArg<'_> {
    fn from(v: f32) -> Self {
        KernelArg::F32(v)
    }
}

impl KernelArg<'_> {
    /// Where a buffer argument lives ("host"/"cuda"), `None` for scalars.
    pub(crate) fn location(&self) -> Option<&'static str> {
        match self {
            KernelArg::F32In(b) => Some(b.location()),
            KernelArg::F32Out(b) => Some(b.location()),
            KernelArg::I32In(b) => Some(b.location()),
            KernelArg::I32Out(b) => Some(b.location()),
            KernelArg::U64In(b) => Some(b.location()),
            KernelArg::U64Out(b) => Some(b.location()),
            _ => None,
        }
    }
}

/// `kernel_args![a, &mut b, n]` builds the argument array of a launch.
#[macro_export]
macro_rules! kernel_args {
    ($($arg:expr),* $(,)?) => {
        [$($crate::device::KernelArg::from($arg)),*]
    };
}

/// Threads per block of the v2 elementwise kernels (`ASIF_V2_BLOCK` in `kernels/vector_io.cuh`).
const VECTOR_BLOCK: usize = 256;
/// 128-bit loads one v2 thread issues per grid-stride step (`ASIF_V2_LOADS_PER_THREAD`), shared
/// among the kernel's inputs: 16 elements per thread with one input, 8 with two.
const VECTOR_LOADS_PER_THREAD: usize = 4;

/// The launch of a v2 elementwise kernel (`kernels/vector_io.cuh`, `asif_map_v2`) with `inputs`
/// (1 or 2) input arrays over `len` elements: 256 threads, one grid-stride step per thread when
/// the grid allows.
pub(crate) fn vector_launch(len: usize, inputs: usize) -> LaunchConfig {
    let elements_per_thread = 4 * VECTOR_LOADS_PER_THREAD / inputs.clamp(1, 2);
    let blocks = len
        .div_ceil(VECTOR_BLOCK * elements_per_thread)
        .clamp(1, 65_535) as u32;
    LaunchConfig::linear(blocks, VECTOR_BLOCK as u32)
}

/// The kernel and launch shape of an elementwise op with `inputs` input arrays over `len`
/// elements, for the version its family selects: v1 a scalar grid-stride kernel, v2 the 128-bit
/// one (`<v1 name>_v2`).
pub(crate) fn elementwise_launch(
    family: &'static str,
    v1: KernelRef,
    v2: KernelRef,
    len: usize,
    inputs: usize,
) -> Result<(KernelRef, LaunchConfig)> {
    Ok(match kernel_version::selected(family)? {
        KernelVersion::V1 => (v1, LaunchConfig::grid_stride(len)),
        // v3: HIE only (`kernel_version::selected` refuses it here).
        KernelVersion::V2 | KernelVersion::V3 => (v2, vector_launch(len, inputs)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: KernelRef = KernelRef::new("contrastive", "contrastive_forward_backward");
    const OPTED_IN: KernelRef = PLAIN.with_large_shared();

    fn with_shared(bytes: u32) -> LaunchConfig {
        LaunchConfig {
            shared_bytes: bytes,
            ..LaunchConfig::linear(1, 256)
        }
    }

    #[test]
    fn a_kernel_that_does_not_opt_in_stops_at_48_kb() {
        let limit = MAX_OPT_IN_SHARED_BYTES;
        assert!(
            check_shared_bytes(PLAIN, &with_shared(MAX_DEFAULT_SHARED_BYTES), 0, limit).is_ok()
        );
        let error = check_shared_bytes(PLAIN, &with_shared(MAX_DEFAULT_SHARED_BYTES + 4), 0, limit)
            .unwrap_err();
        assert!(matches!(error, crate::Error::Argument { .. }), "{error}");
        assert!(error.to_string().contains("does not opt in"), "{error}");
    }

    #[test]
    fn an_opted_in_kernel_takes_up_to_the_limit_with_its_static_shared_memory() {
        let limit = MAX_OPT_IN_SHARED_BYTES;
        assert!(check_shared_bytes(OPTED_IN, &with_shared(100 * 1024), 0, limit).is_ok());
        assert!(check_shared_bytes(OPTED_IN, &with_shared(limit), 0, limit).is_ok());
        assert!(check_shared_bytes(OPTED_IN, &with_shared(limit - 4096), 4096, limit).is_ok());
        for (dynamic, static_bytes) in [(limit + 4, 0), (limit - 4096, 4100), (u32::MAX, u32::MAX)]
        {
            let error = check_shared_bytes(OPTED_IN, &with_shared(dynamic), static_bytes, limit)
                .unwrap_err();
            assert!(matches!(error, crate::Error::Argument { .. }), "{error}");
        }
        // A device with less opt-in shared memory (sm_80: 163 KB) lowers the limit.
        assert!(check_shared_bytes(OPTED_IN, &with_shared(200 * 1024), 0, 163 * 1024).is_err());
    }
}
