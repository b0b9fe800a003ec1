//! The data of one plugin instance's store: its WASI context, its limits, and, while a hook
//! call is running, the connection and transaction the call may read and change.

use std::sync::{Arc, Mutex};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtpd_smtp::{Connection, Hook, Transaction};

use crate::imports::message::MessageView;
use crate::imports::temp::TempArea;
use crate::resolver::Resolver;
use crate::sandbox::{DnsGrant, PluginLimits, Rights, StderrLog};

/// Longest config file name a plugin may ask for (longer names are refused unread).
pub const MAX_CONFIG_NAME: usize = 255;
/// Refused config names logged per plugin; past that, one line says the rest are not.
const MAX_REFUSALS_LOGGED: usize = 16;

/// Read-only access to the server's config files (`config("badmailfrom")`).
pub trait ConfigFiles: Send + Sync {
    /// The meaningful lines of the config file `name` (trimmed, no comments), or `None`.
    fn lines(&self, name: &str) -> Option<Vec<String>>;
}

/// What an instance knows about the plugin it runs.
pub struct PluginMeta {
    /// The instance name from `config/plugins` (`rcpt_ok`, `rcpt_ok:2`).
    pub name: String,
    pub args: Vec<String>,
    pub config: Arc<dyn ConfigFiles>,
    /// The config files it may read; the only names that reach `config`.
    pub config_grant: ConfigGrant,
    /// What it may do that loosens policy.
    pub rights: Rights,
    /// Its position in the chain: who wrote a note.
    pub index: usize,
    /// Every plugin's instance name, by chain position (for the server's records and for
    /// naming the owner of a note).
    pub chain: Arc<[String]>,
    /// Its server-wide log rate, shared by all its instances.
    pub log_rate: crate::imports::log::LogRate,
    /// The names it may look up, and how many questions per transaction.
    pub dns: DnsGrant,
    pub dns_queries: u32,
    /// The server's resolver (asked only for granted names).
    pub resolver: Option<Resolver>,
    /// The key-value stores it was granted, each with its namespace, and how many calls it may
    /// make per transaction.
    pub stores: Vec<crate::imports::key_value::GrantedStore>,
    pub store_operations: u32,
    /// The downstreams it may deliver to (`downstream` in config/sandbox).
    pub downstreams: Vec<Arc<crate::downstream::Downstream>>,
    /// The upstreams it was granted, and how many calls it may make per transaction.
    pub upstreams: Vec<Arc<crate::upstream::Upstream>>,
    pub upstream_calls: u32,
}

/// The config files one plugin may read. Asking for any other reads as missing, and is
/// logged once per name (at most [`MAX_REFUSALS_LOGGED`] names), so a plugin cannot flood the
/// log by asking.
pub struct ConfigGrant {
    names: Box<[String]>,
    refused: Mutex<Refusals>,
}

#[derive(Default)]
struct Refusals {
    logged: Vec<String>,
    muted: bool,
}

impl ConfigGrant {
    pub fn new(names: &[String]) -> ConfigGrant {
        let mut names = names.to_vec();
        names.sort();
        names.dedup();
        ConfigGrant { names: names.into(), refused: Mutex::default() }
    }

    pub fn allows(&self, name: &str) -> bool {
        name.len() <= MAX_CONFIG_NAME && self.names.iter().any(|n| n == name)
    }

    /// Logs that `plugin` was refused `name`, unless that was logged already.
    pub fn log_refusal(&self, plugin: &str, name: &str) {
        let shown = match name.len() {
            n if n > MAX_CONFIG_NAME => format!("<a name of {n} octets>"),
            _ => name.escape_debug().to_string(),
        };
        let mut r = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        if r.muted || r.logged.contains(&shown) {
            return;
        }
        if r.logged.len() == MAX_REFUSALS_LOGGED {
            r.muted = true;
            tracing::warn!(plugin, "plugin asked for more config files it may not read; no longer logged");
            return;
        }
        tracing::warn!(
            plugin,
            file = %shown,
            "config file not granted to this plugin: it reads as missing (grant it with `config-file` in config/sandbox)"
        );
        r.logged.push(shown);
    }
}

/// The session state a hook call works on. The connection task's copy is moved in before the
/// call and moved back after it, so a plugin sees and changes the real thing, and nothing of it
/// stays in the instance between calls.
#[derive(Default)]
pub struct CallData {
    /// The hook being called (for log lines).
    pub hook: Option<Hook>,
    pub connection: Connection,
    pub transaction: Option<Transaction>,
    pub message: Option<MessageView>,
}

pub struct PluginState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limits: PluginLimits,
    pub meta: Arc<PluginMeta>,
    pub call: CallData,
    pub temp: TempArea,
    pub stderr: StderrLog,
    /// Log lines the plugin has written on this connection (moved in from the scope for each
    /// call; a flood is muted).
    pub log_lines: u32,
    /// A refused `set-relay-client(true)` was logged (once per instance).
    pub relay_refusal_logged: bool,
    /// The DNS questions it asked in this transaction (`imports/dns.rs`).
    pub dns: crate::imports::dns::DnsUse,
    /// The store calls it made in this transaction (`imports/key_value.rs`).
    pub store_use: crate::imports::key_value::StoreUse,
    /// Its deliveries in this transaction, and the downstream session it holds
    /// (`imports/delivery.rs`).
    pub delivery: crate::imports::delivery::DeliveryUse,
    /// Its upstream connections and the calls it made in this transaction
    /// (`imports/upstream.rs`); the connections close when the instance is dropped.
    pub upstream_use: crate::imports::upstream::UpstreamUse,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}
