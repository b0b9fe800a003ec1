//! Write wasmtpd plugins in Rust.
//!
//! ```ignore
//! use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin, host};
//!
//! struct BlockList;
//!
//! #[wasmtpd_plugin::plugin]
//! impl Plugin for BlockList {
//!     fn rcpt(recipient: Address, _params: Vec<EsmtpParam>) -> HookResult {
//!         if host::args().contains(&recipient.local_part) {
//!             return HookResult::deny(format!("{} is blocked", recipient.local_part));
//!         }
//!         HookResult::declined()
//!     }
//! }
//! ```
//!
//! Implement only the hooks you need: every method of [`Plugin`] defaults to
//! [`HookResult::declined`], and `#[wasmtpd_plugin::plugin]` exports exactly the methods your
//! `impl` block defines, so the server never runs your plugin for the others. Build with
//! `cargo build --release --target wasm32-wasip2`; the `.wasm` file is the plugin.
//!
//! A new instance of your plugin is made for each transaction (by default), so statics start
//! fresh; keep state that must last across transactions, or be seen by other plugins, in notes
//! ([`host::set_transaction_note`], [`host::set_connection_note`]). A note belongs to the plugin
//! that wrote it first, so check the `Result` of a write your later hooks rely on, and fail
//! closed if it failed.
//!
//! A plugin only reads the config files meant for it ([`host::config`]), and verdicts that loosen
//! policy (ok at `rcpt`, `queue` and the auth hooks; done at `queue` and `data_post`) or
//! [`host::set_relay_client`]`(true)` need a right the operator grants in `config/sandbox`
//! (see `wit/host.wit` and the README).

#![deny(missing_docs)]

// The `Plugin` trait made by `hook_trait!` names this crate as `::wasmtpd_plugin`.
extern crate self as wasmtpd_plugin;

pub use wasmtpd_plugin_macros::plugin;
#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "wasmtpd:plugin/imports",
    });
}

/// The server's iprev, SPF, DKIM and DMARC results (see `wit/authentication-results.wit`).
pub use bindings::wasmtpd::plugin::authentication_results;
/// Delivery onward: the current message handed to a downstream server the operator defined
/// and granted, recipients checked with it as they arrive (see `wit/delivery.wit`).
pub use bindings::wasmtpd::plugin::delivery;
/// DNS through the server's resolver: typed lookups, parallel lookups and DNS list checks,
/// answered only for the names the operator grants (see `wit/dns.wit`).
pub use bindings::wasmtpd::plugin::dns;
/// What the server lends a plugin: logging, config, facts, notes, the message, temp files.
/// See `wit/host.wit` for every function's contract.
pub use bindings::wasmtpd::plugin::host;
/// A key-value store that outlives the transaction: get with versions, conditional set
/// (if absent, compare-and-swap), delete, atomic increment, every write with an optional time
/// to live; only the stores the operator grants, each plugin's keys its own (see
/// `wit/key-value.wit`).
pub use bindings::wasmtpd::plugin::key_value;
/// How busy the server is: connections from this client, the load average (`wit/server-load.wit`).
pub use bindings::wasmtpd::plugin::server_load;
/// The WIT `types` interface (used by the generated export glue).
pub use bindings::wasmtpd::plugin::types;
/// Services the operator runs next to the server (rspamd, spamd, clamd), reached by the name
/// the operator granted: a byte stream, the message sent from the host side, and an HTTP/1.1
/// request helper (see `wit/upstream.wit`).
pub use bindings::wasmtpd::plugin::upstream;

pub use host::{AuthInfo, ConnectionInfo, Header, Recipient, TlsInfo, TransactionInfo};
pub use types::{Address, EsmtpParam, HookResult, LogLevel, Verdict};

impl HookResult {
    fn verdict(verdict: Verdict, message: Option<String>) -> Self {
        HookResult { verdict, message, enhanced_code: None }
    }
    /// No opinion: the next plugin decides (qpsmtpd DECLINED).
    pub fn declined() -> Self {
        Self::verdict(Verdict::Declined, None)
    }
    /// Accept; the chain stops here (OK).
    pub fn ok() -> Self {
        Self::verdict(Verdict::Ok, None)
    }
    /// Accept, with the reply text (OK).
    pub fn ok_with(message: impl Into<String>) -> Self {
        Self::verdict(Verdict::Ok, Some(message.into()))
    }
    /// Refuse permanently, 5xx (DENY).
    pub fn deny(message: impl Into<String>) -> Self {
        Self::verdict(Verdict::Deny, Some(message.into()))
    }
    /// Refuse temporarily, 4xx (DENYSOFT).
    pub fn deny_soft(message: impl Into<String>) -> Self {
        Self::verdict(Verdict::DenySoft, Some(message.into()))
    }
    /// Refuse permanently and close the connection (DENY_DISCONNECT).
    pub fn deny_disconnect(message: impl Into<String>) -> Self {
        Self::verdict(Verdict::DenyDisconnect, Some(message.into()))
    }
    /// Refuse temporarily and close the connection (DENYSOFT_DISCONNECT).
    pub fn deny_soft_disconnect(message: impl Into<String>) -> Self {
        Self::verdict(Verdict::DenySoftDisconnect, Some(message.into()))
    }
    /// Handled: the server skips its own action for this hook (DONE).
    pub fn done() -> Self {
        Self::verdict(Verdict::Done, None)
    }
    /// The same result with an RFC 3463 enhanced status code, such as "5.7.1".
    pub fn with_enhanced_code(mut self, code: impl Into<String>) -> Self {
        self.enhanced_code = Some(code.into());
        self
    }
}

impl Address {
    /// `local@domain` (or the bare `postmaster`), without angle brackets.
    pub fn to_plain(&self) -> String {
        match &self.domain {
            Some(d) => format!("{}@{}", self.local_part, d),
            None => self.local_part.clone(),
        }
    }
}

/// Logs at info level.
pub fn info(message: impl AsRef<str>) {
    host::log(LogLevel::Info, message.as_ref());
}
/// Logs at warn level.
pub fn warn(message: impl AsRef<str>) {
    host::log(LogLevel::Warn, message.as_ref());
}
/// Logs at debug level.
pub fn debug(message: impl AsRef<str>) {
    host::log(LogLevel::Debug, message.as_ref());
}

wasmtpd_plugin_macros::hook_trait! {
    /// The hooks. Implement the ones you need inside an `impl Plugin for T` block marked
    /// `#[wasmtpd_plugin::plugin]`. There is one method per hook interface of `wit/hooks.wit`,
    /// made from it (with its documentation: when each runs and what each verdict does there),
    /// and each defaults to [`HookResult::declined`].
    pub trait Plugin {}
}
