// Shared by build.rs (which compiles `kernels/*.cu`) and the NVRTC test tier (which compiles the
// gate probes in `tests/probes/` the same way): where NVRTC is found, the exact options a kernel
// is compiled with, and the parser of ptxas' resource report. Kept in one file so a probe is
// compiled exactly as a crate kernel is.
#![allow(dead_code)]

use std::ffi::CString;
use std::path::{Path, PathBuf};

/// Virtual architecture of the portable PTX.
pub const PTX_ARCH: &str = "compute_80";
/// Real architecture of the embedded cubin (H100/H200).
pub const CUBIN_ARCH: &str = "sm_90";

/// The NVRTC library, loaded.
pub struct Nvrtc {
    pub version: (i32, i32),
    pub include_dirs: Vec<PathBuf>,
}

/// The NVRTC homes looked in, in order: `$ASIF_NVRTC_HOME`, then `<manifest>/.nvrtc` (both as laid
/// out by `scripts/install-nvrtc.sh`).
pub fn nvrtc_homes(manifest_dir: &Path) -> Vec<PathBuf> {
    let mut homes = Vec::new();
    if let Some(home) = std::env::var_os("ASIF_NVRTC_HOME") {
        homes.push(PathBuf::from(home));
    }
    homes.push(manifest_dir.join(".nvrtc"));
    homes
}

/// Whether the loader opens libnvrtc by a name cudarc also tries (cudarc's own probe,
/// `is_culib_present`, exists only when cudarc loads the library at run time, not when a program
/// links it: `docs/interop.md`, feature `cuda-dynamic-linking`). A library cudarc would find only
/// under another name makes this say no: the kernels are then embedded as source, not wrongly
/// compiled.
fn nvrtc_opens() -> bool {
    ["libnvrtc.so", "libnvrtc.so.12"].iter().any(|name| {
        // SAFETY: opening NVIDIA's NVRTC runs only its initialisers.
        unsafe { libloading::Library::new(name) }.is_ok()
    })
}

impl Nvrtc {
    /// Loads NVRTC from the first home that has it, else from the loader path.
    pub fn locate(manifest_dir: &Path) -> Result<Nvrtc, String> {
        if std::env::var_os("ASIF_SKIP_NVRTC").is_some_and(|v| v != "0" && !v.is_empty()) {
            return Err("ASIF_SKIP_NVRTC is set".into());
        }
        let homes = nvrtc_homes(manifest_dir);
        let mut include_dirs = Vec::new();
        for home in &homes {
            let lib = home.join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12");
            if lib.exists() {
                // Load it by absolute path. cudarc then asks the loader for `libnvrtc.so.12` by
                // name, and the loader returns this already-loaded library (same soname), so no
                // LD_LIBRARY_PATH is needed. The library stays loaded for the process' lifetime.
                // SAFETY: loading NVIDIA's NVRTC runs only its initialisers.
                match unsafe { libloading::Library::new(&lib) } {
                    Ok(library) => std::mem::forget(library),
                    Err(e) => return Err(format!("cannot load {}: {e}", lib.display())),
                }
                let include = home.join("nvidia/cuda_runtime/include");
                if include.exists() {
                    include_dirs.push(include);
                }
                break;
            }
        }
        if !nvrtc_opens() {
            return Err(format!(
                "no libnvrtc in {} nor on the loader path",
                homes
                    .iter()
                    .map(|h| h.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let (mut major, mut minor) = (0, 0);
        // SAFETY: the library is present (checked above); the out-pointers are valid.
        unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
        Ok(Nvrtc {
            version: (major, minor),
            include_dirs,
        })
    }

    fn options(&self, arch: &str) -> Vec<String> {
        let mut options = vec![
            format!("--gpu-architecture={arch}"),
            "--std=c++17".to_string(),
        ];
        for dir in &self.include_dirs {
            options.push(format!("--include-path={}", dir.display()));
        }
        options
    }

    /// PTX for the portable `PTX_ARCH`.
    pub fn compile_ptx(&self, name: &str, source: &str) -> Result<String, String> {
        let (ptx, _log) = self.compile(name, source, &self.options(PTX_ARCH), Output::Ptx)?;
        Ok(String::from_utf8_lossy(&ptx).into_owned())
    }

    /// The `CUBIN_ARCH` cubin and ptxas' verbose resource report (`--ptxas-options=-v`).
    pub fn compile_cubin(&self, name: &str, source: &str) -> Result<(Vec<u8>, String), String> {
        let mut options = self.options(CUBIN_ARCH);
        options.push("--ptxas-options=-v".to_string());
        self.compile(name, source, &options, Output::Cubin)
    }

    /// Compiles one program; returns the requested output and the compile log.
    fn compile(
        &self,
        name: &str,
        source: &str,
        options: &[String],
        output: Output,
    ) -> Result<(Vec<u8>, String), String> {
        use cudarc::nvrtc::{result, sys};
        let source = CString::new(source).map_err(|_| "source contains a NUL byte".to_string())?;
        let file_name = CString::new(format!("{name}.cu")).unwrap_or_default();
        let program =
            result::create_program(&source, Some(&file_name)).map_err(|e| format!("{e:?}"))?;
        // SAFETY: `program` was just created and is destroyed exactly once below.
        let compiled = unsafe { result::compile_program(program, options) };
        let log = unsafe { result::get_program_log(program) }
            .map(|chars| c_chars_to_string(&chars))
            .unwrap_or_default();
        let outcome = match compiled {
            Err(e) => Err(format!(
                "NVRTC {}.{} error {e:?} compiling {name}.cu with {options:?}:\n{log}",
                self.version.0, self.version.1
            )),
            Ok(()) => match output {
                Output::Ptx => unsafe { result::get_ptx(program) }
                    .map(|chars| c_chars_to_string(&chars).into_bytes())
                    .map_err(|e| format!("{e:?}")),
                Output::Cubin => {
                    let mut size = 0usize;
                    // SAFETY: the program compiled; the buffer is sized by NVRTC's own answer.
                    unsafe {
                        sys::nvrtcGetCUBINSize(program, &mut size)
                            .result()
                            .map_err(|e| format!("{e:?}"))?;
                        let mut bytes = vec![0u8; size];
                        sys::nvrtcGetCUBIN(program, bytes.as_mut_ptr().cast())
                            .result()
                            .map_err(|e| format!("{e:?}"))?;
                        Ok(bytes)
                    }
                }
            },
        };
        unsafe {
            let _ = result::destroy_program(program);
        }
        outcome.map(|bytes| (bytes, log))
    }
}

enum Output {
    Ptx,
    Cubin,
}

fn c_chars_to_string(chars: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// ptxas' resources of one kernel entry point.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resources {
    pub kernel: String,
    pub registers: u32,
    pub shared_bytes: u32,
    pub stack_bytes: u32,
    pub spill_store_bytes: u32,
    pub spill_load_bytes: u32,
}

/// Parses ptxas `-v` output, as NVRTC 12.9 writes it:
/// ```text
/// ptxas info    : Compiling entry function 'attention_forward' for 'sm_90'
/// ptxas info    : Function properties for attention_forward
/// ptxas         .     24 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 63 registers, used 0 barriers, 24 bytes cumulative stack size, 19968 bytes smem
/// ```
/// Each number is the word just before its label (`24` before `bytes stack frame`), never a
/// fixed word of the line: the stack-frame line starts with `ptxas .`, not with the number.
pub fn parse_ptxas_report(report: &str) -> Vec<Resources> {
    let mut all: Vec<Resources> = Vec::new();
    let mut current: Option<usize> = None;
    // The stack/spill line belongs to the function named by the last "Function properties for"
    // line, which may be a non-inlined device function rather than the entry point.
    let mut properties_of_current = false;
    for line in report.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let kernel = rest.split('\'').next().unwrap_or_default().to_string();
            all.push(Resources {
                kernel,
                ..Default::default()
            });
            current = Some(all.len() - 1);
            properties_of_current = false;
            continue;
        }
        let Some(index) = current else { continue };
        let entry = &mut all[index];
        if let Some(rest) = line.split("Function properties for ").nth(1) {
            properties_of_current = rest.trim() == entry.kernel;
            continue;
        }
        for part in line.split(',') {
            if let Some(n) = number_before_label(part, "bytes stack frame") {
                if properties_of_current {
                    entry.stack_bytes = n;
                }
            } else if let Some(n) = number_before_label(part, "bytes spill stores") {
                if properties_of_current {
                    entry.spill_store_bytes = n;
                }
            } else if let Some(n) = number_before_label(part, "bytes spill loads") {
                if properties_of_current {
                    entry.spill_load_bytes = n;
                }
            } else if let Some(n) = number_before_label(part, "registers") {
                entry.registers = n;
            } else if let Some(n) = number_before_label(part, "bytes smem") {
                entry.shared_bytes = n;
            }
        }
    }
    all
}

/// The number written just before `label` in `part` (`Used 63 registers` -> 63).
fn number_before_label(part: &str, label: &str) -> Option<u32> {
    let at = part.find(label)?;
    part[..at].split_whitespace().last()?.parse::<u32>().ok()
}
