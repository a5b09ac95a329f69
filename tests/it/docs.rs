//! The docs are the contract, so they are checked against the code's own
//! tables: every error code (`ErrorCode::ALL`, with its status) has its row
//! in docs/errors.md and no row names a code the gateway does not have;
//! every metric family the code registers is in docs/metrics.md and
//! the other way round, and every store operation label the PostgreSQL
//! store emits is listed. No doc or comment cites a file that is not in the
//! repository.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use pleo_gateway::error::ErrorCode;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The first table's rows of a Markdown file: cells, without backticks.
fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().trim_matches('`').to_string()).collect())
        .collect()
}

/// Every `"<prefix>..."` string literal in `text` (letters, digits, `_`).
fn literals(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let needle = format!("\"{prefix}");
    let mut rest = text;
    while let Some(i) = rest.find(&needle) {
        rest = &rest[i + 1..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if rest[name.len()..].starts_with('"') {
            out.insert(name);
        }
    }
    out
}

#[test]
fn docs_errors_lists_every_error_code_with_its_status() {
    let documented: BTreeSet<(u16, String)> =
        rows(&read("docs/errors.md")).into_iter().map(|r| (r[0].parse().expect("a status"), r[1].clone())).collect();
    let code: BTreeSet<(u16, String)> =
        ErrorCode::ALL.iter().map(|c| (c.status().as_u16(), c.as_str().to_string())).collect();
    let missing: Vec<_> = code.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&code).collect();
    assert!(missing.is_empty(), "codes missing from docs/errors.md: {missing:?}");
    assert!(stale.is_empty(), "docs/errors.md rows the code does not have: {stale:?}");
}

#[test]
fn docs_metrics_lists_every_metric_family_and_store_operation() {
    let doc = read("docs/metrics.md");
    let documented: BTreeSet<String> = rows(&doc).into_iter().map(|r| r[0].clone()).collect();
    // Registered in src/metrics.rs, src/migration.rs for Pleo's 404/405 templates,
    // and src/telemetry/stats.rs for the spans.
    let mut code = literals(&read("src/metrics.rs"), "pleo_gateway_");
    code.extend(literals(&read("src/migration.rs"), "pleo_gateway_"));
    code.extend(literals(&read("src/telemetry/stats.rs"), "pleo_gateway_"));
    assert!(code.len() > 15, "the registrations were found: {code:?}");
    let missing: Vec<_> = code.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&code).collect();
    assert!(missing.is_empty(), "metrics missing from docs/metrics.md: {missing:?}");
    assert!(stale.is_empty(), "docs/metrics.md rows src/metrics.rs does not register: {stale:?}");

    // The `op` label's values: `run("op", ..)` and `observe("op", ..)` in the PostgreSQL store.
    let store_row = rows(&doc)
        .into_iter()
        .find(|r| r[0] == "pleo_gateway_store_operation_duration_seconds")
        .expect("the store operation row");
    let mut ops = BTreeSet::new();
    for file in ["src/state/postgres/mod.rs", "src/state/postgres/onboarding.rs"] {
        let text = read(file);
        for call in ["run(\"", "observe(\""] {
            for part in text.split(call).skip(1) {
                ops.insert(part.split('"').next().unwrap_or_default().to_string());
            }
        }
    }
    assert!(ops.contains("lease") && ops.contains("link"), "{ops:?}");
    for op in &ops {
        assert!(store_row[2].contains(op.as_str()), "store op `{op}` is not in docs/metrics.md: {}", store_row[2]);
    }
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs" || e == "md" || e == "sh") {
            out.push(path);
        }
    }
}

#[test]
fn no_doc_or_comment_cites_a_file_that_is_not_in_the_repository() {
    let mut all = vec![root().join("README.md")];
    for dir in ["src", "tests", "docs", "benches", "bench", "examples"] {
        files(&root().join(dir), &mut all);
    }
    let mut missing = Vec::new();
    for path in &all {
        let text = std::fs::read_to_string(path).unwrap();
        for top in ["src/", "tests/", "docs/", "benches/", "bench/", "deploy/", "examples/"] {
            let mut rest = text.as_str();
            while let Some(i) = rest.find(top) {
                let before = rest[..i].chars().last();
                rest = &rest[i..];
                let cited: String =
                    rest.chars().take_while(|c| c.is_ascii_alphanumeric() || "_-./".contains(*c)).collect();
                rest = &rest[top.len()..];
                // Only whole relative paths to a file: `../shared/bench/` and `$here/bench/` are not ours.
                let file = cited.trim_end_matches('.');
                let whole = !matches!(before, Some(c) if c.is_ascii_alphanumeric() || "/._-$".contains(c));
                let a_file = [".rs", ".md", ".sh", ".yaml", ".json", ".toml"].iter().any(|e| file.ends_with(e));
                if whole && a_file && !root().join(file).exists() {
                    missing.push(format!("{}: {file}", path.strip_prefix(root()).unwrap().display()));
                }
            }
        }
    }
    assert!(missing.is_empty(), "cited but not in the repository:\n{}", missing.join("\n"));
}
