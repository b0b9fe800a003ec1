//! sender_permitted_from (qpsmtpd): SPF policy (RFC 7208) over the server's SPF result.
//!
//! The server checks SPF for the MAIL FROM domain (enable `spf` in `config/authentication`)
//! before the `mail` hook, and records it in the message's `Authentication-Results` field; this
//! plugin decides what a result means for the mail, at MAIL, with qpsmtpd's levels:
//!
//! | `reject` | refuses |
//! |---|---|
//! | 0, 1 | nothing (1: qpsmtpd's "annotate only"; the server's header is always added) |
//! | 2 | `fail` and `temperror` with 450 (try later) |
//! | 3 | `fail` with 550 5.7.23; `softfail` and `temperror` with 450 |
//! | 4 | also `softfail` with 550; `permerror` with 450 |
//! | 5 | also `neutral` with 550 |
//! | 6 | also `none` (no SPF record) and `permerror` with 550 |
//!
//! (`spf_deny 1` and `spf_deny 2`, qpsmtpd's older arguments, mean `reject 3` and `reject 4`.)
//! With `reject` at 1 or 2, `no_dmarc_policy N` refuses at the end of the message when the From
//! domain publishes no DMARC policy (the server's DMARC result is `none`; enable `dmarc`):
//! 1 refuses `fail`, 2 also `softfail`, 3 also `neutral`, 4 also `none` and `permerror`.
//! The transaction note `spf_pass_host` is the sender's domain when SPF passed. The null
//! sender (checked by the server on the HELO name), and immune clients, are not refused.

use policy::Options;
use wasmtpd_plugin::authentication_results::{self, AuthResult, Check};
use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin, host};

struct SenderPermittedFrom;

const ARGUMENTS: &[&str] = &["reject", "spf_deny", "no_dmarc_policy"];

#[wasmtpd_plugin::plugin]
impl Plugin for SenderPermittedFrom {
    fn mail(sender: Option<Address>, _params: Vec<EsmtpParam>) -> HookResult {
        let Some(check) = authentication_results::spf_mail_from() else {
            wasmtpd_plugin::warn("no SPF result: enable `spf` in config/authentication");
            return HookResult::declined();
        };
        let why = explanation(&check);
        wasmtpd_plugin::info(format!("{}, {why}", policy::result_word(check.result)));
        if check.result == AuthResult::Pass {
            if let Some(domain) = &check.domain
                && let Err(e) = host::set_transaction_note("spf_pass_host", Some(domain))
            {
                wasmtpd_plugin::warn(format!("cannot set the note spf_pass_host: {e}"));
            }
            return HookResult::declined();
        }
        if sender.is_none() || policy::is_immune() {
            return HookResult::declined();
        }
        let options = Options::from_args(ARGUMENTS);
        let level = match options.number("spf_deny", 0) {
            1 => 3,
            2 => 4,
            _ => options.number("reject", 0),
        };
        let deny = |label: &str| HookResult::deny(format!("SPF - {label}: {why}")).with_enhanced_code("5.7.23");
        let defer = |label: &str| HookResult::deny_soft(format!("SPF - {label}: {why}")).with_enhanced_code("4.7.24");
        match check.result {
            AuthResult::Fail if level >= 3 => deny("forgery"),
            AuthResult::Fail if level == 2 => defer("fail"),
            AuthResult::Softfail if level >= 4 => deny("fail"),
            AuthResult::Softfail if level == 3 => defer("fail"),
            AuthResult::Neutral if level >= 5 => deny("neutral"),
            AuthResult::None if level >= 6 => deny("none"),
            AuthResult::Permerror if level >= 6 => deny("permerror"),
            AuthResult::Permerror if level >= 4 => defer("permerror"),
            AuthResult::Temperror if level >= 2 => defer("temperror"),
            _ => HookResult::declined(),
        }
    }

    fn data_post() -> HookResult {
        let options = Options::from_args(ARGUMENTS);
        let level = options.number("no_dmarc_policy", 0);
        if level == 0 || policy::is_immune() || host::transaction().is_some_and(|t| t.sender.is_none()) {
            return HookResult::declined();
        }
        let (Some(spf), Some(dmarc)) = (authentication_results::spf_mail_from(), authentication_results::dmarc())
        else {
            return HookResult::declined();
        };
        if dmarc.check.result != AuthResult::None {
            return HookResult::declined(); // the domain has a DMARC policy: the dmarc plugin decides
        }
        let refused = match spf.result {
            AuthResult::Fail => level >= 1,
            AuthResult::Softfail => level >= 2,
            AuthResult::Neutral => level >= 3,
            AuthResult::None | AuthResult::Permerror => level >= 4,
            _ => false,
        };
        if !refused {
            return HookResult::declined();
        }
        let label = policy::result_word(spf.result);
        wasmtpd_plugin::info(format!("fail, {label} and no DMARC policy"));
        HookResult::deny(format!("SPF - {label}: {}", explanation(&spf))).with_enhanced_code("5.7.23")
    }
}

/// The domain's explanation if it gave one, or what the result says about the client.
fn explanation(check: &Check) -> String {
    if let Some(reason) = &check.reason {
        return reason.clone();
    }
    let ip = host::connection().remote_ip;
    let domain = check.domain.as_deref().unwrap_or("the sender's domain");
    match check.result {
        AuthResult::Pass => format!("{domain} designates {ip} as permitted sender"),
        AuthResult::None => format!("{domain} has no SPF record"),
        AuthResult::Temperror => format!("the SPF record of {domain} could not be fetched"),
        AuthResult::Permerror => format!("the SPF record of {domain} is invalid"),
        _ => format!("{domain} does not designate {ip} as permitted sender"),
    }
}
