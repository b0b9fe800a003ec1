//! What plugins read with `host.config(name)`: the files of the config directory, cached.
//!
//! Plugins ask for their files on every hook call (`rcpt_ok` reads `rcpthosts` for every
//! recipient), so each file is kept in memory and looked at again (one `stat`) at most once per
//! [`RECHECK`]; it is read again only when its modification time or size changed. An edit to
//! `badmailfrom`, or a user added to `auth_users`, counts within a second, without a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use wasmtpd_host::ConfigFiles;

use crate::config::ConfigSource;

/// How long a cached file is trusted before it is looked at again.
pub const RECHECK: Duration = Duration::from_secs(1);

/// Most files remembered (a plugin may ask for any name; missing ones are remembered too).
const MAX_FILES: usize = 1024;

pub struct CachedConfigFiles {
    source: ConfigSource,
    cache: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    lines: Option<Arc<Vec<String>>>,
    /// (modification time, size) when read; `None` for a missing file.
    stamp: Option<(SystemTime, u64)>,
    checked: Instant,
}

impl CachedConfigFiles {
    pub fn new(source: ConfigSource) -> CachedConfigFiles {
        CachedConfigFiles { source, cache: Mutex::new(HashMap::new()) }
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
        if cache.len() >= MAX_FILES && !cache.contains_key(name) {
            cache.clear();
        }
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
        let files = CachedConfigFiles::new(ConfigSource::Dir(dir.clone()));
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
}
