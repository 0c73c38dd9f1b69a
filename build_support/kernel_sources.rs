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

/// The source with every local `#include "x.cuh"` inlined once (`#pragma once` respected by
/// including each header at most once), so the result compiles with no include path. System
/// includes (`<cuda_fp16.h>`) are left for the compiler's include path.
pub fn flatten(path: &Path, kernel_dir: &Path) -> Result<String, String> {
    let mut seen = HashSet::new();
    let mut out = String::new();
    flatten_into(path, kernel_dir, &mut seen, &mut out)?;
    Ok(out)
}

fn flatten_into(
    path: &Path,
    kernel_dir: &Path,
    seen: &mut HashSet<PathBuf>,
    out: &mut String,
) -> Result<(), String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#pragma once") {
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix("#include \"") {
            let name = rest.split('"').next().unwrap_or_default();
            let header = kernel_dir.join(name);
            if seen.insert(header.clone()) {
                out.push_str(&format!("// ---- begin {name} ----\n"));
                flatten_into(&header, kernel_dir, seen, out)?;
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
/// entry point is written in exactly that form (see docs/architecture.md).
pub fn entry_points(source: &str) -> Vec<String> {
    let marker = "extern \"C\" __global__ void";
    let mut names = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find(marker) {
        rest = &rest[at + marker.len()..];
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
