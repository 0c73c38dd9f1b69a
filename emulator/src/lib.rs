//! Test-only: the crate's `.cu` kernels compiled for the host (see `include/cuda_emulator.h`).
//!
//! `asif_kernels::Device::emulated(asif_emulator::launch)` gives a device whose kernels run here,
//! through the same Rust launch code as the CUDA device.

use std::ffi::{c_char, c_void, CStr, CString};

extern "C" {
    fn asif_emu_launch(
        name: *const c_char,
        grid: *const u32,
        block: *const u32,
        shared_bytes: u32,
        args: *mut *mut c_void,
        error: *mut c_char,
        error_len: usize,
    ) -> i32;
    fn asif_emu_selftest(
        name: *const c_char,
        grid: *const u32,
        block: *const u32,
        shared_bytes: u32,
        args: *mut *mut c_void,
        error: *mut c_char,
        error_len: usize,
    ) -> i32;
    fn asif_emu_fibers() -> i32;
    fn asif_emu_kernel_names(
        visit: extern "C" fn(*const c_char, *mut c_void),
        context: *mut c_void,
    );
}

/// Runs the named kernel on the host: `grid` × `block` threads, `shared_bytes` of dynamic shared
/// memory, CUDA's argument convention (`args[i]` points at the i-th argument's value).
///
/// # Safety
/// `args` must match the kernel's parameters in number and type, and every pointer argument must
/// point at host memory large enough for what the kernel reads and writes.
pub unsafe fn launch(
    name: &str,
    grid: [u32; 3],
    block: [u32; 3],
    shared_bytes: u32,
    args: &[*mut c_void],
) -> Result<(), String> {
    launch_with(asif_emu_launch, name, grid, block, shared_bytes, args)
}

/// [`launch`] for the emulator's own test kernels (`selftest/selftest.cpp`:
/// `selftest_identity`, `selftest_deadlock`), which the crate's kernel table does not list.
///
/// # Safety
/// As for [`launch`].
pub unsafe fn launch_selftest(
    name: &str,
    grid: [u32; 3],
    block: [u32; 3],
    shared_bytes: u32,
    args: &[*mut c_void],
) -> Result<(), String> {
    launch_with(asif_emu_selftest, name, grid, block, shared_bytes, args)
}

/// Whether the threads of a block run as fibers on the launching thread (true), or each as an
/// OS thread (false: a sanitizer build, or off x86-64 Linux); see `include/cuda_emulator.h`.
pub fn uses_fibers() -> bool {
    // SAFETY: a constant function without arguments.
    unsafe { asif_emu_fibers() != 0 }
}

type EntryPoint = unsafe extern "C" fn(
    *const c_char,
    *const u32,
    *const u32,
    u32,
    *mut *mut c_void,
    *mut c_char,
    usize,
) -> i32;

unsafe fn launch_with(
    entry: EntryPoint,
    name: &str,
    grid: [u32; 3],
    block: [u32; 3],
    shared_bytes: u32,
    args: &[*mut c_void],
) -> Result<(), String> {
    let name = CString::new(name).map_err(|_| "kernel name contains a NUL byte".to_string())?;
    let mut error = [0 as c_char; 256];
    let mut args = args.to_vec();
    let status = entry(
        name.as_ptr(),
        grid.as_ptr(),
        block.as_ptr(),
        shared_bytes,
        args.as_mut_ptr(),
        error.as_mut_ptr(),
        error.len(),
    );
    if status == 0 {
        Ok(())
    } else {
        Err(CStr::from_ptr(error.as_ptr())
            .to_string_lossy()
            .into_owned())
    }
}

/// Every kernel the emulator was built with.
pub fn kernel_names() -> Vec<String> {
    extern "C" fn visit(name: *const c_char, context: *mut c_void) {
        // SAFETY: `context` is the Vec passed below; `name` is a NUL-terminated static string.
        let names = unsafe { &mut *(context as *mut Vec<String>) };
        names.push(
            unsafe { CStr::from_ptr(name) }
                .to_string_lossy()
                .into_owned(),
        );
    }
    let mut names: Vec<String> = Vec::new();
    // SAFETY: `visit` only pushes into `names`, which outlives the call.
    unsafe { asif_emu_kernel_names(visit, &mut names as *mut Vec<String> as *mut c_void) };
    names
}
