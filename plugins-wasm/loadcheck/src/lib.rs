//! loadcheck (qpsmtpd): refuses connections while the machine's one-minute load average is
//! above `max_load`: `450 Server load too high, please try again later.` and close.
//!
//! Arguments: `max_load N` (default 7). The load is a fact the server gives
//! (`wit/server-load.wit`, from the kernel), so the plugin reads no file and runs no command:
//! qpsmtpd's `uptime PATH` and `cache_time SECONDS` are accepted and have nothing to do. Where
//! the server cannot tell the load, the plugin lets clients in and logs it once per connection.

use policy::Options;
use wasmtpd_plugin::{HookResult, Plugin, server_load};

const ARGUMENTS: &[&str] = &["max_load", "cache_time", "uptime", "loglevel"];

struct LoadCheck;

#[wasmtpd_plugin::plugin]
impl Plugin for LoadCheck {
    fn connect() -> HookResult {
        let o = Options::from_args(ARGUMENTS);
        let max: f64 = match o.get("max_load") {
            None => 7.0,
            Some(v) => v.parse().unwrap_or_else(|_| {
                wasmtpd_plugin::warn(format!("`max_load {v}`: expected a number; using 7"));
                7.0
            }),
        };
        let Some(load) = server_load::load_average() else {
            wasmtpd_plugin::warn("skip, the server cannot tell the load");
            return HookResult::declined();
        };
        if load.one_minute > max {
            wasmtpd_plugin::warn(format!("local load too high: {:.2} > {max}", load.one_minute));
            return HookResult::deny_soft("Server load too high, please try again later.");
        }
        wasmtpd_plugin::debug(format!("continuing with load: {:.2}", load.one_minute));
        HookResult::declined()
    }
}
