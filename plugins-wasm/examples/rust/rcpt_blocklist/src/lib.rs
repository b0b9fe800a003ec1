//! rcpt_blocklist in Rust: refuses recipients whose local part is listed in the plugin's
//! arguments (`examples/rust/rcpt_blocklist alice bob`), with the same behaviour as the Python,
//! JS and C versions. On the way it writes the recipient to a temporary file, reads it back, and
//! leaves the note `rcpt_blocklist.checked` for later plugins.

use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin, host};

struct RcptBlocklist;

#[wasmtpd_plugin::plugin]
impl Plugin for RcptBlocklist {
    fn rcpt(recipient: Address, _params: Vec<EsmtpParam>) -> HookResult {
        let address = recipient.to_plain();
        let round_trip = host::temp_file().and_then(|name| {
            host::write_file(&name, 0, address.as_bytes())?;
            host::read_file(&name, 0, 1024)
        });
        if round_trip.as_deref() != Ok(address.as_bytes()) {
            return HookResult::deny_soft("temporary file round trip failed");
        }
        let _ = host::set_transaction_note("rcpt_blocklist.checked", Some(&address));
        if host::args().contains(&recipient.local_part) {
            return HookResult::deny(format!("{} is blocked by the rust plugin", recipient.local_part));
        }
        HookResult::declined()
    }
}
