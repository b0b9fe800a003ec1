//! What plugins read with `host.config(name)`: the files of the config directory, cached.
//!
//! Plugins ask for their files on every hook call (`rcpt_ok` reads `rcpthosts` for every
//! recipient), so each file is kept in memory and looked at again (one `stat`) at most once per
//! [`RECHECK`]; it is read again only when its modification time or size changed. An edit to
//! `badmailfrom`, or a user added to `auth_users`, counts within a second, without a restart.
//!
//! Only names granted to some plugin are served (the host checks each plugin's own grant
//! first; this is the second fence): any other name, or one longer than 255 octets, is `None`
//! without touching the disk or the cache. So the cache holds at most one entry per granted
//! name, a number the configuration fixes, and no plugin can grow it by asking. A granted file
//! that is missing is remembered as missing for [`RECHECK`] too (as rcpt_ok's `morercpthosts`
//! usually is): not remembering it would cost two system calls per recipient.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use wasmtpd_host::ConfigFiles;
use wasmtpd_host::state::MAX_CONFIG_NAME;

use crate::config::ConfigSource;

/// How long a cached file is trusted before it is looked at again.
pub const RECHECK: Duration = Duration::from_secs(1);

pub struct CachedConfigFiles {
    source: ConfigSource,
    /// The names some plugin may read.
    granted: HashSet<String>,
    cache: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    lines: Option<Arc<Vec<String>>>,
    /// (modification time, size) when read; `None` for a missing file.
    stamp: Option<(SystemTime, u64)>,
    checked: Instant,
}

impl CachedConfigFiles {
    /// Serves the files of `source` named in `granted`, and no other.
    pub fn new(source: ConfigSource, granted: HashSet<String>) -> CachedConfigFiles {
        CachedConfigFiles { source, granted, cache: Mutex::new(HashMap::new()) }
    }

    fn stamp(&self, name: &str) -> Option<(SystemTime, u64)> {
        match &self.source {
            ConfigSource::Embedded => None,
            ConfigSource::Dir(dir) => {
                let meta = std::fs::metadata(dir.join(name)).ok()?;
                Some((meta.modified().ok()?, meta.len()))
            }
        }
    }

    fn read(&self, name: &str) -> Option<Arc<Vec<String>>> {
        let lines = ConfigSource::lines(&self.source, name).ok().flatten()?;
        Some(Arc::new(lines.into_iter().map(|(_, l)| l).collect()))
    }
}

impl ConfigFiles for CachedConfigFiles {
    fn lines(&self, name: &str) -> Option<Vec<String>> {
        if name.len() > MAX_CONFIG_NAME || !self.granted.contains(name) {
            return None;
        }
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = cache.get_mut(name) {
            if now.duration_since(e.checked) < RECHECK {
                return e.lines.as_deref().cloned();
            }
            let stamp = self.stamp(name);
            if stamp == e.stamp && stamp.is_some() {
                e.checked = now;
                return e.lines.as_deref().cloned();
            }
        }
        // Not cached, changed, or missing when last looked: read it (a missing file is looked
        // for again after RECHECK too, through this path).
        let stamp = self.stamp(name);
        let lines = self.read(name);
        cache.insert(name.to_string(), Entry { lines: lines.clone(), stamp, checked: now });
        lines.as_deref().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_count_after_the_recheck_interval() {
        let dir = std::env::temp_dir().join(format!("wasmtpd-config-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("badmailfrom"), "# comment\nspam@example.com\n").unwrap();
        let granted = ["badmailfrom", "missing"].map(String::from).into();
        let files = CachedConfigFiles::new(ConfigSource::Dir(dir.clone()), granted);
        assert_eq!(files.lines("badmailfrom"), Some(vec!["spam@example.com".to_string()]));
        assert_eq!(files.lines("missing"), None);
        std::fs::write(dir.join("badmailfrom"), "spam@example.com\nmore@example.com\n").unwrap();
        std::fs::write(dir.join("missing"), "now here\n").unwrap();
        // Within the interval the cached answer stands...
        assert_eq!(files.lines("badmailfrom").unwrap().len(), 1);
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        // ...after it, the change is seen.
        assert_eq!(files.lines("badmailfrom").unwrap().len(), 2);
        assert_eq!(files.lines("missing"), Some(vec!["now here".to_string()]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The attack of issue 11: fifty `config()` calls with 8 MiB names took the server from 93
    /// to 903 MiB. Names that are not granted, or too long, are neither read nor remembered.
    #[test]
    fn only_granted_names_are_read_or_remembered() {
        let dir = std::env::temp_dir().join(format!("wasmtpd-config-files-grant-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("badmailfrom"), "spam@example.com\n").unwrap();
        std::fs::write(dir.join("tls"), "certificate a.pem a.key\n").unwrap();
        let files = CachedConfigFiles::new(ConfigSource::Dir(dir.clone()), ["badmailfrom".to_string()].into());
        assert_eq!(files.lines("tls"), None);
        assert_eq!(files.lines(&"x".repeat(8 << 20)), None);
        for i in 0..100 {
            assert_eq!(files.lines(&format!("nosuch{i}")), None);
        }
        assert!(files.lines("badmailfrom").is_some());
        assert_eq!(files.cache.lock().unwrap().len(), 1, "only the granted file is cached");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
