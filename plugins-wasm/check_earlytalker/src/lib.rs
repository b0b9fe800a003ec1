//! check_earlytalker (qpsmtpd earlytalker): refuses clients that talk before our greeting
//! (direct-to-MX spamware that pipelines its whole session), with qpsmtpd's arguments:
//!
//! - `wait N` (default 1): seconds the greeting waits, watching for early input;
//! - `check-at CONNECT|DATA` (default CONNECT; may be given twice): when to check. At DATA,
//!   message text sent before our 354 is refused with 554 and the connection closed;
//! - `reject 0|1` (default 1; 0: only log and note), `reject_type perm|temp|disconnect|
//!   temp_disconnect` (default perm: 550 and close at connect), or qpsmtpd's older
//!   `action deny|denysoft|log`;
//! - `defer-reject 0|1` (default 0): greet the early talker as usual, then refuse each MAIL
//!   (`450` unless `reject_type` says otherwise, as in qpsmtpd), so the client's log says why.
//!
//! Only the server watches the client's socket, so `wait` and `check-at` are carried out by
//! it: with this plugin in the chain, `config/limits`' `greeting_delay` becomes `wait` when it
//! checks at CONNECT, and the server leaves the refusal to the plugin (see
//! `crates/server/src/config.rs`, `check_earlytalker_settings`). Text before our 354 is always
//! refused by the server. The connection note `earlytalker` says the client talked early.
//! Relay clients and authenticated sessions are not refused.

use policy::{Options, RejectType};
use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin, host};

struct EarlyTalker;

const NOTE: &str = "earlytalker";
const TEXT: &str = "Connecting host started transmitting before SMTP greeting";
const ARGUMENTS: &[&str] = &["wait", "check-at", "reject", "reject_type", "action", "defer-reject", "loglevel"];

/// What to do with an early talker.
struct Settings {
    at_connect: bool,
    reject: bool,
    reject_type: RejectType,
    defer: bool,
}

impl Settings {
    fn read() -> Settings {
        let o = Options::from_args(ARGUMENTS);
        let args = host::args();
        let check_at: Vec<&str> =
            args.chunks(2).filter(|c| c.len() == 2 && c[0] == "check-at").map(|c| c[1].as_str()).collect();
        let at_connect = check_at.is_empty() || check_at.iter().any(|v| v.eq_ignore_ascii_case("connect"));
        let defer = o.flag("defer-reject", false);
        let action = o.get("action").map(str::to_ascii_lowercase);
        let reject = match (o.get("reject"), action.as_deref()) {
            (Some(_), _) => o.flag("reject", true),
            (None, Some(a)) => a.starts_with("deny"),
            (None, None) => true,
        };
        let default_type = match (action.as_deref(), defer) {
            (Some("denysoft"), _) | (_, true) => RejectType::Temp,
            _ => RejectType::Perm,
        };
        Settings { at_connect, reject, reject_type: o.reject_type(default_type), defer }
    }

    fn refuse(&self) -> HookResult {
        if let Err(e) = host::set_connection_note(NOTE, Some("1")) {
            wasmtpd_plugin::warn(format!("cannot note the early talker ({e})"));
        }
        if !self.reject {
            wasmtpd_plugin::info("fail, remote started talking before we said hello (not refused: reject 0)");
            return HookResult::declined();
        }
        wasmtpd_plugin::info("fail, remote started talking before we said hello");
        self.reject_type.refuse(TEXT, "5.5.0")
    }
}

#[wasmtpd_plugin::plugin]
impl Plugin for EarlyTalker {
    fn connect() -> HookResult {
        let s = Settings::read();
        if !s.at_connect || policy::is_immune() {
            return HookResult::declined();
        }
        if !host::connection().early_talker {
            wasmtpd_plugin::debug("pass, not spontaneous");
            return HookResult::declined();
        }
        if s.defer {
            match host::set_connection_note(NOTE, Some("1")) {
                Ok(()) => return HookResult::declined(),
                Err(e) => wasmtpd_plugin::warn(format!("cannot note the early talker ({e}); refusing now")),
            }
        }
        s.refuse()
    }

    fn mail(_sender: Option<Address>, _params: Vec<EsmtpParam>) -> HookResult {
        let s = Settings::read();
        if !s.defer || host::connection_note(NOTE).is_none() || policy::is_immune() {
            return HookResult::declined();
        }
        s.refuse()
    }
}
