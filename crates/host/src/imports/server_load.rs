//! The host side of `wit/server-load.wit`: how busy the server is. The connections from the
//! client's address are the server's own count (`crates/server/src/admission.rs`, kept in the
//! session's facts); the load average is the kernel's (`/proc/loadavg`), read by the host, so a
//! plugin needs no file of the host's. Neither needs a grant: neither is about another client.

use crate::bindings::server_load::{self as wit, Load};
use crate::state::PluginState;

impl wit::Host for PluginState {
    fn connections_from_client(&mut self) -> u32 {
        self.call.connection.connections_from_ip
    }

    fn load_average(&mut self) -> Option<Load> {
        parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
    }
}

/// `0.52 0.58 0.59 1/467 12345`: the first three numbers.
fn parse_loadavg(text: &str) -> Option<Load> {
    let mut n = text.split_whitespace().map(|w| w.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0));
    Some(Load { one_minute: n.next()??, five_minutes: n.next()??, fifteen_minutes: n.next()?? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_load_average() {
        let l = parse_loadavg("0.52 1.58 12.00 1/467 12345\n").unwrap();
        assert_eq!((l.one_minute, l.five_minutes, l.fifteen_minutes), (0.52, 1.58, 12.0));
        assert!(parse_loadavg("").is_none() && parse_loadavg("x 1 2").is_none() && parse_loadavg("1 2").is_none());
    }
}
