//! fcrdns (qpsmtpd): forward-confirmed reverse DNS for the client's address.
//!
//! Reads the server's `iprev` result (enable it with `iprev` in `config/authentication`; the
//! server looks it up before the `connect` hook, with its own cache, so this plugin needs no DNS
//! grant). Pass means a name of the client's address (PTR) resolves back to it. The result is the
//! connection note `fcrdns` (`pass mail.example.org`, `fail ...`, `temperror ...`), and the
//! server records it in the message's `Authentication-Results` field. This machine itself (a
//! client whose address is the listener's) and immune clients (authenticated, relay) are not
//! judged.
//!
//! Arguments: `reject 0|1` (default 0, as in qpsmtpd: only note and log), `reject_type
//! temp|perm|disconnect` (default temp). With `reject 1`, a client that fails (no PTR, or no
//! name that resolves back) is refused at connect with `reject_type`'s code and `5.7.25`
//! (RFC 7372: reverse DNS validation failed); one whose lookup failed (`temperror`) always gets
//! a temporary refusal, never a permanent one. qpsmtpd's `timeout` is accepted and ignored:
//! the resolver's own timeout (`config/resolver`) applies.
//!
//! qpsmtpd also accepts a name that matches in its last two labels or an address in the same
//! /24; the server's iprev is the strict RFC 8601 check, so those clients fail here.

use policy::{Options, RejectType};
use wasmtpd_plugin::authentication_results::{self, AuthResult};
use wasmtpd_plugin::{HookResult, Plugin, host};

struct Fcrdns;

#[wasmtpd_plugin::plugin]
impl Plugin for Fcrdns {
    fn connect() -> HookResult {
        let connection = host::connection();
        let ip = connection.remote_ip;
        let Some(check) = authentication_results::iprev() else {
            wasmtpd_plugin::warn("no iprev result: enable `iprev` in config/authentication");
            return HookResult::declined();
        };
        let (word, temporary) = match check.result {
            AuthResult::Pass => ("pass", false),
            AuthResult::Temperror => ("temperror", true),
            AuthResult::None => ("none", false),
            AuthResult::Permerror => ("permerror", false),
            _ => ("fail", false),
        };
        let detail = check.domain.as_deref().or(check.reason.as_deref()).unwrap_or_default();
        if let Err(e) = host::set_connection_note("fcrdns", Some(format!("{word} {detail}").trim())) {
            wasmtpd_plugin::warn(format!("cannot set the note fcrdns: {e}"));
        }
        if matches!(check.result, AuthResult::Pass | AuthResult::None) {
            wasmtpd_plugin::debug(format!("{word}, {ip} {detail}"));
            return HookResult::declined();
        }
        if is_this_machine(&ip, &connection.local_ip) || policy::is_immune() {
            return HookResult::declined();
        }
        wasmtpd_plugin::info(format!("{word}, {ip}: {detail}"));
        let options = Options::from_args(&["reject", "reject_type", "timeout"]);
        if !options.flag("reject", false) {
            return HookResult::declined();
        }
        let text = format!("Sorry, the reverse DNS of {ip} does not resolve back to it");
        if temporary {
            return RejectType::Temp.refuse(format!("{text} (DNS lookup failed, try again later)"), "5.7.25");
        }
        options.reject_type(RejectType::Temp).refuse(text, "5.7.25")
    }
}

/// The client is this machine (qpsmtpd's fcrdns passes localhost): a loopback client whose
/// address is the listener's own.
fn is_this_machine(ip: &str, local_ip: &str) -> bool {
    ip.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()) && ip == local_ip
}
