//! What the standard plugins share (a library, not a plugin).
//!
//! qpsmtpd's plugins take their arguments as `key value` pairs (`dnsbl reject_type disconnect`)
//! and agree on two of them:
//! - `reject 0|1`: whether a failed check refuses the mail (1) or is only logged and noted (0);
//! - `reject_type temp|perm|disconnect|temp_disconnect` (also `soft`, `hard`): how it refuses
//!   ([`RejectType`]).
//!
//! A client that authenticated or that a plugin made a relay client is immune: the checks run
//! for strangers, not for the operator's own users (qpsmtpd's `is_immune`).

use wasmtpd_plugin::{HookResult, host};

/// A plugin's arguments as `key value` pairs, in the order given.
pub struct Options {
    pairs: Vec<(String, String)>,
}

impl Options {
    /// The plugin's arguments (`host::args()`). A key without a value, and keys not in `known`,
    /// are logged and ignored.
    pub fn from_args(known: &[&str]) -> Options {
        let warn = wasmtpd_plugin::warn;
        let args = host::args();
        let mut pairs = Vec::new();
        let mut words = args.iter();
        while let Some(key) = words.next() {
            let Some(value) = words.next() else {
                warn(format!("argument `{key}` has no value; ignored"));
                break;
            };
            if known.contains(&key.as_str()) {
                pairs.push((key.clone(), value.clone()));
            } else {
                warn(format!("unknown argument `{key}` (this plugin takes: {}); ignored", known.join(", ")));
            }
        }
        Options { pairs }
    }

    /// The last value given for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A `0|1` argument (also `no|yes`, `false|true`, `off|on`).
    pub fn flag(&self, key: &str, default: bool) -> bool {
        match self.get(key).map(str::to_ascii_lowercase).as_deref() {
            None => default,
            Some("1" | "yes" | "true" | "on") => true,
            Some("0" | "no" | "false" | "off") => false,
            Some(other) => {
                wasmtpd_plugin::warn(format!("`{key} {other}`: expected 0 or 1; using {}", u8::from(default)));
                default
            }
        }
    }

    /// A number argument.
    pub fn number(&self, key: &str, default: u32) -> u32 {
        match self.get(key) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                wasmtpd_plugin::warn(format!("`{key} {v}`: expected a number; using {default}"));
                default
            }),
        }
    }

    /// `store`: the key-value store the plugin keeps its state in; `local` (the default
    /// configuration's embedded store) when it is not given.
    pub fn store(&self) -> String {
        self.get("store").unwrap_or("local").to_string()
    }

    /// `reject_type`, or `default` when it is not given (or not one of the known values).
    pub fn reject_type(&self, default: RejectType) -> RejectType {
        match self.get("reject_type") {
            None => default,
            Some(v) => RejectType::parse(v).unwrap_or_else(|| {
                wasmtpd_plugin::warn(format!(
                    "`reject_type {v}`: expected temp, perm, disconnect or temp_disconnect; using {default:?}"
                ));
                default
            }),
        }
    }
}

/// What a failed check does (qpsmtpd's `reject 0|1|naughty`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Refuse now (`1`).
    Now,
    /// Only log (and note) it (`0`).
    LogOnly,
    /// Record it for the `naughty` plugin, which refuses at the hook the operator chose
    /// ([`record_naughty`]).
    Naughty,
}

impl Options {
    /// `reject`, or `default` when it is not given.
    pub fn reject(&self, default: Reject) -> Reject {
        match self.get("reject") {
            None => default,
            Some(v) if v.eq_ignore_ascii_case("naughty") => Reject::Naughty,
            Some(_) if self.flag("reject", default != Reject::LogOnly) => Reject::Now,
            Some(_) => Reject::LogOnly,
        }
    }
}

/// Records a rejection for the `naughty` plugin (qpsmtpd's `reject naughty`): the connection
/// notes `naughty` (the reply text) and, when the plugin's `reject_type` was given,
/// `naughty_reject_type`. The first plugin to record one is the one refused with.
pub fn record_naughty(message: &str, options: &Options) {
    if host::connection_note("naughty").is_some() {
        return;
    }
    if let Err(e) = host::set_connection_note("naughty", Some(message)) {
        wasmtpd_plugin::warn(format!("cannot record the rejection for naughty ({e})"));
        return;
    }
    if let Some(t) = options.get("reject_type").and_then(RejectType::parse) {
        let _ = host::set_connection_note("naughty_reject_type", Some(t.name()));
    }
}

/// How a failed check refuses (qpsmtpd's `reject_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectType {
    /// 4xx: try again later (`temp`, `soft`).
    Temp,
    /// 5xx (`perm`, `hard`).
    Perm,
    /// 5xx and the connection closed (`disconnect`).
    Disconnect,
    /// 4xx and the connection closed (`temp_disconnect`).
    TempDisconnect,
}

impl RejectType {
    /// qpsmtpd's name of it (`temp`, `perm`, `disconnect`, `temp_disconnect`).
    pub fn name(self) -> &'static str {
        match self {
            RejectType::Temp => "temp",
            RejectType::Perm => "perm",
            RejectType::Disconnect => "disconnect",
            RejectType::TempDisconnect => "temp_disconnect",
        }
    }

    pub fn parse(text: &str) -> Option<RejectType> {
        match text.to_ascii_lowercase().as_str() {
            "temp" | "soft" => Some(RejectType::Temp),
            "perm" | "hard" => Some(RejectType::Perm),
            "disconnect" => Some(RejectType::Disconnect),
            "temp_disconnect" => Some(RejectType::TempDisconnect),
            _ => None,
        }
    }

    /// The refusal with this text and the enhanced code for a permanent refusal (`5.7.1`,
    /// say; its class is turned into `4` for the temporary kinds).
    pub fn refuse(self, message: impl Into<String>, enhanced: &str) -> HookResult {
        let temp = format!("4{}", enhanced.get(1..).unwrap_or_default());
        match self {
            RejectType::Temp => HookResult::deny_soft(message).with_enhanced_code(temp),
            RejectType::Perm => HookResult::deny(message).with_enhanced_code(enhanced),
            RejectType::Disconnect => HookResult::deny_disconnect(message).with_enhanced_code(enhanced),
            RejectType::TempDisconnect => HookResult::deny_soft_disconnect(message).with_enhanced_code(temp),
        }
    }
}

/// The client authenticated, or may relay: the checks for strangers do not apply to it.
pub fn is_immune() -> bool {
    let connection = host::connection();
    connection.relay_client || connection.auth.is_some()
}

/// Recipients that must reach us even from a listed client, so it can ask to be delisted
/// (RFC 5321 section 4.5.1; qpsmtpd's dnsbl lets the same through).
pub fn is_role_account(local_part: &str) -> bool {
    ["postmaster", "abuse", "mailer-daemon", "root"].iter().any(|r| r.eq_ignore_ascii_case(local_part))
}

/// A [`wasmtpd_plugin::dns::DnsError`] in words, for a log line.
pub fn describe(error: &wasmtpd_plugin::dns::DnsError) -> String {
    use wasmtpd_plugin::dns::DnsError;
    match error {
        DnsError::NoSuchDomain => "no such domain".into(),
        DnsError::NoRecords => "no records".into(),
        DnsError::ServerFailure(why) => format!("server failure ({why})"),
        DnsError::Timeout => "timed out".into(),
        DnsError::Refused(why) => format!("refused ({why})"),
        DnsError::InvalidName(why) => format!("invalid name ({why})"),
    }
}

/// Whether `ip` is in `network`: `192.0.2.0/24`, `2001:db8::/32`, or a single address.
pub fn in_network(network: &str, ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    let (addr, prefix) = match network.split_once('/') {
        Some((a, p)) => (a, p.trim().parse::<u32>().ok()),
        None => (network, None),
    };
    match (addr.trim().parse::<IpAddr>(), ip) {
        (Ok(IpAddr::V4(n)), IpAddr::V4(i)) => {
            let p = prefix.unwrap_or(32).min(32);
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (Ok(IpAddr::V6(n)), IpAddr::V6(i)) => {
            let p = prefix.unwrap_or(128).min(128);
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// A check's result as RFC 8601 writes it (`pass`, `softfail`, ...).
pub fn result_word(result: wasmtpd_plugin::authentication_results::AuthResult) -> &'static str {
    use wasmtpd_plugin::authentication_results::AuthResult;
    match result {
        AuthResult::Pass => "pass",
        AuthResult::Fail => "fail",
        AuthResult::Softfail => "softfail",
        AuthResult::Neutral => "neutral",
        AuthResult::None => "none",
        AuthResult::Policy => "policy",
        AuthResult::Temperror => "temperror",
        AuthResult::Permerror => "permerror",
    }
}

/// A [`wasmtpd_plugin::key_value::StoreError`] in words, for a log line.
pub fn describe_store_error(error: &wasmtpd_plugin::key_value::StoreError) -> String {
    use wasmtpd_plugin::key_value::StoreError;
    match error {
        StoreError::NotGranted(why) => format!("not granted: {why}"),
        StoreError::OverBudget(why) => format!("over budget: {why}"),
        StoreError::TooLarge(why) => format!("too large: {why}"),
        StoreError::Quota(why) => format!("quota: {why}"),
        StoreError::Invalid(why) => format!("invalid: {why}"),
        StoreError::Conflict => "conflict".into(),
        StoreError::NotAnInteger => "not an integer".into(),
        StoreError::BackendUnavailable(why) => format!("backend unavailable: {why}"),
        StoreError::Timeout => "timed out".into(),
    }
}

/// Whether an address list entry (`config/badmailfrom`, `config/badrcptto`) matches `address`
/// (`local@domain`): `@domain` matches every address at that domain, `local@domain` that one
/// address (both without case), and an entry with any of `/ ^ $ * + ! % ? \` is a regular
/// expression (qpsmtpd's rule for telling them apart), matched without case anywhere in the
/// address unless anchored. qpsmtpd takes Perl's syntax; this is the `regex` crate's, which
/// has no look-around and no backreferences. A pattern that does not compile is logged and
/// matches nothing.
pub fn address_entry_matches(entry: &str, address: &str) -> bool {
    let address = address.to_ascii_lowercase();
    if entry.contains(['/', '^', '$', '*', '+', '!', '%', '?', '\\']) {
        return match regex::RegexBuilder::new(entry).case_insensitive(true).size_limit(1 << 20).build() {
            Ok(re) => re.is_match(&address),
            Err(e) => {
                wasmtpd_plugin::warn(format!("the pattern `{entry}` does not compile ({e}); it matches nothing"));
                false
            }
        };
    }
    let entry = entry.to_ascii_lowercase();
    match entry.strip_prefix('@') {
        Some(domain) => address.rsplit_once('@').is_some_and(|(_, d)| d == domain),
        None => entry == address,
    }
}

/// Whether the config file lists the address `ip`: whole (`192.0.2.7`), by a prefix ending in
/// `.` or `:` (`192.168.42.`, compared with the address as RFC 5952 writes it), or, with
/// `networks`, by a network with a prefix length (`10.1.0.0/24`).
pub fn address_listed(file: &str, ip: &str, networks: bool) -> bool {
    let Ok(addr) = ip.parse::<std::net::IpAddr>() else { return false };
    let canonical = addr.to_string();
    host::config(file).unwrap_or_default().iter().map(|l| l.trim()).any(|entry| {
        if entry.is_empty() {
            return false;
        }
        if entry.contains('/') {
            return networks && in_network(entry, addr);
        }
        if entry.ends_with('.') || entry.ends_with(':') {
            return canonical.starts_with(entry);
        }
        entry.parse::<std::net::IpAddr>().is_ok_and(|e| e == addr)
    })
}

/// A [`wasmtpd_plugin::upstream::UpstreamError`] in words, for a log line.
pub fn describe_upstream_error(error: &wasmtpd_plugin::upstream::UpstreamError) -> String {
    use wasmtpd_plugin::upstream::UpstreamError;
    match error {
        UpstreamError::NotGranted(why) => format!("not granted: {why}"),
        UpstreamError::OverBudget(why) => format!("over budget: {why}"),
        UpstreamError::Unavailable(why) => format!("unavailable: {why}"),
        UpstreamError::Timeout => "timed out".into(),
        UpstreamError::TooLarge(why) => format!("too large: {why}"),
        UpstreamError::Invalid(why) => format!("invalid: {why}"),
        UpstreamError::Protocol(why) => format!("not the expected protocol: {why}"),
        UpstreamError::NoMessage => "no message".into(),
    }
}

/// What a content filter (clamd, spamassassin, rspamd) does when its scanner cannot answer:
/// `fail_policy tempfail` (the default: 452 4.7.1, the client tries again later) or
/// `fail_policy declined` (fail open: the message goes on unscanned). Either way the failure
/// is logged and noted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailPolicy {
    TempFail,
    Declined,
}

impl FailPolicy {
    /// `fail_policy` of `options`.
    pub fn from_options(options: &Options) -> FailPolicy {
        match options.get("fail_policy") {
            None | Some("tempfail") => FailPolicy::TempFail,
            Some("declined") => FailPolicy::Declined,
            Some(other) => {
                wasmtpd_plugin::warn(format!("`fail_policy {other}`: expected tempfail or declined; using tempfail"));
                FailPolicy::TempFail
            }
        }
    }

    /// The result for a scan that failed with `why` (logged; noted in the transaction note
    /// `note`).
    pub fn failed(self, note: &str, why: &str) -> HookResult {
        let _ = host::set_transaction_note(note, Some(&format!("not scanned: {why}")));
        match self {
            FailPolicy::TempFail => {
                wasmtpd_plugin::warn(format!("scan failed, refusing for now (fail_policy tempfail): {why}"));
                HookResult::deny_soft("Unable to scan the message for now, please try again later")
                    .with_enhanced_code("4.7.1")
            }
            FailPolicy::Declined => {
                wasmtpd_plugin::warn(format!(
                    "scan failed, passing the message unscanned (fail_policy declined): {why}"
                ));
                HookResult::declined()
            }
        }
    }
}

/// A size argument: octets, or with a suffix `k`, `M` or `G` (`25M`).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().last()? {
        (i, 'k' | 'K') => (&t[..i], 1 << 10),
        (i, 'm' | 'M') => (&t[..i], 1 << 20),
        (i, 'g' | 'G') => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(unit)
}
