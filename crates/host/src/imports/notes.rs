//! Notes: small key/value state shared between plugins, and the rules that keep one plugin's
//! notes from disabling another's.
//!
//! - Any plugin may read any note.
//! - The server's records of plugins' answers (`<plugin>.hook_<hook>`, e.g. `rcpt_ok.hook_rcpt`)
//!   are kept apart from plugins' notes and read under those keys; every key containing
//!   `.hook_` is reserved for them, so writing one fails: a plugin cannot forge or erase what
//!   another plugin answered.
//! - A note belongs to the plugin that wrote it first (its chain position); only that plugin
//!   may change or remove it. Another plugin's write fails with an error naming the owner.
//! - Each plugin has its own budget per connection and per transaction ([`MAX_PER_PLUGIN`]),
//!   so a plugin that fills its notes makes only its own writes fail. The price: a connection
//!   may hold up to that much per plugin of the chain, not per connection.
//!
//! A plugin whose later hooks rely on a note it wrote must check the write (a squatter may own
//! the key first) and fail closed, as `check_badmailfrom` does.

use wasmtpd_smtp::{Hook, Note, Notes};

pub const MAX_KEY: usize = 256;
pub const MAX_VALUE: usize = 64 * 1024;
/// Octets one plugin's notes may take in one connection, or in one transaction.
pub const MAX_PER_PLUGIN: usize = 1024 * 1024;
/// What a note costs beyond its key and value (the map's own memory), so that a million tiny
/// notes cannot hold more memory than the budget says.
pub const NOTE_OVERHEAD: usize = 64;
/// The part of a key that marks the server's records.
const RECORD: &str = ".hook_";

/// The note `key` as plugin sees it: the server's record for `<plugin>.hook_<hook>` keys (by
/// `chain`, the plugins' instance names), a plugin's note otherwise.
pub fn get<'a>(notes: &'a Notes, chain: &[String], key: &str) -> Option<&'a str> {
    let Some((plugin, hook)) = key.split_once(RECORD) else {
        return notes.get(key);
    };
    let plugin = chain.iter().position(|n| n == plugin)?;
    let hook = Hook::ALL.into_iter().find(|h| h.name() == hook)?;
    notes.record(plugin, hook)
}

/// Sets (or with `None` removes) a note for the plugin at chain position `writer`, within the
/// caps and the ownership rule above.
pub fn set(
    notes: &mut Notes,
    chain: &[String],
    writer: usize,
    key: String,
    value: Option<String>,
) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(format!("note keys are 1 to {MAX_KEY} octets"));
    }
    if key.contains(RECORD) {
        return Err(format!("`{key}`: keys with `{RECORD}` are the server's records of plugins' answers, read-only"));
    }
    let old = match notes.entries.get(&key) {
        Some(note) if note.writer != writer => {
            let owner = chain.get(note.writer).map_or("another plugin", String::as_str);
            return Err(format!("the note `{key}` belongs to the plugin `{owner}`; only it may change it"));
        }
        Some(note) => cost(&key, &note.value),
        None => 0,
    };
    let Some(value) = value else {
        if let Some(note) = notes.entries.remove(&key)
            && let Some(used) = notes.used.get_mut(note.writer)
        {
            *used = used.saturating_sub(old);
        }
        return Ok(());
    };
    if value.len() > MAX_VALUE {
        return Err(format!("note values are at most {MAX_VALUE} octets"));
    }
    if notes.used.len() <= writer {
        notes.used.resize(writer + 1, 0);
    }
    let used = notes.used[writer].saturating_sub(old) + cost(&key, &value);
    if used > MAX_PER_PLUGIN {
        return Err(format!("this plugin's notes are full ({MAX_PER_PLUGIN} octets per connection or transaction)"));
    }
    notes.used[writer] = used;
    notes.entries.insert(key, Note { writer, value });
    Ok(())
}

fn cost(key: &str, value: &str) -> usize {
    key.len() + value.len() + NOTE_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> Vec<String> {
        ["hostile", "check_badmailfrom", "rcpt_ok"].map(String::from).to_vec()
    }

    #[test]
    fn caps() {
        let c = chain();
        let mut n = Notes::default();
        assert!(set(&mut n, &c, 0, "k".into(), Some("v".into())).is_ok());
        assert!(set(&mut n, &c, 0, "".into(), Some("v".into())).is_err());
        assert!(set(&mut n, &c, 0, "k".repeat(257), Some("v".into())).is_err());
        assert!(set(&mut n, &c, 0, "big".into(), Some("x".repeat(MAX_VALUE + 1))).is_err());
        for i in 0..15 {
            assert!(set(&mut n, &c, 0, format!("k{i}"), Some("x".repeat(MAX_VALUE))).is_ok());
        }
        let e = set(&mut n, &c, 0, "k99".into(), Some("x".repeat(MAX_VALUE))).unwrap_err();
        assert!(e.contains("full"), "{e}");
        assert!(set(&mut n, &c, 0, "k1".into(), Some("small".into())).is_ok(), "replacing frees room");
        assert!(set(&mut n, &c, 0, "k99".into(), Some("x".repeat(MAX_VALUE))).is_ok());
        assert!(set(&mut n, &c, 0, "k".into(), None).is_ok());
        assert_eq!(n.get("k"), None);
        // Removing frees room, and the count stays exact.
        let total: usize = n.entries.iter().map(|(k, v)| cost(k, &v.value)).sum();
        assert_eq!(n.used[0], total);
    }

    #[test]
    fn tiny_notes_count_their_overhead() {
        let c = chain();
        let mut n = Notes::default();
        let mut i = 0;
        while set(&mut n, &c, 0, format!("{i}"), Some(String::new())).is_ok() {
            i += 1;
        }
        assert!(i < MAX_PER_PLUGIN / NOTE_OVERHEAD, "{i} notes");
    }

    #[test]
    fn one_plugins_flood_leaves_the_others_their_budget() {
        let c = chain();
        let mut n = Notes::default();
        let mut i = 0;
        while set(&mut n, &c, 0, format!("flood{i}"), Some("n".repeat(MAX_VALUE))).is_ok() {
            i += 1;
        }
        assert!(i > 0);
        set(&mut n, &c, 1, "badmailfrom".into(), Some("listed".into())).expect("its own budget");
        assert_eq!(get(&n, &c, "badmailfrom"), Some("listed"));
    }

    #[test]
    fn only_the_writer_changes_or_removes_a_note() {
        let c = chain();
        let mut n = Notes::default();
        set(&mut n, &c, 1, "badmailfrom".into(), Some("listed".into())).unwrap();
        for value in [None, Some("cleared".to_string())] {
            let e = set(&mut n, &c, 0, "badmailfrom".into(), value).unwrap_err();
            assert!(e.contains("belongs to the plugin `check_badmailfrom`"), "{e}");
        }
        assert_eq!(get(&n, &c, "badmailfrom"), Some("listed"));
        // A squatter that got there first owns the key: the plugin's write fails, so it can
        // tell (and fail closed).
        set(&mut n, &c, 0, "earlytalker".into(), Some("0".into())).unwrap();
        assert!(set(&mut n, &c, 1, "earlytalker".into(), Some("1".into())).is_err());
        // The writer may change and remove its own.
        set(&mut n, &c, 1, "badmailfrom".into(), Some("changed".into())).unwrap();
        set(&mut n, &c, 1, "badmailfrom".into(), None).unwrap();
        assert_eq!(get(&n, &c, "badmailfrom"), None);
        assert_eq!(n.used[1], 0);
        // Once removed, anyone may take the key.
        set(&mut n, &c, 2, "badmailfrom".into(), Some("mine".into())).unwrap();
    }

    #[test]
    fn the_servers_records_are_read_only() {
        let c = chain();
        let mut n = Notes::default();
        n.set_record(c.len(), 2, Hook::Rcpt, "DENY");
        assert_eq!(get(&n, &c, "rcpt_ok.hook_rcpt"), Some("DENY"));
        assert_eq!(get(&n, &c, "rcpt_ok.hook_mail"), None);
        assert_eq!(get(&n, &c, "nosuch.hook_rcpt"), None);
        assert_eq!(get(&n, &c, "rcpt_ok.hook_nosuch"), None);
        for key in ["rcpt_ok.hook_rcpt", "rcpt_ok.hook_mail", "nosuch.hook_x", "x.hook_"] {
            let e = set(&mut n, &c, 0, key.into(), Some("OK".into())).unwrap_err();
            assert!(e.contains("read-only"), "{e}");
            assert!(set(&mut n, &c, 0, key.into(), None).is_err());
        }
        assert_eq!(get(&n, &c, "rcpt_ok.hook_rcpt"), Some("DENY"));
        n.set_record(c.len(), 2, Hook::Rcpt, "OK");
        assert_eq!(get(&n, &c, "rcpt_ok.hook_rcpt"), Some("OK"));
    }
}
