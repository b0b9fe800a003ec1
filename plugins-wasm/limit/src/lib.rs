//! limit (Haraka's `limit`): rate limits per client address and per sender, counted in a
//! key-value store (`store NAME`, default `local`), so several servers sharing a Redis store
//! share the counts.
//!
//! Arguments, each off unless given (`N/SECONDS`: at most N per window of SECONDS):
//! - `concurrency N`: connections open at once from one client address;
//! - `connections N/SECONDS`: connections from one client address per window;
//! - `messages_per_client N/SECONDS`, `messages_per_sender N/SECONDS`: messages (counted at
//!   DATA) per client address, per sender address;
//! - `recipients_per_client N/SECONDS`, `recipients_per_sender N/SECONDS`: recipients (at RCPT).
//!
//! Replies: a connection over `concurrency` or `connections` is refused at connect and closed
//! (`Too many connections from IP, try again later`, 4.7.0); a message over its limit gets a
//! temporary refusal at DATA, a recipient at RCPT (`Rate limit exceeded for WHO, try again
//! later`, 4.7.0). Windows are fixed (each counter starts at its window's beginning and
//! expires with it), and every count is one atomic increment that sets the counter's expiry
//! when it creates it, so a crash never leaves a counter that does not expire. Relay clients
//! and authenticated sessions are not limited. When the store cannot be used the session goes
//! on and the log says why (limits fail open).

use std::time::{SystemTime, UNIX_EPOCH};

use policy::Options;
use wasmtpd_plugin::key_value::{self, StoreError};
use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin, host};

const ARGUMENTS: &[&str] = &[
    "store",
    "concurrency",
    "connections",
    "messages_per_client",
    "messages_per_sender",
    "recipients_per_client",
    "recipients_per_sender",
];
/// How long a concurrency count outlives a server that died with the connection open.
const CONCURRENCY_TTL_MS: u64 = 3600 * 1000;
/// The connection note that says this connection was counted in `concurrency`.
const COUNTED: &str = "limit.counted";

struct Limit;

/// `N/SECONDS`.
#[derive(Clone, Copy)]
struct Rate {
    most: i64,
    window: u64,
}

fn rate(o: &Options, key: &str) -> Option<Rate> {
    let text = o.get(key)?;
    let parsed = text
        .split_once('/')
        .and_then(|(n, s)| Some(Rate { most: n.parse().ok()?, window: s.trim_end_matches('s').parse().ok()? }));
    if parsed.is_none_or(|r| r.window == 0) {
        wasmtpd_plugin::warn(format!("`{key} {text}`: expected N/SECONDS; not limited"));
        return None;
    }
    parsed
}

#[wasmtpd_plugin::plugin]
impl Plugin for Limit {
    fn connect() -> HookResult {
        let o = Options::from_args(ARGUMENTS);
        if policy::is_immune() {
            return HookResult::declined();
        }
        let ip = host::connection().remote_ip;
        let store = o.store();
        let refused = || {
            HookResult::deny_soft_disconnect(format!("Too many connections from {ip}, try again later"))
                .with_enhanced_code("4.7.0")
        };
        if let Some(r) = rate(&o, "connections") {
            match count(&store, &format!("connections:{ip}"), r) {
                Ok(true) => return refused(),
                Ok(false) => {}
                Err(e) => fail_open("connections", &e),
            }
        }
        if let Some(most) = o.get("concurrency").and_then(|n| n.parse::<i64>().ok()) {
            match key_value::increment(&store, &format!("concurrency:{ip}"), 1, Some(CONCURRENCY_TTL_MS)) {
                Ok(open) => {
                    if open > most {
                        let _ =
                            key_value::increment(&store, &format!("concurrency:{ip}"), -1, Some(CONCURRENCY_TTL_MS));
                        wasmtpd_plugin::info(format!("fail, {ip} has {} connections open", open - 1));
                        return refused();
                    }
                    if let Err(e) = host::set_connection_note(COUNTED, Some("1")) {
                        wasmtpd_plugin::warn(format!("cannot note the count ({e})"));
                    }
                }
                Err(e) => fail_open("concurrency", &e),
            }
        }
        HookResult::declined()
    }

    fn disconnect() -> HookResult {
        if host::connection_note(COUNTED).is_some() {
            let o = Options::from_args(ARGUMENTS);
            let key = format!("concurrency:{}", host::connection().remote_ip);
            let store = o.store();
            match key_value::increment(&store, &key, -1, Some(CONCURRENCY_TTL_MS)) {
                Ok(left) if left <= 0 => {
                    let _ = key_value::delete(&store, &key, None);
                }
                Ok(_) => {}
                Err(e) => fail_open("concurrency", &e),
            }
        }
        HookResult::declined()
    }

    fn rcpt(_recipient: Address, _params: Vec<EsmtpParam>) -> HookResult {
        per_transaction("recipients")
    }

    fn data() -> HookResult {
        per_transaction("messages")
    }
}

/// Counts a recipient or a message against the per-client and per-sender limits.
fn per_transaction(what: &str) -> HookResult {
    if policy::is_immune() {
        return HookResult::declined();
    }
    let o = Options::from_args(ARGUMENTS);
    let store = o.store();
    let ip = host::connection().remote_ip;
    let sender = host::transaction()
        .and_then(|t| t.sender)
        .map_or_else(|| "<>".to_string(), |a| a.to_plain().to_ascii_lowercase());
    for (whose, who) in [("client", ip.as_str()), ("sender", sender.as_str())] {
        let Some(r) = rate(&o, &format!("{what}_per_{whose}")) else { continue };
        match count(&store, &format!("{what}:{whose}:{who}"), r) {
            Ok(true) => {
                wasmtpd_plugin::info(format!("fail, {what} per {whose} over {}/{}s for {who}", r.most, r.window));
                return HookResult::deny_soft(format!("Rate limit exceeded for {who}, try again later"))
                    .with_enhanced_code("4.7.0");
            }
            Ok(false) => {}
            Err(e) => fail_open(what, &e),
        }
    }
    HookResult::declined()
}

/// Adds one to `key`'s counter of the current window; whether that is over the rate.
fn count(store: &str, key: &str, r: Rate) -> Result<bool, StoreError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let window = now / r.window;
    let left_ms = ((window + 1) * r.window - now) * 1000;
    let n = key_value::increment(store, &format!("{key}:{window}"), 1, Some(left_ms.max(1)))?;
    Ok(n > r.most)
}

fn fail_open(what: &str, e: &StoreError) {
    wasmtpd_plugin::warn(format!(
        "skip {what}: the store cannot be used ({}); not limited",
        policy::describe_store_error(e)
    ));
}
