// Shared by build.rs (NVRTC) and emulator/build.rs (g++): how kernel sources are found, flattened
// and scanned for entry points. Kept in one file so the GPU build and the emulator can never
// disagree about which kernels exist.
#![allow(dead_code)]

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Every `kernels/*.cu`, sorted by name, so generated code is stable.
pub fn kernel_files(kernel_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match fs::read_dir(kernel_dir) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "cu"))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// The family name of a kernel file: `kernels/layer_norm.cu` -> `layer_norm`.
pub fn family_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Every `kernels/*.cuh` (the headers a kernel may include), sorted by name.
pub fn header_files(kernel_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match fs::read_dir(kernel_dir) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "cuh"))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// The source with every local `#include "x.cuh"` inlined once (`#pragma once` respected by
/// including each header at most once), so the result compiles with no include path. System
/// includes (`<cuda_fp16.h>`) are left for the compiler's include path.
pub fn flatten(path: &Path, kernel_dir: &Path) -> Result<String, String> {
    let read = |path: &Path| {
        fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    flatten_text(&read(path)?, &mut |name: &str| read(&kernel_dir.join(name)))
}

/// [`flatten`] over text: `header(name)` gives the text of `#include "name"`. The crate flattens
/// a kernel family that another crate registers at run time with its embedded headers
/// (`asif_kernels::kernels::register`).
pub fn flatten_text(
    text: &str,
    header: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<String, String> {
    let mut seen = HashSet::new();
    let mut out = String::new();
    flatten_into(text, header, &mut seen, &mut out)?;
    Ok(out)
}

fn flatten_into(
    text: &str,
    header: &mut dyn FnMut(&str) -> Result<String, String>,
    seen: &mut HashSet<String>,
    out: &mut String,
) -> Result<(), String> {
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#pragma once") {
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix("#include \"") {
            let name = rest.split('"').next().unwrap_or_default();
            if seen.insert(name.to_string()) {
                out.push_str(&format!("// ---- begin {name} ----\n"));
                flatten_into(&header(name)?, header, seen, out)?;
                out.push_str(&format!("// ---- end {name} ----\n"));
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    Ok(())
}

/// Names of the `extern "C" __global__ void NAME(` entry points, in file order. Every kernel
/// entry point is written in exactly that form (see docs/architecture.md), optionally with
/// launch bounds between `void` and the name:
/// `extern "C" __global__ void __launch_bounds__(256, 2) NAME(`.
pub fn entry_points(source: &str) -> Vec<String> {
    let marker = "extern \"C\" __global__ void";
    let bounds = "__launch_bounds__";
    let mut names = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find(marker) {
        rest = rest[at + marker.len()..].trim_start();
        if let Some(after) = rest.strip_prefix(bounds) {
            // Skip the balanced parenthesised argument list (it may hold macro calls).
            let mut depth = 0usize;
            let mut end = None;
            for (i, c) in after.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    c if depth == 0 && !c.is_whitespace() => break,
                    _ => {}
                }
            }
            match end {
                Some(end) => rest = &after[end..],
                None => continue,
            }
        }
        let name: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            names.push(name);
        }
    }
    names
}

/// What a kernel declares about its own sm_90 build, in a `// asif-gate:` line of its `.cu` file
/// (next to its launch shapes), checked by the NVRTC tier (docs/kernels-sass.md):
///
/// ```text
/// // asif-gate: attention_forward block=128 occupancy>=50% stack=24 why="..."
/// // asif-gate: hie_forward block=256 dynamic_shared=16448 occupancy>=25%
/// // asif-gate: some_gemm block=128 occupancy>=25% tensor_core vector_io
/// ```
///
/// `block` and `dynamic_shared` are the launch shape at the paper's sizes (threads per block and
/// dynamic shared bytes, as its launcher in `src/ops/*/cuda.rs` computes them); `occupancy` is the
/// least theoretical occupancy the kernel must keep at that shape; `tensor_core`: its SASS must
/// contain HMMA; `vector_io`: it must have a 128-bit global load or store; `stack=N why="..."`
/// allow-lists exactly N bytes of stack frame (and the local memory it implies), with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct GateDeclaration {
    pub kernel: String,
    pub block_threads: u32,
    pub dynamic_shared_bytes: u32,
    /// Least theoretical occupancy, in percent of the SM's 64 warps.
    pub min_occupancy_percent: u32,
    pub tensor_core: bool,
    pub vector_io: bool,
    pub allowed_stack_bytes: u32,
    pub stack_reason: Option<String>,
}

/// The marker that starts a gate declaration in a comment.
pub const GATE_MARKER: &str = "asif-gate:";

/// Every `// asif-gate:` declaration in `source`, in file order.
/// A quoted `why="..."` may continue on the following `//` lines until its closing quote.
pub fn gate_declarations(source: &str) -> Result<Vec<GateDeclaration>, String> {
    let mut declarations = Vec::new();
    let mut lines = source.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        let Some(comment) = line.trim_start().strip_prefix("//") else {
            continue;
        };
        let Some(rest) = comment.trim_start().strip_prefix(GATE_MARKER) else {
            continue;
        };
        let mut text = rest.trim().to_string();
        while text.matches('"').count() % 2 == 1 {
            let Some(continued) = lines
                .next()
                .and_then(|(_, next)| next.trim_start().strip_prefix("//"))
            else {
                break;
            };
            text.push(' ');
            text.push_str(continued.trim());
        }
        declarations.push(
            parse_gate(&text)
                .map_err(|e| format!("line {}: `{}`: {e}", number + 1, line.trim()))?,
        );
    }
    Ok(declarations)
}

fn parse_gate(text: &str) -> Result<GateDeclaration, String> {
    let words = split_words(text)?;
    let mut words = words.into_iter();
    let kernel = words.next().ok_or("no kernel name")?;
    if kernel.contains('=') || kernel.is_empty() {
        return Err("the first word must be the kernel's name".into());
    }
    let mut gate = GateDeclaration {
        kernel,
        block_threads: 0,
        dynamic_shared_bytes: 0,
        min_occupancy_percent: 0,
        tensor_core: false,
        vector_io: false,
        allowed_stack_bytes: 0,
        stack_reason: None,
    };
    let mut occupancy_given = false;
    let number = |key: &str, value: &str| {
        value
            .parse::<u32>()
            .map_err(|_| format!("{key}={value} is not a whole number"))
    };
    for word in words {
        if word == "tensor_core" {
            gate.tensor_core = true;
        } else if word == "vector_io" {
            gate.vector_io = true;
        } else if let Some(value) = word.strip_prefix("occupancy>=") {
            let percent = value
                .strip_suffix('%')
                .ok_or_else(|| format!("occupancy>={value} must be a percentage (50%)"))?;
            gate.min_occupancy_percent = number("occupancy", percent)?;
            if gate.min_occupancy_percent > 100 {
                return Err(format!("occupancy>={value} is above 100%"));
            }
            occupancy_given = true;
        } else if let Some((key, value)) = word.split_once('=') {
            match key {
                "block" => gate.block_threads = number(key, value)?,
                "dynamic_shared" => gate.dynamic_shared_bytes = number(key, value)?,
                "stack" => gate.allowed_stack_bytes = number(key, value)?,
                "why" => gate.stack_reason = Some(value.to_string()),
                _ => return Err(format!("unknown key `{key}`")),
            }
        } else {
            return Err(format!("unknown word `{word}`"));
        }
    }
    if gate.block_threads == 0 || gate.block_threads > 1024 {
        return Err("block=N (1..=1024 threads, the real launch shape) is required".into());
    }
    if !occupancy_given {
        return Err("occupancy>=N% is required".into());
    }
    match (gate.allowed_stack_bytes, &gate.stack_reason) {
        (0, Some(_)) => return Err("why=\"...\" without stack=N".into()),
        (n, None) if n > 0 => return Err("stack=N needs why=\"the reason\"".into()),
        (_, Some(reason)) if reason.trim().is_empty() => return Err("why=\"\" is empty".into()),
        _ => {}
    }
    Ok(gate)
}

/// Whitespace-separated words; `key="a quoted value"` is one word, quotes removed.
fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = text.trim().chars().peekable();
    while chars.peek().is_some() {
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            if c == '"' {
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some(inner) => word.push(inner),
                        None => return Err("unclosed quote".into()),
                    }
                }
            } else {
                word.push(c);
            }
        }
        words.push(word);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
    }
    Ok(words)
}
