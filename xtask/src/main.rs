//! `cargo xtask`: the project's developer commands. Thin on purpose: each command is a few
//! calls to cargo and the system's package manager, said out loud before they run.
//!
//! - `cargo xtask build-plugins`: build `plugins-wasm/` into `target/plugins/`.
//! - `cargo xtask serve [ARGS]`: build the plugins, run wasmtpd on 127.0.0.1:2525 with the
//!   embedded default config, state under `var/` (with a self-signed certificate made on first
//!   start, so STARTTLS works); extra ARGS go to wasmtpd.
//! - `cargo xtask test [ARGS]`: install what the tests need, build the plugins, then run every
//!   test (extra ARGS go to `cargo test`). `.ci/run` calls exactly this.
//! - `cargo xtask bench [--quick]`: the benchmark against the peers (see `bench/mod.rs`).
//! - `cargo xtask new-plugin --lang rust|python|js|c NAME`: a plugin from a template
//!   (`new_plugin.rs`).

mod bench;
mod build_components;
mod build_plugins;
mod install;
mod new_plugin;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    match task.as_deref() {
        Some("build-plugins") => build_plugins::build_plugins(),
        Some("serve") => serve(&rest),
        Some("test") => test(&rest),
        Some("bench") => bench::bench(&rest),
        Some("new-plugin") => new_plugin::new_plugin(&rest),
        _ => {
            eprintln!("usage: cargo xtask <build-plugins|serve|test|bench|new-plugin> [ARGS]");
            eprintln!("  build-plugins  build plugins-wasm/ into target/plugins/ (installs the wasm32-wasip2 target)");
            eprintln!("  serve   run wasmtpd on 127.0.0.1:2525 with the embedded default config (state in var/)");
            eprintln!("  test    install test tools (swaks, python3, openssl, nsd) and run every test");
            eprintln!(
                "  new-plugin --lang rust|python|js|c NAME  a plugin directory from a template, with its session test"
            );
            eprintln!("  bench [--quick]  wasmtpd against smtp-sink, Postfix, Haraka and qpsmtpd; micro-benchmarks");
            eprintln!("        [--only wasmtpd-discard,wasmtpd-store] [--workloads W1,W2]  those alone, printed");
            std::process::exit(2);
        }
    }
}

/// The repository root (xtask lives one level below it).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Runs a command in the project root, echoing it; fails if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {}", describe(cmd));
    let status = cmd.current_dir(project_root()).status().with_context(|| format!("running {}", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed with {status}", describe(cmd));
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program().to_string_lossy().to_string())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().to_string()))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn serve(extra: &[String]) -> Result<()> {
    build_plugins::build_plugins()?;
    let var = project_root().join("var");
    std::fs::create_dir_all(&var)?;
    self_signed_certificate(&var.join("tls"))?;
    eprintln!(
        "wasmtpd: state in {}, mail for @localhost is delivered to {}",
        var.display(),
        var.join("maildir/new").display()
    );
    run(cargo()
        .args(["run", "--quiet", "--package", "wasmtpd", "--"])
        .args(["--listen", "127.0.0.1:2525", "--state-dir"])
        .arg(&var)
        .arg("--plugin-dir")
        .arg(build_plugins::plugin_dir())
        .args(extra))
}

/// The embedded default config's certificate (`tls/cert.pem`, `tls/key.pem` in the state
/// directory): a self-signed one for `localhost`, made on first start so STARTTLS works out of
/// the box. Clients will not trust it; put a real certificate in its place (see README).
fn self_signed_certificate(dir: &Path) -> Result<()> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.is_file() && key.is_file() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .context("generating a self-signed certificate")?;
    std::fs::write(&cert, generated.cert.pem())?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&key)?;
        f.write_all(generated.signing_key.serialize_pem().as_bytes())?;
    }
    eprintln!("xtask: made a self-signed certificate for localhost in {}", dir.display());
    Ok(())
}

fn test(extra: &[String]) -> Result<()> {
    install::test_tools()?;
    build_plugins::build_plugins()?;
    run(cargo().args(["build", "--package", "wasmtpd"]))?;
    run(cargo().args(["test", "--workspace"]).args(extra))
}
