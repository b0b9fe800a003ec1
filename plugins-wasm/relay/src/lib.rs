//! relay (qpsmtpd): lets the operator's own networks relay.
//!
//! When a client connects, its address is looked up, in this order:
//! - `config/norelayclients`: never a relay client, whatever the other files say (a gateway
//!   inside a network that may relay, say);
//! - `config/relayclients`: addresses (`192.0.2.7`), prefixes ending in a dot or a colon
//!   (`192.168.42.`, `2001:db8:e431:ae06:`, compared with the address as RFC 5952 writes it)
//!   and networks (`10.1.0.0/24`, `2001:db8::/64`);
//! - `config/morerelayclients`: addresses and prefixes (no networks), for long lists.
//!
//! A match makes the connection a relay client (`set-relay-client`: needs `rights
//! relay-client` in `config/sandbox`), so `rcpt_ok` accepts any recipient for it. Put it before
//! the rcpt plugins. `only 1` (qpsmtpd's relay-only mode, for a submission-only server): a
//! client that may not relay (by these files or by AUTH) is refused at every RCPT with
//! `550 5.7.1 Relaying denied`, and one that may is accepted (needs `rights accept-recipient`).

use policy::Options;
use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin, host};

struct Relay;

#[wasmtpd_plugin::plugin]
impl Plugin for Relay {
    fn connect() -> HookResult {
        let ip = host::connection().remote_ip;
        if policy::address_listed("norelayclients", &ip, false) {
            wasmtpd_plugin::info(format!("skip, {ip} is in norelayclients"));
            let _ = host::set_relay_client(false);
            return HookResult::declined();
        }
        if policy::address_listed("relayclients", &ip, true) || policy::address_listed("morerelayclients", &ip, false) {
            match host::set_relay_client(true) {
                Ok(()) => wasmtpd_plugin::info(format!("pass, {ip} may relay")),
                Err(e) => wasmtpd_plugin::warn(format!("{ip} may relay, but the server refused ({e})")),
            }
        }
        HookResult::declined()
    }

    fn rcpt(_recipient: Address, _params: Vec<EsmtpParam>) -> HookResult {
        if !Options::from_args(&["only"]).flag("only", false) {
            return HookResult::declined();
        }
        if host::connection().relay_client {
            return HookResult::ok();
        }
        HookResult::deny("Relaying denied").with_enhanced_code("5.7.1")
    }
}
