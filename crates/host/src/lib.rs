//! The plugin host: qpsmtpd's hook chain, where every plugin is a sandboxed WebAssembly
//! component. It implements the engine's [`HookRunner`] seam.
//!
//! Code map:
//! - [`sandbox`]: the engine and pool, each store's limits, WASI and grants (where the sandbox
//!   is set up, one file per question).
//! - [`plugin`]: loading a component (compile or precompiled cache, its pin) and finding its
//!   hooks.
//! - [`inspect`]: what a component file imports, exports and was made with, without running it.
//! - `chain`: running a hook's chain, per-scope instances, and turning faults into verdicts.
//! - [`breaker`]: disabling a plugin that keeps faulting, for a cool-down.
//! - `imports`: the host side of the interfaces plugins import (`wit/host.wit`, `wit/dns.wit`,
//!   `wit/authentication-results.wit`, `wit/key-value.wit`), one file per interface or group
//!   of functions.
//! - [`resolver`]: the server's DNS resolver and cache, shared by plugins and the server.
//! - [`store`]: the key-value stores (the [`store::Store`] trait; embedded on redb, or Redis).
//! - [`downstream`]: the servers plugins deliver onward to (`config/downstreams`), their SMTP
//!   and LMTP client and connection pools.
//! - [`upstream`]: the named upstreams of `config/upstreams` (connecting, pooling, HTTP/1.1).
//! - `bindings`: the one `bindgen!` site and the conversions to engine types.
//! - `state`: the data of one instance's store.

pub mod bindings;
pub mod breaker;
mod chain;
pub mod downstream;
mod imports;
pub mod inspect;
pub mod plugin;
pub mod resolver;
pub mod sandbox;
pub mod state;
pub mod store;
pub mod upstream;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use wasmtime::Engine;
use wasmtpd_smtp::{Hook, HookArgs, HookContext, HookResult, HookRunner};

pub use chain::Scope;
use plugin::{LoadedPlugin, PluginSpec};
use sandbox::ChainNeeds;
pub use state::ConfigFiles;

/// What the server lends plugins beyond the host interface, to those granted it: the resolver
/// (`dns` in `config/sandbox`; without one, every DNS question is refused) and the key-value
/// stores of `config/stores` by name (`store` in `config/sandbox`), and the upstreams of
/// `config/upstreams` by name (`upstream`).
#[derive(Clone, Default)]
pub struct Services {
    pub resolver: Option<resolver::Resolver>,
    pub stores: store::Stores,
    /// The downstreams of `config/downstreams` by name (`downstream` in `config/sandbox`).
    pub downstreams: downstream::Downstreams,
    /// The upstreams of `config/upstreams` by name (`upstream` in `config/sandbox`).
    pub upstreams: upstream::Upstreams,
}

/// The loaded plugin chain.
pub struct PluginHost {
    engine: Engine,
    plugins: Vec<LoadedPlugin>,
    /// Per-connection temporary directories are created under this.
    temp_root: PathBuf,
}

impl PluginHost {
    /// Compiles (or loads precompiled from `cache_dir`) every plugin of the chain, in order.
    /// Plugins' temporary directories go under `spool_dir`. The instance pool is sized for
    /// `max_connections` connections that each hold an instance of every plugin (a
    /// [`sandbox::PoolTooLarge`] error if that cannot be reserved). Any failure names the
    /// plugin and stops start-up.
    pub fn load(
        specs: &[PluginSpec],
        config: Arc<dyn ConfigFiles>,
        services: &Services,
        spool_dir: &Path,
        cache_dir: &Path,
        max_connections: usize,
    ) -> Result<PluginHost> {
        // The pool's slots and the engine's stack fit the largest limits of any plugin.
        let defaults = sandbox::SandboxSettings::default();
        let max_memory = specs.iter().map(|s| s.settings.memory).max().unwrap_or(defaults.memory);
        let max_stack = specs.iter().map(|s| s.settings.stack).max().unwrap_or(defaults.stack);
        // What a connection's instances hold is known only from the compiled components: a
        // probe engine with a one-connection pool compiles them (or finds them in the cache),
        // then the engine that runs them gets its pool sized from them.
        let needs = {
            let probe = sandbox::pool(1, ChainNeeds { instances: 1, memories: 1, tables: 1 }, max_memory, max_stack)?;
            let probe = sandbox::engine(max_stack, probe)?;
            let mut needs = ChainNeeds::default();
            for spec in specs {
                let component = plugin::load_component(&probe, &spec.path, cache_dir, spec.pin.as_deref())
                    .map_err(|e| anyhow::anyhow!("plugin `{}`: {e:#}", spec.name))?;
                needs.add(component.resources_required());
            }
            needs
        };
        let pool = sandbox::pool(max_connections, needs, max_memory, max_stack)?;
        let engine = sandbox::engine(max_stack, pool).map_err(|e| {
            anyhow::anyhow!("reserving the plugin instance pool for max_connections {max_connections}: {e:#}")
        })?;
        sandbox::start_epoch_ticker(&engine);
        tracing::debug!(max_connections, ?needs, "plugin instance pool");
        let linker = plugin::linker(&engine)?;
        let chain: Arc<[String]> = specs.iter().map(|s| s.name.clone()).collect();
        let mut plugins = Vec::new();
        for (index, spec) in specs.iter().enumerate() {
            let position = plugin::ChainPosition { index, chain: chain.clone() };
            let loaded = LoadedPlugin::load(&engine, &linker, spec, config.clone(), services, cache_dir, position)
                .map_err(|e| anyhow::anyhow!("plugin `{}`: {e:#}", spec.name))?;
            tracing::info!(
                plugin = %spec.name,
                hooks = %loaded.exports.hooks().iter().map(|h| h.name()).collect::<Vec<_>>().join(","),
                "plugin loaded"
            );
            plugins.push(loaded);
        }
        let temp_root = spool_dir.join("plugins");
        Ok(PluginHost { engine, plugins, temp_root })
    }

    /// The hooks each plugin implements, in chain order.
    pub fn chain(&self) -> Vec<(String, Vec<Hook>)> {
        self.plugins.iter().map(|p| (p.meta.name.clone(), p.exports.hooks())).collect()
    }
}

impl HookRunner for PluginHost {
    type Scope = Scope;

    fn open_scope(&self) -> Scope {
        Scope::new(self.plugins.len())
    }

    fn implements(&self, hook: Hook) -> bool {
        self.plugins.iter().any(|p| p.exports.implements(hook))
    }

    async fn run(&self, scope: &mut Scope, hook: Hook, args: HookArgs<'_>, ctx: HookContext<'_>) -> HookResult {
        self.run_chain(scope, hook, args, ctx).await
    }
}
