//! hosts_allow (qpsmtpd): decides before the greeting by the client's address, at
//! `pre_connection` as qpsmtpd's forkserver asks it.
//!
//! `config/hosts_allow`: `ADDRESS[/PREFIX] VERDICT [message]` per line, first match wins;
//! VERDICT is one of qpsmtpd's return codes, in any case: `OK`, `DENY`, `DENY_DISCONNECT`
//! (550 and close), `DENYSOFT`, `DENYSOFT_DISCONNECT` (451 and close), `DECLINED` (stop
//! looking), `DONE`; an unknown one counts as `DECLINED`, as in qpsmtpd. IPv4 and IPv6.
//! Without a message, the refusal says `Sorry, service not available for you` (550) or
//! `Sorry, try again later` (451).
//!
//! Argument: `max_from_ip N` (qpsmtpd-forkserver's `--max-from-ip`): a client with more than
//! N connections open from its address, this one included, gets `451 too many connections
//! from IP, try again later` and is closed, before the file is read. The count is the
//! server's (`wit/server-load.wit`). The server's own `max_connections_per_ip`
//! (config/limits) refuses past it with 421 before any plugin runs.

use std::net::IpAddr;

use policy::Options;
use wasmtpd_plugin::{HookResult, Plugin, host, server_load};

const ARGUMENTS: &[&str] = &["max_from_ip"];

struct HostsAllow;

#[wasmtpd_plugin::plugin]
impl Plugin for HostsAllow {
    fn pre_connection() -> HookResult {
        let remote = host::connection().remote_ip;
        let o = Options::from_args(ARGUMENTS);
        let max = o.get("max_from_ip").map(|v| {
            v.parse::<u32>().unwrap_or_else(|_| {
                wasmtpd_plugin::warn(format!("`max_from_ip {v}`: expected a number; not limited"));
                0
            })
        });
        if let Some(max) = max.filter(|m| *m > 0) {
            let open = server_load::connections_from_client();
            if open > max {
                let message = format!("too many connections from {remote}");
                wasmtpd_plugin::info(format!("fail: {message} ({open} > {max})"));
                return HookResult::deny_soft_disconnect(format!("{message}, try again later"));
            }
        }
        let Ok(ip) = remote.parse::<IpAddr>() else { return HookResult::declined() };
        for line in host::config("hosts_allow").unwrap_or_default() {
            let mut words = line.trim_start().splitn(3, char::is_whitespace);
            let (Some(net), Some(verdict)) = (words.next(), words.next()) else { continue };
            let message = words.next().map(str::trim).filter(|m| !m.is_empty()).map(str::to_string);
            if !policy::in_network(net, ip) {
                continue;
            }
            // An empty text is the server's default for the verdict.
            let refuse = |r: fn(String) -> HookResult| {
                wasmtpd_plugin::info(format!("fail, {}", message.as_deref().unwrap_or(verdict)));
                r(message.clone().unwrap_or_default())
            };
            return match verdict.to_ascii_uppercase().as_str() {
                "OK" => HookResult::ok(),
                "DONE" => HookResult::done(),
                "DENY" => refuse(HookResult::deny),
                "DENY_DISCONNECT" | "DENYHARD" => refuse(HookResult::deny_disconnect),
                "DENYSOFT" => refuse(HookResult::deny_soft),
                "DENYSOFT_DISCONNECT" => refuse(HookResult::deny_soft_disconnect),
                "DECLINED" => HookResult::declined(),
                other => {
                    wasmtpd_plugin::warn(format!("unknown verdict {other:?} in {line:?}; declined"));
                    HookResult::declined()
                }
            };
        }
        HookResult::declined()
    }
}
