//! `wasmtpd plugin inspect FILE.wasm [--name NAME] [--config DIR]`: what a component asks for,
//! printed for an operator vetting it: its size and hash (what a `config/plugins` pin names),
//! the contract it was built against, the hooks it exports, every interface it imports
//! (marked granted or not for plugin NAME's `config/sandbox` lines when a config is given), and
//! the toolchains that made it.

use std::fmt::Write as _;
use std::path::Path;

use wasmtpd_host::inspect::{ImportStatus, Inspection, status};
use wasmtpd_host::sandbox::SandboxSettings;

use crate::config::{Config, ConfigSource};

/// The plugin's sandbox under `config`, if a config is given: `Ok(None)` without one; an
/// error if NAME has no line in its `config/plugins`.
pub fn sandbox_of(config: Option<&Path>, name: &str) -> anyhow::Result<Option<SandboxSettings>> {
    let Some(dir) = config else { return Ok(None) };
    let config =
        Config::load(ConfigSource::Dir(dir.to_path_buf())).map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    match config.plugins.iter().find(|p| p.instance == name) {
        Some(line) => Ok(Some(line.sandbox.clone())),
        None => anyhow::bail!(
            "{} lists no plugin `{name}`: give the instance name with --name",
            config.source.display("plugins")
        ),
    }
}

/// The report, as printed.
pub fn report(file: &Path, name: &str, inspection: &Inspection, sandbox: Option<&SandboxSettings>) -> String {
    let mut out = String::new();
    let contract = match inspection.contract.len() {
        0 => "none (no wasmtpd:plugin interface: not a wasmtpd plugin)".to_string(),
        _ => inspection.contract.iter().map(|v| format!("wasmtpd:plugin@{v}")).collect::<Vec<_>>().join(", "),
    };
    let hooks = inspection.hooks();
    let _ = writeln!(out, "file      {}", file.display());
    let _ = writeln!(out, "plugin    {name}");
    let _ = writeln!(out, "size      {} bytes", inspection.size);
    let _ = writeln!(out, "sha256    {}", inspection.sha256);
    let _ = writeln!(out, "contract  {contract}");
    let _ = writeln!(out, "hooks     {}", if hooks.is_empty() { "none".to_string() } else { hooks.join(" ") });
    let _ = writeln!(out, "imports");
    for import in &inspection.imports {
        let what = match status(import, sandbox) {
            ImportStatus::Given => "every plugin's".to_string(),
            ImportStatus::Granted => "capability, granted".to_string(),
            ImportStatus::NotGranted(c) => {
                format!(
                    "capability, NOT granted: refused at start-up; `{}` in config/sandbox grants it",
                    c.grant_line.replace("{}", name)
                )
            }
            ImportStatus::Capability(c) => {
                format!(
                    "capability: needs `{}` in config/sandbox (give --config to check)",
                    c.grant_line.replace("{}", name)
                )
            }
            ImportStatus::Wasi => "WASI, empty (no files, network or environment unless granted)".to_string(),
            ImportStatus::Unknown => "NOT offered by this server: the plugin will not load".to_string(),
        };
        let _ = writeln!(out, "  {import:<48} {what}");
    }
    let _ = writeln!(out, "producers");
    if inspection.producers.is_empty() {
        let _ = writeln!(out, "  none recorded");
    }
    for (field, tool, version) in &inspection.producers {
        let _ = writeln!(out, "  {field:<14} {tool} {version}");
    }
    out
}

/// Runs the command: 0 when the plugin would load under the config (or no config was given),
/// 1 when an import would refuse it.
pub fn run(file: &Path, name: Option<&str>, config: Option<&Path>) -> anyhow::Result<bool> {
    let bytes = std::fs::read(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let inspection =
        wasmtpd_host::inspect::inspect(&bytes).map_err(|e| anyhow::anyhow!("{}: {e:#}", file.display()))?;
    let name = match name {
        Some(n) => n.to_string(),
        None => file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default(),
    };
    let sandbox = sandbox_of(config, &name)?;
    print!("{}", report(file, &name, &inspection, sandbox.as_ref()));
    let refused = inspection
        .imports
        .iter()
        .any(|i| matches!(status(i, sandbox.as_ref()), ImportStatus::NotGranted(_) | ImportStatus::Unknown));
    Ok(!refused)
}
