//! From the configuration to a running plugin chain: each line of `config/plugins` names a
//! component `<plugin dir>/<name>.wasm`; its sandbox comes from `config/sandbox`, with granted
//! host directories taken relative to the state directory (and created if missing).
//!
//! A granted directory may not be, contain or lie inside a directory the server itself keeps
//! (the spool with the plugins' temporary directories, the plugin cache, the plugins, the
//! config): a plugin could otherwise read or change other connections' messages, the machine
//! code the server runs, or its own sandbox.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtpd_host::PluginHost;
use wasmtpd_host::plugin::PluginSpec;
use wasmtpd_host::sandbox::{DirGrant, PoolTooLarge};

use crate::config::{Config, ConfigError, ConfigSource};

/// Resolves every plugin line to its component and sandbox; errors name the config line.
pub fn specs(config: &Config, dirs: &Dirs<'_>) -> Result<Vec<PluginSpec>, ConfigError> {
    let reserved = reserved_dirs(config, dirs);
    let mut out = Vec::new();
    for line in &config.plugins {
        let path = dirs.plugin_dir.join(format!("{}.wasm", line.name));
        if !path.is_file() {
            return Err(at(
                &line.origin,
                format!(
                    "no component for plugin `{}`: {} does not exist (build the plugins with `cargo xtask build-plugins`, or pass --plugin-dir)",
                    line.name,
                    path.display()
                ),
            ));
        }
        let mut settings = line.sandbox.clone();
        for grant in &mut settings.grants {
            grant.host = dirs.state_dir.join(&grant.host);
            std::fs::create_dir_all(&grant.host)
                .map_err(|e| at(&grant.origin, format!("grant-dir {}: {e}", grant.host.display())))?;
            check_grant(grant, &reserved).map_err(|what| at(&grant.origin, what))?;
        }
        out.push(PluginSpec { name: line.instance.clone(), args: line.args.clone(), path, settings });
    }
    Ok(out)
}

/// An error at `origin` (`file:line`).
fn at(origin: &str, what: String) -> ConfigError {
    let (path, line) =
        origin.rsplit_once(':').map_or((origin.to_string(), None), |(p, n)| (p.to_string(), n.parse().ok()));
    ConfigError { path, line, what }
}

/// The server's own directories (those that exist), resolved, with what they are.
fn reserved_dirs(config: &Config, dirs: &Dirs<'_>) -> Vec<(&'static str, PathBuf)> {
    let mut reserved = vec![
        ("the plugins' temporary directories", dirs.spool_dir.join("plugins")),
        ("the spool", dirs.spool_dir.to_path_buf()),
        ("the plugin cache", dirs.cache_dir.to_path_buf()),
        ("the plugin directory", dirs.plugin_dir.to_path_buf()),
    ];
    if let ConfigSource::Dir(d) = &config.source {
        reserved.push(("the config directory", d.clone()));
    }
    reserved.into_iter().filter_map(|(what, p)| Some((what, resolve(&p)?))).collect()
}

/// `path` with symlinks resolved; one that does not exist yet (the temporary directories' root
/// is made on first use) is resolved through its parent.
fn resolve(path: &Path) -> Option<PathBuf> {
    path.canonicalize().ok().or_else(|| Some(path.parent()?.canonicalize().ok()?.join(path.file_name()?)))
}

/// A grant that is, contains or lies inside one of the server's own directories is refused.
fn check_grant(grant: &DirGrant, reserved: &[(&str, PathBuf)]) -> Result<(), String> {
    let host = grant.host.canonicalize().map_err(|e| format!("grant-dir {}: {e}", grant.host.display()))?;
    for (what, dir) in reserved {
        if host.starts_with(dir) || dir.starts_with(&host) {
            return Err(format!(
                "grant-dir {} overlaps {what} ({}): a plugin may not reach the server's own files",
                grant.host.display(),
                dir.display()
            ));
        }
    }
    Ok(())
}

/// Where the chain keeps its files.
pub struct Dirs<'a> {
    /// Components: `<plugin_dir>/<name>.wasm`.
    pub plugin_dir: &'a Path,
    /// Granted directories are relative to it.
    pub state_dir: &'a Path,
    /// Plugins' temporary directories go under `<spool_dir>/plugins`.
    pub spool_dir: &'a Path,
    /// Precompiled components.
    pub cache_dir: &'a Path,
}

/// Loads the chain: compiles (or loads precompiled) every component, with an instance pool for
/// `max_connections` connections. Any failure stops start-up; a pool that cannot be reserved
/// is a configuration error at `limits` `max_connections`.
pub fn load(config: &Config, dirs: &Dirs<'_>) -> anyhow::Result<PluginHost> {
    // Made now (it would be at the first compile anyway) so that grants can be checked against it.
    std::fs::create_dir_all(dirs.cache_dir)
        .map_err(|e| anyhow::anyhow!("plugin cache {}: {e}", dirs.cache_dir.display()))?;
    let specs = specs(config, dirs).map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    let files = crate::config_files::CachedConfigFiles::new(config.source.clone());
    let max_connections = config.server.max_connections;
    PluginHost::load(&specs, Arc::new(files), dirs.spool_dir, dirs.cache_dir, max_connections).map_err(|e| {
        match e.downcast_ref::<PoolTooLarge>() {
            Some(too_large) => anyhow::anyhow!("configuration error: {}", max_connections_error(config, too_large)),
            None => e,
        }
    })
}

/// The error at the `max_connections` line of `limits` (the last one, which is the one used).
fn max_connections_error(config: &Config, e: &PoolTooLarge) -> ConfigError {
    let lines = config.source.lines("limits").ok().flatten().unwrap_or_default();
    let line =
        lines.iter().rev().find(|(_, l)| l.split_whitespace().next() == Some("max_connections")).map(|(n, _)| *n);
    ConfigError { path: config.source.display("limits"), line, what: e.to_string() }
}
