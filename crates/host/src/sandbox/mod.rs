//! Where the plugin sandbox is configured: the engine, the limits of each plugin instance, and
//! the capabilities it gets. Everything a plugin can reach or use up is decided in this module,
//! one file per question:
//!
//! - `engine.rs`: the engine and its instance pool ([`pool`]: room for every admitted connection
//!   to hold an instance of every plugin, so no client can starve another), and the epoch ticker.
//! - `limits.rs`: one instance's store and its limits (memory, stack, time per call), and the
//!   ranges the configuration may set them in.
//! - `wasi.rs`: what the instance sees of WASI, links refused ([`refuse_links`]), its stderr.
//! - `grants.rs`: the directories and [`Rights`] granted, and which grants are refused.
//! - `capabilities.rs`: which imports need a grant ([`CAPABILITIES`]), checked at load
//!   ([`check_imports`]).
//!
//! Deny by default. A plugin instance gets:
//! - the `host` interface (`wit/host.wit`), which is its whole view of the server;
//! - WASI with nothing in it: no preopened directories, no environment, no arguments, no
//!   network (TCP, UDP and name lookup are off), stdin closed, stdout discarded, stderr to the
//!   log (bounded);
//! - only what the operator grants in `config/sandbox`: a WASI view of its own temporary
//!   directory (`wasi-temp`), host directories read-only or read-write (`grant-dir`), in none
//!   of which it can make a link, config files beyond its own (`config-file`), the
//!   [`Rights`] to loosen policy (`rights`), DNS for any name or names under zones
//!   ([`DnsGrant`], `dns`), at most `dns-queries` per transaction, and key-value stores of
//!   `config/stores`, each in the plugin's own namespace unless shared on purpose
//!   ([`StoreGrant`], `store`), at most `store-operations` calls per transaction, and
//!   downstreams of `config/downstreams` to deliver the message to ([`DownstreamGrant`],
//!   `downstream`).
//!   ([`StoreGrant`], `store`), at most `store-operations` calls per transaction, and named
//!   upstreams of `config/upstreams` ([`UpstreamGrant`], `upstream`), at most
//!   `upstream-calls` calls per transaction.
//!
//! Limits, per plugin, with defaults: linear memory (64 MiB, enforced by a limiter that also
//! tells us an out-of-memory happened), wall time per hook call (10 s, enforced with epoch
//! interruption: every 10 ms tick the plugin yields to other connections, and once its time is
//! up it is interrupted), wasm stack (512 KiB), and a quota on its temporary files (octets and
//! entries, `imports/temp.rs`).

use std::time::Duration;

mod capabilities;
mod engine;
mod grants;
mod limits;
mod wasi;

pub use capabilities::{CAPABILITIES, Capability, PACKAGE, UngrantedImport, capability, check_imports, interface_of};
pub use engine::{ChainNeeds, EPOCH_TICK, PoolTooLarge, engine, pool, start_epoch_ticker};
pub use grants::{
    DirGrant, DnsGrant, DownstreamGrant, GrantRefused, Origin, ReservedDirs, Right, Rights, StoreGrant, UpstreamGrant,
    grant_dirs,
};
pub use limits::{BLOCKED_GRACE, MEMORY_RANGE, PluginLimits, STACK_RANGE, TIMEOUT_RANGE, store};
pub use wasi::{STDERR_LIMIT, StderrLog, refuse_links, wasi_ctx};

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

/// The sandbox of one plugin (one line of `config/plugins`), from `config/sandbox`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSettings {
    /// Most octets of linear memory, within [`MEMORY_RANGE`]. Default 64 MiB: a Python or
    /// JavaScript runtime with its heap fits, and a plugin that allocates without bound is
    /// stopped long before the machine feels it.
    pub memory: u64,
    /// Wall time per hook call. Default 10 s: far more than a hook needs (a DNS lookup, a
    /// scan of the message), and well within what an SMTP client waits for a reply.
    pub timeout: Duration,
    /// Octets of wasm stack, within [`STACK_RANGE`]. Default 512 KiB, wasmtime's own default.
    pub stack: usize,
    /// Octets (and, counted apart, entries) its temporary files may take. Default 16 MiB: a
    /// decoded attachment or two of a common message.
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
    /// The names it may look up in DNS (none by default).
    pub dns: DnsGrant,
    /// Most DNS questions it may ask per transaction (the connection phase counts as one).
    /// Default 64: a blocklist plugin asks one per zone, SPF-like logic a dozen.
    pub dns_queries: u32,
    /// The key-value stores it may use (none by default), at most one grant per store.
    pub stores: Vec<StoreGrant>,
    /// Most store calls it may make per transaction (the connection phase counts as one).
    /// Default 256: a greylister makes one or two per recipient, of at most 100.
    pub store_operations: u32,
    /// The downstreams of `config/downstreams` it may deliver to (none by default).
    pub downstreams: Vec<DownstreamGrant>,
    /// The upstreams of `config/upstreams` it may connect to (none by default).
    pub upstreams: Vec<UpstreamGrant>,
    /// Most upstream calls it may make per transaction (the connection phase counts as one).
    /// Default 256: a scan is a connect, a write of the message, a read or two.
    pub upstream_calls: u32,
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
            dns: DnsGrant::default(),
            dns_queries: 64,
            stores: Vec::new(),
            store_operations: 256,
            downstreams: Vec::new(),
            upstreams: Vec::new(),
            upstream_calls: 256,
            breaker: crate::breaker::BreakerSettings::default(),
        }
    }
}
