//! bogus_bounce (qpsmtpd): a bounce (a message from the null sender `<>`) goes to exactly one
//! recipient and has no Return-Path but `<>` (RFC 3834); anything else is a bogus bounce,
//! the backscatter of a forged sender.
//!
//! Arguments: one word, qpsmtpd's action: `log` (the default: only log), `deny` (552),
//! `denysoft` (452); or qpsmtpd's pairs `reject 0|1` (default 0) and
//! `reject_type perm|temp|disconnect|temp_disconnect` (default perm). Replies: `fail, this
//! bounce message does not have 1 recipient`, `a bounce return path must be empty (RFC 3834)`.

use policy::{Options, RejectType};
use wasmtpd_plugin::{HookResult, Plugin, host};

const ARGUMENTS: &[&str] = &["reject", "reject_type", "loglevel"];

struct BogusBounce;

#[wasmtpd_plugin::plugin]
impl Plugin for BogusBounce {
    fn data_post() -> HookResult {
        let Some(t) = host::transaction() else { return HookResult::declined() };
        if t.sender.is_some() {
            wasmtpd_plugin::debug("pass, not a null sender");
            return HookResult::declined();
        }
        let problem = if t.recipients.len() != 1 {
            let to: Vec<String> = t.recipients.iter().map(|r| r.address.to_plain()).collect();
            wasmtpd_plugin::info(format!("fail, bogus bounce to: {}", to.join(",")));
            "fail, this bounce message does not have 1 recipient"
        } else {
            let fields = host::headers().unwrap_or_default();
            let path = fields.iter().find(|f| f.name.eq_ignore_ascii_case("Return-Path")).map(|f| f.value.trim());
            match path {
                Some(p) if !p.is_empty() && p != "<>" => {
                    wasmtpd_plugin::info("fail, bounce messages must not have a Return-Path");
                    "a bounce return path must be empty (RFC 3834)"
                }
                _ => {
                    wasmtpd_plugin::debug("pass, single recipient, empty Return-Path");
                    return HookResult::declined();
                }
            }
        };
        let (reject, reject_type) = settings();
        if !reject {
            return HookResult::declined();
        }
        reject_type.refuse(problem, "5.7.1")
    }
}

/// Whether to refuse, and how: the one-word action, or the pairs.
fn settings() -> (bool, RejectType) {
    let args = host::args();
    if let [action] = args.as_slice() {
        return match action.to_ascii_lowercase().as_str() {
            "deny" => (true, RejectType::Perm),
            "denysoft" => (true, RejectType::Temp),
            "log" => (false, RejectType::Perm),
            other => {
                wasmtpd_plugin::warn(format!("unknown action `{other}` (log, deny, denysoft); logging only"));
                (false, RejectType::Perm)
            }
        };
    }
    let o = Options::from_args(ARGUMENTS);
    (o.flag("reject", false), o.reject_type(RejectType::Perm))
}
