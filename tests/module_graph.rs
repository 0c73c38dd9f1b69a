//! The crate's top-level modules import each other without cycles (issue 17): no module imports
//! one that imports it back, directly or through others. Read from the sources: every
//! `crate::name` outside comments, with the crate root's re-exports (`Error`, `Tensor`, …)
//! counted as imports of the module that defines them.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crate root's re-exports and macros, by the module that defines them.
fn owner(name: &str) -> &str {
    match name {
        "Error" | "Result" => "error",
        "Tensor" | "IndexTensor" => "tensor",
        "Device" | "kernel_args" => "device",
        other => other,
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn identifier(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The top-level modules `source` names through `crate::`.
fn imports(source: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a::b, C}`: the first name of each item at depth 1 (one line's worth).
                let mut depth = 0;
                let mut item_start = true;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => item_start = true,
                        c if item_start && depth == 0 && (c.is_alphanumeric() || c == '_') => {
                            out.insert(owner(identifier(&group[i..])).to_string());
                            item_start = false;
                        }
                        _ => {}
                    }
                }
            } else {
                let name = identifier(rest);
                if !name.is_empty() {
                    out.insert(owner(name).to_string());
                }
            }
        }
    }
    out
}

fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_string_lossy().trim_end_matches(".rs").to_string();
        if module == "lib" {
            continue;
        }
        let source = std::fs::read_to_string(&file).unwrap();
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(imports(&source).into_iter().filter(|m| *m != module));
    }
    graph
}

/// A cycle through `start`, if any (depth-first search for a path back to it).
fn cycle_through(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![start.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap();
        for next in graph.get(last).into_iter().flatten() {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(next.clone());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let graph = module_graph();
    assert!(graph.contains_key("autograd") && graph.contains_key("ops"));
    assert!(
        graph["ops"].contains("autograd"),
        "the reader sees the ops' tape faces"
    );
    for module in graph.keys() {
        if let Some(cycle) = cycle_through(&graph, module) {
            panic!("import cycle: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn the_reader_sees_grouped_and_root_imports() {
    let found = imports("use crate::{ops::add::add, Error, Tensor};\n// crate::model\n");
    let want: BTreeSet<String> = ["ops", "error", "tensor"].map(String::from).into();
    assert_eq!(found, want);
}
