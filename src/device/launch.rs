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
        KernelVersion::V2 => (v2, vector_launch(len, inputs)),
    })
}
