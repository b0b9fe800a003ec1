//! check_badrcptto (qpsmtpd badrcptto): refuses mail to listed recipients.
//!
//! `config/badrcptto`: one entry per line, `address` or `@domain`.

use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin, host};

struct BadRcptTo;

#[wasmtpd_plugin::plugin]
impl Plugin for BadRcptTo {
    fn rcpt(recipient: Address, _params: Vec<EsmtpParam>) -> HookResult {
        let plain = recipient.to_plain().to_ascii_lowercase();
        let domain = recipient.domain.as_deref().unwrap_or("").to_ascii_lowercase();
        for entry in host::config("badrcptto").unwrap_or_default() {
            let entry = entry.to_ascii_lowercase();
            let hit = match entry.strip_prefix('@') {
                Some(d) => d == domain,
                None => entry == plain,
            };
            if hit {
                return HookResult::deny(format!("mail to {plain} not accepted here")).with_enhanced_code("5.1.1");
            }
        }
        HookResult::declined()
    }
}
