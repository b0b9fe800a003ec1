//! dmarc (qpsmtpd): DMARC policy (RFC 7489) for the message's From domain.
//!
//! The server evaluates DMARC once the message has arrived (enable `dmarc` in
//! `config/authentication`, which turns on SPF and DKIM too): SPF and DKIM results aligned with
//! the From domain, and the policy that domain publishes (`p=`, or `sp=` for a subdomain).
//! This plugin applies it at `data_post`:
//! - `fail` with `p=reject`: refused, `552 5.7.1 failed DMARC policy` (552 is the reply to any
//!   refusal after the message, as in qpsmtpd; `reject_type temp` makes it 452);
//! - `fail` with `p=quarantine`: what `quarantine` says: `header` (the default) adds
//!   `X-DMARC-Quarantine: DOMAIN` for the mailbox's filters to file as spam, `note` only notes,
//!   `reject` refuses as for `p=reject` (qpsmtpd's behaviour);
//! - `fail` with `p=none`, `pass`, and `none` (no policy): the mail passes;
//! - `temperror` (the policy or a key could not be fetched): 452 4.7.1, try later.
//!
//! The transaction note `dmarc` says what was found (`fail p=reject example.org`). Arguments:
//! `reject 0|1` (default 1; 0 only notes and marks), `reject_type perm|temp` (default perm),
//! `quarantine header|note|reject`; qpsmtpd's `reporting` is accepted and ignored (no reports
//! are sent). Immune clients (authenticated, relay) are not refused.

use policy::{Options, RejectType};
use wasmtpd_plugin::authentication_results::{self, AuthResult, DmarcPolicy};
use wasmtpd_plugin::{HookResult, Plugin, host};

struct Dmarc;

#[wasmtpd_plugin::plugin]
impl Plugin for Dmarc {
    fn data_post() -> HookResult {
        let Some(dmarc) = authentication_results::dmarc() else {
            wasmtpd_plugin::warn("no DMARC result: enable `dmarc` in config/authentication");
            return HookResult::declined();
        };
        let domain = dmarc.check.domain.clone().unwrap_or_default();
        let policy = match dmarc.policy {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        };
        let result = policy::result_word(dmarc.check.result);
        let summary = format!("{result} p={policy} {domain}");
        if let Err(e) = host::set_transaction_note("dmarc", Some(summary.trim())) {
            wasmtpd_plugin::warn(format!("cannot set the note dmarc: {e}"));
        }
        wasmtpd_plugin::info(format!("{summary}{}", dmarc.check.reason.map(|r| format!(" ({r})")).unwrap_or_default()));
        let options = Options::from_args(&["reject", "reject_type", "quarantine", "reporting"]);
        let refuse = !policy::is_immune() && options.flag("reject", true);
        match (dmarc.check.result, dmarc.policy) {
            (AuthResult::Temperror, _) if refuse => {
                HookResult::deny_soft("DMARC policy could not be checked, try again later").with_enhanced_code("4.7.1")
            }
            (AuthResult::Fail, DmarcPolicy::Reject) if refuse => {
                options.reject_type(RejectType::Perm).refuse("failed DMARC policy", "5.7.1")
            }
            (AuthResult::Fail, DmarcPolicy::Quarantine) => match options.get("quarantine").unwrap_or("header") {
                "reject" if refuse => options.reject_type(RejectType::Perm).refuse("failed DMARC policy", "5.7.1"),
                "note" | "reject" => HookResult::declined(),
                other => {
                    if other != "header" {
                        wasmtpd_plugin::warn(format!(
                            "`quarantine {other}`: expected header, note or reject; using header"
                        ));
                    }
                    let _ = host::remove_header("X-DMARC-Quarantine");
                    if let Err(e) = host::add_header("X-DMARC-Quarantine", &domain) {
                        wasmtpd_plugin::warn(format!("cannot add X-DMARC-Quarantine: {e}"));
                    }
                    HookResult::declined()
                }
            },
            _ => HookResult::declined(),
        }
    }
}
