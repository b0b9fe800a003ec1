//! From the configuration to a running plugin chain: each line of `config/plugins` names a
//! component `<plugin dir>/<name>.wasm`; its sandbox comes from `config/sandbox`, with granted
//! host directories taken relative to the state directory (and created if missing), and the
//! config files it may read resolved by `plugin_files.rs`.

use std::path::Path;
use std::sync::Arc;

use wasmtpd_host::PluginHost;
use wasmtpd_host::plugin::PluginSpec;

use crate::config::{Config, ConfigError};

/// Resolves every plugin line to its component and sandbox; errors name the config line.
pub fn specs(config: &Config, plugin_dir: &Path, state_dir: &Path) -> Result<Vec<PluginSpec>, ConfigError> {
    let mut out = Vec::new();
    for line in &config.plugins {
        let err = |what: String| {
            let (path, n) = line
                .origin
                .rsplit_once(':')
                .map_or((line.origin.clone(), None), |(p, n)| (p.to_string(), n.parse().ok()));
            ConfigError { path, line: n, what }
        };
        let path = plugin_dir.join(format!("{}.wasm", line.name));
        if !path.is_file() {
            return Err(err(format!(
                "no component for plugin `{}`: {} does not exist (build the plugins with `cargo xtask build-plugins`, or pass --plugin-dir)",
                line.name,
                path.display()
            )));
        }
        let mut settings = line.sandbox.clone();
        settings.config_files = crate::plugin_files::granted(line);
        for grant in &mut settings.grants {
            grant.host = state_dir.join(&grant.host);
            std::fs::create_dir_all(&grant.host)
                .map_err(|e| err(format!("grant-dir {}: {e}", grant.host.display())))?;
        }
        out.push(PluginSpec { name: line.instance.clone(), args: line.args.clone(), path, settings });
    }
    Ok(out)
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

/// Loads the chain: compiles (or loads precompiled) every component. Any failure stops start-up.
pub fn load(config: &Config, dirs: &Dirs<'_>) -> anyhow::Result<PluginHost> {
    let specs =
        specs(config, dirs.plugin_dir, dirs.state_dir).map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    let granted = specs.iter().flat_map(|s| s.settings.config_files.iter().cloned()).collect();
    let files = crate::config_files::CachedConfigFiles::new(config.source.clone(), granted);
    PluginHost::load(&specs, Arc::new(files), dirs.spool_dir, dirs.cache_dir)
}
