//! A plugin instance's temporary directory, reached through cap-std: names are relative to the
//! directory and nothing (`..`, absolute paths, symlinks) can leave it. The directory is created
//! with mode 0700 on first use and removed with its scope; writes count against a byte quota.

use std::cell::OnceCell;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::fs::{Dir, DirBuilder, OpenOptions};

use crate::imports::message::MAX_READ;

/// Where an instance's directory goes: `<scope dir>/s<generation>/p<plugin index>`. The path
/// is only made when a plugin uses it (most never do).
pub struct TempLocation {
    pub scope_dir: Arc<Path>,
    pub generation: u32,
    pub plugin: usize,
}

pub struct TempArea {
    location: TempLocation,
    path: OnceCell<PathBuf>,
    dir: Option<Dir>,
    quota: u64,
    written: u64,
    counter: u32,
}

impl TempArea {
    pub fn new(location: TempLocation, quota: u64) -> TempArea {
        TempArea { location, path: OnceCell::new(), dir: None, quota, written: 0, counter: 0 }
    }

    pub fn path(&self) -> &Path {
        self.path.get_or_init(|| {
            let l = &self.location;
            l.scope_dir.join(format!("s{}", l.generation)).join(format!("p{}", l.plugin))
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
        self.counter += 1;
        let name = format!("d{}", self.counter);
        let mut b = DirBuilder::new();
        cap_std::fs::DirBuilderExt::mode(&mut b, 0o700);
        self.open()?.create_dir_with(&name, &b).map_err(|e| e.to_string())?;
        Ok(name)
    }

    pub fn write(&mut self, name: &str, offset: u64, data: &[u8]) -> Result<(), String> {
        if self.written + data.len() as u64 > self.quota {
            return Err(format!("temporary files are over their quota of {} octets", self.quota));
        }
        let mut f = self
            .open()?
            .open_with(name, OpenOptions::new().write(true).create(true))
            .map_err(|e| format!("{name}: {e}"))?;
        f.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
        f.write_all(data).map_err(|e| format!("{name}: {e}"))?;
        self.written += data.len() as u64;
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
        self.open()?.remove_file(name).map_err(|e| format!("{name}: {e}"))
    }

    /// Removes the directory and everything in it.
    /// Whether the directory has been created (by a temp-file call, or the `wasi-temp` grant).
    pub fn is_open(&self) -> bool {
        self.dir.is_some()
    }

    pub fn remove_all(&mut self) {
        if self.dir.take().is_none() {
            return; // never created
        }
        if let Err(e) = std::fs::remove_dir_all(self.path())
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path().display(), error = %e, "could not remove a plugin's temporary directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_stay_inside_and_count_against_the_quota() {
        let base = std::env::temp_dir().join(format!("wasmtpd-temp-test-{}", std::process::id()));
        let location = TempLocation { scope_dir: Arc::from(base.as_path()), generation: 0, plugin: 0 };
        let mut t = TempArea::new(location, 10);
        let name = t.temp_file().unwrap();
        t.write(&name, 0, b"hello").unwrap();
        assert_eq!(t.read(&name, 1, 100).unwrap(), b"ello");
        assert!(t.write(&name, 5, b"123456").is_err(), "quota");
        for escape in ["../escape", "/etc/passwd", "d/../../x"] {
            assert!(t.write(escape, 0, b"x").is_err(), "{escape}");
            assert!(t.read(escape, 0, 10).is_err(), "{escape}");
        }
        std::os::unix::fs::symlink("/etc/passwd", base.join("s0/p0/link")).unwrap();
        assert!(t.read("link", 0, 10).is_err(), "symlink out of the directory");
        let d = t.temp_dir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(base.join("s0/p0").join(&d)).unwrap().permissions().mode() & 0o777, 0o700);
        t.remove_all();
        assert!(!base.join("s0/p0").exists());
        let _ = std::fs::remove_dir_all(base);
    }
}
