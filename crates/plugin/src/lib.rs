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

/// What the server lends a plugin: logging, config, facts, notes, the message, temp files.
/// See `wit/host.wit` for every function's contract.
pub use bindings::wasmtpd::plugin::host;
/// The WIT `types` interface (used by the generated export glue).
pub use bindings::wasmtpd::plugin::types;

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

/// The hooks. Implement the ones you need inside an `impl Plugin for T` block marked
/// `#[wasmtpd_plugin::plugin]`; see `wit/hooks.wit` for when each runs and what each verdict
/// does there.
#[allow(unused_variables)]
pub trait Plugin {
    /// A client connected, before the greeting.
    fn connect() -> HookResult {
        HookResult::declined()
    }
    /// HELO with the client's name.
    fn helo(host: String) -> HookResult {
        HookResult::declined()
    }
    /// EHLO with the client's name.
    fn ehlo(host: String) -> HookResult {
        HookResult::declined()
    }
    /// MAIL FROM with an address not in angle brackets: return `ok_with("<address>")` to
    /// rewrite it.
    fn mail_pre(address: String) -> HookResult {
        HookResult::declined()
    }
    /// RCPT TO with an address not in angle brackets: return `ok_with("<address>")` to
    /// rewrite it.
    fn rcpt_pre(address: String) -> HookResult {
        HookResult::declined()
    }
    /// MAIL FROM (`sender` is `None` for `<>`).
    fn mail(sender: Option<Address>, params: Vec<EsmtpParam>) -> HookResult {
        HookResult::declined()
    }
    /// RCPT TO. With no plugin saying ok, the recipient is soft-denied.
    fn rcpt(recipient: Address, params: Vec<EsmtpParam>) -> HookResult {
        HookResult::declined()
    }
    /// DATA, before the 354.
    fn data() -> HookResult {
        HookResult::declined()
    }
    /// The message has been received.
    fn data_post() -> HookResult {
        HookResult::declined()
    }
    /// Queue the message; say ok only once it is durable.
    fn queue() -> HookResult {
        HookResult::declined()
    }
    /// QUIT.
    fn quit() -> HookResult {
        HookResult::declined()
    }
    /// The connection is closing (result ignored).
    fn disconnect() -> HookResult {
        HookResult::declined()
    }
    /// VRFY.
    fn vrfy(argument: String) -> HookResult {
        HookResult::declined()
    }
    /// NOOP.
    fn noop() -> HookResult {
        HookResult::declined()
    }
    /// HELP.
    fn help(argument: String) -> HookResult {
        HookResult::declined()
    }
    /// A command the server does not know.
    fn unrecognized_command(verb: String, args: Vec<String>) -> HookResult {
        HookResult::declined()
    }
    /// The transaction ends (result ignored).
    fn reset_transaction() -> HookResult {
        HookResult::declined()
    }
    /// Another plugin denied something (the reply cannot be changed).
    fn deny(hook: String, plugin: String, verdict: Verdict, message: Option<String>) -> HookResult {
        HookResult::declined()
    }
    /// AUTH PLAIN credentials: ok authenticates the client. Runs before [`Plugin::auth`].
    fn auth_plain(user: String, password: String) -> HookResult {
        HookResult::declined()
    }
    /// AUTH LOGIN credentials: ok authenticates the client. Runs before [`Plugin::auth`].
    fn auth_login(user: String, password: String) -> HookResult {
        HookResult::declined()
    }
    /// Credentials of any mechanism ("PLAIN", "LOGIN"), when the mechanism's own hook declined.
    fn auth(mechanism: String, user: String, password: String) -> HookResult {
        HookResult::declined()
    }
}
