//! check_earlytalker (qpsmtpd earlytalker): refuses clients that sent data before our
//! greeting. The engine watches for it (`greeting_delay` in config/limits; set
//! `reject_early_talkers no` there to leave the decision to this plugin).
//!
//! Arguments: none to refuse at connect time (554 and close); `defer` to note it and refuse
//! every MAIL instead (so the client's log shows why). If the note cannot be written, it
//! refuses at connect time after all (fail closed).

use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin, host};

struct EarlyTalker;

const NOTE: &str = "earlytalker";
const TEXT: &str = "Connecting host started transmitting before SMTP greeting";

#[wasmtpd_plugin::plugin]
impl Plugin for EarlyTalker {
    fn connect() -> HookResult {
        if !host::connection().early_talker {
            return HookResult::declined();
        }
        if host::args().iter().any(|a| a == "defer") {
            match host::set_connection_note(NOTE, Some("1")) {
                Ok(()) => return HookResult::declined(),
                Err(e) => wasmtpd_plugin::warn(format!("earlytalker: cannot note it ({e}); refusing now")),
            }
        }
        HookResult::deny_disconnect(TEXT)
    }

    fn mail(_sender: Option<Address>, _params: Vec<EsmtpParam>) -> HookResult {
        match host::connection_note(NOTE) {
            Some(_) => HookResult::deny(TEXT).with_enhanced_code("5.5.0"),
            None => HookResult::declined(),
        }
    }
}
