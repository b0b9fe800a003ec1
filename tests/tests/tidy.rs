//! The docs checked against the code (rust-analyzer's `tidy.rs` is the model): what
//! ARCHITECTURE.md, README.md and docs/security.md say exists must exist.
//!
//! - Every path in ARCHITECTURE.md's code map is a file or directory of the repository.
//! - README's hook table lists exactly the hooks of `wit/hooks.wit`.
//! - The server's hook table (`wasmtpd_smtp::for_each_hook!`, seen as `Hook::ALL`), the
//!   interfaces of `wit/hooks.wit` and the exports of `wit/world.wit`'s world `plugin` name the
//!   same hooks in the same order.
//! - Every test docs/security.md names is a function of the repository (a row whose test was
//!   renamed or removed is a claim nobody checks any more).

use std::path::{Path, PathBuf};

use wasmtpd_smtp::Hook;
use wasmtpd_tests::repo_root;

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The `backticked` pieces of a line.
fn code_spans(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

/// The rows of the markdown table that follows the heading `heading` (to the next heading).
fn table_rows<'a>(text: &'a str, heading: &str) -> Vec<Vec<&'a str>> {
    let mut in_section = false;
    let mut rows = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            in_section = line.trim_start_matches('#').trim() == heading;
            continue;
        }
        if in_section && line.starts_with('|') && !line.starts_with("|---") {
            rows.push(line.trim_matches('|').split(" | ").map(str::trim).collect());
        }
    }
    assert!(!rows.is_empty(), "no table under the heading {heading:?}");
    rows
}

/// Every `.rs` file of the repository (build output, toolchains and fuzz corpora left out).
fn rust_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() {
                if !matches!(name.to_str(), Some("target" | ".git" | "corpus" | "node_modules")) {
                    walk(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo_root(), &mut out);
    out
}

#[test]
fn the_code_map_names_only_paths_that_exist() {
    let text = read("ARCHITECTURE.md");
    let root = repo_root();
    let mut checked = 0;
    for row in table_rows(&text, "Code map").into_iter().skip(1) {
        let Some(files) = row.last() else { continue };
        for span in code_spans(files) {
            // `crates/x/src/y.rs` or `plugins-wasm/` are paths; `decide`, `HookRunner` are names.
            if !span.contains('/') {
                continue;
            }
            let path = span.trim_end_matches('/');
            let path = path.split_once('{').map_or(path, |(p, _)| p); // `fuzz/fuzz_targets/{a,b}.rs`
            assert!(root.join(path).exists(), "ARCHITECTURE.md's code map names `{span}`, which does not exist");
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} paths found in the code map: is the table still there?");
}

/// The interfaces of `wit/hooks.wit`, in order.
fn hook_interfaces() -> Vec<String> {
    let wit: Vec<String> = read("wit/hooks.wit")
        .lines()
        .filter_map(|l| l.strip_prefix("interface "))
        .map(|l| l.trim_end_matches(" {").trim().to_string())
        .collect();
    assert!(wit.len() > 15, "hooks.wit: {wit:?}");
    wit
}

/// What `wit/world.wit`'s world `plugin` exports, in order.
fn world_exports() -> Vec<String> {
    let text = read("wit/world.wit");
    let body = text.split_once("world plugin {").expect("world.wit has a world `plugin`").1;
    let body = body.split_once('}').expect("world `plugin` ends").0;
    body.lines().filter_map(|l| l.trim().strip_prefix("export ")).map(|l| l.trim_end_matches(';').to_string()).collect()
}

#[test]
fn the_hook_table_names_the_hooks_of_the_wit_in_order() {
    let table: Vec<String> = Hook::ALL.iter().map(|h| h.name().replace('_', "-")).collect();
    assert_eq!(
        table,
        world_exports(),
        "the hook table (crates/smtp/src/hook_table.rs) and wit/world.wit's `plugin` exports disagree"
    );
    assert_eq!(
        table,
        hook_interfaces(),
        "the hook table (crates/smtp/src/hook_table.rs) and wit/hooks.wit's interfaces disagree"
    );
}

#[test]
fn the_readme_lists_the_hooks_of_the_wit() {
    let wit = hook_interfaces();
    let readme = read("README.md");
    let mut listed = Vec::new();
    // The table whose header is `| hook | runs | ... |`; its first column holds the hooks
    // (`auth-plain`, `auth-login`, then `auth`).
    let mut in_hook_table = false;
    for row in table_rows(&readme, "Writing a plugin") {
        let Some(first) = row.first() else { continue };
        if !first.contains('`') {
            in_hook_table = *first == "hook";
            continue;
        }
        if in_hook_table {
            listed.extend(code_spans(first).into_iter().map(str::to_string));
        }
    }
    let mut wit_sorted = wit.clone();
    wit_sorted.sort();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(listed_sorted, wit_sorted, "README's hook table and wit/hooks.wit disagree");
}

#[test]
fn every_test_security_md_names_exists() {
    let text = read("docs/security.md");
    let sources: Vec<(PathBuf, String)> =
        rust_files().into_iter().map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap_or_default())).collect();
    let defines = |name: &str| sources.iter().any(|(_, s)| s.contains(&format!("fn {name}(")));
    let mut checked = 0;
    for line in text.lines().filter(|l| l.starts_with('|') && !l.starts_with("|---")) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
        let Some(test) = cells.last() else { continue };
        for span in code_spans(test) {
            if span.ends_with(".rs") || span.contains('{') {
                // A file: `sandbox.rs`, `fuzz/fuzz_targets/{command,data}.rs`.
                let file = span.split_once('{').map_or(span, |(p, _)| p);
                let base = file.rsplit('/').next().unwrap_or(file);
                assert!(
                    base.is_empty() || sources.iter().any(|(p, _)| p.to_string_lossy().contains(file)),
                    "docs/security.md names the file `{span}`, which does not exist"
                );
                continue;
            }
            if !span.contains("::") {
                continue; // a name in passing (`noteflood`, `StderrLog`)
            }
            let name = span.rsplit("::").next().unwrap_or(span);
            let name = name.split_whitespace().next().unwrap_or(name);
            assert!(defines(name), "docs/security.md names the test `{span}`, but no `fn {name}` exists");
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} tests found in docs/security.md");
}
