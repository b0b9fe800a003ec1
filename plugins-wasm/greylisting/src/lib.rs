//! greylisting (qpsmtpd): defers mail from a triplet it has not seen, until the triplet retries
//! after a while (RFC 6647). Spamware that never retries never gets through; a real MTA retries
//! and, once through, is not deferred again for weeks.
//!
//! The triplet is the client's address (or, with `subnet 1`, its /24 or IPv6 /64, for senders
//! whose retries come from another machine of a pool), and, when enabled, the sender and the
//! recipient. Its state is kept in a key-value store (`store NAME`, default `local`, the
//! default configuration's embedded store; stores are defined in `config/stores` and granted
//! in `config/sandbox`), so several servers sharing a Redis store share what they have seen:
//! - first sighting: `450 4.7.1 This mail is temporarily denied`, remembered for
//!   `grey_timeout` (default 3 h 20 min; forgotten if it never retries);
//! - a retry before `black_timeout` (default 50 min): deferred again;
//! - a retry after it: accepted, and the triplet white for `white_timeout` (default 36 days),
//!   renewed by deliveries (at most once an hour, so a white triplet costs the store a read,
//!   not a write, per message).
//!
//! Arguments (qpsmtpd's, timeouts in seconds): `remote_ip 0|1` (default 1), `sender 0|1`
//! (default 0), `recipient 0|1` (default 0: with it the triplet is checked at each RCPT and
//! only that recipient deferred; without it, at MAIL), `deny_late 0|1` (default 0: defer at
//! DATA instead, all recipients together), `black_timeout`, `white_timeout`, `grey_timeout`,
//! `reject 0|1` (0, or `mode testonly`: record and log only, to seed the store), `subnet 0|1`,
//! `store NAME`. Relay clients and authenticated sessions are never deferred. When the store
//! cannot be used (down, timed out, over quota), the mail passes and the log says why:
//! greylisting fails open. qpsmtpd's `db_dir`, `redis` and `nfslock` are replaced by
//! `config/stores`; its `p0f` and `geoip` need plugins that do not exist here.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use policy::Options;
use wasmtpd_plugin::key_value::{self, Condition, StoreError};
use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin, host};

const DENY_MESSAGE: &str = "This mail is temporarily denied";
const ARGUMENTS: &[&str] = &[
    "remote_ip",
    "sender",
    "recipient",
    "deny_late",
    "black_timeout",
    "white_timeout",
    "grey_timeout",
    "reject",
    "mode",
    "subnet",
    "store",
    "per_recipient",
];
/// How often a white triplet's expiry is pushed back to `white_timeout` from now.
const RENEW_EVERY_MS: u64 = 3600 * 1000;
/// The transaction note that carries a deferral to DATA (`deny_late`).
const LATE_NOTE: &str = "greylist";

struct Greylisting;

struct Settings {
    remote_ip: bool,
    sender: bool,
    recipient: bool,
    deny_late: bool,
    subnet: bool,
    reject: bool,
    black: u64,
    white: u64,
    grey: u64,
    store: String,
}

impl Settings {
    fn read() -> Settings {
        let o = Options::from_args(ARGUMENTS);
        let testonly =
            o.get("mode").is_some_and(|m| m.eq_ignore_ascii_case("testonly") || m.eq_ignore_ascii_case("off"));
        Settings {
            remote_ip: o.flag("remote_ip", true),
            sender: o.flag("sender", false),
            recipient: o.flag("recipient", false) || o.flag("per_recipient", false),
            deny_late: o.flag("deny_late", false),
            subnet: o.flag("subnet", false),
            reject: o.flag("reject", !testonly),
            black: u64::from(o.number("black_timeout", 50 * 60)),
            white: u64::from(o.number("white_timeout", 36 * 24 * 3600)),
            grey: u64::from(o.number("grey_timeout", 3 * 3600 + 20 * 60)),
            store: o.store(),
        }
    }
}

#[wasmtpd_plugin::plugin]
impl Plugin for Greylisting {
    fn mail(sender: Option<Address>, _params: Vec<EsmtpParam>) -> HookResult {
        let s = Settings::read();
        if s.recipient {
            return HookResult::declined();
        }
        decide(&s, sender.as_ref(), None)
    }

    fn rcpt(recipient: Address, _params: Vec<EsmtpParam>) -> HookResult {
        let s = Settings::read();
        if !s.recipient {
            return HookResult::declined();
        }
        let sender = host::transaction().and_then(|t| t.sender);
        decide(&s, sender.as_ref(), Some(&recipient))
    }

    fn data() -> HookResult {
        match host::transaction_note(LATE_NOTE) {
            Some(message) => HookResult::deny_soft(message).with_enhanced_code("4.7.1"),
            None => HookResult::declined(),
        }
    }
}

/// Checks the triplet; defers now, or at DATA with `deny_late`.
fn decide(s: &Settings, sender: Option<&Address>, recipient: Option<&Address>) -> HookResult {
    if policy::is_immune() {
        return HookResult::declined();
    }
    let Some(key) = triplet(s, sender, recipient) else {
        wasmtpd_plugin::warn("enable one of remote_ip, sender or recipient");
        return HookResult::declined();
    };
    let defer = match check(s, &key) {
        Ok(defer) => defer,
        Err(e) => {
            wasmtpd_plugin::warn(format!(
                "skip, the store cannot be used ({}); the mail passes",
                policy::describe_store_error(&e)
            ));
            return HookResult::declined();
        }
    };
    if !defer || !s.reject {
        return HookResult::declined();
    }
    if s.deny_late {
        if let Err(e) = host::set_transaction_note(LATE_NOTE, Some(DENY_MESSAGE)) {
            wasmtpd_plugin::warn(format!("cannot note the deferral for DATA ({e}); deferring now"));
        } else {
            return HookResult::declined();
        }
    }
    HookResult::deny_soft(DENY_MESSAGE).with_enhanced_code("4.7.1")
}

/// The store key of the triplet.
fn triplet(s: &Settings, sender: Option<&Address>, recipient: Option<&Address>) -> Option<String> {
    let mut parts = Vec::new();
    if s.remote_ip {
        let ip = host::connection().remote_ip;
        parts.push(match (s.subnet, ip.parse::<IpAddr>()) {
            (true, Ok(IpAddr::V4(v4))) => {
                let [a, b, c, _] = v4.octets();
                format!("{a}.{b}.{c}.0/24")
            }
            (true, Ok(IpAddr::V6(v6))) => {
                let g = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", g[0], g[1], g[2], g[3])
            }
            _ => ip,
        });
    }
    if s.sender {
        parts.push(sender.map(|a| a.to_plain().to_ascii_lowercase()).unwrap_or_default());
    }
    if s.recipient {
        parts.push(recipient?.to_plain().to_ascii_lowercase());
    }
    (!parts.is_empty()).then(|| parts.join("|"))
}

/// What the store says of the triplet: defer it or not. Records the sighting.
///
/// An entry is `FIRST_SEEN DEFERRALS DELIVERIES` (seconds since the epoch): grey while
/// DELIVERIES is 0 (kept for `grey_timeout` from the first sighting), white after (kept for
/// `white_timeout` from the last delivery).
fn check(s: &Settings, key: &str) -> Result<bool, StoreError> {
    let now = now();
    // Two attempts: a concurrent session may change the entry between our read and write.
    for _ in 0..2 {
        let Some(entry) = key_value::get(&s.store, key)? else {
            let value = format!("{now} 1 0");
            match key_value::set(&s.store, key, value.as_bytes(), Some(s.grey * 1000), Condition::IfAbsent) {
                Ok(_) => {
                    wasmtpd_plugin::info(format!("fail, first sighting of {key}"));
                    return Ok(true);
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        };
        let text = String::from_utf8_lossy(&entry.value).to_string();
        let mut fields = text.split(' ').map(|f| f.parse::<u64>().unwrap_or(0));
        let (first, deferrals, deliveries) =
            (fields.next().unwrap_or(now), fields.next().unwrap_or(0), fields.next().unwrap_or(0));
        let (value, ttl, defer) = if deliveries > 0 {
            wasmtpd_plugin::debug(format!("pass, {key} is white ({deliveries} deliveries)"));
            // Renewed at most once an hour: a write per message would cost the store a commit
            // per message for the sake of an expiry weeks away.
            let renewed_ms = (s.white * 1000).saturating_sub(entry.expires_in_ms.unwrap_or(0));
            if renewed_ms < RENEW_EVERY_MS {
                return Ok(false);
            }
            (format!("{first} {deferrals} {}", deliveries + 1), s.white, false)
        } else if now.saturating_sub(first) < s.black {
            wasmtpd_plugin::info(format!("fail, {key} retried within black_timeout ({} deferrals)", deferrals + 1));
            // Keep the expiry of the first sighting.
            let left = entry.expires_in_ms.map_or(s.grey, |ms| ms.div_ceil(1000).max(1));
            (format!("{first} {} 0", deferrals + 1), left, true)
        } else {
            wasmtpd_plugin::info(format!("pass, {key} retried after black_timeout: now white"));
            (format!("{first} {deferrals} 1"), s.white, false)
        };
        match key_value::set(&s.store, key, value.as_bytes(), Some(ttl * 1000), Condition::IfVersion(entry.version)) {
            Ok(_) => return Ok(defer),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    // Still racing: the other sessions have recorded the triplet; decide on what we last saw.
    Ok(false)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
