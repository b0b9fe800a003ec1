//! count_unrecognized_commands (qpsmtpd): closes the connection after too many unknown
//! commands. Argument: how many (default 4). The count lives in a connection note, since a
//! plugin instance does not outlive its scope. If the count cannot be written (another plugin
//! holds the key), the limit cannot be kept, so it closes the connection at once (fail closed).

use wasmtpd_plugin::{HookResult, Plugin, host};

struct CountUnrecognized;

const NOTE: &str = "count_unrecognized_commands.count";

#[wasmtpd_plugin::plugin]
impl Plugin for CountUnrecognized {
    fn unrecognized_command(verb: String, _args: Vec<String>) -> HookResult {
        let limit: u32 = host::args().first().and_then(|a| a.parse().ok()).unwrap_or(4);
        let count = host::connection_note(NOTE).and_then(|n| n.parse::<u32>().ok()).unwrap_or(0) + 1;
        let counted = host::set_connection_note(NOTE, Some(&count.to_string()));
        if let Err(e) = &counted {
            wasmtpd_plugin::warn(format!("cannot count unrecognized commands ({e}); closing"));
        }
        wasmtpd_plugin::debug(format!("unrecognized command {verb:?}, {count} of {limit}"));
        if count >= limit || counted.is_err() {
            return HookResult::deny_disconnect(format!(
                "Closing connection. {count} unrecognized commands. Perhaps you should read RFC 5321?"
            ));
        }
        HookResult::declined()
    }
}
