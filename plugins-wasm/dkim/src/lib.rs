//! dkim (qpsmtpd): DKIM policy (RFC 6376) over the server's verification of the message.
//!
//! The server verifies up to 16 DKIM signatures once the message has arrived (enable `dkim` in
//! `config/authentication`) and records each result in the message's `Authentication-Results`
//! field; this plugin decides, at `data_post`:
//! - a signature that passes: the mail passes (the transaction note `dkim` is `pass DOMAIN`);
//! - no signature: the mail passes (`none`; DMARC decides what an unsigned message from a
//!   domain that signs everything means);
//! - otherwise, a signature that could not be checked for now (`temperror`: its key could not
//!   be fetched) refuses with 452 4.7.20, and one that is invalid (`fail`, `permerror`,
//!   `policy`) with `reject_type` and `signature invalid: REASON` (5.7.20), as qpsmtpd does.
//!
//! Arguments: `reject 0|1` (default 1; 0 only notes and logs), `reject_type temp|perm`
//! (default perm). Immune clients (authenticated, relay) are not refused. Signing outgoing mail
//! (qpsmtpd's dkim signs too) is not done here.

use policy::{Options, RejectType};
use wasmtpd_plugin::authentication_results::{self, AuthResult};
use wasmtpd_plugin::{HookResult, Plugin, host};

struct Dkim;

#[wasmtpd_plugin::plugin]
impl Plugin for Dkim {
    fn data_post() -> HookResult {
        let checks = authentication_results::dkim();
        if checks.is_empty() {
            wasmtpd_plugin::warn("no DKIM result: enable `dkim` in config/authentication");
            return HookResult::declined();
        }
        let summary: Vec<String> = checks
            .iter()
            .map(|c| format!("{} {}", policy::result_word(c.result), c.domain.as_deref().unwrap_or("-")))
            .collect();
        if let Err(e) = host::set_transaction_note("dkim", Some(&summary.join(", "))) {
            wasmtpd_plugin::warn(format!("cannot set the note dkim: {e}"));
        }
        wasmtpd_plugin::info(summary.join(", "));
        if checks.iter().any(|c| matches!(c.result, AuthResult::Pass | AuthResult::None)) {
            return HookResult::declined();
        }
        let options = Options::from_args(&["reject", "reject_type"]);
        if !options.flag("reject", true) || policy::is_immune() {
            return HookResult::declined();
        }
        let reason = |c: &authentication_results::Check| {
            c.reason.clone().unwrap_or_else(|| policy::result_word(c.result).into())
        };
        if let Some(c) = checks.iter().find(|c| c.result == AuthResult::Temperror) {
            return RejectType::Temp.refuse(format!("Please try again later - {}", reason(c)), "5.7.20");
        }
        match checks.iter().find(|c| matches!(c.result, AuthResult::Fail | AuthResult::Permerror | AuthResult::Policy))
        {
            Some(c) => {
                options.reject_type(RejectType::Perm).refuse(format!("signature invalid: {}", reason(c)), "5.7.20")
            }
            None => HookResult::declined(),
        }
    }
}
