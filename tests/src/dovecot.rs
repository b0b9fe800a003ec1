//! A private Dovecot LMTP server for the delivery tests (Debian's `dovecot-lmtpd`, which
//! `cargo xtask test` installs without starting it): its own config file, `base_dir`,
//! `state_dir` and log under the test's directory, only the `lmtp` protocol, on 127.0.0.1 and
//! a port of its own, mail for the test's users (a `passwd-file` of its own) saved into
//! maildirs under the test's directory; any other user is refused at RCPT ("User doesn't
//! exist"). Stopped by its master's PID on drop; the system's Dovecot is never touched.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::TempDir;

const START_LIMIT: Duration = Duration::from_secs(20);
/// The uid and gid the maildirs are written as (`nobody`).
const MAIL_ID: u32 = 65534;

/// A running private Dovecot.
pub struct Dovecot {
    pub port: u16,
    pub dir: TempDir,
    master: Option<u32>,
}

impl Dovecot {
    /// Starts one delivering for `users` (local parts at `example.test`).
    pub fn start(users: &[&str]) -> Dovecot {
        for _ in 0..4 {
            let mut d = Dovecot { port: crate::redis::free_port(), dir: TempDir::new("dovecot"), master: None };
            d.configure(users);
            if d.run() {
                return d;
            }
            eprintln!("dovecot did not start:\n{}", d.log());
        }
        panic!("could not start dovecot on a free loopback port");
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.0.join(p)
    }

    fn configure(&self, users: &[&str]) {
        for d in ["run", "state", "mail"] {
            std::fs::create_dir_all(self.path(d)).unwrap();
        }
        let ok = Command::new("chown")
            .arg(format!("{MAIL_ID}:{MAIL_ID}"))
            .arg(self.path("mail"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown the maildirs' directory");
        let d = self.dir.0.display();
        let config = format!(
            "base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
mail_location = maildir:{d}/mail/%n
first_valid_uid = 1
mail_uid = {MAIL_ID}
mail_gid = {MAIL_ID}
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = {d}/users
}}
userdb {{
  driver = passwd-file
  args = {d}/users
  default_fields = uid={MAIL_ID} gid={MAIL_ID} home={d}/mail/%n
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {}
  }}
}}
",
            self.port
        );
        std::fs::write(self.path("dovecot.conf"), config).unwrap();
        let users: String = users.iter().map(|u| format!("{u}@example.test:{{PLAIN}}unused::::::\n")).collect();
        std::fs::write(self.path("users"), users).unwrap();
    }

    fn run(&mut self) -> bool {
        let status = Command::new("/usr/sbin/dovecot")
            .arg("-c")
            .arg(self.path("dovecot.conf"))
            .status()
            .expect("dovecot is not installed: `cargo xtask test` installs it (Debian package dovecot-lmtpd)");
        if !status.success() {
            return false;
        }
        let started = Instant::now();
        while started.elapsed() < START_LIMIT {
            if self.master.is_none() {
                self.master =
                    std::fs::read_to_string(self.path("run/master.pid")).ok().and_then(|t| t.trim().parse().ok());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Stops it (SIGTERM to the master), waiting at most 10 s.
    pub fn stop(&mut self) {
        let Some(pid) = self.master.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let started = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("dovecot.log")).unwrap_or_default()
    }

    /// The messages in `user`'s maildir (`new/`).
    pub fn delivered(&self, user: &str) -> Vec<Vec<u8>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.path(&format!("mail/{user}/new")))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}
