//! karma (qpsmtpd): a reputation per client address, from how its sessions went, and a penalty
//! box for the ones that behave badly.
//!
//! A session's karma is +1 for each message accepted for delivery (it reached the `queue`
//! hook: put karma before the queue plugin) and -1 for each refusal any plugin gave in it (the
//! `deny` hook hears of every one). A session is nice at `strikes` or more (default 3: three
//! messages delivered), naughty at `-strikes` or less. When the client disconnects, its history
//! in the store (`store NAME`, default `local`) is updated: nice and naughty sessions, kept for
//! `history_days` (default 60) after the first. A naughty session that leaves the history at
//! `-negative` or below (nice minus naughty; default 1) puts the address in the penalty box for
//! `penalty_days` (default 1; fractions allowed): its connections are refused with
//! `550 You were naughty. You cannot connect for N more days.` and closed (`reject 0`: noted
//! and logged only).
//!
//! At connect the history is the connection note `karma` (nice minus naughty, as `3` or `-2`)
//! and `karma.history` (`NICE NAUGHTY`), so later plugins can be stricter with a bad history or
//! kinder with a good one. Relay clients and authenticated sessions are not judged. When the
//! store cannot be used nothing is refused and the log says why.

use policy::Options;
use wasmtpd_plugin::key_value::{self, Condition};
use wasmtpd_plugin::{HookResult, Plugin, Verdict, host};

const ARGUMENTS: &[&str] = &["store", "negative", "strikes", "penalty_days", "history_days", "reject"];
/// The connection note of this session's karma so far.
const SESSION: &str = "karma.session";

struct Karma;

fn days(o: &Options, key: &str, default: f64) -> f64 {
    o.get(key).map_or(default, |v| {
        v.parse::<f64>().ok().filter(|d| *d > 0.0 && *d <= 365.0).unwrap_or_else(|| {
            wasmtpd_plugin::warn(format!("`{key} {v}`: expected a number of days up to 365; using {default}"));
            default
        })
    })
}

#[wasmtpd_plugin::plugin]
impl Plugin for Karma {
    fn connect() -> HookResult {
        let o = Options::from_args(ARGUMENTS);
        let store = o.store();
        let ip = host::connection().remote_ip;
        match key_value::get(&store, &format!("history:{ip}")) {
            Ok(Some(entry)) => {
                let text = String::from_utf8_lossy(&entry.value).to_string();
                let (nice, naughty) = parse_history(&text);
                let _ = host::set_connection_note("karma", Some(&(nice - naughty).to_string()));
                let _ = host::set_connection_note("karma.history", Some(&format!("{nice} {naughty}")));
            }
            Ok(None) => {
                let _ = host::set_connection_note("karma", Some("0"));
            }
            Err(e) => {
                wasmtpd_plugin::warn(format!("skip, the store cannot be used ({})", policy::describe_store_error(&e)))
            }
        }
        if policy::is_immune() {
            return HookResult::declined();
        }
        match key_value::get(&store, &format!("penalty:{ip}")) {
            Ok(Some(entry)) => {
                let left = entry.expires_in_ms.unwrap_or(0) as f64 / 86_400_000.0;
                wasmtpd_plugin::info(format!("fail, {ip} is in the penalty box for {left:.2} more days"));
                if o.flag("reject", true) {
                    return HookResult::deny_disconnect(format!(
                        "You were naughty. You cannot connect for {left:.2} more days."
                    ));
                }
            }
            Ok(None) => {}
            Err(e) => {
                wasmtpd_plugin::warn(format!("skip, the store cannot be used ({})", policy::describe_store_error(&e)))
            }
        }
        HookResult::declined()
    }

    fn deny(_hook: String, _plugin: String, verdict: Verdict, _message: Option<String>) -> HookResult {
        if matches!(verdict, Verdict::Deny | Verdict::DenySoft | Verdict::DenyDisconnect | Verdict::DenySoftDisconnect)
        {
            adjust(-1);
        }
        HookResult::declined()
    }

    fn queue() -> HookResult {
        adjust(1);
        HookResult::declined()
    }

    fn disconnect() -> HookResult {
        if policy::is_immune() {
            return HookResult::declined();
        }
        let session: i64 = host::connection_note(SESSION).and_then(|v| v.parse().ok()).unwrap_or(0);
        let o = Options::from_args(ARGUMENTS);
        let strikes = i64::from(o.number("strikes", 3).max(1));
        let (nice, naughty) = match session {
            s if s >= strikes => (1, 0),
            s if s <= -strikes => (0, 1),
            _ => return HookResult::declined(),
        };
        let store = o.store();
        let ip = host::connection().remote_ip;
        let history_ms = (days(&o, "history_days", 60.0) * 86_400_000.0) as u64;
        let key = format!("history:{ip}");
        // Read, add, write back if nobody wrote in between (two tries; a lost update of a
        // reputation is no disaster, and is logged).
        for _ in 0..2 {
            let (old, version, ttl) = match key_value::get(&store, &key) {
                Ok(Some(e)) => (parse_history(&String::from_utf8_lossy(&e.value)), Some(e.version), e.expires_in_ms),
                Ok(None) => ((0, 0), None, None),
                Err(e) => {
                    wasmtpd_plugin::warn(format!("cannot record karma ({})", policy::describe_store_error(&e)));
                    return HookResult::declined();
                }
            };
            let (n, b) = (old.0 + nice, old.1 + naughty);
            let condition = version.map_or(Condition::IfAbsent, Condition::IfVersion);
            let ttl = Some(ttl.unwrap_or(history_ms).max(1));
            match key_value::set(&store, &key, format!("{n} {b}").as_bytes(), ttl, condition) {
                Ok(_) => {
                    wasmtpd_plugin::info(format!(
                        "{} session ({session}), history {n} nice, {b} naughty",
                        if nice > 0 { "nice" } else { "naughty" }
                    ));
                    if naughty > 0 && n - b <= -i64::from(o.number("negative", 1).max(1)) {
                        let penalty_ms = (days(&o, "penalty_days", 1.0) * 86_400_000.0) as u64;
                        match key_value::set(
                            &store,
                            &format!("penalty:{ip}"),
                            b"1",
                            Some(penalty_ms.max(1)),
                            Condition::Always,
                        ) {
                            Ok(_) => wasmtpd_plugin::info(format!("{ip} goes to the penalty box")),
                            Err(e) => wasmtpd_plugin::warn(format!(
                                "cannot penalize {ip} ({})",
                                policy::describe_store_error(&e)
                            )),
                        }
                    }
                    return HookResult::declined();
                }
                Err(key_value::StoreError::Conflict) => continue,
                Err(e) => {
                    wasmtpd_plugin::warn(format!("cannot record karma ({})", policy::describe_store_error(&e)));
                    return HookResult::declined();
                }
            }
        }
        wasmtpd_plugin::warn("karma not recorded: the history kept changing under us");
        HookResult::declined()
    }
}

/// Adds `delta` to this session's karma.
fn adjust(delta: i64) {
    let now: i64 = host::connection_note(SESSION).and_then(|v| v.parse().ok()).unwrap_or(0);
    if let Err(e) = host::set_connection_note(SESSION, Some(&(now + delta).to_string())) {
        wasmtpd_plugin::warn(format!("cannot note karma ({e})"));
    }
}

/// `NICE NAUGHTY`.
fn parse_history(text: &str) -> (i64, i64) {
    let mut f = text.split(' ').map(|x| x.parse::<i64>().unwrap_or(0));
    (f.next().unwrap_or(0), f.next().unwrap_or(0))
}
