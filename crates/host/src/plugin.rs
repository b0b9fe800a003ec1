//! Loading a plugin: its `.wasm` component is compiled once (or loaded precompiled from the
//! cache), linked against the host and WASI, and inspected for the hook interfaces it exports.
//! All of this happens at start-up, so a broken plugin stops the server before it listens.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};

pub use crate::bindings::HookExports;
use crate::bindings::Plugin;
use crate::sandbox::SandboxSettings;
use crate::state::{ConfigGrant, PluginMeta, PluginState};

/// One line of `config/plugins`, resolved.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// The instance name (`rcpt_ok`, `rcpt_ok:2`).
    pub name: String,
    pub args: Vec<String>,
    /// The component file.
    pub path: PathBuf,
    pub settings: SandboxSettings,
}

/// A plugin ready to be instantiated.
pub struct LoadedPlugin {
    pub meta: Arc<PluginMeta>,
    pub breaker: crate::breaker::Breaker,
    pub settings: SandboxSettings,
    pub pre: InstancePre<PluginState>,
    pub exports: HookExports,
}

/// The linker every plugin is instantiated with: WASI (deny-by-default contexts, and no
/// links, see `sandbox/wasi.rs`) and the interfaces of `wit/` (`host`, `dns`,
/// `authentication-results`, `key-value`).
pub fn linker(engine: &Engine) -> Result<Linker<PluginState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    crate::sandbox::refuse_links(&mut linker)?;
    Plugin::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// The one place with `unsafe` in the project: loading machine code we compiled ourselves.
#[allow(unsafe_code)]
/// Compiles `path`, or loads its precompiled form from `cache_dir` (keyed by the component's
/// hash and the engine's compatibility hash, so a new wasmtime or new settings recompile).
pub fn load_component(engine: &Engine, path: &Path, cache_dir: &Path) -> Result<Component> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut engine_hash);
    let key = Sha256::new().chain_update(&bytes).chain_update(engine_hash.finish().to_le_bytes()).finalize();
    let key: String = key.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let cached = cache_dir.join(format!("{key}.cwasm"));
    if cached.is_file() {
        // SAFETY: the file was written by `precompile_component` of an engine with the same
        // compatibility hash (it is in the name), into a directory only the server writes.
        match unsafe { Component::deserialize_file(engine, &cached) } {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(file = %cached.display(), error = %e, "precompiled plugin unusable; compiling again")
            }
        }
    }
    let started = Instant::now();
    let compiled = engine
        .precompile_component(&bytes)
        .map_err(|e| anyhow::Error::from(e).context(format!("compiling {}", path.display())))?;
    tracing::info!(plugin = %path.display(), ms = started.elapsed().as_millis() as u64, "compiled plugin");
    std::fs::create_dir_all(cache_dir).with_context(|| format!("creating {}", cache_dir.display()))?;
    // Unique per compile, not only per process: two threads (tests in parallel) compiling the
    // same component must not rename each other's file away.
    static COMPILES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COMPILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = cache_dir.join(format!("{key}.cwasm.tmp{}.{n}", std::process::id()));
    std::fs::write(&tmp, &compiled).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &cached)?;
    // SAFETY: written just above from `precompile_component` of this engine.
    Ok(unsafe { Component::deserialize(engine, &compiled) }?)
}

/// Where a plugin stands in its chain: its position (which names the writer of a note) and
/// every plugin's instance name.
pub struct ChainPosition {
    pub index: usize,
    pub chain: Arc<[String]>,
}

impl LoadedPlugin {
    pub fn load(
        engine: &Engine,
        linker: &Linker<PluginState>,
        spec: &PluginSpec,
        config: Arc<dyn crate::state::ConfigFiles>,
        services: &crate::Services,
        cache_dir: &Path,
        position: ChainPosition,
    ) -> Result<LoadedPlugin> {
        let component = load_component(engine, &spec.path, cache_dir)?;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            anyhow::anyhow!("{}: imports something the server does not offer: {e:#}", spec.path.display())
        })?;
        let exports = HookExports::discover(&pre);
        if exports.hooks().is_empty() {
            anyhow::bail!(
                "{} exports no hook interface (wasmtpd:plugin/<hook>@0.1.0); is it built against wit/?",
                spec.path.display()
            );
        }
        let stores = crate::imports::key_value::granted_stores(&spec.name, &spec.settings.stores, &services.stores)?;
        let upstreams = crate::imports::upstream::granted_upstreams(&spec.settings.upstreams, &services.upstreams)?;
        let meta = Arc::new(PluginMeta {
            name: spec.name.clone(),
            args: spec.args.clone(),
            config,
            config_grant: ConfigGrant::new(&spec.settings.config_files),
            rights: spec.settings.rights,
            index: position.index,
            chain: position.chain,
            log_rate: Default::default(),
            dns: spec.settings.dns.clone(),
            dns_queries: spec.settings.dns_queries,
            resolver: services.resolver.clone(),
            stores,
            store_operations: spec.settings.store_operations,
            upstreams,
            upstream_calls: spec.settings.upstream_calls,
        });
        let breaker = crate::breaker::Breaker::new(spec.settings.breaker);
        Ok(LoadedPlugin { meta, breaker, settings: spec.settings.clone(), pre, exports })
    }
}
