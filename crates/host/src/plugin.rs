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
    /// The content hash its `config/plugins` line pins it to (`sha256:...`), if any.
    pub pin: Option<String>,
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

/// The content hash a `config/plugins` line pins its component to (`sha256:` and 64 hex
/// digits, lower case), and the hash of `bytes` in the same form.
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    format!("sha256:{}", cache::hex(&digest))
}

/// The one place with `unsafe` in the project: loading machine code we compiled ourselves.
#[allow(unsafe_code)]
/// Compiles `path`, or loads its precompiled form from `cache_dir` (keyed by the component's
/// hash and the engine's compatibility hash, so a new wasmtime or new settings recompile).
/// With a `pin`, a component whose content hash is another is refused before anything of it
/// is used. A cache entry is used only if it is ours (owned by this user, writable by no one
/// else) and its bytes are the ones we wrote (their hash is beside them); any other is
/// compiled again (see docs/security.md, "plugin cache").
pub fn load_component(engine: &Engine, path: &Path, cache_dir: &Path, pin: Option<&str>) -> Result<Component> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if let Some(pin) = pin {
        let actual = content_hash(&bytes);
        if actual != pin {
            anyhow::bail!(
                "{} is not the component config/plugins pins: its hash is {actual}, the pin is {pin} (a changed file is refused; vet it and update the pin)",
                path.display()
            );
        }
    }
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut engine_hash);
    let key = Sha256::new().chain_update(&bytes).chain_update(engine_hash.finish().to_le_bytes()).finalize();
    let key = cache::hex(&key[..16]);
    let cached = cache_dir.join(format!("{key}.cwasm"));
    let checksum = cache_dir.join(format!("{key}.cwasm.sha256"));
    if let Some(precompiled) = cache::read_entry(&cached, &checksum) {
        // SAFETY: these bytes are the ones `precompile_component` of an engine with the same
        // compatibility hash (it is in the name) wrote, as their hash beside them says, into a
        // directory no one but the server's user can write (`cache::check_dir`).
        match unsafe { Component::deserialize(engine, &precompiled) } {
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
    cache::write_entry(cache_dir, &cached, &checksum, &compiled)?;
    // SAFETY: written just above from `precompile_component` of this engine.
    Ok(unsafe { Component::deserialize(engine, &compiled) }?)
}

/// The plugin cache: precompiled components, which wasmtime loads as machine code without
/// checking it, so nothing in it may come from anyone but the server.
pub mod cache {
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    use anyhow::{Context, Result};
    use sha2::{Digest, Sha256};

    /// Makes the cache directory if it is missing, and refuses one that another user owns or
    /// that others may write to: whoever can write it can make the server run their code.
    pub fn check_dir(dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating the plugin cache {}", dir.display()))?;
        let meta = std::fs::metadata(dir).with_context(|| format!("the plugin cache {}", dir.display()))?;
        let uid = current_uid();
        if meta.uid() != uid {
            anyhow::bail!(
                "the plugin cache {} belongs to user {}, not to the server's user {uid}: whoever can write it can make the server run their code; give it to the server's user, or pass another --cache-dir",
                dir.display(),
                meta.uid()
            );
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o022 != 0 {
            anyhow::bail!(
                "the plugin cache {} may be written by others (mode {mode:o}): whoever can write it can make the server run their code; `chmod go-w` it",
                dir.display()
            );
        }
        Ok(())
    }

    /// An entry's bytes, if it is ours and whole; `None` (compile again) otherwise, with a
    /// warning when one was there but is not to be trusted.
    pub(super) fn read_entry(entry: &Path, checksum: &Path) -> Option<Vec<u8>> {
        let meta = std::fs::symlink_metadata(entry).ok()?;
        if !meta.is_file() || meta.uid() != current_uid() || meta.mode() & 0o022 != 0 {
            tracing::warn!(file = %entry.display(), "plugin cache entry not written by the server; compiling again");
            return None;
        }
        let bytes = std::fs::read(entry).ok()?;
        let expected = std::fs::read_to_string(checksum).unwrap_or_default();
        if hex(&Sha256::digest(&bytes)) != expected.trim() {
            tracing::warn!(file = %entry.display(), "plugin cache entry damaged or foreign (its hash differs); compiling again");
            return None;
        }
        Some(bytes)
    }

    /// Writes an entry and its hash, each through a temporary file renamed into place.
    pub(super) fn write_entry(dir: &Path, entry: &Path, checksum: &Path, compiled: &[u8]) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // Unique per compile, not only per process: two threads (tests in parallel) compiling the
        // same component must not rename each other's file away.
        static COMPILES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COMPILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for (path, bytes) in [(checksum, hex(&Sha256::digest(compiled)).into_bytes()), (entry, compiled.to_vec())] {
            let tmp = path.with_extension(format!("tmp{}.{n}", std::process::id()));
            std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
        }
        Ok(())
    }

    /// Bytes in lower-case hex, as names and hashes are written here.
    pub(super) fn hex(digest: &[u8]) -> String {
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The user the server runs as.
    pub fn current_uid() -> u32 {
        rustix::process::getuid().as_raw()
    }
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
        let component = load_component(engine, &spec.path, cache_dir, spec.pin.as_deref())?;
        let imports: Vec<String> =
            component.component_type().imports(engine).map(|(name, _)| name.to_string()).collect();
        crate::sandbox::check_imports(&spec.name, imports.iter().map(String::as_str), &spec.settings)
            .map_err(|e| anyhow::anyhow!("{}: {e}", spec.path.display()))?;
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
        let downstreams = spec
            .settings
            .downstreams
            .iter()
            .map(|g| {
                services.downstreams.get(&g.downstream).cloned().ok_or_else(|| {
                    anyhow::anyhow!("{}: downstream `{}` is not defined in config/downstreams", g.origin, g.downstream)
                })
            })
            .collect::<Result<Vec<_>>>()?;
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
            downstreams,
            upstreams,
            upstream_calls: spec.settings.upstream_calls,
        });
        let breaker = crate::breaker::Breaker::new(spec.settings.breaker);
        Ok(LoadedPlugin { meta, breaker, settings: spec.settings.clone(), pre, exports })
    }
}
