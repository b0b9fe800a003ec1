//! helo (qpsmtpd): validates the HELO/EHLO name.
//!
//! The checks, each named as in qpsmtpd (and `claims_to_be_us`, ours):
//!
//! | check | refuses a HELO name that | policy |
//! |---|---|---|
//! | `is_in_badhelo` | `config/badhelo` lists (compared without case) | lenient |
//! | `invalid_localhost` | is `localhost` from a client that is not on loopback | lenient |
//! | `is_forged_literal` | is an address literal (`[192.0.2.1]`) that is not the client's address | lenient |
//! | `is_plain_ip` | is an IP address without brackets (neither a name nor a literal) | lenient |
//! | `claims_to_be_us` | is our own name (`config/me`) or the literal of our address, from another machine | lenient |
//! | `is_not_fqdn` | has no dot, or characters a host name cannot have (RFC 1035) | rfc |
//! | `no_forward_dns` | has no A or AAAA record (NXDOMAIN or none) | rfc |
//! | `no_reverse_dns` | (for the client's address) has no PTR record | rfc |
//! | `is_address_literal` | is an address literal at all | strict |
//! | `no_matching_dns` | neither resolves to the client's address nor is a name of it | strict |
//!
//! Arguments: `policy lenient|rfc|strict` (default lenient) picks the checks of its row and the
//! rows above; `CHECK 0|1` turns one check off or on whatever the policy (`no_reverse_dns 0`).
//! `reject 0|1` (default 1), `reject_type temp|perm|disconnect` (default disconnect, as in
//! qpsmtpd). Like qpsmtpd, "matching" is loose: an address in the client's /24 (/96 for IPv6),
//! or a name in the same last two labels, counts. A DNS lookup that fails (time-out, server
//! failure) is logged and the check passes: our resolver's trouble never refuses a client. The
//! DNS checks need `dns any` in `config/sandbox`. Immune clients (authenticated, relay) are not
//! checked. The connection notes `helo_forward_match` and `helo_reverse_match` say what
//! matched; each message gets an `X-HELO` header field with the name.

use std::net::IpAddr;

use policy::{Options, RejectType};
use wasmtpd_plugin::dns::{self, DnsError, Question, RecordData, RecordType};
use wasmtpd_plugin::{HookResult, Plugin, host};

struct Helo;

/// A check: its name, the policy that first includes it, and the test (the refusal's text).
type Check = (&'static str, Policy, fn(&Facts) -> Option<String>);

#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum Policy {
    Lenient,
    Rfc,
    Strict,
}

const CHECKS: &[Check] = &[
    ("is_in_badhelo", Policy::Lenient, is_in_badhelo),
    ("invalid_localhost", Policy::Lenient, invalid_localhost),
    ("is_forged_literal", Policy::Lenient, is_forged_literal),
    ("is_plain_ip", Policy::Lenient, is_plain_ip),
    ("claims_to_be_us", Policy::Lenient, claims_to_be_us),
    ("is_not_fqdn", Policy::Rfc, is_not_fqdn),
    ("no_forward_dns", Policy::Rfc, no_forward_dns),
    ("no_reverse_dns", Policy::Rfc, no_reverse_dns),
    ("is_address_literal", Policy::Strict, is_address_literal),
    ("no_matching_dns", Policy::Strict, no_matching_dns),
];

/// What the checks look at.
struct Facts {
    /// The HELO name as given.
    name: String,
    /// The same, lower case.
    lower: String,
    client: Option<IpAddr>,
    local: Option<IpAddr>,
    /// Set once the DNS checks have run for this name (they note what matched).
    asked: std::cell::Cell<bool>,
}

#[wasmtpd_plugin::plugin]
impl Plugin for Helo {
    fn helo(host: String) -> HookResult {
        check(host)
    }
    fn ehlo(host: String) -> HookResult {
        check(host)
    }
    fn data_post() -> HookResult {
        if let Some(name) = host::connection().hello_host {
            let _ = host::remove_header("X-HELO");
            if let Err(e) = host::add_header("X-HELO", &name) {
                wasmtpd_plugin::warn(format!("cannot add X-HELO: {e}"));
            }
        }
        HookResult::declined()
    }
}

fn check(name: String) -> HookResult {
    if policy::is_immune() {
        return HookResult::declined();
    }
    let mut names: Vec<&str> = CHECKS.iter().map(|(n, _, _)| *n).collect();
    names.extend(["policy", "reject", "reject_type", "timeout", "dns_timeout"]);
    let options = Options::from_args(&names);
    let policy = match options.get("policy").unwrap_or("lenient") {
        "rfc" => Policy::Rfc,
        "strict" => Policy::Strict,
        "lenient" => Policy::Lenient,
        other => {
            wasmtpd_plugin::warn(format!("`policy {other}`: expected lenient, rfc or strict; using lenient"));
            Policy::Lenient
        }
    };
    let connection = host::connection();
    let facts = Facts {
        lower: name.to_ascii_lowercase(),
        name,
        client: connection.remote_ip.parse().ok(),
        local: connection.local_ip.parse().ok(),
        asked: Default::default(),
    };
    // A second HELO (after STARTTLS, say) is judged afresh.
    for key in MATCH_NOTES {
        let _ = host::set_connection_note(key, None);
    }
    for (check, level, test) in CHECKS {
        if !options.flag(check, *level <= policy) {
            continue;
        }
        if let Some(text) = test(&facts) {
            wasmtpd_plugin::info(format!("fail, {check}: {}", facts.name));
            if !options.flag("reject", true) {
                return HookResult::declined();
            }
            return options.reject_type(RejectType::Disconnect).refuse(text, "5.7.1");
        }
    }
    wasmtpd_plugin::debug(format!("pass, {}", facts.name));
    HookResult::declined()
}

fn is_in_badhelo(f: &Facts) -> Option<String> {
    let listed = host::config("badhelo").unwrap_or_default().iter().any(|b| b.trim().eq_ignore_ascii_case(&f.lower));
    listed.then(|| format!("I do not believe you are {}.", f.name))
}

fn invalid_localhost(f: &Facts) -> Option<String> {
    let local = f.client.is_some_and(|ip| ip.is_loopback());
    (f.lower == "localhost" && !local).then(|| "You are not localhost".to_string())
}

/// The address of a literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`).
fn literal(name: &str) -> Option<IpAddr> {
    let inner = name.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner.strip_prefix("IPv6:").or_else(|| inner.strip_prefix("ipv6:")).unwrap_or(inner);
    inner.parse().ok()
}

fn is_forged_literal(f: &Facts) -> Option<String> {
    let ip = literal(&f.name)?;
    (Some(ip) != f.client).then(|| "Forged IPs not accepted here".to_string())
}

fn is_plain_ip(f: &Facts) -> Option<String> {
    f.name.parse::<IpAddr>().is_ok().then(|| "Plain IP is invalid HELO hostname (RFC 5321)".to_string())
}

fn claims_to_be_us(f: &Facts) -> Option<String> {
    if f.client.is_some() && f.client == f.local {
        return None;
    }
    let me = host::config("me").unwrap_or_default();
    let named = me.first().is_some_and(|me| me.trim().eq_ignore_ascii_case(&f.lower));
    let literal = literal(&f.name).is_some_and(|ip| Some(ip) == f.local);
    (named || literal).then(|| format!("You are not {}: that is us", f.name))
}

fn is_not_fqdn(f: &Facts) -> Option<String> {
    if literal(&f.name).is_some() {
        return None;
    }
    if !f.name.contains('.') {
        return Some("HELO name is not fully qualified. Read RFC 5321".into());
    }
    if f.name.chars().any(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '.')) {
        return Some("HELO name contains invalid FQDN characters. Read RFC 1035".into());
    }
    None
}

fn no_forward_dns(f: &Facts) -> Option<String> {
    f.asked.set(true);
    if literal(&f.name).is_some() || f.name.parse::<IpAddr>().is_ok() {
        return None;
    }
    let questions =
        [RecordType::A, RecordType::Aaaa].map(|record_type| Question { name: f.lower.clone(), record_type });
    let mut found = false;
    let mut nxdomain = false;
    for answer in dns::lookup_all(&questions) {
        match answer {
            Ok(records) => {
                for r in records {
                    if let RecordData::A(ip) | RecordData::Aaaa(ip) = r.data {
                        found = true;
                        if ip.parse().ok().zip(f.client).is_some_and(|(a, b)| same_network(a, b)) {
                            note("helo_forward_match");
                        }
                    }
                }
            }
            Err(DnsError::NoSuchDomain) => nxdomain = true,
            Err(DnsError::NoRecords) => {}
            Err(e) => {
                wasmtpd_plugin::warn(format!("skip no_forward_dns for {}: {}", f.lower, policy::describe(&e)));
                return None;
            }
        }
    }
    match (found, nxdomain) {
        (true, _) => None,
        (false, true) => Some("HELO hostname does not exist".into()),
        (false, false) => Some("HELO hostname did not resolve".into()),
    }
}

fn no_reverse_dns(f: &Facts) -> Option<String> {
    f.asked.set(true);
    let ip = f.client?;
    match dns::reverse(&ip.to_string()) {
        Ok(names) => {
            if names.iter().any(|n| same_domain(&n.to_ascii_lowercase(), &f.lower)) {
                note("helo_reverse_match");
            }
            None
        }
        Err(DnsError::NoSuchDomain | DnsError::NoRecords) => Some(format!("no reverse DNS for {ip}")),
        Err(e) => {
            wasmtpd_plugin::warn(format!("skip no_reverse_dns for {ip}: {}", policy::describe(&e)));
            None
        }
    }
}

fn is_address_literal(f: &Facts) -> Option<String> {
    literal(&f.name).map(|_| "RFC 5321 allows an address literal, but we do not".to_string())
}

fn no_matching_dns(f: &Facts) -> Option<String> {
    if !f.asked.get() {
        no_forward_dns(f);
        no_reverse_dns(f);
    }
    let matched = MATCH_NOTES.iter().any(|key| host::connection_note(key).is_some());
    (!matched).then(|| "That HELO hostname fails FCrDNS".to_string())
}

/// The connection notes that say the HELO name's forward or reverse DNS matched the client.
const MATCH_NOTES: [&str; 2] = ["helo_forward_match", "helo_reverse_match"];

/// `a` and `b` are the same address, or in the same /24 (IPv4) or /96 (IPv6), as qpsmtpd loosens it.
fn same_network(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets()[..3] == b.octets()[..3],
        (IpAddr::V6(a), IpAddr::V6(b)) => a.segments()[..6] == b.segments()[..6],
        _ => false,
    }
}

/// `a` is `b`, or they share their last two labels (`mx1.example.com`, `mx0.example.com`).
fn same_domain(a: &str, b: &str) -> bool {
    a == b || last_two_labels(a).is_some_and(|x| Some(x) == last_two_labels(b))
}

fn last_two_labels(name: &str) -> Option<Vec<&str>> {
    let labels: Vec<&str> = name.trim_end_matches('.').rsplit('.').take(2).collect();
    (labels.len() == 2).then_some(labels)
}

fn note(key: &str) {
    if let Err(e) = host::set_connection_note(key, Some("1")) {
        wasmtpd_plugin::warn(format!("cannot set the note {key}: {e}"));
    }
}
