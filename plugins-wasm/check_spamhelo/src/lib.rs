//! check_spamhelo (qpsmtpd): refuses HELO/EHLO names that spammers forge.
//!
//! `config/badhelo`: one name per line (compared without case), e.g. our own domains or
//! `localhost` coming from the outside. A listed name is refused with 550 and the connection
//! closed (qpsmtpd's DENY_DISCONNECT): a client that lies about who it is gets no second try.

use wasmtpd_plugin::{HookResult, Plugin, host};

struct SpamHelo;

fn check(name: &str) -> HookResult {
    let name = name.to_ascii_lowercase();
    if host::config("badhelo").unwrap_or_default().iter().any(|b| b.to_ascii_lowercase() == name) {
        return HookResult::deny_disconnect(format!("Sorry, I don't believe that you are {name}."))
            .with_enhanced_code("5.7.1");
    }
    HookResult::declined()
}

#[wasmtpd_plugin::plugin]
impl Plugin for SpamHelo {
    fn helo(host: String) -> HookResult {
        check(&host)
    }
    fn ehlo(host: String) -> HookResult {
        check(&host)
    }
}
