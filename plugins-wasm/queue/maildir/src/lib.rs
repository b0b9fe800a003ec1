//! queue/maildir (qpsmtpd): delivers every message to one maildir (maildir(5)), durably.
//!
//! Argument: the maildir's path as the plugin sees it (default `/maildir`). The operator must
//! grant it, e.g. in `config/sandbox`:
//!
//! ```text
//! queue/maildir  grant-dir  maildir  /maildir  rw
//! ```
//!
//! The message (with a `Return-Path:` line on top) is written to `tmp/`, fsynced, renamed into
//! `new/`, and `new/` is fsynced; only then does the plugin say OK, so the client's 250 means
//! the message is on disk. Any failure is a soft failure (452): the client will retry, and no
//! file of that attempt is left in `new/` (see `deliver`).

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use wasmtpd_plugin::{HookResult, Plugin, host};

struct QueueMaildir;

#[wasmtpd_plugin::plugin]
impl Plugin for QueueMaildir {
    fn queue() -> HookResult {
        let dir = host::args().into_iter().next().unwrap_or_else(|| "/maildir".to_string());
        match deliver(Path::new(&dir)) {
            Ok(name) => HookResult::ok_with(format!("Queued as {name}")),
            Err(e) => {
                wasmtpd_plugin::warn(format!("delivery to {dir} failed: {e}"));
                HookResult::deny_soft("Local error in delivery, try again later").with_enhanced_code("4.3.0")
            }
        }
    }
}

fn deliver(dir: &Path) -> Result<String, String> {
    let txn = host::transaction().ok_or("no transaction")?;
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(dir.join(sub)).map_err(|e| format!("{sub}/: {e}"))?;
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    // The transaction id is unique on this server; the time keeps names unique across restarts.
    let name = format!("{}.M{}.{}.wasmtpd", now.as_secs(), now.subsec_micros(), txn.id);
    let tmp = dir.join("tmp").join(&name);
    let new = dir.join("new").join(&name);
    if let Err(e) = write_message(&tmp, &txn) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = fs::rename(&tmp, &new) {
        let _ = fs::remove_file(&tmp);
        return Err(format!("rename into new/: {e}"));
    }
    // The guarantee: a message is never lost, and never delivered twice unless the disk itself
    // misbehaves. The rename is durable only once `new/` is fsynced; if that fails, the
    // client hears 452 and will send the message again, so the file is taken back out of
    // `new/` first: a reader must not see a message we did not acknowledge. Only if that
    // removal fails too (the disk is failing) can the retry make a duplicate.
    if let Err(e) = File::open(dir.join("new")).and_then(|d| d.sync_all()) {
        if let Err(undo) = fs::remove_file(&new) {
            wasmtpd_plugin::warn(format!(
                "{name} stays in new/ after a failed fsync (removing it failed: {undo}); the retry may duplicate it"
            ));
        }
        return Err(format!("fsync new/: {e}"));
    }
    Ok(name)
}

fn write_message(path: &Path, txn: &wasmtpd_plugin::TransactionInfo) -> Result<(), String> {
    let mut out = File::create_new(path).map_err(|e| format!("create tmp/: {e}"))?;
    let sender = txn.sender.as_ref().map(|a| a.to_plain()).unwrap_or_default();
    out.write_all(format!("Return-Path: <{sender}>\r\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut offset = 0u64;
    loop {
        let chunk = host::read_message(offset, 64 * 1024)?;
        if chunk.is_empty() {
            break;
        }
        out.write_all(&chunk).map_err(|e| format!("write: {e}"))?;
        offset += chunk.len() as u64;
    }
    out.sync_all().map_err(|e| format!("fsync: {e}"))
}
