//! From the configuration to a running plugin chain: each line of `config/plugins` names a
//! component `<plugin dir>/<name>.wasm`; its sandbox comes from `config/sandbox`, and the
//! config files it may read from `plugin_files.rs`. The host's sandbox decides which granted
//! directories it gives (`wasmtpd_host::sandbox::grant_dirs`: relative to the state directory,
//! and overlapping none of the server's own directories, which `reserved_dirs` names).

use std::path::Path;
use std::sync::Arc;

use wasmtpd_host::PluginHost;
use wasmtpd_host::plugin::PluginSpec;
use wasmtpd_host::resolver::Resolver;
use wasmtpd_host::sandbox::{self, DnsGrant, PoolTooLarge, ReservedDirs};

use crate::config::{Config, ConfigError, ConfigSource};

/// Resolves every plugin line to its component and sandbox; errors name the config line.
pub fn specs(config: &Config, dirs: &Dirs<'_>) -> Result<Vec<PluginSpec>, ConfigError> {
    let reserved = reserved_dirs(config, dirs);
    let mut out = Vec::new();
    for line in &config.plugins {
        let path = dirs.plugin_dir.join(format!("{}.wasm", line.name));
        if !path.is_file() {
            return Err(ConfigError::at(
                &line.origin,
                format!(
                    "no component for plugin `{}`: {} does not exist (build the plugins with `cargo xtask build-plugins`, or pass --plugin-dir)",
                    line.name,
                    path.display()
                ),
            ));
        }
        let mut settings = line.sandbox.clone();
        settings.config_files = crate::plugin_files::granted(line);
        sandbox::grant_dirs(&mut settings.grants, dirs.state_dir, &reserved)
            .map_err(|e| ConfigError::at(&e.origin, e.what))?;
        out.push(PluginSpec {
            name: line.instance.clone(),
            args: line.args.clone(),
            path,
            pin: line.pin.clone(),
            settings,
        });
    }
    Ok(out)
}

/// The server's own directories, with what they are: no grant may overlap them (a plugin could
/// otherwise read or change other connections' messages, the machine code the server runs, or
/// its own sandbox).
fn reserved_dirs(config: &Config, dirs: &Dirs<'_>) -> ReservedDirs {
    let mut reserved = vec![
        ("the plugins' temporary directories", dirs.spool_dir.join("plugins")),
        ("the spool", dirs.spool_dir.to_path_buf()),
        ("the plugin cache", dirs.cache_dir.to_path_buf()),
        ("the plugin directory", dirs.plugin_dir.to_path_buf()),
    ];
    if let ConfigSource::Dir(d) = &config.source {
        reserved.push(("the config directory", d.clone()));
    }
    ReservedDirs::new(reserved)
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

/// What the plugins' capabilities reach, set up from the configuration: the resolver (made only
/// when something will ask it: a plugin granted DNS, or a check of `authentication`), the
/// stores some plugin is granted (an embedded one makes its file under `state_dir`), the
/// downstreams and the upstreams. Errors are configuration errors.
pub fn services(config: &Config, state_dir: &Path) -> anyhow::Result<wasmtpd_host::Services> {
    let wants_dns = config.checks.any() || config.plugins.iter().any(|p| p.sandbox.dns != DnsGrant::Nothing);
    let resolver = match wants_dns {
        false => None,
        true => Some(
            Resolver::new(&config.resolver)
                .map_err(|e| anyhow::anyhow!("configuration error: {}: {e}", config.source.display("resolver")))?,
        ),
    };
    let granted: Vec<_> = config
        .stores
        .iter()
        .filter(|s| config.plugins.iter().any(|p| p.sandbox.stores.iter().any(|g| g.store == s.name)))
        .cloned()
        .collect();
    let stores =
        wasmtpd_host::store::open(&granted, state_dir).map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    let downstreams = wasmtpd_host::downstream::Downstreams::new(config.downstreams.clone(), &config.me)
        .map_err(|e| anyhow::anyhow!("configuration error: {e:#}"))?;
    let upstreams = wasmtpd_host::upstream::open(&config.upstreams, config.base_dir(state_dir))
        .map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    Ok(wasmtpd_host::Services { resolver, stores, downstreams, upstreams })
}

/// Loads the chain: compiles (or loads precompiled) every component, with an instance pool for
/// `max_connections` connections. Any failure stops start-up; a pool that cannot be reserved
/// is a configuration error at `limits` `max_connections`.
pub fn load(config: &Config, dirs: &Dirs<'_>, services: &wasmtpd_host::Services) -> anyhow::Result<PluginHost> {
    // Made now (it would be at the first compile anyway) so that grants can be checked against
    // it, and refused if others could put machine code in it.
    wasmtpd_host::plugin::cache::check_dir(dirs.cache_dir)?;
    let specs = specs(config, dirs).map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    let granted = specs.iter().flat_map(|s| s.settings.config_files.iter().cloned()).collect();
    let files = crate::config_files::CachedConfigFiles::new(config.source.clone(), granted);
    let max_connections = config.server.max_connections;
    PluginHost::load(&specs, Arc::new(files), services, dirs.spool_dir, dirs.cache_dir, max_connections).map_err(|e| {
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
