//! noop_counter (qpsmtpd): disconnects a client after too many consecutive NOOPs
//! (`500 Stop wasting my time, too many consecutive NOOPs` and close). Any other command
//! (HELO, EHLO, MAIL, RCPT, DATA, RSET, VRFY, HELP) starts the count again.
//!
//! Argument: the number of NOOPs (default 3), as qpsmtpd's one argument. The count is a
//! connection note (`noop_counter`), since a plugin instance lives for one transaction.

use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin, host};

const NOTE: &str = "noop_counter";

struct NoopCounter;

#[wasmtpd_plugin::plugin]
impl Plugin for NoopCounter {
    fn noop() -> HookResult {
        let max = match host::args().first() {
            None => 3,
            Some(n) => n.parse::<u32>().unwrap_or_else(|_| {
                wasmtpd_plugin::warn(format!("`{n}`: expected the number of NOOPs; using 3"));
                3
            }),
        };
        let count = host::connection_note(NOTE).and_then(|n| n.parse::<u32>().ok()).unwrap_or(0) + 1;
        if count >= max {
            wasmtpd_plugin::info(format!("fail, {count} consecutive NOOPs"));
            return HookResult::deny_disconnect("Stop wasting my time, too many consecutive NOOPs");
        }
        if let Err(e) = host::set_connection_note(NOTE, Some(&count.to_string())) {
            wasmtpd_plugin::warn(format!("cannot count the NOOP ({e})"));
        }
        HookResult::declined()
    }

    fn helo(_host: String) -> HookResult {
        reset()
    }

    fn ehlo(_host: String) -> HookResult {
        reset()
    }

    fn mail(_sender: Option<Address>, _params: Vec<EsmtpParam>) -> HookResult {
        reset()
    }

    fn rcpt(_recipient: Address, _params: Vec<EsmtpParam>) -> HookResult {
        reset()
    }

    fn data() -> HookResult {
        reset()
    }

    fn reset_transaction() -> HookResult {
        reset()
    }

    fn vrfy(_argument: String) -> HookResult {
        reset()
    }

    fn help(_argument: String) -> HookResult {
        reset()
    }
}

/// Another command: the count starts again.
fn reset() -> HookResult {
    if host::connection_note(NOTE).is_some() {
        let _ = host::set_connection_note(NOTE, None);
    }
    HookResult::declined()
}
