//! A plugin instance's temporary directory, reached through cap-std: names are relative to the
//! directory and nothing (`..`, absolute paths, symlinks) can leave it. The directory is created
//! with mode 0700 on first use and removed with its scope.
//!
//! What it may take up: at most [`MAX_ENTRIES`] files and directories, and `temp-quota` octets.
//! Host calls are checked before they act, and octets are counted by the size a write gives
//! the file, so a write far past the end (a sparse file) costs all the octets it skips. With
//! `wasi-temp` the plugin also writes through WASI, which we do not intercept: after each of its
//! hook calls a bounded walk ([`TempArea::check`]) counts what is there (entries, and for each
//! file the larger of its size and its allocated blocks), and over the limits the call is a
//! fault. Within one call such a plugin can write what its time limit lets it; a file system
//! quota on the spool is the operator's bound on that.
//!
//! Removing a directory tree takes as long as the tree is big, so it never happens on a
//! worker's event loop: [`discard`] renames the tree aside (one system call) and a cleanup
//! thread of its own removes it.

use std::cell::OnceCell;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, mpsc};

use cap_std::fs::{Dir, DirBuilder, OpenOptions};

use crate::imports::message::MAX_READ;

/// Most files and directories an instance's temporary directory may hold. A plugin needs a
/// handful (a copy of the message, an unpacked attachment or two); 1000 keeps the inodes it
/// can take, the time its directory takes to remove (milliseconds) and the post-call walk of a
/// `wasi-temp` plugin small.
pub const MAX_ENTRIES: u32 = 1000;

/// Where an instance's directory goes: `<scope dir>/s<generation>/p<plugin index>` for a
/// transaction-scoped instance (removed with its transaction), `<scope dir>/c/p<plugin index>`
/// for a connection-scoped one. The path is only made when a plugin uses it (most never do).
pub struct TempLocation {
    pub scope_dir: Arc<Path>,
    /// The transaction's generation; `None` for a connection-scoped instance.
    pub generation: Option<u32>,
    pub plugin: usize,
}

pub struct TempArea {
    location: TempLocation,
    path: OnceCell<PathBuf>,
    dir: Option<Dir>,
    quota: u64,
    /// Octets the files hold, by their sizes (known from host calls, and from the last walk).
    bytes: u64,
    /// Files and directories made (likewise).
    entries: u32,
    counter: u32,
}

/// What a walk of the directory found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Files and directories; the walk stops once past [`MAX_ENTRIES`].
    pub entries: u32,
    /// For each entry, the larger of its size and its allocated blocks.
    pub bytes: u64,
}

impl TempArea {
    pub fn new(location: TempLocation, quota: u64) -> TempArea {
        TempArea { location, path: OnceCell::new(), dir: None, quota, bytes: 0, entries: 0, counter: 0 }
    }

    pub fn path(&self) -> &Path {
        self.path.get_or_init(|| {
            let l = &self.location;
            let scope = match l.generation {
                Some(g) => format!("s{g}"),
                None => "c".to_string(),
            };
            l.scope_dir.join(scope).join(format!("p{}", l.plugin))
        })
    }

    /// Creates the directory (0700) if needed and opens it.
    pub fn open(&mut self) -> Result<&Dir, String> {
        if self.dir.is_none() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(self.path())
                .map_err(|e| format!("cannot create the temporary directory: {e}"))?;
            let dir = Dir::open_ambient_dir(self.path(), cap_std::ambient_authority())
                .map_err(|e| format!("cannot open the temporary directory: {e}"))?;
            self.dir = Some(dir);
        }
        Ok(self.dir.as_ref().expect("just opened"))
    }

    pub fn temp_file(&mut self) -> Result<String, String> {
        self.open()?;
        self.counter += 1;
        Ok(format!("t{}", self.counter))
    }

    pub fn temp_dir(&mut self) -> Result<String, String> {
        self.room_for_entry()?;
        self.counter += 1;
        let name = format!("d{}", self.counter);
        let mut b = DirBuilder::new();
        cap_std::fs::DirBuilderExt::mode(&mut b, 0o700);
        self.open()?.create_dir_with(&name, &b).map_err(|e| e.to_string())?;
        self.entries += 1;
        Ok(name)
    }

    fn room_for_entry(&self) -> Result<(), String> {
        match self.entries < MAX_ENTRIES {
            true => Ok(()),
            false => Err(format!("temporary files are over their limit of {MAX_ENTRIES} files and directories")),
        }
    }

    fn room_for(&self, grows: u64) -> Result<(), String> {
        match self.bytes.saturating_add(grows) <= self.quota {
            true => Ok(()),
            false => Err(format!("temporary files are over their quota of {} octets", self.quota)),
        }
    }

    /// Writes `data` at `offset`, if the size the file then has fits the quota.
    pub fn write(&mut self, name: &str, offset: u64, data: &[u8]) -> Result<(), String> {
        let end = offset.checked_add(data.len() as u64).ok_or("the offset is out of range")?;
        self.open()?;
        let dir = self.dir.as_ref().expect("just opened");
        let (mut f, size) = match dir.open_with(name, OpenOptions::new().write(true)) {
            Ok(f) => {
                let size = f.metadata().map_err(|e| format!("{name}: {e}"))?.len();
                self.room_for(end.saturating_sub(size))?;
                (f, size)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.room_for_entry()?;
                self.room_for(end)?;
                let f = dir
                    .open_with(name, OpenOptions::new().write(true).create_new(true))
                    .map_err(|e| format!("{name}: {e}"))?;
                self.entries += 1;
                (f, 0)
            }
            Err(e) => return Err(format!("{name}: {e}")),
        };
        f.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
        f.write_all(data).map_err(|e| format!("{name}: {e}"))?;
        self.bytes += end.saturating_sub(size);
        Ok(())
    }

    pub fn read(&mut self, name: &str, offset: u64, len: u32) -> Result<Vec<u8>, String> {
        let mut f = self.open()?.open(name).map_err(|e| format!("{name}: {e}"))?;
        f.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        f.take(len.min(MAX_READ) as u64).read_to_end(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }

    pub fn remove(&mut self, name: &str) -> Result<(), String> {
        let dir = self.open()?;
        let size = dir.symlink_metadata(name).map(|m| m.len()).unwrap_or(0);
        dir.remove_file(name).map_err(|e| format!("{name}: {e}"))?;
        self.bytes = self.bytes.saturating_sub(size);
        self.entries = self.entries.saturating_sub(1);
        Ok(())
    }

    /// Whether the directory has been created (by a temp-file call, or the `wasi-temp` grant).
    pub fn is_open(&self) -> bool {
        self.dir.is_some()
    }

    /// Walks the directory (at most `MAX_ENTRIES + 1` entries) and checks what is there against
    /// the limits, for a plugin that can write through WASI. What it finds becomes the count
    /// host calls go on from.
    pub fn check(&mut self) -> Result<(), String> {
        if self.dir.is_none() {
            return Ok(());
        }
        let usage = usage(self.path(), MAX_ENTRIES)
            .map_err(|e| format!("its temporary directory could not be measured: {e}"))?;
        (self.entries, self.bytes) = (usage.entries, usage.bytes);
        if usage.entries > MAX_ENTRIES {
            return Err(format!("over its temp quota: more than {MAX_ENTRIES} files and directories"));
        }
        if usage.bytes > self.quota {
            return Err(format!("over its temp quota: {} octets of {}", usage.bytes, self.quota));
        }
        Ok(())
    }

    /// Removes the directory and everything in it (off the event loop, see [`discard`]).
    pub fn remove_all(&mut self) {
        if self.dir.take().is_some() {
            discard(self.path());
        }
    }
}

/// What is in `root`: entries and octets, stopping once past `max_entries`. Symlinks are
/// counted, never followed.
pub fn usage(root: &Path, max_entries: u32) -> std::io::Result<Usage> {
    use std::os::unix::fs::MetadataExt;
    let mut usage = Usage::default();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            usage.entries += 1;
            if usage.entries > max_entries {
                return Ok(usage);
            }
            let meta = entry.metadata()?;
            usage.bytes = usage.bytes.saturating_add(meta.len().max(meta.blocks() * 512));
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok(usage)
}

/// Removes the tree at `path` without blocking the caller on it: renames it aside at once (so
/// the path is free for a new instance, and the tree is out of the way however long its
/// removal takes), then hands it to the cleanup thread. A missing path is nothing to do.
pub fn discard(path: &Path) {
    static ASIDE: AtomicU64 = AtomicU64::new(0);
    let Some(name) = path.file_name() else { return };
    let n = ASIDE.fetch_add(1, Ordering::Relaxed);
    let aside = path.with_file_name(format!("{}.removed-{n}", name.to_string_lossy()));
    match std::fs::rename(path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "could not move a plugin's temporary directory aside");
            return;
        }
    }
    if cleaner().send(aside.clone()).is_err() {
        tracing::warn!(path = %aside.display(), "the cleanup thread is gone; a temporary directory is left behind");
    }
}

/// The cleanup thread: removes the trees it is sent, one after the other.
fn cleaner() -> &'static mpsc::Sender<PathBuf> {
    static CLEANER: OnceLock<mpsc::Sender<PathBuf>> = OnceLock::new();
    CLEANER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<PathBuf>();
        let spawned = std::thread::Builder::new().name("wasmtpd-cleanup".into()).spawn(move || {
            for path in rx {
                if let Err(e) = std::fs::remove_dir_all(&path)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove a plugin's temporary directory");
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the cleanup thread");
        }
        tx
    })
}

/// Waits until everything discarded so far is removed (for tests): the thread works in order,
/// so once a marker sent now is gone, so is everything sent before it.
#[cfg(test)]
pub fn wait_for_cleanup() {
    static MARKER: AtomicU64 = AtomicU64::new(0);
    let n = MARKER.fetch_add(1, Ordering::Relaxed);
    let marker = std::env::temp_dir().join(format!("wasmtpd-cleanup-marker-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&marker).unwrap();
    cleaner().send(marker.clone()).unwrap();
    let started = std::time::Instant::now();
    while marker.exists() && started.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(tag: &str, quota: u64) -> (TempArea, PathBuf) {
        let base = std::env::temp_dir().join(format!("wasmtpd-temp-test-{tag}-{}", std::process::id()));
        let location = TempLocation { scope_dir: Arc::from(base.as_path()), generation: Some(0), plugin: 0 };
        (TempArea::new(location, quota), base)
    }

    #[test]
    fn files_stay_inside_and_count_against_the_quota() {
        let (mut t, base) = area("inside", 10);
        let name = t.temp_file().unwrap();
        t.write(&name, 0, b"hello").unwrap();
        assert_eq!(t.read(&name, 1, 100).unwrap(), b"ello");
        assert!(t.write(&name, 5, b"123456").is_err(), "quota");
        t.write(&name, 0, b"HELLO").unwrap();
        t.write(&name, 5, b"12345").unwrap();
        assert!(t.write(&name, 10, b"!").is_err(), "rewriting costs nothing, growing does");
        for escape in ["../escape", "/etc/passwd", "d/../../x"] {
            assert!(t.write(escape, 0, b"x").is_err(), "{escape}");
            assert!(t.read(escape, 0, 10).is_err(), "{escape}");
        }
        std::os::unix::fs::symlink("/etc/passwd", base.join("s0/p0/link")).unwrap();
        assert!(t.read("link", 0, 10).is_err(), "symlink out of the directory");
        t.remove(&name).unwrap();
        t.write("again", 0, b"0123456789").unwrap();
        let d = t.temp_dir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(base.join("s0/p0").join(&d)).unwrap().permissions().mode() & 0o777, 0o700);
        t.remove_all();
        assert!(!base.join("s0/p0").exists(), "moved aside at once");
        wait_for_cleanup();
        let left: Vec<_> = std::fs::read_dir(base.join("s0")).unwrap().collect();
        assert!(left.is_empty(), "removed by the cleanup thread: {left:?}");
        let _ = std::fs::remove_dir_all(base);
    }

    #[test]
    fn sparse_files_and_directories_are_not_free() {
        let (mut t, base) = area("sparse", 1 << 20);
        let name = t.temp_file().unwrap();
        let e = t.write(&name, 1 << 40, b"x").unwrap_err();
        assert!(e.contains("over their quota of 1048576 octets"), "{e}");
        assert!(t.write(&name, u64::MAX, b"x").is_err());
        for _ in 0..MAX_ENTRIES {
            t.temp_dir().unwrap();
        }
        let e = t.temp_dir().unwrap_err();
        assert!(e.contains("limit of 1000 files and directories"), "{e}");
        assert!(t.write("new-file", 0, b"x").is_err(), "a file is an entry too");
        assert_eq!(usage(t.path(), MAX_ENTRIES).unwrap().entries, MAX_ENTRIES);
        t.remove_all();
        let _ = std::fs::remove_dir_all(base);
    }

    #[test]
    fn a_walk_counts_what_wasi_wrote() {
        let (mut t, base) = area("walk", 1 << 20);
        assert!(t.check().is_ok(), "never opened: nothing to walk");
        t.open().unwrap();
        let dir = t.path().to_path_buf();
        std::fs::write(dir.join("small"), b"x").unwrap();
        assert!(t.check().is_ok());
        let f = std::fs::File::create(dir.join("sparse")).unwrap();
        f.set_len(1 << 40).unwrap();
        let e = t.check().unwrap_err();
        assert!(e.contains("over its temp quota"), "{e}");
        std::fs::remove_file(dir.join("sparse")).unwrap();
        std::fs::create_dir(dir.join("deep")).unwrap();
        for i in 0..MAX_ENTRIES {
            std::fs::create_dir(dir.join("deep").join(i.to_string())).unwrap();
        }
        let e = t.check().unwrap_err();
        assert!(e.contains("more than 1000 files and directories"), "{e}");
        assert_eq!(usage(&dir, MAX_ENTRIES).unwrap().entries, MAX_ENTRIES + 1, "the walk stops there");
        t.remove_all();
        let _ = std::fs::remove_dir_all(base);
    }
}
