//! Notes: what plugins leave for each other (and for their own later hooks) in a connection or
//! a transaction, and, kept apart from them, the server's record of every plugin's answers
//! (qpsmtpd's `<plugin>.hook_<hook>` notes).
//!
//! Plain data. Who may write which note, and how much each plugin may store, are the plugin
//! host's rules (`crates/host/src/imports/notes.rs`); plugins are named here by their position
//! in the chain.

use std::collections::BTreeMap;

use crate::hook::Hook;

/// The notes of one connection, or of one transaction.
#[derive(Debug, Clone, Default)]
pub struct Notes {
    /// What plugins wrote: key → note.
    pub entries: BTreeMap<String, Note>,
    /// Octets each plugin's notes take (as the host counts them), by chain position; grown on
    /// a plugin's first write.
    pub used: Vec<usize>,
    /// The server's records: what plugin `p` answered to hook `h` is at
    /// `p * Hook::ALL.len() + h as usize`; allocated on the first record.
    pub records: Vec<Option<&'static str>>,
}

/// A note a plugin wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The chain position of the plugin that wrote it: only it may change or remove it.
    pub writer: usize,
    pub value: String,
}

impl Notes {
    /// The value of a plugin's note.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(|n| n.value.as_str())
    }

    /// The server's record of what plugin `plugin` answered to `hook`.
    pub fn record(&self, plugin: usize, hook: Hook) -> Option<&'static str> {
        self.records.get(plugin * Hook::ALL.len() + hook as usize).copied().flatten()
    }

    /// Records what plugin `plugin` (of a chain of `plugins`) answered to `hook`. Allocates once
    /// per connection or transaction, on its first record.
    pub fn set_record(&mut self, plugins: usize, plugin: usize, hook: Hook, answer: &'static str) {
        if self.records.is_empty() {
            self.records = vec![None; plugins.max(plugin + 1) * Hook::ALL.len()];
        }
        if let Some(slot) = self.records.get_mut(plugin * Hook::ALL.len() + hook as usize) {
            *slot = Some(answer);
        }
    }
}
