//! Test fixture: round trips through notes and temporary files.
//!
//! - rcpt: writes the recipient into a new temp file, reads it back, keeps the file's name in
//!   the transaction note `notes_temp.file` and the text in `notes_temp.rcpt`; tries to read
//!   the file the previous transaction left (note `notes_temp.previous` in the connection),
//!   and records whether that worked (it must not: each transaction has its own directory).
//! - data_post: reads its temp file again (same transaction, same instance) and another
//!   plugin's note (the note named by its first argument, e.g. `other.hook_rcpt`), and puts
//!   what it found into header fields.

use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin, host};

struct NotesTemp;

#[wasmtpd_plugin::plugin]
impl Plugin for NotesTemp {
    fn rcpt(recipient: Address, _params: Vec<EsmtpParam>) -> HookResult {
        let previous = host::connection_note("notes_temp.previous");
        let leaked = previous.as_deref().map(|name| host::read_file(name, 0, 100).is_ok()).unwrap_or(false);
        let _ = host::set_transaction_note("notes_temp.leaked", Some(if leaked { "yes" } else { "no" }));
        let name = match host::temp_file() {
            Ok(n) => n,
            Err(e) => return HookResult::deny_soft(format!("temp_file: {e}")),
        };
        let text = recipient.to_plain();
        if let Err(e) = host::write_file(&name, 0, text.as_bytes()) {
            return HookResult::deny_soft(format!("write_file: {e}"));
        }
        let back = host::read_file(&name, 0, 1000).unwrap_or_default();
        if back != text.as_bytes() {
            return HookResult::deny_soft("temp file round trip failed");
        }
        let dir = host::temp_dir().unwrap_or_default();
        let _ = host::set_transaction_note("notes_temp.file", Some(&name));
        let _ = host::set_transaction_note("notes_temp.dir", Some(&dir));
        let _ = host::set_transaction_note("notes_temp.rcpt", Some(&text));
        let _ = host::set_connection_note("notes_temp.previous", Some(&name));
        HookResult::declined()
    }

    fn data_post() -> HookResult {
        let file = host::transaction_note("notes_temp.file").unwrap_or_default();
        let again = host::read_file(&file, 0, 1000).map(|b| String::from_utf8_lossy(&b).to_string());
        let _ = host::add_header("X-Notes-Temp-File", &again.unwrap_or_else(|e| format!("error: {e}")));
        let _ =
            host::add_header("X-Notes-Temp-Leaked", &host::transaction_note("notes_temp.leaked").unwrap_or_default());
        // The host's record of another plugin's answer, named by this plugin's argument.
        let key = host::args().into_iter().next().unwrap_or_default();
        let hook_note = host::transaction_note(&key).unwrap_or_else(|| "-".into());
        let _ = host::add_header("X-Notes-Temp-Seen", &hook_note);
        HookResult::declined()
    }
}
