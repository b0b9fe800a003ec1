//! What the tests' private daemons (spamd, rspamd, clamd) have in common: a scratch directory
//! of their own, waiting (bounded) until one listens, and stopping one by its PID.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A fresh directory under the system temp dir for daemon `tag` (the caller removes it).
pub fn scratch_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wasmtpd-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits until something accepts on 127.0.0.1:`port`, at most `limit`. `false` if the daemon
/// exited first (then `child` is `None`) or the time ran out (the caller stops it).
pub fn wait_listening(child: &mut Option<Child>, port: u16, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        if child.as_mut().is_none_or(|c| c.try_wait().ok().flatten().is_some()) {
            *child = None;
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Stops a daemon: SIGTERM by its PID (so it ends its workers), SIGKILL after 5 s, and waits.
pub fn terminate(child: Option<Child>) {
    let Some(mut child) = child else { return };
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
