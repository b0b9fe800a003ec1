//! check_badrcptto (qpsmtpd badrcptto): refuses mail to listed recipients.
//!
//! `config/badrcptto`: one entry per line, `address`, `@domain` or a pattern (a regular
//! expression, see [`policy::address_entry_matches`]), optionally followed by the reason to
//! give; without one, qpsmtpd's `550 5.1.1 mail to ENTRY not accepted here`.

use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin, host};

struct BadRcptTo;

#[wasmtpd_plugin::plugin]
impl Plugin for BadRcptTo {
    fn rcpt(recipient: Address, _params: Vec<EsmtpParam>) -> HookResult {
        let plain = recipient.to_plain().to_ascii_lowercase();
        for line in host::config("badrcptto").unwrap_or_default() {
            let line = line.trim();
            let (entry, reason) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            if policy::address_entry_matches(entry, &plain) {
                wasmtpd_plugin::info(format!("fail, {plain} matches {entry}"));
                return match reason.trim() {
                    "" => HookResult::deny(format!("mail to {} not accepted here", entry.to_ascii_lowercase()))
                        .with_enhanced_code("5.1.1"),
                    r => HookResult::deny(r).with_enhanced_code("5.1.1"),
                };
            }
        }
        HookResult::declined()
    }
}
