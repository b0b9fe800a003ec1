//! Where the plugin sandbox is configured: the engine, the limits of each plugin instance, and
//! the capabilities it gets. Everything a plugin can reach or use up is decided in this file.
//!
//! Deny by default. A plugin instance gets:
//! - the `host` interface (`wit/host.wit`), which is its whole view of the server;
//! - WASI with nothing in it: no preopened directories, no environment, no arguments, no
//!   network (TCP, UDP and name lookup are off), stdin closed, stdout discarded, stderr to the
//!   log (bounded);
//! - only what the operator grants in `config/sandbox`: a WASI view of its own temporary
//!   directory (`wasi-temp`), host directories read-only or read-write (`grant-dir`), config
//!   files beyond its own (`config-file`), and the [`Rights`] to loosen policy (`rights`).
//!
//! Limits, per plugin, with defaults: linear memory (64 MiB, enforced by a limiter that also
//! tells us an out-of-memory happened), wall time per hook call (10 s, enforced with epoch
//! interruption: every 10 ms tick the plugin yields to other connections, and once its time is
//! up it is interrupted), wasm stack (512 KiB), and a byte quota on its temporary files.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
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

/// Most instances alive at once (pooling allocator slots).
pub const MAX_INSTANCES: u32 = 1000;
/// Bytes of a memory or table slot reset in place (not returned to the kernel) when an
/// instance ends: enough for a small plugin's working set.
const KEEP_RESIDENT: usize = 2 << 20;
/// Slots decommitted together, in one pass.
const DECOMMIT_BATCH: usize = 16;

/// The one engine of the process. `max_memory` and `max_stack` are the largest limits of any
/// plugin (the pool's slots must fit them).
pub fn engine(max_memory: u64, max_stack: usize) -> anyhow::Result<Engine> {
    let mut cfg = Config::new();
    // Time limits and fair scheduling: see `PluginLimits::epoch_callback`.
    cfg.epoch_interruption(true);
    // A deep recursion traps instead of taking the host down; the async stack must be larger
    // than the wasm stack to leave room for host calls.
    cfg.max_wasm_stack(max_stack);
    cfg.async_stack_size(max_stack + (1 << 20));
    // No WASIp3 / component-model-async: calls are 2-4x cheaper without it.
    cfg.concurrency_support(false);
    // Pooling: instantiation reuses pre-reserved slots (tens of µs, no mmap per instance).
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(MAX_INSTANCES)
        .total_core_instances(MAX_INSTANCES * 4)
        .total_memories(MAX_INSTANCES * 2)
        .total_tables(MAX_INSTANCES * 4)
        .total_stacks(MAX_INSTANCES)
        .max_memory_size(max_memory as usize)
        .max_component_instance_size(10 << 20)
        .max_core_instance_size(10 << 20)
        .table_elements(100_000)
        // Resetting a slot for reuse: dirty pages found with PAGEMAP_SCAN (Linux 6.7+) are
        // restored with memset, instead of madvise over the whole slot, whose TLB shootdowns
        // interrupt every other thread (they were a quarter of the server's CPU under load).
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .decommit_batch_size(DECOMMIT_BATCH);
    cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&cfg)?;
    spawn_epoch_ticker(&engine);
    Ok(engine)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine) {
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
        Ok(desired <= 100_000)
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
