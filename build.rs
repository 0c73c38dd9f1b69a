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
#[path = "build_support/nvrtc.rs"]
mod nvrtc;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use nvrtc::{parse_ptxas_report, Nvrtc, Resources, CUBIN_ARCH, PTX_ARCH};

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
            match compile_family(nvrtc, &family.name, &source, &out_dir) {
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
    let mut generated = generate(&families, &nvrtc);
    generated.push_str(&generate_headers(&kernel_sources::header_files(
        &kernel_dir,
    )));
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

struct Compiled {
    ptx_path: PathBuf,
    cubin_path: PathBuf,
    report: String,
}

fn compile_family(
    nvrtc: &Nvrtc,
    name: &str,
    source: &str,
    out_dir: &Path,
) -> Result<Compiled, String> {
    let ptx = nvrtc.compile_ptx(name, source)?;
    let (cubin, report) = nvrtc.compile_cubin(name, source)?;
    let ptx_path = out_dir.join(format!("{name}.ptx"));
    let cubin_path = out_dir.join(format!("{name}.{CUBIN_ARCH}.cubin"));
    write(&ptx_path, ptx.as_bytes());
    write(&cubin_path, &cubin);
    Ok(Compiled {
        ptx_path,
        cubin_path,
        report,
    })
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

/// The `kernels/*.cuh` headers by file name, so that a kernel family another crate registers at
/// run time can include them (`asif_kernels::kernels::register` flattens it against these).
fn generate_headers(headers: &[PathBuf]) -> String {
    let mut out = String::from("\npub(crate) static EMBEDDED_HEADERS: &[(&str, &str)] = &[\n");
    for path in headers {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "    ({name:?}, include_str!({:?})),",
            path.display().to_string()
        );
    }
    out.push_str("];\n");
    out
}
