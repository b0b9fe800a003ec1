//! `cargo xtask build-plugins`: builds every plugin in `plugins-wasm/` to a wasm32-wasip2
//! component and puts it where the server looks: `target/plugins/<name>.wasm`, where `<name>` is
//! `[package.metadata.wasmtpd] plugin` in the plugin's Cargo.toml (so `queue/maildir` becomes
//! `target/plugins/queue/maildir.wasm`).
//!
//! Installs the `wasm32-wasip2` target with rustup if it is missing. Python and JavaScript
//! plugins are built by `build_components.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, project_root, run};

pub const TARGET: &str = "wasm32-wasip2";

/// The directory the server's `--plugin-dir` points at.
pub fn plugin_dir() -> PathBuf {
    project_root().join("target").join("plugins")
}

pub fn build_plugins() -> Result<()> {
    let mut count = build_rust_plugins()?;
    count += crate::build_components::build()?;
    eprintln!("xtask: {count} plugins in {}", plugin_dir().display());
    Ok(())
}

/// The Rust plugins of `plugins-wasm/` alone (not the examples in other languages); how many.
pub fn build_rust_plugins() -> Result<usize> {
    ensure_target()?;
    let workspace = project_root().join("plugins-wasm");
    run(cargo()
        .args(["build", "--release", "--workspace", "--target", TARGET, "--manifest-path"])
        .arg(workspace.join("Cargo.toml")))?;
    let built = workspace.join("target").join(TARGET).join("release");
    let mut count = 0;
    for (package, plugin) in plugins(&workspace)? {
        let from = built.join(format!("{}.wasm", package.replace('-', "_")));
        let to = plugin_dir().join(format!("{plugin}.wasm"));
        std::fs::create_dir_all(to.parent().unwrap())?;
        std::fs::copy(&from, &to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        count += 1;
    }
    Ok(count)
}

fn ensure_target() -> Result<()> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match installed {
        Ok(o) if String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == TARGET) => Ok(()),
        Ok(_) => {
            eprintln!("xtask: installing the {TARGET} target with rustup");
            run(Command::new("rustup").args(["target", "add", TARGET]))
        }
        Err(_) => {
            // No rustup: hope the toolchain has the target (the build will say if not).
            eprintln!("xtask: rustup not found; assuming the toolchain has {TARGET}");
            Ok(())
        }
    }
}

/// (package name, plugin name) of every plugin crate under `dir`.
fn plugins(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() && path.file_name().is_some_and(|n| n != "target" && n != "src") {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "Cargo.toml") && d != dir {
                let text = std::fs::read_to_string(&path)?;
                let (Some(package), Some(plugin)) = (toml_value(&text, "name"), toml_value(&text, "plugin")) else {
                    continue;
                };
                out.push((package, plugin));
            }
        }
    }
    if out.is_empty() {
        bail!("no plugins found under {}", dir.display());
    }
    out.sort();
    Ok(out)
}

/// The first `key = "value"` line of a Cargo.toml (enough for `name` and `plugin`).
fn toml_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    })
}
