//! Compiles every `kernels/*.cu` with NVRTC (through cudarc) and embeds the result.
//!
//! For each kernel family it embeds: the flattened source (for run-time NVRTC), PTX for a
//! portable virtual arch (compute_80, JIT-compiled by the driver on sm_80 and newer), a cubin for
//! sm_90, and the ptxas resource report (registers, shared memory, stack, spills per kernel),
//! parsed into `KernelResources` and readable through `asif_kernels::kernels`.
//!
//! Where NVRTC cannot be loaded the build does not fail and never panics: it embeds the sources
//! only and prints one `cargo:warning`. NVRTC is looked for, in order, in `$ASIF_NVRTC_HOME` and
//! `./.nvrtc` (both as laid out by `scripts/install-nvrtc.sh`), then by library name on the
//! loader path. See docs/build.md.

#[path = "build_support/kernel_sources.rs"]
mod kernel_sources;

use std::ffi::CString;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// Virtual architecture of the portable PTX.
const PTX_ARCH: &str = "compute_80";
/// Real architecture of the embedded cubin (H100/H200).
const CUBIN_ARCH: &str = "sm_90";

struct Family {
    name: String,
    entry_points: Vec<String>,
    source_path: PathBuf,
    ptx_path: Option<PathBuf>,
    cubin_path: Option<PathBuf>,
    report_path: Option<PathBuf>,
    resources: Vec<Resources>,
    compile_error: Option<String>,
}

#[derive(Default, Clone)]
struct Resources {
    kernel: String,
    registers: u32,
    shared_bytes: u32,
    stack_bytes: u32,
    spill_store_bytes: u32,
    spill_load_bytes: u32,
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build_support");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-env-changed=ASIF_NVRTC_HOME");
    println!("cargo:rerun-if-env-changed=ASIF_SKIP_NVRTC");

    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into()));
    let kernel_dir = manifest_dir.join("kernels");

    let nvrtc = Nvrtc::locate(&manifest_dir);
    let mut families = Vec::new();
    for path in kernel_sources::kernel_files(&kernel_dir) {
        let name = kernel_sources::family_name(&path);
        let source = match kernel_sources::flatten(&path, &kernel_dir) {
            Ok(source) => source,
            Err(message) => {
                println!("cargo:warning=asif-kernels: {message}");
                continue;
            }
        };
        let source_path = out_dir.join(format!("{name}.flat.cu"));
        write(&source_path, source.as_bytes());
        let mut family = Family {
            entry_points: kernel_sources::entry_points(&source),
            name,
            source_path,
            ptx_path: None,
            cubin_path: None,
            report_path: None,
            resources: Vec::new(),
            compile_error: None,
        };
        if let Ok(nvrtc) = &nvrtc {
            match nvrtc.compile_family(&family.name, &source, &out_dir) {
                Ok(compiled) => {
                    family.ptx_path = Some(compiled.ptx_path);
                    family.cubin_path = Some(compiled.cubin_path);
                    family.resources = parse_ptxas_report(&compiled.report);
                    let report_path = out_dir.join(format!("{}.ptxas.txt", family.name));
                    write(&report_path, compiled.report.as_bytes());
                    family.report_path = Some(report_path);
                }
                Err(log) => {
                    println!(
                        "cargo:warning=asif-kernels: NVRTC failed to compile kernels/{}.cu (the NVRTC test tier reports the log)",
                        family.name
                    );
                    family.compile_error = Some(log);
                }
            }
        }
        families.push(family);
    }

    if let Err(reason) = &nvrtc {
        println!(
            "cargo:warning=asif-kernels: NVRTC not found ({reason}); kernels are embedded as source for run-time compilation. Install it with scripts/install-nvrtc.sh (docs/build.md)."
        );
    }
    let generated = generate(&families, &nvrtc);
    write(&out_dir.join("kernels.rs"), generated.as_bytes());
}

fn write(path: &Path, bytes: &[u8]) {
    if let Err(e) = fs::write(path, bytes) {
        println!(
            "cargo:warning=asif-kernels: cannot write {}: {e}",
            path.display()
        );
    }
}

/// The NVRTC library, loaded.
struct Nvrtc {
    version: (i32, i32),
    include_dirs: Vec<PathBuf>,
}

struct Compiled {
    ptx_path: PathBuf,
    cubin_path: PathBuf,
    report: String,
}

impl Nvrtc {
    fn locate(manifest_dir: &Path) -> Result<Nvrtc, String> {
        if std::env::var_os("ASIF_SKIP_NVRTC").is_some_and(|v| v != "0" && !v.is_empty()) {
            return Err("ASIF_SKIP_NVRTC is set".into());
        }
        let mut homes = Vec::new();
        if let Some(home) = std::env::var_os("ASIF_NVRTC_HOME") {
            homes.push(PathBuf::from(home));
        }
        homes.push(manifest_dir.join(".nvrtc"));
        let mut include_dirs = Vec::new();
        for home in &homes {
            let lib = home.join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12");
            if lib.exists() {
                // Load it by absolute path. cudarc then asks the loader for `libnvrtc.so.12` by
                // name, and the loader returns this already-loaded library (same soname), so no
                // LD_LIBRARY_PATH is needed. The library stays loaded for the build's lifetime.
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
        // SAFETY: only probes whether the library can be opened.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
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

    fn compile_family(&self, name: &str, source: &str, out_dir: &Path) -> Result<Compiled, String> {
        let ptx = self.compile(name, source, &self.options(PTX_ARCH), Output::Ptx)?;
        let mut cubin_options = self.options(CUBIN_ARCH);
        cubin_options.push("--ptxas-options=-v".to_string());
        let (cubin, report) = self.compile(name, source, &cubin_options, Output::Cubin)?;
        let ptx_path = out_dir.join(format!("{name}.ptx"));
        let cubin_path = out_dir.join(format!("{name}.{CUBIN_ARCH}.cubin"));
        write(&ptx_path, &ptx.0);
        write(&cubin_path, &cubin);
        Ok(Compiled {
            ptx_path,
            cubin_path,
            report,
        })
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

/// Parses ptxas `-v` output:
/// ```text
/// ptxas info    : Compiling entry function 'layer_norm_forward' for 'sm_90'
/// ptxas info    : Function properties for layer_norm_forward
///     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 18 registers, used 1 barriers, 128 bytes smem, 400 bytes cmem[0]
/// ```
fn parse_ptxas_report(report: &str) -> Vec<Resources> {
    let mut all: Vec<Resources> = Vec::new();
    let mut current: Option<usize> = None;
    for line in report.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let kernel = rest.split('\'').next().unwrap_or_default().to_string();
            all.push(Resources {
                kernel,
                ..Default::default()
            });
            current = Some(all.len() - 1);
            continue;
        }
        let Some(index) = current else { continue };
        let entry = &mut all[index];
        for part in line.split(',') {
            let words: Vec<&str> = part.split_whitespace().collect();
            let number = |at: usize| words.get(at).and_then(|w| w.parse::<u32>().ok());
            if part.contains("bytes stack frame") {
                entry.stack_bytes = number(0).unwrap_or(0);
            } else if part.contains("bytes spill stores") {
                entry.spill_store_bytes = number(0).unwrap_or(0);
            } else if part.contains("bytes spill loads") {
                entry.spill_load_bytes = number(0).unwrap_or(0);
            } else if part.contains("registers") {
                if let Some(at) = words.iter().position(|w| *w == "Used") {
                    entry.registers = number(at + 1).unwrap_or(0);
                }
            } else if part.contains("bytes smem") {
                entry.shared_bytes = number(0).unwrap_or(0);
            }
        }
    }
    all
}

fn generate(families: &[Family], nvrtc: &Result<Nvrtc, String>) -> String {
    let mut out = String::from("// Generated by build.rs. Do not edit.\n\n");
    match nvrtc {
        Ok(n) => {
            let _ = writeln!(
                out,
                "pub(crate) const NVRTC_BUILD: NvrtcBuild = NvrtcBuild::Compiled {{ nvrtc_version: ({}, {}), ptx_arch: {PTX_ARCH:?}, cubin_arch: {CUBIN_ARCH:?} }};\n",
                n.version.0, n.version.1
            );
        }
        Err(reason) => {
            let _ = writeln!(out, "pub(crate) const NVRTC_BUILD: NvrtcBuild = NvrtcBuild::SourceOnly {{ reason: {reason:?} }};\n");
        }
    }
    out.push_str("pub(crate) static EMBEDDED_FAMILIES: &[KernelFamily] = &[\n");
    for family in families {
        let include_str = |path: &Option<PathBuf>| match path {
            Some(p) => format!("Some(include_str!({:?}))", p.display().to_string()),
            None => "None".to_string(),
        };
        let include_bytes = |path: &Option<PathBuf>| match path {
            Some(p) => format!("Some(include_bytes!({:?}))", p.display().to_string()),
            None => "None".to_string(),
        };
        let _ = writeln!(out, "    KernelFamily {{");
        let _ = writeln!(out, "        name: {:?},", family.name);
        let _ = writeln!(out, "        entry_points: &{:?},", family.entry_points);
        let _ = writeln!(
            out,
            "        source: include_str!({:?}),",
            family.source_path.display().to_string()
        );
        let _ = writeln!(out, "        ptx: {},", include_str(&family.ptx_path));
        let _ = writeln!(
            out,
            "        cubin_sm90: {},",
            include_bytes(&family.cubin_path)
        );
        let _ = writeln!(
            out,
            "        ptxas_report: {},",
            include_str(&family.report_path)
        );
        let _ = writeln!(out, "        compile_error: {:?},", family.compile_error);
        let _ = writeln!(out, "        resources: &[");
        for r in &family.resources {
            let _ = writeln!(
                out,
                "            KernelResources {{ kernel: {:?}, registers: {}, shared_bytes: {}, stack_bytes: {}, spill_store_bytes: {}, spill_load_bytes: {} }},",
                r.kernel, r.registers, r.shared_bytes, r.stack_bytes, r.spill_store_bytes, r.spill_load_bytes
            );
        }
        let _ = writeln!(out, "        ],\n    }},");
    }
    out.push_str("];\n");
    out
}
