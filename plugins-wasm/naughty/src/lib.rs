//! naughty (qpsmtpd): enforces, at the hook the operator chooses, a rejection that another
//! plugin only recorded. A plugin given `reject naughty` (see `policy`) does not refuse
//! itself: it writes the connection note `naughty` (its reply text) and
//! `naughty_reject_type`, and lets the session go on, so a client refused at connect still
//! shows its sender and recipients in the log, and may still authenticate (an authenticated
//! client is never refused here, as qpsmtpd clears the flag).
//!
//! Arguments: `reject connect|mail|rcpt|data|data_post` (default `rcpt`: where the refusal is
//! made; at `data_post` as well in case an earlier plugin said ok at the chosen hook), and
//! `reject_type temp|perm|disconnect|temp_disconnect` (default `disconnect`), used when the
//! plugin that recorded it named none. The reply is the recorded text.

use policy::{Options, RejectType};
use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin, host};

const ARGUMENTS: &[&str] = &["reject", "reject_type", "loglevel"];
const HOOKS: &[&str] = &["connect", "mail", "rcpt", "data", "data_post"];

struct Naughty;

#[wasmtpd_plugin::plugin]
impl Plugin for Naughty {
    fn connect() -> HookResult {
        at("connect")
    }

    fn mail(_sender: Option<Address>, _params: Vec<EsmtpParam>) -> HookResult {
        at("mail")
    }

    fn rcpt(_recipient: Address, _params: Vec<EsmtpParam>) -> HookResult {
        at("rcpt")
    }

    fn data() -> HookResult {
        at("data")
    }

    fn data_post() -> HookResult {
        at("data_post")
    }
}

/// At `hook`: the recorded rejection, if `hook` is the chosen one (or `data_post`).
fn at(hook: &str) -> HookResult {
    let o = Options::from_args(ARGUMENTS);
    let chosen = match o.get("reject").map(str::to_ascii_lowercase) {
        None => "rcpt".to_string(),
        Some(h) if HOOKS.contains(&h.as_str()) => h,
        Some(h) => {
            wasmtpd_plugin::warn(format!("`reject {h}`: not one of {}; refusing at data_post", HOOKS.join(", ")));
            "data_post".to_string()
        }
    };
    if hook != chosen && hook != "data_post" {
        return HookResult::declined();
    }
    let Some(message) = host::connection_note("naughty") else {
        wasmtpd_plugin::debug("pass");
        return HookResult::declined();
    };
    if host::connection().auth.is_some() {
        wasmtpd_plugin::info("pass, authenticated");
        return HookResult::declined();
    }
    let recorded = host::connection_note("naughty_reject_type").and_then(|t| RejectType::parse(&t));
    let reject_type = recorded.unwrap_or_else(|| o.reject_type(RejectType::Disconnect));
    wasmtpd_plugin::info(format!("disconnecting ({message})"));
    reject_type.refuse(message, "5.7.1")
}
