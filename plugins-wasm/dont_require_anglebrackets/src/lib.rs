//! dont_require_anglebrackets (qpsmtpd): accepts `MAIL FROM: user@example.com` and
//! `RCPT TO: user@example.com`, which broken clients send, by adding the brackets. The address
//! is then checked by the server's strict parser like any other.

use wasmtpd_plugin::{HookResult, Plugin};

struct DontRequireAngleBrackets;

fn bracket(address: String) -> HookResult {
    HookResult::ok_with(format!("<{address}>"))
}

#[wasmtpd_plugin::plugin]
impl Plugin for DontRequireAngleBrackets {
    fn mail_pre(address: String) -> HookResult {
        bracket(address)
    }
    fn rcpt_pre(address: String) -> HookResult {
        bracket(address)
    }
}
