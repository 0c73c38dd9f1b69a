//! Tier 3: every kernel compiled with NVRTC for sm_90 at build time, and its SASS held to gates
//! that can fail (docs/testing.md, docs/kernels-sass.md):
//! - no spills, registers within budget;
//! - no stack frame or local memory unless allow-listed by name with a reason;
//! - theoretical occupancy at the kernel's real launch shape at least what it declares;
//! - HMMA in a kernel that declares `tensor_core`, a 128-bit global access in one that declares
//!   `vector_io`;
//! - docs/kernels-sass.md equal to the report regenerated from this build's cubins.
//!
//! Each gate has a probe kernel in tests/probes/gates.cu that breaks it, compiled here with NVRTC
//! exactly as build.rs compiles the crate's kernels, and a test that the gate catches it.
//!
//! Skips (with a line) where the build had no NVRTC or cuobjdump is not installed, unless
//! ASIF_REQUIRE_NVRTC=1 (CI sets it), which makes either missing a failure.
mod common;
#[path = "../build_support/kernel_sources.rs"]
mod kernel_sources;
#[path = "../build_support/nvrtc.rs"]
mod nvrtc;
#[path = "nvrtc/sass.rs"]
mod sass;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use asif_kernels::kernels::{self, NvrtcBuild};
use sass::{Cuobjdump, Gate, Kernel, Provenance, Ptxas};

/// Registers per thread that any kernel may use: 64 keeps at least 4 blocks of 256 threads per SM.
const REGISTER_BUDGET: u32 = 64;
/// Kernels allowed more than the budget, each with its limit and why (its occupancy gate still
/// holds it to what it declares).
const REGISTER_EXCEPTIONS: &[(&str, u32, &str)] = &[
    (
        "attention_forward_v2",
        128,
        "each warp holds two 16×64 score fragments and one output fragment (mma accumulators; \
     docs/attention.md); launch bounds of 4 blocks of 128 per SM, occupancy gate 25 %",
    ),
    (
        "hie_forward_v2_r16",
        80,
        "thread i holds row i of M (16 registers) and a QR step's 16 partial products \
         (kernels/hie.cu, version 2; 80 with H_X staged in shared memory, still 3 blocks per \
         SM); occupancy gate 37 %",
    ),
    (
        "hie_backward_full_v2_r16",
        72,
        "thread i holds rows of Q, Q̄ and M̄ (16 registers each; kernels/hie.cu, version 2); \
         occupancy gate 37 %",
    ),
    (
        "hie_forward_v2_r32",
        128,
        "as hie_forward_v2_r16 with R = 32 (r from 17 to 32); occupancy gate 25 %",
    ),
    (
        "hie_backward_full_v2_r32",
        128,
        "as hie_backward_full_v2_r16 with R = 32 (r from 17 to 32); occupancy gate 25 %",
    ),
    (
        "hie_forward_v3_r16",
        96,
        "v2's QR (row i of M and a step's 16 partial products) plus the mma tiles' 3xTF32 \
         splits (kernels/hie.cu, version 3); its 79 KB of shared memory (H_X staged) allow 2 \
         blocks per SM anyway; occupancy gate 25 %",
    ),
    (
        "hie_forward_v3_r32",
        128,
        "as hie_forward_v3_r16 with R = 32 (r from 17 to 32); occupancy gate 25 %",
    ),
    (
        "hie_backward_full_v3_r16",
        80,
        "v2's rows of Q, Q̄ and M̄ plus a warp's Q̄ accumulator tiles (2 × 2 mma fragments; \
         kernels/hie.cu, version 3); occupancy gate 37 %",
    ),
    (
        "hie_backward_full_v3_r32",
        96,
        "as hie_backward_full_v3_r16 with R = 32 (2 × 4 Q̄ fragments); occupancy gate 25 %",
    ),
    (
        "attention_backward_v2",
        168,
        "each warp holds two 16×64 mma fragments (P or dS and dP, or dZ and an accumulator) \
         around the 3xTF32 splits, and 128 registers spill (docs/attention.md); launch bounds \
         of 3 blocks of 128 per SM, occupancy gate 18 %",
    ),
    (
        "attention_forward_v2_stepped",
        128,
        "attention_forward_v2's body with the seed derived from the step counter (issue 20);          occupancy gate 25 %",
    ),
    (
        "attention_backward_v2_stepped",
        168,
        "attention_backward_v2's body with the seed derived from the step counter (issue 20);          occupancy gate 18 %",
    ),
];
/// The committed report, relative to the crate root.
const REPORT: &str = "docs/kernels-sass.md";
/// Set by scripts/sass-report.sh: write the report instead of comparing it.
const WRITE_REPORT: &str = "ASIF_WRITE_SASS_REPORT";

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

fn compiled() -> bool {
    static SKIP_LINE: std::sync::Once = std::sync::Once::new();
    match kernels::nvrtc_build() {
        NvrtcBuild::Compiled { .. } => true,
        NvrtcBuild::SourceOnly { reason } => {
            assert!(
                !flag("ASIF_REQUIRE_NVRTC"),
                "ASIF_REQUIRE_NVRTC is set but the build had no NVRTC: {reason}"
            );
            SKIP_LINE.call_once(|| {
                common::skip("NVRTC tier (tier 3)", &format!("the build had no NVRTC ({reason}); run scripts/install-nvrtc.sh and rebuild"))
            });
            false
        }
    }
}

/// cuobjdump from the NVRTC wheels' folder, or `None` (with one skip line) where it is missing.
fn cuobjdump() -> Option<&'static Cuobjdump> {
    static TOOL: OnceLock<Result<Cuobjdump, String>> = OnceLock::new();
    if !compiled() {
        return None;
    }
    match TOOL.get_or_init(|| Cuobjdump::locate(&nvrtc::nvrtc_homes(manifest_dir()))) {
        Ok(tool) => Some(tool),
        Err(reason) => {
            assert!(
                !flag("ASIF_REQUIRE_NVRTC"),
                "ASIF_REQUIRE_NVRTC is set but cuobjdump is missing: {reason}"
            );
            static SKIP_LINE: std::sync::Once = std::sync::Once::new();
            SKIP_LINE.call_once(|| common::skip("NVRTC tier's SASS gates and report", reason));
            None
        }
    }
}

/// Declarations of every `// asif-gate:` line in `source`, panicking with the parse error.
fn declarations(what: &str, source: &str) -> Vec<kernel_sources::GateDeclaration> {
    kernel_sources::gate_declarations(source)
        .unwrap_or_else(|e| panic!("{what}: bad asif-gate line: {e}"))
}

/// Joins ptxas' report, cuobjdump's reading and the declarations of one compiled family.
fn join(
    family: &str,
    entry_points: &[String],
    declarations: &[kernel_sources::GateDeclaration],
    ptxas: impl Fn(&str) -> Ptxas,
    cubin: &[u8],
    tool: &Cuobjdump,
) -> Result<Vec<Kernel>, String> {
    let functions = tool.read(cubin, family)?;
    entry_points
        .iter()
        .map(|entry| {
            let sass = functions
                .iter()
                .find(|f| f.name == *entry)
                .cloned()
                .ok_or_else(|| format!("{family}: cuobjdump found no function {entry}"))?;
            Ok(Kernel {
                family: family.to_string(),
                name: entry.clone(),
                declaration: declarations.iter().find(|d| d.kernel == *entry).cloned(),
                ptxas: ptxas(entry),
                sass,
            })
        })
        .collect()
}

/// Every entry point of every crate kernel family, in family then file order.
fn crate_kernels(tool: &'static Cuobjdump) -> &'static [Kernel] {
    static KERNELS: OnceLock<Result<Vec<Kernel>, String>> = OnceLock::new();
    let result = KERNELS.get_or_init(|| {
        let per_family: Vec<Result<Vec<Kernel>, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = kernels::families()
                .iter()
                .map(|family| {
                    scope.spawn(move || {
                        let cubin = family
                            .cubin_sm90
                            .ok_or_else(|| format!("{}: no sm_90 cubin", family.name))?;
                        let entry_points: Vec<String> =
                            family.entry_points.iter().map(|s| s.to_string()).collect();
                        let ptxas = |entry: &str| {
                            let r = family
                                .resources
                                .iter()
                                .find(|r| r.kernel == entry)
                                .copied()
                                .unwrap_or_else(|| {
                                    panic!("{}: no ptxas report for {entry}", family.name)
                                });
                            Ptxas {
                                registers: r.registers,
                                static_shared_bytes: r.shared_bytes,
                                stack_bytes: r.stack_bytes,
                                spill_bytes: r.spill_store_bytes + r.spill_load_bytes,
                            }
                        };
                        join(
                            family.name,
                            &entry_points,
                            &declarations(family.name, family.source),
                            ptxas,
                            cubin,
                            tool,
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        per_family
            .into_iter()
            .collect::<Result<Vec<Vec<Kernel>>, String>>()
            .map(|v| v.into_iter().flatten().collect())
    });
    match result {
        Ok(kernels) => kernels,
        Err(e) => panic!("{e}"),
    }
}

/// The probe kernels of tests/probes/gates.cu, compiled like a crate kernel.
fn probes(tool: &'static Cuobjdump) -> &'static [Kernel] {
    static PROBES: OnceLock<Result<Vec<Kernel>, String>> = OnceLock::new();
    let result = PROBES.get_or_init(|| {
        let path: PathBuf = manifest_dir().join("tests/probes/gates.cu");
        let source = kernel_sources::flatten(&path, &manifest_dir().join("kernels"))?;
        let nvrtc = nvrtc::Nvrtc::locate(manifest_dir())?;
        let (cubin, report) = nvrtc.compile_cubin("gates", &source)?;
        let resources = nvrtc::parse_ptxas_report(&report);
        let ptxas = |entry: &str| {
            let r = resources
                .iter()
                .find(|r| r.kernel == entry)
                .cloned()
                .unwrap_or_else(|| panic!("probes: no ptxas report for {entry}"));
            Ptxas {
                registers: r.registers,
                static_shared_bytes: r.shared_bytes,
                stack_bytes: r.stack_bytes,
                spill_bytes: r.spill_store_bytes + r.spill_load_bytes,
            }
        };
        join(
            "probes",
            &kernel_sources::entry_points(&source),
            &declarations("tests/probes/gates.cu", &source),
            ptxas,
            &cubin,
            tool,
        )
    });
    match result {
        Ok(kernels) => kernels,
        Err(e) => panic!("{e}"),
    }
}

/// The gates a probe fails, without the reasons.
fn gates_failed(tool: &'static Cuobjdump, probe: &str) -> Vec<Gate> {
    let kernel = probes(tool)
        .iter()
        .find(|k| k.name == probe)
        .unwrap_or_else(|| panic!("no probe kernel {probe} in tests/probes/gates.cu"));
    let mut gates: Vec<Gate> = kernel.violations().into_iter().map(|(g, _)| g).collect();
    gates.dedup();
    gates
}

#[test]
fn every_family_compiles_to_ptx_and_sm90_cubin() {
    if !compiled() {
        return;
    }
    assert!(
        !kernels::families().is_empty(),
        "no kernel families embedded"
    );
    for family in kernels::families() {
        assert!(
            family.compile_error.is_none(),
            "kernels/{}.cu failed to compile:\n{}",
            family.name,
            family.compile_error.unwrap_or_default()
        );
        let ptx = family.ptx.unwrap_or_default();
        assert!(
            ptx.contains(".target sm_80"),
            "{}: PTX is not for the portable compute_80 target",
            family.name
        );
        let cubin = family.cubin_sm90.unwrap_or_default();
        assert!(
            cubin.starts_with(b"\x7fELF"),
            "{}: the sm_90 cubin is not an ELF image",
            family.name
        );
        for entry in family.entry_points {
            assert!(
                ptx.contains(&format!(".entry {entry}(")),
                "{}: entry point {entry} missing from the PTX",
                family.name
            );
        }
    }
}

/// Spills and registers; the stack frame is the stack gate's (it knows the allow-list).
#[test]
fn every_kernel_has_no_spills_and_fits_the_register_budget() {
    if !compiled() {
        return;
    }
    for family in kernels::families() {
        for entry in family.entry_points {
            let resources = family
                .resources
                .iter()
                .find(|r| r.kernel == *entry)
                .unwrap_or_else(|| panic!("{}: no ptxas report for {entry}", family.name));
            assert_eq!(
                resources.spill_store_bytes + resources.spill_load_bytes,
                0,
                "{entry} spills: {resources:?}"
            );
            let budget = REGISTER_EXCEPTIONS
                .iter()
                .find(|(name, _, _)| name == entry)
                .map_or(REGISTER_BUDGET, |(_, limit, _)| *limit);
            assert!(
                resources.registers <= budget,
                "{entry} uses {} registers (budget {budget})",
                resources.registers
            );
        }
    }
}

/// The line that hid attention_forward's stack frame: its first word is `ptxas`, not the number.
#[test]
fn ptxas_parser_reads_the_stack_frame_of_each_entry_point() {
    let report = "\
ptxas info    : 0 bytes gmem
ptxas info    : Function properties for helper_not_inlined
ptxas         .     8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Compiling entry function 'attention_forward' for 'sm_90'
ptxas info    : Function properties for attention_forward
ptxas         .     24 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 63 registers, used 0 barriers, 24 bytes cumulative stack size, 19968 bytes smem
ptxas info    : Compile time = 169.221 ms
ptxas info    : Compiling entry function 'gelu_forward' for 'sm_90'
ptxas info    : Function properties for gelu_forward
ptxas         .     0 bytes stack frame, 12 bytes spill stores, 16 bytes spill loads
ptxas info    : Used 16 registers, used 0 barriers
";
    let parsed = nvrtc::parse_ptxas_report(report);
    assert_eq!(
        parsed,
        vec![
            nvrtc::Resources {
                kernel: "attention_forward".into(),
                registers: 63,
                shared_bytes: 19968,
                stack_bytes: 24,
                spill_store_bytes: 0,
                spill_load_bytes: 0,
            },
            nvrtc::Resources {
                kernel: "gelu_forward".into(),
                registers: 16,
                shared_bytes: 0,
                stack_bytes: 0,
                spill_store_bytes: 12,
                spill_load_bytes: 16,
            },
        ]
    );
}

#[test]
fn every_entry_point_declares_its_gates_once() {
    if !compiled() {
        return;
    }
    for family in kernels::families() {
        let declared = declarations(family.name, family.source);
        for entry in family.entry_points {
            let count = declared.iter().filter(|d| d.kernel == *entry).count();
            assert_eq!(
                count, 1,
                "kernels/{}.cu: {entry} needs exactly one `// asif-gate: {entry} block=N occupancy>=N%` line (has {count})",
                family.name
            );
        }
        for declaration in &declared {
            assert!(
                family.entry_points.contains(&declaration.kernel.as_str()),
                "kernels/{}.cu: asif-gate line for {}, which is not an entry point of the file",
                family.name,
                declaration.kernel
            );
        }
    }
}

#[test]
fn every_kernel_passes_its_gates() {
    let Some(tool) = cuobjdump() else { return };
    let failures: Vec<String> = crate_kernels(tool)
        .iter()
        .flat_map(|k| k.violations())
        .map(|(gate, why)| format!("{gate:?}: {why}"))
        .collect();
    assert!(
        failures.is_empty(),
        "gates failed:\n{}",
        failures.join("\n")
    );
}

/// ptxas' report (parsed at build time) and the cubin (read by cuobjdump) must agree, so a
/// parser that misreads ptxas, as the one that read every stack frame as 0 did, fails here.
#[test]
fn ptxas_report_and_cubin_agree_on_registers_and_stack() {
    let Some(tool) = cuobjdump() else { return };
    for kernel in crate_kernels(tool) {
        assert_eq!(
            (kernel.ptxas.registers, kernel.ptxas.stack_bytes),
            (kernel.sass.registers, kernel.sass.stack_bytes),
            "{}: (registers, stack) from ptxas vs. the cubin",
            kernel.name
        );
    }
}

#[test]
fn sass_report_matches_the_committed_copy() {
    let Some(tool) = cuobjdump() else { return };
    let NvrtcBuild::Compiled { nvrtc_version, .. } = kernels::nvrtc_build() else {
        return;
    };
    let report = sass::render_report(
        crate_kernels(tool),
        &Provenance {
            nvrtc_version,
            cuobjdump_version: tool.version.clone(),
        },
    );
    let path = manifest_dir().join(REPORT);
    if flag(WRITE_REPORT) {
        std::fs::write(&path, &report).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("wrote {}", sass::display(&path));
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == report,
        "{REPORT} differs from the report of this build's kernels (first difference at {}). \
         Run scripts/sass-report.sh and commit the result.",
        sass::first_difference(&committed, &report)
    );
}

/// The allow-list is what lets v1 attention_forward pass: without it the fixed stack gate flags
/// its 24-byte frame (the frame the old parser read as 0). When attention v2 removes the frame,
/// the stale allow-list fails `every_kernel_passes_its_gates`; remove both then.
#[test]
fn stack_gate_flags_attention_forward_without_its_allow_list() {
    let Some(tool) = cuobjdump() else { return };
    let mut kernel = crate_kernels(tool)
        .iter()
        .find(|k| k.name == "attention_forward")
        .expect("attention_forward")
        .clone();
    assert!(kernel.violations().is_empty());
    let declaration = kernel.declaration.as_mut().expect("declared");
    declaration.allowed_stack_bytes = 0;
    declaration.stack_reason = None;
    let violations = kernel.violations();
    assert_eq!(
        violations.iter().map(|(g, _)| *g).collect::<Vec<_>>(),
        vec![Gate::Stack],
        "{violations:?}"
    );
    assert!(
        violations[0].1.contains("24-byte stack frame"),
        "{violations:?}"
    );
}

/// The scanner that build.rs and the emulator share finds entry points with and without launch
/// bounds, and nothing else (no GPU or NVRTC needed).
#[test]
fn entry_point_scanner_reads_launch_bounds() {
    let source = r#"
extern "C" __global__ void plain(float* x) {}
extern "C" __global__ void __launch_bounds__(128, 4) bounded(float* x) {}
extern "C" __global__ void __launch_bounds__(WARPS * 32, MIN_BLOCKS(2)) nested (float* x) {}
__device__ void helper() {}
extern "C" {
__global__ void declared_only(float*);
}
"#;
    assert_eq!(
        kernel_sources::entry_points(source),
        vec!["plain", "bounded", "nested"]
    );
}

/// Each gate fails on the probe written to break it, and on that gate alone: a stack frame, a
/// stale stack allow-list, a kernel below its declared occupancy, a declared tensor-core kernel
/// without HMMA, a declared vector-I/O kernel with only scalar global access.
#[test]
fn each_gate_catches_the_probe_that_breaks_it() {
    let Some(tool) = cuobjdump() else { return };
    for (probe, gate) in [
        ("probe_stack_frame", Gate::Stack),
        ("probe_stale_stack_allow_list", Gate::Stack),
        ("probe_low_occupancy", Gate::Occupancy),
        ("probe_tensor_core_without_mma", Gate::TensorCore),
        ("probe_vector_io_scalar", Gate::VectorIo),
    ] {
        assert_eq!(gates_failed(tool, probe), vec![gate], "{probe}");
    }
}

/// The other side of each probe: kernels that keep what they declare pass every gate, so the
/// gates above fail for the reason they name, not always.
#[test]
fn probes_that_keep_their_declarations_pass_every_gate() {
    let Some(tool) = cuobjdump() else { return };
    for probe in [
        "probe_allowed_stack_frame",
        "probe_tensor_core_mma",
        "probe_vector_io_float4",
        "probe_occupancy_kept",
    ] {
        assert_eq!(gates_failed(tool, probe), vec![], "{probe}");
    }
    let mma = probes(tool)
        .iter()
        .find(|k| k.name == "probe_tensor_core_mma")
        .expect("probe");
    assert!(mma.sass.mix.hmma > 0, "{:?}", mma.sass.mix);
}

#[test]
fn occupancy_matches_the_calculator_on_known_shapes() {
    // 63 registers -> 64 per thread, 2048 per warp, 32 warps: 8 blocks of 4 warps; 19968 B of
    // static shared memory + 1 KiB reserved allows 11 blocks: registers bound it, 50 %.
    let o = sass::occupancy(63, 19968, 128, 0);
    assert_eq!(
        (o.blocks_per_sm, o.warps_per_sm, o.limited_by),
        (8, 32, "registers")
    );
    // 32 registers, 256 threads: 8 blocks by warps (64 / 8), 100 %.
    let o = sass::occupancy(32, 0, 256, 0);
    assert_eq!(
        (o.blocks_per_sm, o.warps_per_sm, o.limited_by),
        (8, 64, "warps")
    );
    // 48 KiB static + 1 KiB reserved: 4 blocks of 128 threads, 25 %.
    let o = sass::occupancy(16, 49152, 128, 0);
    assert_eq!(
        (o.blocks_per_sm, o.warps_per_sm, o.limited_by),
        (4, 16, "shared memory")
    );
    // 45 KiB static: 4 blocks only because of the 1 KiB reserved per block (5 without it).
    let o = sass::occupancy(16, 46080, 128, 0);
    assert_eq!((o.blocks_per_sm, o.limited_by), (4, "shared memory"));
    // 32 threads, few registers: the 32-block limit, 32 warps.
    let o = sass::occupancy(16, 0, 32, 0);
    assert_eq!(
        (o.blocks_per_sm, o.warps_per_sm, o.limited_by),
        (32, 32, "blocks")
    );
    // 255 registers -> 256, 8192 per warp, 8 warps: 1 block of 256 threads.
    let o = sass::occupancy(255, 0, 256, 0);
    assert_eq!(
        (o.blocks_per_sm, o.warps_per_sm, o.limited_by),
        (1, 8, "registers")
    );
    // More shared memory than a block may have: it cannot launch.
    assert_eq!(sass::occupancy(16, 0, 128, 240_000).blocks_per_sm, 0);
}

#[test]
fn cuobjdump_parser_counts_widths_and_predicated_instructions() {
    let text = "
Resource usage:
 Function k:
  REG:40 STACK:16 SHARED:1024 LOCAL:8 CONSTANT[0]:560 TEXTURE:0 SURFACE:0 SAMPLER:0

\tcode for sm_90
\t\tFunction : k
        /*0000*/                   LDG.E.128 R4, desc[UR6][R2.64] ;   /* 0x0000000602047981 */
                                                                      /* 0x000ea2000c1e1d00 */
        /*0010*/               @!P0 LDG.E.CONSTANT R8, desc[UR6][R10.64] ;   /* 0x0 */
        /*0020*/                   LDG.E.U8 R9, desc[UR6][R10.64] ;   /* 0x0 */
        /*0030*/                   STG.E.64 desc[UR6][R2.64], R4 ;   /* 0x0 */
        /*0040*/                   HMMA.1688.F32.TF32 R4, R8, R12, R4 ;   /* 0x0 */
        /*0050*/                   HFMA2.MMA R3, -RZ, RZ, 0, 0 ;   /* 0x0 */
        /*0060*/                   LDGSTS.E.BYPASS.128 [R1], desc[UR4][R2.64] ;   /* 0x0 */
        /*0070*/                   STL [R1], R0 ;   /* 0x0 */
        /*0080*/                   LDL.64 R2, [R1] ;   /* 0x0 */
        /*0090*/                   FFMA.FTZ R0, R1, R2, R3 ;   /* 0x0 */
        /*00a0*/                   LDS.128 R4, [R0] ;   /* 0x0 */
        /*00b0*/                   NOP;   /* 0x0 */
";
    let kernels = sass::parse_cuobjdump(text).expect("parses");
    assert_eq!(kernels.len(), 1);
    let k = &kernels[0];
    assert_eq!(
        (k.registers, k.stack_bytes, k.shared_bytes, k.local_bytes),
        (40, 16, 1024, 8)
    );
    let m = &k.mix;
    assert_eq!(m.total, 11, "NOP padding is not counted");
    assert_eq!(m.ldg, [1, 1, 0, 1]);
    assert_eq!(m.stg, [0, 0, 1, 0]);
    assert_eq!(m.hmma, 1, "HFMA2.MMA is not a tensor-core instruction");
    assert_eq!(m.ldgsts, [0, 0, 0, 1]);
    assert_eq!((m.ldl, m.stl, m.ffma), (1, 1, 1));
    assert_eq!(m.lds, [0, 0, 0, 1]);
    assert_eq!(m.global_128(), 2);
}

#[test]
fn gate_declarations_parse_and_reject_malformed_lines() {
    let source = "\
// asif-gate: a block=128 occupancy>=50% stack=24 why=\"v1 keeps a
//   runtime-indexed array\"
int a;
// asif-gate: b block=256 dynamic_shared=16448 occupancy>=25% tensor_core vector_io
";
    let parsed = kernel_sources::gate_declarations(source).expect("parses");
    assert_eq!(parsed.len(), 2);
    assert_eq!(
        (parsed[0].block_threads, parsed[0].min_occupancy_percent),
        (128, 50)
    );
    assert_eq!(parsed[0].allowed_stack_bytes, 24);
    assert_eq!(
        parsed[0].stack_reason.as_deref(),
        Some("v1 keeps a runtime-indexed array")
    );
    assert!(parsed[1].tensor_core && parsed[1].vector_io);
    assert_eq!(parsed[1].dynamic_shared_bytes, 16448);
    for bad in [
        "// asif-gate: a occupancy>=50%",
        "// asif-gate: a block=128",
        "// asif-gate: a block=128 occupancy>=0.5",
        "// asif-gate: a block=128 occupancy>=50% stack=24",
        "// asif-gate: a block=128 occupancy>=50% why=\"no stack\"",
        "// asif-gate: a block=128 occupancy>=50% fast",
        "// asif-gate: a block=128 occupancy>=50% why=\"unclosed",
        "// asif-gate: block=128 occupancy>=50%",
    ] {
        assert!(
            kernel_sources::gate_declarations(bad).is_err(),
            "accepted: {bad}"
        );
    }
}

/// On an sm_90 GPU (the GPU script runs this binary there): the driver's own occupancy
/// (`cuOccupancyMaxActiveBlocksPerMultiprocessor`) for every kernel at its declared launch shape
/// equals the calculator's that the report and the occupancy gate use. Skips without a GPU.
#[test]
fn occupancy_matches_the_driver_on_an_sm90_gpu() {
    if !compiled() || common::cuda().is_none() {
        return;
    }
    let context = cudarc::driver::CudaContext::new(0).expect("GPU 0 opened above");
    let capability = context.compute_capability().expect("compute capability");
    if capability != (9, 0) {
        common::skip(
            "occupancy against the driver",
            &format!(
                "GPU 0 is sm_{}{}, the cubins are sm_90",
                capability.0, capability.1
            ),
        );
        return;
    }
    let mut mismatches = Vec::new();
    for family in kernels::families() {
        let cubin = family.cubin_sm90.expect("compiled families embed a cubin");
        let module = context
            .load_module(cudarc::nvrtc::Ptx::from_binary(cubin.to_vec()))
            .unwrap_or_else(|e| panic!("{}: cannot load the cubin: {e}", family.name));
        for declaration in declarations(family.name, family.source) {
            let function = module
                .load_function(&declaration.kernel)
                .unwrap_or_else(|e| panic!("{}: {e}", declaration.kernel));
            let driver = function
                .occupancy_max_active_blocks_per_multiprocessor(
                    declaration.block_threads,
                    declaration.dynamic_shared_bytes as usize,
                    None,
                )
                .unwrap_or_else(|e| panic!("{}: {e}", declaration.kernel));
            let r = family
                .resources
                .iter()
                .find(|r| r.kernel == declaration.kernel)
                .expect("ptxas report");
            let ours = sass::occupancy(
                r.registers,
                r.shared_bytes,
                declaration.block_threads,
                declaration.dynamic_shared_bytes,
            );
            if ours.blocks_per_sm != driver {
                mismatches.push(format!(
                    "{}: driver {driver} blocks per SM, calculator {} ({:?})",
                    declaration.kernel, ours.blocks_per_sm, ours
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
