//! The kernels embedded by `build.rs`: per family the flattened source, PTX for a portable arch,
//! a cubin for sm_90 and the ptxas resource report, when NVRTC was found at build time; and the
//! families another crate registers at run time ([`register`], docs/interop.md "Adding your own
//! kernel"): its CUDA C++ source, compiled by NVRTC on a CUDA device, and its host build for the
//! emulated device.

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

/// The family of the given name (`"layer_norm"` for `kernels/layer_norm.cu`), embedded or
/// registered by another crate ([`register`]).
pub fn family(name: &str) -> Option<&'static KernelFamily> {
    EMBEDDED_FAMILIES
        .iter()
        .find(|f| f.name == name)
        .or_else(|| registered(name))
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

// ---- Kernel families another crate registers at run time --------------------------------------

#[path = "../build_support/kernel_sources.rs"]
mod kernel_sources;

/// The emulated half of a registered family: its kernels compiled for the host against
/// `emulator/include/cuda_emulator.h` and exported as one `extern "C"` entry point, with the
/// shape of the emulator's own launch (`asif_emu_launch`): kernel name, grid and block (3 values
/// each), dynamic shared bytes, CUDA's argument convention (`args[i]` points at the i-th
/// argument's value), and an error buffer; 0 on success. `ASIF_EMU_EXPORT_FAMILY` in the header
/// writes it (docs/interop.md, "Adding your own kernel").
pub type EmulatedFamilyFn = unsafe extern "C" fn(
    name: *const std::ffi::c_char,
    grid: *const u32,
    block: *const u32,
    shared_bytes: u32,
    args: *mut *mut std::ffi::c_void,
    error: *mut std::ffi::c_char,
    error_len: usize,
) -> i32;

/// A kernel family of another crate: its CUDA C++ source, which may `#include` this crate's
/// `kernels/*.cuh` headers by name (`"common.cuh"`, `"vector_io.cuh"`, …), and, for the emulated
/// device, its host-compiled entry point.
#[derive(Debug, Clone, Copy)]
pub struct CustomFamily {
    /// The family's name (letters, digits, `_`), unique among the embedded and registered ones.
    pub name: &'static str,
    /// The `.cu` text, entry points written `extern "C" __global__ void name(` as in `kernels/`.
    pub source: &'static str,
    /// The emulated entry point, `None` where the family has no host build (an emulated launch
    /// of it is then an error).
    pub emulated: Option<EmulatedFamilyFn>,
}

struct Registered {
    family: &'static KernelFamily,
    custom: CustomFamily,
}

static REGISTERED: std::sync::RwLock<Vec<Registered>> = std::sync::RwLock::new(Vec::new());

/// A family registered with [`register`]: the handle its op's launch takes its [`KernelRef`]s
/// from.
#[derive(Debug, Clone, Copy)]
pub struct RegisteredFamily {
    family: &'static KernelFamily,
}

impl RegisteredFamily {
    /// The family as the devices see it: the flattened source (headers inlined), its entry
    /// points; no PTX or cubin (NVRTC compiles the source on a CUDA device's first launch).
    pub fn family(&self) -> &'static KernelFamily {
        self.family
    }

    /// The entry point `name` of this family, or an [`Error::Argument`](crate::Error) naming the
    /// ones it has.
    pub fn kernel(&self, name: &str) -> crate::Result<KernelRef> {
        match self.family.entry_points.iter().find(|e| **e == name) {
            Some(entry) => Ok(KernelRef::new(self.family.name, entry)),
            None => Err(crate::Error::argument(
                "kernels::register",
                format!(
                    "family `{}` has no entry point `{name}` (it has {:?})",
                    self.family.name, self.family.entry_points
                ),
            )),
        }
    }
}

fn registry_error(message: String) -> crate::Error {
    crate::Error::argument("kernels::register", message)
}

/// Registers another crate's kernel family for this process: afterwards [`family`] finds it,
/// `Device::launch` launches its kernels (on CUDA compiled from the source by NVRTC at the first
/// launch on each device and cached with that device's modules; on the emulated device through
/// `custom.emulated`), and [`RegisteredFamily::kernel`] hands out its [`KernelRef`]s.
///
/// The source is flattened here: each `#include "x.cuh"` of one of this crate's headers is
/// inlined once, as `build.rs` does for the crate's own families. Registering the same family
/// again (same name, source and entry point) returns the first registration; anything else under a
/// taken name, an unknown header, a source without entry points or an entry point named like one
/// of the crate's kernels is an [`Error::Argument`](crate::Error). The registered family lives
/// for the rest of the process.
pub fn register(custom: CustomFamily) -> crate::Result<RegisteredFamily> {
    let name = custom.name;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(registry_error(format!(
            "family name `{name}`: letters, digits and `_` only"
        )));
    }
    if EMBEDDED_FAMILIES.iter().any(|f| f.name == name) {
        return Err(registry_error(format!(
            "`{name}` is one of this crate's kernel families"
        )));
    }
    let mut registry = REGISTERED.write().unwrap_or_else(|p| p.into_inner());
    if let Some(existing) = registry.iter().find(|r| r.family.name == name) {
        let same_emulated =
            existing.custom.emulated.map(|f| f as usize) == custom.emulated.map(|f| f as usize);
        if existing.custom.source == custom.source && same_emulated {
            return Ok(RegisteredFamily {
                family: existing.family,
            });
        }
        return Err(registry_error(format!(
            "family `{name}` is registered already, with another source or emulated entry point"
        )));
    }
    let source = kernel_sources::flatten_text(custom.source, &mut |header: &str| {
        EMBEDDED_HEADERS
            .iter()
            .find(|(n, _)| *n == header)
            .map(|(_, text)| text.to_string())
            .ok_or_else(|| {
                let known: Vec<&str> = EMBEDDED_HEADERS.iter().map(|(n, _)| *n).collect();
                format!("`#include \"{header}\"` is not one of this crate's headers {known:?}")
            })
    })
    .map_err(|e| registry_error(format!("family `{name}`: {e}")))?;
    let entry_points = kernel_sources::entry_points(&source);
    if entry_points.is_empty() {
        return Err(registry_error(format!(
            "family `{name}` has no `extern \"C\" __global__ void name(` entry point"
        )));
    }
    if let Some(taken) = entry_points.iter().find(|e| {
        EMBEDDED_FAMILIES
            .iter()
            .chain(registry.iter().map(|r| r.family))
            .any(|f| f.entry_points.contains(&e.as_str()))
    }) {
        return Err(registry_error(format!(
            "family `{name}`: entry point `{taken}` is taken by another family"
        )));
    }
    let entry_points: Vec<&'static str> = entry_points
        .into_iter()
        .map(|e| &*Box::leak(e.into_boxed_str()))
        .collect();
    let family: &'static KernelFamily = Box::leak(Box::new(KernelFamily {
        name,
        entry_points: Box::leak(entry_points.into_boxed_slice()),
        source: Box::leak(source.into_boxed_str()),
        ptx: None,
        cubin_sm90: None,
        ptxas_report: None,
        compile_error: None,
        resources: &[],
    }));
    registry.push(Registered { family, custom });
    Ok(RegisteredFamily { family })
}

/// Every family registered so far, in registration order (not in [`families`], which lists the
/// embedded ones that the NVRTC tier checks).
pub fn registered_families() -> Vec<&'static KernelFamily> {
    let registry = REGISTERED.read().unwrap_or_else(|p| p.into_inner());
    registry.iter().map(|r| r.family).collect()
}

fn registered(name: &str) -> Option<&'static KernelFamily> {
    let registry = REGISTERED.read().unwrap_or_else(|p| p.into_inner());
    registry
        .iter()
        .find(|r| r.family.name == name)
        .map(|r| r.family)
}

/// The emulated device's launch of a kernel of a registered family: `None` when `family` is not
/// registered (an embedded family: the emulator crate runs it), else the family's entry point's
/// result (an error when it has none).
pub(crate) fn launch_registered_emulated(
    kernel: KernelRef,
    grid: [u32; 3],
    block: [u32; 3],
    shared_bytes: u32,
    args: &[*mut std::ffi::c_void],
) -> Option<Result<(), String>> {
    if EMBEDDED_FAMILIES.iter().any(|f| f.name == kernel.family) {
        return None;
    }
    let entry = {
        let registry = REGISTERED.read().unwrap_or_else(|p| p.into_inner());
        registry
            .iter()
            .find(|r| r.family.name == kernel.family)?
            .custom
            .emulated
    };
    let Some(entry) = entry else {
        return Some(Err(format!(
            "kernel family `{}` was registered without an emulated entry point",
            kernel.family
        )));
    };
    let Ok(name) = std::ffi::CString::new(kernel.name) else {
        return Some(Err("kernel name contains a NUL byte".into()));
    };
    let mut error = [0 as std::ffi::c_char; 256];
    let mut args = args.to_vec();
    // SAFETY: `entry` is the registering crate's host build of the family, of the ABI above; the
    // caller (the emulated device) passes arguments in the kernel's order and type, pointing at
    // host memory that outlives the synchronous call.
    let status = unsafe {
        entry(
            name.as_ptr(),
            grid.as_ptr(),
            block.as_ptr(),
            shared_bytes,
            args.as_mut_ptr(),
            error.as_mut_ptr(),
            error.len(),
        )
    };
    Some(if status == 0 {
        Ok(())
    } else {
        // SAFETY: the entry point writes a NUL-terminated message into `error` (snprintf); the
        // last byte stays NUL whatever it writes.
        error[error.len() - 1] = 0;
        Err(unsafe { std::ffi::CStr::from_ptr(error.as_ptr()) }
            .to_string_lossy()
            .into_owned())
    })
}
