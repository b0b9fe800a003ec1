//! The data of one plugin instance's store: its WASI context, its limits, and, while a hook
//! call is running, the connection and transaction the call may read and change.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtpd_smtp::{Connection, Transaction};

use crate::imports::message::MessageView;
use crate::imports::temp::TempArea;
use crate::sandbox::{PluginLimits, StderrLog};

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
    /// Its server-wide log rate, shared by all its instances.
    pub log_rate: crate::imports::log::LogRate,
}

/// The session state a hook call works on. The connection task's copy is moved in before the
/// call and moved back after it, so a plugin sees and changes the real thing, and nothing of it
/// stays in the instance between calls.
#[derive(Default)]
pub struct CallData {
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
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}
