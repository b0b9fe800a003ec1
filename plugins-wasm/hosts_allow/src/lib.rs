//! hosts_allow (qpsmtpd): decides at connect time by the client's address.
//!
//! `config/hosts_allow`: `ADDRESS[/PREFIX] VERDICT [message]` per line, first match wins;
//! VERDICT is `ok`, `deny`, `denysoft` (or `declined` to stop looking). IPv4 and IPv6.
//! Simultaneous connections per address are limited by the server itself
//! (`max_connections_per_ip` in config/limits), before any plugin runs.

use std::net::IpAddr;

use wasmtpd_plugin::{HookResult, Plugin, host};

struct HostsAllow;

#[wasmtpd_plugin::plugin]
impl Plugin for HostsAllow {
    fn connect() -> HookResult {
        let Ok(ip) = host::connection().remote_ip.parse::<IpAddr>() else { return HookResult::declined() };
        for line in host::config("hosts_allow").unwrap_or_default() {
            let mut words = line.splitn(3, char::is_whitespace);
            let (Some(net), Some(verdict)) = (words.next(), words.next()) else { continue };
            let message = words.next().map(str::trim).filter(|m| !m.is_empty());
            if !policy::in_network(net, ip) {
                continue;
            }
            return match (verdict.to_ascii_lowercase().as_str(), message) {
                ("ok", _) => HookResult::ok(),
                ("deny", m) => HookResult::deny(m.unwrap_or("Sorry, service not available for you")),
                ("denysoft", m) => HookResult::deny_soft(m.unwrap_or("Sorry, try again later")),
                ("declined", _) => HookResult::declined(),
                (v, _) => {
                    wasmtpd_plugin::warn(format!("hosts_allow: unknown verdict {v:?} in {line:?}"));
                    HookResult::declined()
                }
            };
        }
        HookResult::declined()
    }
}
