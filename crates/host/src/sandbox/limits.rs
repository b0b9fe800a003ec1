//! The limits of one plugin instance: its linear memory, its wasm stack, and its time per call,
//! and the store that enforces them.
//!
//! Memory: a limiter refuses growth past the plugin's `memory` and remembers it did, so the trap
//! that follows is told as an out-of-memory. Time: with epoch interruption, at every
//! [`EPOCH_TICK`](super::EPOCH_TICK) the running plugin yields to other connections, and once
//! past its deadline it is interrupted; a call blocked outside wasm (a WASI sleep), which
//! epochs cannot reach, is dropped [`BLOCKED_GRACE`] later (by the caller, `chain.rs`). Stack:
//! the engine's `max_wasm_stack` (see `engine.rs`) makes a deep recursion trap.

use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Engine, ResourceLimiter, Store, UpdateDeadline};

use super::SandboxSettings;
use super::engine::{CORE_INSTANCES_PER_COMPONENT, TABLE_ELEMENTS};
use super::wasi::{StderrLog, wasi_ctx};
use crate::imports::temp::TempArea;
use crate::state::{CallData, PluginMeta, PluginState};

/// The `memory` a plugin may be given. At least 1 MiB: less is a slip (`64` for `64M`), and no
/// component built here starts in less (a Rust one needs 1.06 MiB before it runs, its 1 MiB
/// shadow stack and its data; a component whose initial memory is over the limit does not
/// load). At most 4 GiB: a 32-bit linear memory, which every component has, cannot grow past it.
pub const MEMORY_RANGE: RangeInclusive<u64> = (1 << 20)..=(4 << 30);
/// The `stack` a plugin may be given. At least 64 KiB: less is a slip (`512` for `512k`) that
/// would make ordinary plugin code fault (2000 calls deep of the hostile fixture's recursion
/// already overflow 64 KiB). At most 64 MiB: every instance slot of the pool reserves a fiber
/// stack this large (plus 1 MiB), so the whole pool's stacks grow with it, and a recursion
/// deeper than that is a bug.
pub const STACK_RANGE: RangeInclusive<usize> = (64 << 10)..=(64 << 20);
/// The `timeout` a hook call may be given. At least 1 ms: `0` would fail every call. At most
/// one hour: a hook runs while a client waits for its reply, longer than any client waits (the
/// default DATA deadline is 20 minutes); and a deadline is `now + timeout`, which must not
/// overflow (`timeout 99999999999999m` would otherwise parse, then panic at the first call).
pub const TIMEOUT_RANGE: RangeInclusive<std::time::Duration> =
    std::time::Duration::from_millis(1)..=std::time::Duration::from_secs(3600);

/// How long past its time limit a call may stay blocked outside wasm (sleeping or waiting in
/// WASI) before it is dropped: a few epoch ticks, so a call that epochs would have interrupted
/// anyway is not cut short, while a blocked one is stopped soon after its time.
pub const BLOCKED_GRACE: Duration = Duration::from_millis(100);

/// Core instances, tables and memories one store may hold: a store has one component
/// instance, whose core instances the pool counts at most [`CORE_INSTANCES_PER_COMPONENT`];
/// its tables and memories are many more than any component built here has (one memory, one or
/// two tables), the pool's slots being the real bound.
const STORE_TABLES: usize = 64;
const STORE_MEMORIES: usize = 8;

/// The store of a new instance of a plugin: its WASI context (nothing, plus the plugin's grants
/// and, with `wasi-temp`, its temporary directory, which must be open), its limits
/// ([`PluginLimits`] as the store's limiter), and epoch interruption checked at every tick.
/// The clock is not running: the caller sets `limits.deadline` for each call.
pub fn store(
    engine: &Engine,
    settings: &SandboxSettings,
    meta: Arc<PluginMeta>,
    temp: TempArea,
) -> anyhow::Result<Store<PluginState>> {
    let stderr = StderrLog::default();
    let wasi_temp: Option<&Path> = settings.wasi_temp.then(|| temp.path());
    let wasi = wasi_ctx(settings, wasi_temp, stderr.clone())?;
    let state = PluginState {
        wasi,
        table: wasmtime::component::ResourceTable::new(),
        limits: PluginLimits::new(settings),
        meta,
        call: CallData::default(),
        temp,
        stderr,
        log_lines: 0,
        relay_refusal_logged: false,
        dns: Default::default(),
        store_use: Default::default(),
        delivery: Default::default(),
        upstream_use: Default::default(),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    // The callback runs at the next tick, and then at every one (`epoch_callback`).
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|ctx| Ok(ctx.data().limits.epoch_callback()));
    Ok(store)
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
        CORE_INSTANCES_PER_COMPONENT as usize
    }
    fn tables(&self) -> usize {
        STORE_TABLES
    }
    fn memories(&self) -> usize {
        STORE_MEMORIES
    }
}
