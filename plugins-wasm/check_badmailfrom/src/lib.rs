//! check_badmailfrom (qpsmtpd badmailfrom): refuses mail from listed senders.
//!
//! `config/badmailfrom`: one entry per line, `address`, `@domain` or a pattern (a regular
//! expression, see [`policy::address_entry_matches`]: `^return.*@.*\.example\.biz$`),
//! optionally followed by the reason to give (default: qpsmtpd's `Your envelope sender is in my
//! badmailfrom list`). As qpsmtpd recommends, the sender is not refused at MAIL (some clients
//! handle that badly): the match is noted, and every RCPT is refused with 550 instead. If the
//! note cannot be written (another plugin holds the key), it fails closed: the sender is
//! refused at MAIL with the same 550.

use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin, host};

struct BadMailFrom;

const NOTE: &str = "badmailfrom";

#[wasmtpd_plugin::plugin]
impl Plugin for BadMailFrom {
    fn mail(sender: Option<Address>, _params: Vec<EsmtpParam>) -> HookResult {
        let Some(sender) = sender else { return HookResult::declined() };
        let plain = sender.to_plain().to_ascii_lowercase();
        for line in host::config("badmailfrom").unwrap_or_default() {
            let line = line.trim();
            let (entry, reason) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            if policy::address_entry_matches(entry, &plain) {
                let reason = match reason.trim() {
                    "" => "Your envelope sender is in my badmailfrom list".to_string(),
                    r => r.to_string(),
                };
                wasmtpd_plugin::info(format!("badmailfrom: {plain} matches {entry}"));
                if let Err(e) = host::set_transaction_note(NOTE, Some(&reason)) {
                    wasmtpd_plugin::warn(format!("badmailfrom: cannot note the match ({e}); refusing at MAIL"));
                    return HookResult::deny(reason).with_enhanced_code("5.7.1");
                }
                break;
            }
        }
        HookResult::declined()
    }

    fn rcpt(_recipient: Address, _params: Vec<EsmtpParam>) -> HookResult {
        match host::transaction_note(NOTE) {
            Some(reason) => HookResult::deny(reason).with_enhanced_code("5.7.1"),
            None => HookResult::declined(),
        }
    }
}
