//! The crate's modules stand in layers, and each imports only from layers
//! below it: no cycle can come back. A new module must be given its layer
//! here. The import graph is read the way `../shared/tools/module_cycles.py`
//! reads it: `crate::NAME` in a top-level module's files, before their
//! first `#[cfg(test)]`, comments left out. Layers are explained in
//! docs/architecture.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom first.
const LAYERS: [&[&str]; 13] = [
    &["secret", "share", "tls", "error", "migration"],
    &["config"],
    &["access_log", "metrics", "telemetry"],
    &["body", "clients"],
    &["upstream"],
    &["state"],
    &["pleo"],
    &["credential"],
    &["proxy"],
    &["key_checks", "listener", "onboarding"],
    &["admin", "reload", "sandbox"],
    &["gateway"],
    &["cli"],
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every top-level module and the modules it names as `crate::X`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: BTreeMap<String, Vec<std::path::PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            let mut all = Vec::new();
            rust_files(&path, &mut all);
            files.insert(name, all);
        } else if name != "lib" && name != "main" && path.extension().is_some_and(|e| e == "rs") {
            files.insert(name, vec![path]);
        }
    }
    let mut graph = BTreeMap::new();
    for (module, paths) in &files {
        let mut named = BTreeSet::new();
        for path in paths {
            let text = std::fs::read_to_string(path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for line in code.lines() {
                let line = line.split("//").next().unwrap_or("");
                let mut rest = line;
                while let Some(i) = rest.find("crate::") {
                    rest = &rest[i + "crate::".len()..];
                    if let Some(group) = rest.strip_prefix('{') {
                        // `crate::{a, b::c}` on one line.
                        let inner = group.split('}').next().unwrap_or("");
                        named.extend(inner.split(',').map(|p| p.trim().split("::").next().unwrap_or("").to_string()));
                    } else {
                        let name: String = rest
                            .chars()
                            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                            .collect();
                        named.insert(name);
                    }
                }
            }
        }
        named.retain(|n| n != module && files.contains_key(n));
        graph.insert(module.clone(), named);
    }
    graph
}

#[test]
fn every_module_imports_only_from_the_layers_below_it() {
    let graph = imports();
    let layer_of = |m: &str| LAYERS.iter().position(|l| l.contains(&m));
    let mut wrong = Vec::new();
    for (module, named) in &graph {
        let Some(mine) = layer_of(module) else {
            wrong.push(format!("`{module}` has no layer: add it to LAYERS in tests/it/module_layers.rs"));
            continue;
        };
        for dep in named {
            match layer_of(dep) {
                Some(theirs) if theirs < mine => {}
                _ => wrong.push(format!("`{module}` (layer {mine}) imports `{dep}`, which is not below it")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(graph.len() > 15, "the src/ walk found the modules: {graph:?}");
}
