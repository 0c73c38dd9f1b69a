//! Reading sm_90 cubins on a machine with no GPU: `cuobjdump -res-usage -sass` (NVIDIA's pip
//! wheel, installed by scripts/install-nvrtc.sh), an instruction mix per kernel, theoretical
//! occupancy at a declared launch shape, the gates of `// asif-gate:` declarations, and the
//! report committed as docs/kernels-sass.md.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::kernel_sources::GateDeclaration;

/// `cuobjdump` and its version, found in an NVRTC home (`nvidia/cu13/bin`).
pub struct Cuobjdump {
    path: PathBuf,
    pub version: String,
}

impl Cuobjdump {
    pub fn locate(homes: &[PathBuf]) -> Result<Cuobjdump, String> {
        let path = homes
            .iter()
            .map(|home| home.join("nvidia/cu13/bin/cuobjdump"))
            .find(|path| path.exists())
            .ok_or_else(|| {
                format!(
                    "no nvidia/cu13/bin/cuobjdump in {}; run scripts/install-nvrtc.sh",
                    homes
                        .iter()
                        .map(|h| h.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        let output = Command::new(&path)
            .arg("--version")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
        let text = String::from_utf8_lossy(&output.stdout);
        // "Cuda compilation tools, release 13.5, V13.5.37"
        let version = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix('V'))
            .filter(|v| v.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .ok_or_else(|| format!("{} --version printed no version: {text}", path.display()))?
            .to_string();
        Ok(Cuobjdump { path, version })
    }

    /// Resource usage and instruction mix of every function in `cubin`.
    pub fn read(&self, cubin: &[u8], name: &str) -> Result<Vec<SassKernel>, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temporary folder: {e}"))?;
        let file = dir.path().join(format!("{name}.cubin"));
        std::fs::write(&file, cubin).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut command = Command::new(&self.path);
        // cuobjdump -sass runs nvdisasm: the one shipped beside it, whatever is on PATH.
        if let Some(dir) = self.path.parent() {
            command.env("NVDISASM_PATH", dir.join("nvdisasm"));
        }
        let output = command
            .args(["-res-usage", "-sass"])
            .arg(&file)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.path.display()))?;
        if !output.status.success() {
            return Err(format!(
                "cuobjdump failed on {name}: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        parse_cuobjdump(&String::from_utf8_lossy(&output.stdout))
    }
}

/// Static counts of the instructions a reviewer looks at (each instruction in the SASS counted
/// once, whatever a loop does with it at run time).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InstructionMix {
    pub total: u32,
    pub hmma: u32,
    /// Global loads and stores by width: ≤16, 32, 64, 128 bits.
    pub ldg: [u32; 4],
    pub stg: [u32; 4],
    /// Shared loads and stores by width.
    pub lds: [u32; 4],
    pub sts: [u32; 4],
    /// `cp.async` (global → shared without registers) and `ldmatrix`.
    pub ldgsts: [u32; 4],
    pub ldsm: u32,
    pub ldl: u32,
    pub stl: u32,
    /// Global reductions and atomics (RED, ATOM).
    pub atomics: u32,
    pub ffma: u32,
}

impl InstructionMix {
    fn count(&mut self, instruction: &str) {
        let mut words = instruction.split_whitespace();
        let mut opcode = words.next().unwrap_or_default();
        if opcode.starts_with('@') {
            opcode = words.next().unwrap_or_default();
        }
        if opcode.is_empty() || opcode == "NOP" {
            return;
        }
        self.total += 1;
        let mut parts = opcode.split('.');
        let base = parts.next().unwrap_or_default();
        let modifiers: Vec<&str> = parts.collect();
        let width = || -> usize {
            if modifiers.contains(&"128") {
                3
            } else if modifiers.contains(&"64") {
                2
            } else if modifiers
                .iter()
                .any(|m| matches!(*m, "U8" | "S8" | "U16" | "S16"))
            {
                0
            } else {
                1
            }
        };
        match base {
            "HMMA" => self.hmma += 1,
            "LDG" => self.ldg[width()] += 1,
            "STG" => self.stg[width()] += 1,
            "LDS" => self.lds[width()] += 1,
            "STS" => self.sts[width()] += 1,
            "LDGSTS" => self.ldgsts[width()] += 1,
            "LDSM" => self.ldsm += 1,
            "LDL" => self.ldl += 1,
            "STL" => self.stl += 1,
            "RED" | "REDG" | "ATOM" | "ATOMG" | "REDUX" => self.atomics += 1,
            "FFMA" => self.ffma += 1,
            _ => {}
        }
    }

    /// 128-bit global accesses: LDG.128, STG.128 and 16-byte cp.async.
    pub fn global_128(&self) -> u32 {
        self.ldg[3] + self.stg[3] + self.ldgsts[3]
    }
}

/// One function of a cubin as cuobjdump reads it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SassKernel {
    pub name: String,
    pub registers: u32,
    pub stack_bytes: u32,
    /// Shared memory of the function as the cubin records it (on sm_90 including the 1 KiB the
    /// system reserves per block when the kernel uses shared memory).
    pub shared_bytes: u32,
    pub local_bytes: u32,
    pub mix: InstructionMix,
}

/// Parses `cuobjdump -res-usage -sass` output.
pub fn parse_cuobjdump(text: &str) -> Result<Vec<SassKernel>, String> {
    let mut kernels: BTreeMap<String, SassKernel> = BTreeMap::new();
    let mut usage_of: Option<String> = None;
    let mut sass_of: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("Function : ") {
            let name = name.trim().to_string();
            kernels.entry(name.clone()).or_default().name = name.clone();
            sass_of = Some(name);
            usage_of = None;
        } else if let Some(name) = trimmed
            .strip_prefix("Function ")
            .and_then(|rest| rest.strip_suffix(':'))
        {
            let name = name.trim().to_string();
            kernels.entry(name.clone()).or_default().name = name.clone();
            usage_of = Some(name);
        } else if trimmed.starts_with("REG:") {
            let name = usage_of
                .as_ref()
                .ok_or_else(|| format!("resource line outside a function: {trimmed}"))?;
            let kernel = kernels.get_mut(name).expect("inserted above");
            for field in trimmed.split_whitespace() {
                let Some((key, value)) = field.split_once(':') else {
                    continue;
                };
                let value = value.parse::<u32>().ok();
                match (key, value) {
                    ("REG", Some(v)) => kernel.registers = v,
                    ("STACK", Some(v)) => kernel.stack_bytes = v,
                    ("SHARED", Some(v)) => kernel.shared_bytes = v,
                    ("LOCAL", Some(v)) => kernel.local_bytes = v,
                    _ => {}
                }
            }
        } else if let Some(rest) = trimmed.strip_prefix("/*") {
            // `/*0a40*/   @!P0 LDG.E.128 R4, desc[UR6][R2.64] ;   /* 0x... */`; the encoding's
            // second half is a line of its own, `/* 0x... */`, with no address.
            let Some((address, instruction)) = rest.split_once("*/") else {
                continue;
            };
            if address.is_empty() || !address.chars().all(|c| c.is_ascii_hexdigit()) {
                continue;
            }
            let Some(name) = &sass_of else { continue };
            let instruction = instruction.split(';').next().unwrap_or_default();
            kernels
                .get_mut(name)
                .expect("inserted above")
                .mix
                .count(instruction);
        }
    }
    Ok(kernels.into_values().collect())
}

/// sm_90 (H100/H200) limits, as the CUDA occupancy calculator uses them.
pub mod sm90 {
    pub const MAX_WARPS: u32 = 64;
    pub const MAX_BLOCKS: u32 = 32;
    pub const REGISTERS: u32 = 65_536;
    /// Registers are allocated per warp in units of 256.
    pub const REGISTER_UNIT: u32 = 256;
    /// Warps are allocated to the register file in groups of 4.
    pub const WARP_GRANULARITY: u32 = 4;
    pub const SHARED_BYTES: u32 = 233_472;
    pub const MAX_SHARED_PER_BLOCK: u32 = 232_448;
    /// Shared memory the system reserves for every block.
    pub const RESERVED_SHARED_PER_BLOCK: u32 = 1024;
    pub const SHARED_UNIT: u32 = 128;
}

/// Theoretical occupancy of one kernel at one launch shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occupancy {
    pub blocks_per_sm: u32,
    pub warps_per_sm: u32,
    /// What bounds `blocks_per_sm`: "warps", "blocks", "registers" or "shared memory".
    pub limited_by: &'static str,
}

impl Occupancy {
    pub fn percent(&self) -> f64 {
        100.0 * f64::from(self.warps_per_sm) / f64::from(sm90::MAX_WARPS)
    }
}

/// Blocks and warps one SM holds at once for a kernel of `registers` per thread and
/// `static_shared` bytes, launched with `block` threads and `dynamic_shared` bytes.
pub fn occupancy(registers: u32, static_shared: u32, block: u32, dynamic_shared: u32) -> Occupancy {
    use sm90::*;
    let warps_per_block = block.div_ceil(32).max(1);
    let by_warps = MAX_WARPS / warps_per_block;
    let by_registers = if registers == 0 {
        u32::MAX
    } else {
        let per_warp = (registers * 32).div_ceil(REGISTER_UNIT) * REGISTER_UNIT;
        let warps = (REGISTERS / per_warp) / WARP_GRANULARITY * WARP_GRANULARITY;
        warps / warps_per_block
    };
    let shared = static_shared + dynamic_shared;
    let by_shared = if shared > MAX_SHARED_PER_BLOCK {
        0
    } else {
        let per_block = (shared + RESERVED_SHARED_PER_BLOCK).div_ceil(SHARED_UNIT) * SHARED_UNIT;
        SHARED_BYTES / per_block
    };
    let limits = [
        (MAX_BLOCKS, "blocks"),
        (by_warps, "warps"),
        (by_registers, "registers"),
        (by_shared, "shared memory"),
    ];
    let (blocks, limited_by) = limits
        .iter()
        .copied()
        .min_by_key(|(blocks, _)| *blocks)
        .expect("four limits");
    Occupancy {
        blocks_per_sm: blocks,
        warps_per_sm: blocks * warps_per_block,
        limited_by,
    }
}

/// What ptxas reported for one kernel (from the build's embedded report or a probe's log).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ptxas {
    pub registers: u32,
    pub static_shared_bytes: u32,
    pub stack_bytes: u32,
    pub spill_bytes: u32,
}

/// One kernel: its declaration, ptxas' report and its SASS.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub family: String,
    pub name: String,
    pub declaration: Option<GateDeclaration>,
    pub ptxas: Ptxas,
    pub sass: SassKernel,
}

/// A gate a kernel fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Gate {
    /// No `// asif-gate:` line for the kernel.
    Undeclared,
    /// A stack frame, local memory or spills beyond what it allow-lists (or an allow-list that
    /// no longer matches).
    Stack,
    /// Theoretical occupancy below the declared least.
    Occupancy,
    /// Declares `tensor_core`, has no HMMA.
    TensorCore,
    /// Declares `vector_io`, has no 128-bit global access.
    VectorIo,
}

impl Kernel {
    pub fn occupancy(&self) -> Option<Occupancy> {
        self.declaration.as_ref().map(|d| {
            occupancy(
                self.ptxas.registers,
                self.ptxas.static_shared_bytes,
                d.block_threads,
                d.dynamic_shared_bytes,
            )
        })
    }

    /// Every gate this kernel fails, with the reason.
    pub fn violations(&self) -> Vec<(Gate, String)> {
        let name = &self.name;
        let Some(declaration) = &self.declaration else {
            return vec![(
                Gate::Undeclared,
                format!(
                    "{name} has no `// asif-gate: {name} block=N occupancy>=N%` line in kernels/{}.cu",
                    self.family
                ),
            )];
        };
        let mut failed = Vec::new();
        let allowed = declaration.allowed_stack_bytes;
        let local_memory = self.sass.local_bytes + self.sass.mix.ldl + self.sass.mix.stl;
        if self.ptxas.spill_bytes > 0 {
            failed.push((
                Gate::Stack,
                format!("{name} spills {} bytes", self.ptxas.spill_bytes),
            ));
        }
        if allowed == 0 && (self.ptxas.stack_bytes > 0 || local_memory > 0) {
            failed.push((
                Gate::Stack,
                format!(
                    "{name} has a {}-byte stack frame, {} bytes of local memory, {} LDL and {} STL: \
                     remove them, or allow-list the frame with `stack={} why=\"...\"`",
                    self.ptxas.stack_bytes,
                    self.sass.local_bytes,
                    self.sass.mix.ldl,
                    self.sass.mix.stl,
                    self.ptxas.stack_bytes
                ),
            ));
        } else if allowed > 0 && self.ptxas.stack_bytes != allowed {
            failed.push((
                Gate::Stack,
                format!(
                    "{name} allow-lists a {allowed}-byte stack frame but has {} bytes: update or \
                     remove its `stack=` declaration",
                    self.ptxas.stack_bytes
                ),
            ));
        }
        if self.sass.stack_bytes != self.ptxas.stack_bytes {
            failed.push((
                Gate::Stack,
                format!(
                    "{name}: ptxas reports a {}-byte stack frame, the cubin {} bytes",
                    self.ptxas.stack_bytes, self.sass.stack_bytes
                ),
            ));
        }
        if let Some(occupancy) = self.occupancy() {
            // Compare in warps: percent · 64 / 100 rounded up is the least warp count.
            let least_warps = (declaration.min_occupancy_percent * sm90::MAX_WARPS).div_ceil(100);
            if occupancy.warps_per_sm < least_warps {
                failed.push((
                    Gate::Occupancy,
                    format!(
                        "{name} reaches {:.1}% occupancy ({} warps per SM, limited by {}) at \
                         block={} dynamic_shared={}, below its declared {}%",
                        occupancy.percent(),
                        occupancy.warps_per_sm,
                        occupancy.limited_by,
                        declaration.block_threads,
                        declaration.dynamic_shared_bytes,
                        declaration.min_occupancy_percent
                    ),
                ));
            }
        }
        if declaration.tensor_core && self.sass.mix.hmma == 0 {
            failed.push((
                Gate::TensorCore,
                format!("{name} declares tensor_core but its SASS has no HMMA"),
            ));
        }
        if declaration.vector_io && self.sass.mix.global_128() == 0 {
            failed.push((
                Gate::VectorIo,
                format!(
                    "{name} declares vector_io but has no 128-bit global access (LDG.128, STG.128, \
                     LDGSTS.128)"
                ),
            ));
        }
        failed
    }
}

fn widths(counts: &[u32; 4]) -> String {
    format!("{}/{}/{}/{}", counts[0], counts[1], counts[2], counts[3])
}

/// The tools the report was made with.
pub struct Provenance {
    pub nvrtc_version: (i32, i32),
    pub cuobjdump_version: String,
}

/// docs/kernels-sass.md: deterministic (same kernels and tools, same bytes).
pub fn render_report(kernels: &[Kernel], provenance: &Provenance) -> String {
    let mut out = String::new();
    let (major, minor) = provenance.nvrtc_version;
    let _ = writeln!(out, "# Kernel resources and SASS (sm_90)\n");
    let _ = writeln!(
        out,
        "Generated by `scripts/sass-report.sh`; do not edit. Source: the sm_90 cubins that \
         `build.rs` compiles with NVRTC {major}.{minor}, read by `cuobjdump -res-usage -sass` \
         {} (pip wheels pinned in `scripts/install-nvrtc.sh`; no GPU needed). The NVRTC tier \
         (`tests/nvrtc.rs`) regenerates this file in every CI run and fails when it differs from \
         the committed copy, so a change to a kernel shows here in review.\n",
        provenance.cuobjdump_version
    );
    out.push_str(
        "## How to read it\n\n\
         - **launch**: `block` threads per block and `dynamic` shared bytes at the paper's sizes \
         (d = 256, h = 4, n = 50, r = 16), as the kernel's `// asif-gate:` line declares them; \
         they must match its launcher in `src/ops/` (syntax: docs/build.md).\n\
         - **regs, stack, spill, static smem**: ptxas' report (`--ptxas-options=-v`); **local**: \
         local memory the cubin records. A stack frame or local memory means an array indexed at \
         run time or a spill: slow memory traffic hidden in the kernel.\n\
         - **occupancy**: theoretical, at the launch shape, as the CUDA occupancy calculator \
         computes it for sm_90 (64 warps, 32 blocks, 64 K registers allocated per warp in units \
         of 256, 228 KiB shared memory with 1 KiB reserved per block; on an sm_90 GPU the NVRTC \
         tier checks it against the driver's own answer); **limit** is what bounds it. **declared** is the least the kernel promises (`occupancy>=N%`).\n\
         - **instruction mix**: static counts in the SASS (each instruction once, however often \
         a loop runs it). Widths are bits, `≤16/32/64/128`: LDG/STG global, LDS/STS shared, \
         LDGSTS `cp.async`; `LDG.128` and `STG.128` are vector (float4) accesses. HMMA is a \
         tensor-core instruction, LDSM `ldmatrix`, LDL/STL local memory, RED/ATOM global \
         reductions and atomics, FFMA fp32 fused multiply-adds (the CUDA-core math).\n\
         - **gates** (`tests/nvrtc.rs`, see docs/testing.md): no stack frame, local memory or \
         spill unless allow-listed by name with a reason; occupancy at least the declared; HMMA \
         present when the kernel declares `tensor_core`; a 128-bit global access when it \
         declares `vector_io`. `ok` when all hold.\n\n",
    );
    out.push_str("## Resources and occupancy\n\n");
    out.push_str(
        "| kernel | launch | regs | stack B | spill B | local B | static smem B | blocks/SM | occupancy | limit | declared |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---|---|\n",
    );
    for kernel in kernels {
        let (launch, declared) = match &kernel.declaration {
            Some(d) => {
                let mut declared = format!("≥{}%", d.min_occupancy_percent);
                if d.tensor_core {
                    declared.push_str(", tensor_core");
                }
                if d.vector_io {
                    declared.push_str(", vector_io");
                }
                (
                    format!(
                        "block {}, dynamic {}",
                        d.block_threads, d.dynamic_shared_bytes
                    ),
                    declared,
                )
            }
            None => ("undeclared".to_string(), "undeclared".to_string()),
        };
        let (blocks, percent, limit) = match kernel.occupancy() {
            Some(o) => (
                o.blocks_per_sm.to_string(),
                format!("{:.1}%", o.percent()),
                o.limited_by.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(
            out,
            "| `{}` | {launch} | {} | {} | {} | {} | {} | {blocks} | {percent} | {limit} | {declared} |",
            kernel.name,
            kernel.ptxas.registers,
            kernel.ptxas.stack_bytes,
            kernel.ptxas.spill_bytes,
            kernel.sass.local_bytes,
            kernel.ptxas.static_shared_bytes,
        );
    }
    out.push_str("\n## Instruction mix\n\n");
    out.push_str(
        "| kernel | instructions (no NOP) | HMMA | LDG ≤16/32/64/128 | STG ≤16/32/64/128 | LDS ≤16/32/64/128 | STS ≤16/32/64/128 | LDGSTS ≤16/32/64/128 | LDSM | LDL | STL | RED/ATOM | FFMA | gates |\n\
         |---|---:|---:|---|---|---|---|---|---:|---:|---:|---:|---:|---|\n",
    );
    for kernel in kernels {
        let m = &kernel.sass.mix;
        let violations = kernel.violations();
        let gates = if violations.is_empty() {
            "ok".to_string()
        } else {
            let mut names: Vec<String> = violations.iter().map(|(g, _)| format!("{g:?}")).collect();
            names.dedup();
            format!("FAILS {}", names.join(", "))
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {gates} |",
            kernel.name,
            m.total,
            m.hmma,
            widths(&m.ldg),
            widths(&m.stg),
            widths(&m.lds),
            widths(&m.sts),
            widths(&m.ldgsts),
            m.ldsm,
            m.ldl,
            m.stl,
            m.atomics,
            m.ffma,
        );
    }
    let allowed: Vec<&Kernel> = kernels
        .iter()
        .filter(|k| {
            k.declaration
                .as_ref()
                .is_some_and(|d| d.stack_reason.is_some())
        })
        .collect();
    out.push_str("\n## Allow-listed\n\n");
    if allowed.is_empty() {
        out.push_str("None.\n");
    }
    for kernel in allowed {
        let d = kernel.declaration.as_ref().expect("filtered");
        let _ = writeln!(
            out,
            "- `{}` (kernels/{}.cu): a {}-byte stack frame. {}",
            kernel.name,
            kernel.family,
            d.allowed_stack_bytes,
            d.stack_reason.as_deref().unwrap_or_default()
        );
    }
    out
}

/// The first line where two texts differ, for a failure message.
pub fn first_difference(expected: &str, actual: &str) -> String {
    let mut expected_lines = expected.lines();
    let mut actual_lines = actual.lines();
    for number in 1.. {
        match (expected_lines.next(), actual_lines.next()) {
            (None, None) => break,
            (e, a) if e == a => continue,
            (e, a) => {
                return format!(
                    "line {number}:\n  committed: {}\n  generated: {}",
                    e.unwrap_or("(end of file)"),
                    a.unwrap_or("(end of file)")
                )
            }
        }
    }
    "the texts are equal".to_string()
}

/// `path` relative to the crate root, for messages.
pub fn display(path: &Path) -> String {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path)
        .display()
        .to_string()
}
