//! resolvable_fromhost (qpsmtpd): refuses senders whose domain could not take a reply.
//!
//! At MAIL, the sender's domain must have an MX whose exchange has an address, or (with no MX)
//! an A or AAAA record of its own (RFC 5321 section 5.1). Addresses in the networks of
//! `config/invalid_resolvable_fromhost` (`127.0.0.0/8`, `10.0.0.0/8`, one per line) do not count.
//! A null MX (RFC 7505: `MX 0 .`) says the domain sends no mail, so it cannot be a sender.
//!
//! The outcome is the transaction note `resolvable_fromhost`: `mx`, `a`, `ip` (an address
//! literal), `null` (the null sender, which always passes) or why it failed; the domain is in
//! `resolvable_fromhost_host`.
//!
//! Replies: a domain that does not exist or has nothing usable gets `reject_type` (default
//! perm: `550 5.1.8 FQDN required in the envelope sender`); a null MX `550 5.7.27 Sender
//! address has null MX`; a lookup that failed (time-out, server failure) `450 4.4.3 Temporary
//! address resolution failure`, so a sender is never refused for our resolver's trouble.
//! Arguments: `reject 0|1` (default 1; 0 only notes and logs), `reject_type perm|temp` (qpsmtpd's
//! default is temp; ours is perm, so a domain that does not exist is refused at once). Needs
//! `dns any` in `config/sandbox`.

use std::net::IpAddr;

use policy::{Options, RejectType};
use wasmtpd_plugin::dns::{self, DnsError, Question, RecordData, RecordType};
use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin, host};

/// The most exchanges whose addresses are asked for (each costs two queries).
const MAX_EXCHANGES: usize = 8;

struct ResolvableFromhost;

/// What the domain's DNS says.
enum Outcome {
    /// It can take replies (`mx` or `a`).
    Resolvable(&'static str),
    /// It cannot (the note says why).
    Unresolvable(String),
    /// A null MX.
    NullMx,
    /// DNS could not tell.
    Unknown(String),
}

#[wasmtpd_plugin::plugin]
impl Plugin for ResolvableFromhost {
    fn mail(sender: Option<Address>, _params: Vec<EsmtpParam>) -> HookResult {
        let Some(sender) = sender else {
            note("resolvable_fromhost", "null");
            return HookResult::declined();
        };
        if policy::is_immune() {
            return HookResult::declined();
        }
        let Some(domain) = sender.domain.map(|d| d.to_ascii_lowercase()) else {
            note("resolvable_fromhost", "no domain");
            return refuse(Outcome::Unresolvable("no domain".into()));
        };
        note("resolvable_fromhost_host", &domain);
        if domain.starts_with('[') {
            note("resolvable_fromhost", "ip");
            return HookResult::declined();
        }
        let outcome = check(&domain);
        match &outcome {
            Outcome::Resolvable(how) => {
                note("resolvable_fromhost", how);
                wasmtpd_plugin::debug(format!("pass, {domain} has {how}"));
                HookResult::declined()
            }
            Outcome::Unresolvable(why) | Outcome::Unknown(why) => {
                note("resolvable_fromhost", why);
                wasmtpd_plugin::info(format!("fail, {domain}: {why}"));
                refuse(outcome)
            }
            Outcome::NullMx => {
                note("resolvable_fromhost", "null MX");
                wasmtpd_plugin::info(format!("fail, {domain} has a null MX"));
                refuse(outcome)
            }
        }
    }
}

fn refuse(outcome: Outcome) -> HookResult {
    let options = Options::from_args(&["reject", "reject_type"]);
    if !options.flag("reject", true) {
        return HookResult::declined();
    }
    match outcome {
        Outcome::Resolvable(_) => HookResult::declined(),
        Outcome::Unresolvable(_) => {
            options.reject_type(RejectType::Perm).refuse("FQDN required in the envelope sender", "5.1.8")
        }
        Outcome::NullMx => options.reject_type(RejectType::Perm).refuse("Sender address has null MX", "5.7.27"),
        Outcome::Unknown(_) => {
            HookResult::deny_soft("Temporary address resolution failure").with_enhanced_code("4.4.3")
        }
    }
}

fn check(domain: &str) -> Outcome {
    let exchanges = match dns::lookup(domain, RecordType::Mx) {
        Ok(records) => {
            let mut mx: Vec<(u16, String)> = records
                .into_iter()
                .filter_map(|r| match r.data {
                    RecordData::Mx(m) => Some((m.preference, m.exchange)),
                    _ => None,
                })
                .collect();
            if mx.len() == 1 && mx[0].1 == "." {
                return Outcome::NullMx;
            }
            mx.sort();
            mx.into_iter().map(|(_, e)| e).filter(|e| e != ".").take(MAX_EXCHANGES).collect()
        }
        Err(DnsError::NoRecords) => Vec::new(),
        Err(DnsError::NoSuchDomain) => return Outcome::Unresolvable(format!("{domain} does not exist")),
        Err(e) => return Outcome::Unknown(format!("MX lookup: {}", policy::describe(&e))),
    };
    if exchanges.is_empty() {
        return match addresses(&[domain.to_string()]) {
            Ok(true) => Outcome::Resolvable("a"),
            Ok(false) => Outcome::Unresolvable(format!("{domain} has no MX and no usable address")),
            Err(why) => Outcome::Unknown(why),
        };
    }
    match addresses(&exchanges) {
        Ok(true) => Outcome::Resolvable("mx"),
        Ok(false) => Outcome::Unresolvable(format!("invalid MX for {domain}")),
        Err(why) => Outcome::Unknown(why),
    }
}

/// Whether any of `names` has a usable address (asked in parallel); an error when none has one
/// and some lookup could not be answered.
fn addresses(names: &[String]) -> Result<bool, String> {
    let questions: Vec<Question> = names
        .iter()
        .flat_map(|n| [RecordType::A, RecordType::Aaaa].map(|record_type| Question { name: n.clone(), record_type }))
        .collect();
    let invalid = host::config("invalid_resolvable_fromhost").unwrap_or_default();
    let mut trouble = None;
    for answer in dns::lookup_all(&questions) {
        match answer {
            Ok(records) => {
                let usable = records.iter().any(|r| {
                    let ip = match &r.data {
                        RecordData::A(ip) | RecordData::Aaaa(ip) => ip.parse::<IpAddr>().ok(),
                        _ => None,
                    };
                    ip.is_some_and(|ip| !invalid.iter().any(|net| policy::in_network(net, ip)))
                });
                if usable {
                    return Ok(true);
                }
            }
            Err(DnsError::NoRecords | DnsError::NoSuchDomain) => {}
            Err(e) => trouble = Some(format!("address lookup: {}", policy::describe(&e))),
        }
    }
    trouble.map_or(Ok(false), Err)
}

fn note(key: &str, value: &str) {
    if let Err(e) = host::set_transaction_note(key, Some(value)) {
        wasmtpd_plugin::warn(format!("cannot set the note {key}: {e}"));
    }
}
