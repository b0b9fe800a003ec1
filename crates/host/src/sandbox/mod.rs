//! Where the plugin sandbox is configured: the engine, the limits of each plugin instance, and
//! the capabilities it gets. Everything a plugin can reach or use up is decided in this file.
//!
//! Deny by default. A plugin instance gets:
//! - the `host` interface (`wit/host.wit`), which is its whole view of the server;
//! - WASI with nothing in it: no preopened directories, no environment, no arguments, no
//!   network (TCP, UDP and name lookup are off), stdin closed, stdout discarded, stderr to the
//!   log (bounded);
//! - only what the operator grants in `config/sandbox`: a WASI view of its own temporary
//!   directory (`wasi-temp`), host directories read-only or read-write (`grant-dir`), in none
//!   of which it can make a link ([`refuse_links`]), config files beyond its own
//!   (`config-file`), and the [`Rights`] to loosen policy (`rights`).
//!
//! Limits, per plugin, with defaults: linear memory (64 MiB, enforced by a limiter that also
//! tells us an out-of-memory happened), wall time per hook call (10 s, enforced with epoch
//! interruption: every 10 ms tick the plugin yields to other connections, and once its time is
//! up it is interrupted), wasm stack (512 KiB), and a quota on its temporary files (octets and
//! entries, `imports/temp.rs`). Per server: the instance pool ([`pool`]) has room for every
//! admitted connection to hold an instance of every plugin, so no client can starve another.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::component::{Linker, LinkerInstance, Resource};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::bindings::filesystem::types::{Descriptor, ErrorCode, PathFlags};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

/// How often the epoch advances: the granularity of time limits and of yielding.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Most bytes of a plugin's stderr kept for the log, per instance.
pub const STDERR_LIMIT: usize = 16 * 1024;

/// Which instance serves a plugin's hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceScope {
    /// A fresh instance per transaction (the connection phase before MAIL is its own scope).
    Transaction,
    /// One instance for the whole connection: cheaper for plugins with a large runtime, but
    /// state can pass from one transaction to the next.
    Connection,
}

/// What a plugin fault turns into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPolicy {
    /// A temporary failure for the transaction (451 4.3.0; 421 in the connection phase).
    TempFail,
    /// As if the plugin had declined: the chain goes on (fail open).
    Declined,
}

/// A host directory granted to a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    pub host: PathBuf,
    pub guest: String,
    pub writable: bool,
    /// Where it was granted (`file:line`), for error messages.
    pub origin: String,
}

/// Something a plugin may do that loosens policy, granted per plugin with `rights` in
/// `config/sandbox`. Without the right, the call fails or the verdict counts as DECLINED (see
/// `chain.rs`), and a warning names the plugin, the hook and the right: plugins can only make
/// things stricter unless the operator says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// `set-relay-client(true)`: the client may send anywhere.
    RelayClient,
    /// OK at `auth`, `auth_plain`, `auth_login`: a successful AUTH makes the client a relay
    /// client.
    Authenticate,
    /// OK at `rcpt`: the recipient is accepted.
    AcceptRecipient,
    /// OK or DONE at `queue`, and DONE at `data_post`: the client gets 250 for its message.
    Queue,
}

impl Right {
    pub const ALL: [Right; 4] = [Right::RelayClient, Right::Authenticate, Right::AcceptRecipient, Right::Queue];

    /// The name in `config/sandbox`.
    pub fn name(self) -> &'static str {
        match self {
            Right::RelayClient => "relay-client",
            Right::Authenticate => "authenticate",
            Right::AcceptRecipient => "accept-recipient",
            Right::Queue => "queue",
        }
    }

    pub fn parse(name: &str) -> Option<Right> {
        Right::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// The rights a plugin was granted (none by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rights(u8);

impl Rights {
    pub fn grant(&mut self, right: Right) {
        self.0 |= 1 << right as u8;
    }

    pub fn has(self, right: Right) -> bool {
        self.0 & (1 << right as u8) != 0
    }
}

/// The sandbox of one plugin (one line of `config/plugins`), from `config/sandbox`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSettings {
    pub memory: u64,
    pub timeout: Duration,
    pub stack: usize,
    pub temp_quota: u64,
    pub scope: InstanceScope,
    pub on_fault: FaultPolicy,
    pub wasi_temp: bool,
    pub grants: Vec<DirGrant>,
    /// The config files `host.config(name)` may read. From `config/sandbox` the files granted
    /// with `config-file`; the server adds the plugin's own (see its `plugin_files.rs`).
    /// Every other name reads as missing.
    pub config_files: Vec<String>,
    /// What it may do that loosens policy.
    pub rights: Rights,
    /// When repeated faults disable the plugin for a while.
    pub breaker: crate::breaker::BreakerSettings,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        SandboxSettings {
            memory: 64 << 20,
            timeout: Duration::from_secs(10),
            stack: 512 << 10,
            temp_quota: 16 << 20,
            scope: InstanceScope::Transaction,
            on_fault: FaultPolicy::TempFail,
            wasi_temp: false,
            grants: Vec::new(),
            config_files: Vec::new(),
            rights: Rights::default(),
            breaker: crate::breaker::BreakerSettings::default(),
        }
    }
}

/// Bytes of a memory or table slot reset in place (not returned to the kernel) when an
/// instance ends: enough for a small plugin's working set.
const KEEP_RESIDENT: usize = 2 << 20;
/// Slots decommitted together, in one pass.
const DECOMMIT_BATCH: usize = 16;
/// Address space reserved for each linear memory, and the guard after it: wasmtime's defaults
/// on 64-bit hosts (with 4 GiB reserved, compiled code needs no bounds checks), set here
/// because the pool's size is computed from them.
const MEMORY_RESERVATION: u64 = 4 << 30;
const MEMORY_GUARD: u64 = 32 << 20;
/// Most elements of a table (8 octets each, reserved for every table slot of the pool).
const TABLE_ELEMENTS: usize = 100_000;
/// Address space the pool may reserve: half of x86-64's 128 TiB of user address space, the
/// rest left to everything else in the process. Reserving is free (no memory is committed),
/// but past the address space the engine cannot be made.
const ADDRESS_SPACE_BUDGET: u64 = 64 << 40;
/// Core instances per component instance (its modules, the WASI adapter, the shims between
/// them). The pool only counts them, nothing is reserved per core instance, so the number is
/// generous.
const CORE_INSTANCES_PER_COMPONENT: u32 = 64;

/// What one connection can hold at once: an instance of every plugin in the chain (a scope
/// keeps at most one per plugin), with the linear memories and tables those instances have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChainNeeds {
    pub instances: u32,
    pub memories: u32,
    pub tables: u32,
}

impl ChainNeeds {
    /// Adds a plugin; `None` (a component whose needs cannot be known statically, which
    /// imports core modules) is assumed to need 8 memories and 8 tables.
    pub fn add(&mut self, component: Option<wasmtime::ResourcesRequired>) {
        let (memories, tables) = component.map_or((8, 8), |r| (r.num_memories, r.num_tables));
        self.instances += 1;
        self.memories += memories;
        self.tables += tables;
    }
}

/// A pool that cannot be backed: more address space than the pool may reserve (64 TiB).
#[derive(Debug, thiserror::Error)]
#[error(
    "max_connections {max_connections} cannot be served: each connection may hold an instance of every plugin, \
     {memories} linear memories of {slot_gib} GiB of address space each; at most {fits} connections fit in the \
     {budget_tib} TiB the plugin pool may reserve"
)]
pub struct PoolTooLarge {
    pub max_connections: usize,
    pub memories: u32,
    pub slot_gib: u64,
    pub fits: usize,
    pub budget_tib: u64,
}

/// The pooling allocator's slots (`max_memory`, `max_stack`: the largest limits of any plugin),
/// for `max_connections` connections that each hold an instance
/// of every plugin of the chain (`needs`): then no client can take slots from another, and
/// running out of slots is a server fault, never a plugin's (see `chain.rs`).
///
/// Every count is per connection times the connections, plus a margin: a scope ends before
/// its connection's admission ticket, so at most `max_connections` scopes exist, but an unused
/// slot costs only address space while a missing one turns into temporary failures, so we
/// leave 1/16 + 16 connections of room. Stacks are one per instance: a store keeps the fiber
/// stack of its last call for the next one. (Every plugin built in this tree, Rust, Python,
/// JavaScript or C, has one linear memory and one or two tables.)
pub fn pool(
    max_connections: usize,
    needs: ChainNeeds,
    max_memory: u64,
    max_stack: usize,
) -> Result<PoolingAllocationConfig, PoolTooLarge> {
    let connections = max_connections.saturating_add(max_connections / 16 + 16);
    let memory_slot = MEMORY_RESERVATION.max(max_memory) + MEMORY_GUARD;
    let per_connection = needs.memories as u64 * memory_slot
        + needs.tables as u64 * (TABLE_ELEMENTS as u64 * 8)
        + needs.instances as u64 * async_stack_size(max_stack) as u64;
    let too_large = || PoolTooLarge {
        max_connections,
        memories: needs.memories,
        slot_gib: memory_slot.div_ceil(1 << 30),
        fits: ((ADDRESS_SPACE_BUDGET / per_connection.max(1)) as usize).saturating_sub(16) * 16 / 17,
        budget_tib: ADDRESS_SPACE_BUDGET >> 40,
    };
    if (connections as u64).checked_mul(per_connection).is_none_or(|total| total > ADDRESS_SPACE_BUDGET) {
        return Err(too_large());
    }
    let count = |per: u32| u32::try_from(connections as u64 * per.max(1) as u64).map_err(|_| too_large());
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(count(needs.instances)?)
        .total_core_instances(count(needs.instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT))?)
        .total_memories(count(needs.memories)?)
        .total_tables(count(needs.tables)?)
        .total_stacks(count(needs.instances)?)
        .max_memory_size(max_memory as usize)
        .max_component_instance_size(10 << 20)
        .max_core_instance_size(10 << 20)
        .table_elements(TABLE_ELEMENTS)
        // Resetting a slot for reuse: dirty pages found with PAGEMAP_SCAN (Linux 6.7+) are
        // restored with memset, instead of madvise over the whole slot, whose TLB shootdowns
        // interrupt every other thread (they were a quarter of the server's CPU under load).
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .decommit_batch_size(DECOMMIT_BATCH);
    Ok(pool)
}

/// The async stack: larger than the wasm stack, to leave room for host calls.
fn async_stack_size(max_stack: usize) -> usize {
    max_stack + (1 << 20)
}

/// An engine. `max_stack` is the largest wasm stack of any plugin; `pool` is from [`pool`]. The process has one engine that runs plugins
/// (with its epoch ticker, [`start_epoch_ticker`]); a probe engine with a small pool may come
/// first, to learn what the components need (its compiled code serves both: the pool's size
/// is not part of the engine's compatibility hash).
pub fn engine(max_stack: usize, pool: PoolingAllocationConfig) -> anyhow::Result<Engine> {
    let mut cfg = Config::new();
    // Time limits and fair scheduling: see `PluginLimits::epoch_callback`.
    cfg.epoch_interruption(true);
    // A deep recursion traps instead of taking the host down.
    cfg.max_wasm_stack(max_stack);
    cfg.async_stack_size(async_stack_size(max_stack));
    cfg.memory_reservation(MEMORY_RESERVATION);
    cfg.memory_guard_size(MEMORY_GUARD);
    // No WASIp3 / component-model-async: calls are 2-4x cheaper without it.
    cfg.concurrency_support(false);
    // Pooling: instantiation reuses pre-reserved slots (tens of µs, no mmap per instance).
    cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(Engine::new(&cfg)?)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is dropped.
pub fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasmtpd-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch ticker thread");
}

/// The limits of one instance, kept in its store.
pub struct PluginLimits {
    memory: u64,
    /// Set when a memory growth was refused: the next trap is an out-of-memory.
    pub out_of_memory: bool,
    /// When the current hook call must end.
    pub deadline: Option<Instant>,
}

impl PluginLimits {
    pub fn new(settings: &SandboxSettings) -> Self {
        PluginLimits { memory: settings.memory, out_of_memory: false, deadline: None }
    }

    /// Called at every epoch tick while the plugin runs: yield to other tasks while within the
    /// time limit, interrupt (a trap) once past it.
    pub fn epoch_callback(&self) -> UpdateDeadline {
        match self.deadline {
            Some(d) if Instant::now() >= d => UpdateDeadline::Interrupt,
            _ => UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now())),
        }
    }
}

impl ResourceLimiter for PluginLimits {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory {
            self.out_of_memory = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        64
    }
    fn tables(&self) -> usize {
        64
    }
    fn memories(&self) -> usize {
        8
    }
}

/// The WASI context of an instance: nothing, plus what was granted.
pub fn wasi_ctx(settings: &SandboxSettings, temp_dir: Option<&Path>, stderr: StderrLog) -> anyhow::Result<WasiCtx> {
    let mut b = WasiCtxBuilder::new();
    b.stderr(stderr);
    if let Some(dir) = temp_dir {
        b.preopened_dir(dir, "/tmp", FsPerms::ReadWrite)?;
    }
    for g in &settings.grants {
        let perms = if g.writable { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
        b.preopened_dir(&g.host, &g.guest, perms)
            .map_err(|e| anyhow::anyhow!("granting {} as {}: {e}", g.host.display(), g.guest))?;
    }
    Ok(b.build())
}

/// The WASI filesystem interface, as wasmtime-wasi 48 links it (`wasi:filesystem@0.2.12`;
/// guests importing any 0.2.x are served by it).
const WASI_FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Refuses links in every directory a plugin can reach (its `/tmp` and its grants): creating
/// a symlink or a hard link fails with `not-permitted`. A plugin cannot follow a symlink out of
/// its directory (cap-std resolves beneath it), but the MDA, IMAP server or backup job that
/// later reads a granted maildir would; a hard link would make a file of a read-only grant
/// (or of another grant) writable through a read-write one. Plugins need neither.
///
/// Replaces wasmtime-wasi's `[method]descriptor.symlink-at` and `link-at`; called after
/// `add_to_linker_async`. If wasmtime-wasi names the interface otherwise (another version),
/// this fails at start-up instead of silently adding functions nobody imports.
pub fn refuse_links<T: 'static>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    // Without shadowing, defining a name that exists fails: that is how we know it exists.
    if refuse_symlinks(&mut linker.instance(WASI_FILESYSTEM_TYPES)?).is_ok() {
        anyhow::bail!("{WASI_FILESYSTEM_TYPES} is not what wasmtime-wasi links: update sandbox::WASI_FILESYSTEM_TYPES");
    }
    linker.allow_shadowing(true);
    let mut types = linker.instance(WASI_FILESYSTEM_TYPES)?;
    refuse_symlinks(&mut types)?;
    types.func_wrap_async(
        "[method]descriptor.link-at",
        |_, _: (Resource<Descriptor>, PathFlags, String, Resource<Descriptor>, String)| {
            Box::new(async { Ok((Err::<(), _>(ErrorCode::NotPermitted),)) })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

fn refuse_symlinks<T: 'static>(types: &mut LinkerInstance<'_, T>) -> wasmtime::Result<()> {
    types.func_wrap_async("[method]descriptor.symlink-at", |_, _: (Resource<Descriptor>, String, String)| {
        Box::new(async { Ok((Err::<(), _>(ErrorCode::NotPermitted),)) })
    })
}

/// A plugin's stderr: kept in memory up to [`STDERR_LIMIT`] bytes (the rest is dropped, never
/// an error), and written to the log when the instance ends.
#[derive(Clone, Default)]
pub struct StderrLog(Arc<Mutex<Vec<u8>>>);

impl StderrLog {
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl IsTerminal for StderrLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrLog {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    /// Written synchronously, so that what a plugin printed just before it trapped (a Rust
    /// panic message, a Python traceback) is there when the fault is logged.
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }
}

impl StderrLog {
    fn keep(&self, buf: &[u8]) {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let room = STDERR_LIMIT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..buf.len().min(room)]);
    }
}

impl wasmtime_wasi::p2::OutputStream for StderrLog {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.keep(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        // Always room: what does not fit is dropped, never an error the plugin could trap on.
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl wasmtime_wasi::p2::Pollable for StderrLog {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for StderrLog {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.keep(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_sized_from_the_connections_and_the_chain() {
        let needs = ChainNeeds { instances: 4, memories: 4, tables: 8 };
        let pool = pool(400, needs, 64 << 20, 512 << 10).unwrap();
        // 400 connections and a margin of 1/16 + 16.
        assert_eq!(pool.get_total_component_instances(), 441 * 4);
        assert_eq!(pool.get_total_memories(), 441 * 4);
        assert_eq!(pool.get_total_tables(), 441 * 8);
        assert_eq!(pool.get_total_stacks(), 441 * 4);
        // A limit that cannot be reserved says how many would fit.
        let e = super::pool(1_000_000, needs, 64 << 20, 512 << 10).unwrap_err();
        assert!(e.fits > 1000 && e.fits < 5000, "{e}");
        assert!(super::pool(e.fits, needs, 64 << 20, 512 << 10).is_ok(), "{e}");
        assert!(super::pool(e.fits + 10, needs, 64 << 20, 512 << 10).is_err(), "{e}");
    }

    #[test]
    fn the_probe_engine_compiles_for_the_real_one() {
        // The pool's size is not part of the compatibility hash, so what the probe engine
        // compiles (and caches) is what the engine that runs plugins loads.
        use std::hash::{Hash, Hasher};
        let hash = |e: &Engine| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            e.precompile_compatibility_hash().hash(&mut h);
            h.finish()
        };
        let probe = engine(
            512 << 10,
            pool(1, ChainNeeds { instances: 1, memories: 1, tables: 1 }, 64 << 20, 512 << 10).unwrap(),
        );
        let real = engine(
            512 << 10,
            pool(50, ChainNeeds { instances: 6, memories: 6, tables: 12 }, 64 << 20, 512 << 10).unwrap(),
        );
        assert_eq!(hash(&probe.unwrap()), hash(&real.unwrap()));
    }
}
