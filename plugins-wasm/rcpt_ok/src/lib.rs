//! rcpt_ok (qpsmtpd): decides whether we accept mail for a recipient.
//!
//! - A relay client (a plugin set `relay-client`) may send to anyone: OK.
//! - The bare `<postmaster>` is always accepted (RFC 5321 4.5.1): OK.
//! - A recipient whose domain is listed in `config/rcpthosts` or `config/morercpthosts` is
//!   ours: OK. A line `.example.com` matches every subdomain of example.com. The server's own
//!   name (`config/me`) is always ours, as in qpsmtpd.
//! - Anything else: DENY `Relaying denied` (550 5.7.1).
//!
//! Put it last among the rcpt plugins: plugins before it may refuse recipients it would accept.

use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin, host};

struct RcptOk;

#[wasmtpd_plugin::plugin]
impl Plugin for RcptOk {
    fn rcpt(recipient: Address, _params: Vec<EsmtpParam>) -> HookResult {
        if host::connection().relay_client {
            return HookResult::ok();
        }
        let Some(domain) = recipient.domain.as_deref() else {
            return HookResult::ok(); // <postmaster>
        };
        let domain = domain.to_ascii_lowercase();
        if host::config("me").unwrap_or_default().first().is_some_and(|me| me.trim().eq_ignore_ascii_case(&domain)) {
            return HookResult::ok();
        }
        for file in ["rcpthosts", "morercpthosts"] {
            for host in host::config(file).unwrap_or_default() {
                if matches(&host.to_ascii_lowercase(), &domain) {
                    return HookResult::ok();
                }
            }
        }
        HookResult::deny("Relaying denied").with_enhanced_code("5.7.1")
    }
}

/// `example.com` matches itself; `.example.com` matches its subdomains.
fn matches(entry: &str, domain: &str) -> bool {
    if entry.starts_with('.') { domain.ends_with(entry) } else { domain == entry }
}
