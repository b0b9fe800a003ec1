//! dnsbl (qpsmtpd): refuses clients whose IP address a DNS blocklist lists.
//!
//! When the client connects, its address is looked up in every zone of `config/dnsbl_zones` at
//! once (one `check-lists` call: the wait is that of the slowest list). A listing is kept in the
//! connection note `dnsbl` (`ZONE: REASON`) for later plugins, and refused at RCPT, so mail to
//! `postmaster`, `abuse`, `mailer-daemon` and `root` still gets through (a listed sender must be
//! able to ask to be delisted).
//!
//! - `config/dnsbl_zones`: one zone per line; a zone may be followed by `:MESSAGE`, used instead
//!   of the list's TXT record, with `%IP%` replaced by the client's address
//!   (`bl.example.net:Listed, see https://bl.example.net/?ip=%IP%`).
//! - `config/dnsbl_allow`: addresses never checked, one per line, whole (`192.0.2.1`) or as a
//!   prefix ending in a dot (`172.16.33.`).
//! - `config/dnsbl_rejectmsg`: text put before the reason in the refusal.
//!
//! Arguments: `reject 0|1` (default 1: refuse; 0: only note and log), `reject_type
//! perm|temp|disconnect` (default perm: 550 5.7.1). A list that cannot be asked (time-out,
//! server failure) is logged and counts as not listing the client: a broken list never stops
//! mail. Needs the `dns` grant for the zones in `config/sandbox`.

use policy::{Options, Reject, RejectType};
use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin, dns, host};

const NOTE: &str = "dnsbl";

struct Dnsbl;

#[wasmtpd_plugin::plugin]
impl Plugin for Dnsbl {
    fn connect() -> HookResult {
        if policy::is_immune() {
            return HookResult::declined();
        }
        let ip = host::connection().remote_ip;
        if policy::address_listed("dnsbl_allow", &ip, false) {
            wasmtpd_plugin::info(format!("skip, {ip} is in dnsbl_allow"));
            return HookResult::declined();
        }
        let zones = zones();
        if zones.is_empty() {
            return HookResult::declined();
        }
        let names: Vec<String> = zones.iter().map(|(zone, _)| zone.clone()).collect();
        for ((zone, message), answer) in zones.iter().zip(dns::check_lists(&ip, &names)) {
            match answer {
                Ok(None) => {}
                Ok(Some(listing)) => {
                    let reason = match message {
                        Some(m) => m.replace("%IP%", &ip),
                        None => listing.reason.clone().unwrap_or_else(|| format!("Blocked by {zone}")),
                    };
                    wasmtpd_plugin::info(format!("fail, {ip} listed by {zone} ({})", listing.codes.join(", ")));
                    if let Err(e) = host::set_connection_note(NOTE, Some(&format!("{zone}: {reason}"))) {
                        wasmtpd_plugin::warn(format!("cannot record the listing: {e}"));
                    }
                    let options = Options::from_args(&["reject", "reject_type"]);
                    if options.reject(Reject::Now) == Reject::Naughty {
                        policy::record_naughty(&reject_text(reason), &options);
                    }
                    return HookResult::declined();
                }
                Err(e) => wasmtpd_plugin::warn(format!("{zone} could not be asked: {}", policy::describe(&e))),
            }
        }
        wasmtpd_plugin::debug(format!("pass, {ip} not listed"));
        HookResult::declined()
    }

    fn rcpt(recipient: Address, _params: Vec<EsmtpParam>) -> HookResult {
        let Some(listing) = host::connection_note(NOTE) else { return HookResult::declined() };
        if policy::is_role_account(&recipient.local_part) || policy::is_immune() {
            wasmtpd_plugin::info(format!("skip, {} may be written to by anyone", recipient.to_plain()));
            return HookResult::declined();
        }
        let options = Options::from_args(&["reject", "reject_type"]);
        // `reject naughty`: recorded at connect, refused where `naughty` says.
        if options.reject(Reject::Now) != Reject::Now {
            return HookResult::declined();
        }
        let reason = listing.split_once(": ").map_or(listing.as_str(), |(_, r)| r).to_string();
        options.reject_type(RejectType::Perm).refuse(reject_text(reason), "5.7.1")
    }
}

/// The reply text of a listing: `dnsbl_rejectmsg`, if any, before the list's reason.
fn reject_text(reason: String) -> String {
    let prefix = host::config("dnsbl_rejectmsg").unwrap_or_default().join(" ");
    if prefix.trim().is_empty() { reason } else { format!("{} {reason}", prefix.trim()) }
}

/// `config/dnsbl_zones`: (zone, its own message).
fn zones() -> Vec<(String, Option<String>)> {
    host::config("dnsbl_zones")
        .unwrap_or_default()
        .iter()
        .map(|line| match line.split_once(':') {
            Some((zone, message)) => (zone.trim().to_string(), Some(message.trim().to_string())),
            None => (line.trim().to_string(), None),
        })
        .filter(|(zone, _)| !zone.is_empty())
        .collect()
}
