//! The kernels embedded by `build.rs`: per family the flattened source, PTX for a portable arch,
//! a cubin for sm_90 and the ptxas resource report, when NVRTC was found at build time.

/// How the kernels were built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvrtcBuild {
    /// NVRTC compiled every family at build time.
    Compiled {
        nvrtc_version: (i32, i32),
        ptx_arch: &'static str,
        cubin_arch: &'static str,
    },
    /// NVRTC was not found: only sources are embedded, compiled at run time on a CUDA device.
    SourceOnly { reason: &'static str },
}

/// ptxas' resource report for one kernel entry point (sm_90 cubin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelResources {
    pub kernel: &'static str,
    pub registers: u32,
    /// Static shared memory in bytes (dynamic shared memory is set at launch).
    pub shared_bytes: u32,
    pub stack_bytes: u32,
    pub spill_store_bytes: u32,
    pub spill_load_bytes: u32,
}

/// One `kernels/<name>.cu` as embedded in the crate.
#[derive(Debug)]
pub struct KernelFamily {
    pub name: &'static str,
    /// Every `extern "C" __global__` entry point of the file, in file order.
    pub entry_points: &'static [&'static str],
    /// The source with local headers inlined (compiles with no include path).
    pub source: &'static str,
    pub ptx: Option<&'static str>,
    pub cubin_sm90: Option<&'static [u8]>,
    /// ptxas' verbose output for the sm_90 cubin.
    pub ptxas_report: Option<&'static str>,
    /// NVRTC's log when this family failed to compile at build time.
    pub compile_error: Option<&'static str>,
    pub resources: &'static [KernelResources],
}

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// How this build compiled its kernels.
pub fn nvrtc_build() -> NvrtcBuild {
    NVRTC_BUILD
}

/// Every embedded kernel family.
pub fn families() -> &'static [KernelFamily] {
    EMBEDDED_FAMILIES
}

/// The family of the given name (`"layer_norm"` for `kernels/layer_norm.cu`).
pub fn family(name: &str) -> Option<&'static KernelFamily> {
    EMBEDDED_FAMILIES.iter().find(|f| f.name == name)
}

/// The resource report of every compiled kernel entry point.
pub fn resources() -> impl Iterator<Item = &'static KernelResources> {
    EMBEDDED_FAMILIES.iter().flat_map(|f| f.resources.iter())
}

/// A kernel entry point: its family (the `.cu` file) and its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelRef {
    pub family: &'static str,
    pub name: &'static str,
    /// Whether the kernel opts in to dynamic shared memory above the 48 KB default (up to
    /// `device::MAX_OPT_IN_SHARED_BYTES`): the CUDA device then raises the function's
    /// `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES` before its first such launch.
    pub large_shared: bool,
}

impl KernelRef {
    pub const fn new(family: &'static str, name: &'static str) -> Self {
        KernelRef {
            family,
            name,
            large_shared: false,
        }
    }

    /// The same kernel, declared to take more than 48 KB of dynamic shared memory.
    pub const fn with_large_shared(self) -> Self {
        KernelRef {
            large_shared: true,
            ..self
        }
    }
}
