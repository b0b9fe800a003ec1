//! A private Postfix for the delivery tests (Debian's package, which `cargo xtask test`
//! installs without a system configuration): its own `config_directory`, `queue_directory`
//! and `data_directory` under the test's directory, `smtpd` on 127.0.0.1 and a port of its
//! own, mail for `example.test` delivered by `virtual` into maildirs under the test's
//! directory (`virtual_mailbox_maps` a `texthash` map of the test's users, so any other
//! recipient is refused at RCPT with Postfix's own reply), XCLIENT allowed from loopback, and
//! its log in a file (`maillog_file`). Stopped by the master's PID on drop; the system's
//! Postfix, if any, is never touched.
//!
//! What works here: `postfix -c DIR start` runs as root (a non-default `config_directory` is
//! allowed for root without `alternate_config_directories`); `data_directory` must belong to
//! the `postfix` user; `maillog_file` must lie under `maillog_file_prefixes`; postfix prints
//! its errors only to a terminal or syslog, so a failed start is diagnosed from `maillog`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::TempDir;

/// How long Postfix may take to listen after `postfix start`.
const START_LIMIT: Duration = Duration::from_secs(20);
/// The uid and gid the maildirs are written as (`nobody`).
const MAIL_ID: u32 = 65534;

/// A running private Postfix.
pub struct Postfix {
    pub port: u16,
    pub dir: TempDir,
    master: Option<u32>,
}

impl Postfix {
    /// Starts one accepting mail for `users` (local parts at `example.test`).
    pub fn start(users: &[&str]) -> Postfix {
        let mut dir = TempDir::new("postfix");
        for attempt in 0.. {
            let port = crate::redis::free_port();
            let mut p = Postfix { port, dir, master: None };
            p.configure(users);
            if p.run() {
                return p;
            }
            if attempt == 3 {
                panic!("postfix did not start:\n{}", p.log());
            }
            dir = p.take_dir();
        }
        unreachable!()
    }

    fn take_dir(mut self) -> TempDir {
        self.stop();
        std::mem::replace(&mut self.dir, TempDir(PathBuf::new()))
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.0.join(p)
    }

    fn configure(&self, users: &[&str]) {
        for d in ["conf", "queue", "data", "mail"] {
            std::fs::create_dir_all(self.path(d)).unwrap();
        }
        chown(&self.path("data"), "postfix");
        chown(&self.path("mail"), &format!("{MAIL_ID}:{MAIL_ID}"));
        let d = self.dir.0.display();
        let main = format!(
            "compatibility_level = 3.6
config_directory = {d}/conf
queue_directory = {d}/queue
data_directory = {d}/data
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = downstream.test
mydomain = downstream.test
myorigin = downstream.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file_prefixes = {d}
maillog_file = {d}/maillog
smtpd_authorized_xclient_hosts = 127.0.0.0/8
virtual_mailbox_domains = example.test
virtual_mailbox_base = {d}/mail
virtual_mailbox_maps = texthash:{d}/conf/vmailbox
virtual_uid_maps = static:{MAIL_ID}
virtual_gid_maps = static:{MAIL_ID}
smtp_dns_support_level = disabled
smtpd_banner = $myhostname ESMTP downstream
alias_maps =
alias_database =
relayhost =
"
        );
        std::fs::write(self.path("conf/main.cf"), main).unwrap();
        let map: String = users.iter().map(|u| format!("{u}@example.test {u}/\n")).collect();
        std::fs::write(self.path("conf/vmailbox"), map).unwrap();
        let master = format!(
            "127.0.0.1:{} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
virtual unix - n n - - virtual
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
",
            self.port
        );
        std::fs::write(self.path("conf/master.cf"), master).unwrap();
    }

    /// `postfix start`; whether it listens within [`START_LIMIT`].
    fn run(&mut self) -> bool {
        let status = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(self.path("conf"))
            .arg("start")
            .status()
            .expect("postfix is not installed: `cargo xtask test` installs it (Debian package postfix)");
        let started = Instant::now();
        while started.elapsed() < START_LIMIT {
            if self.master.is_none() {
                self.master =
                    std::fs::read_to_string(self.path("queue/pid/master.pid")).ok().and_then(|t| t.trim().parse().ok());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            if !status.success() && started.elapsed() > Duration::from_secs(2) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Stops it (SIGTERM to the master, which stops its children), waiting at most 10 s.
    pub fn stop(&mut self) {
        let Some(pid) = self.master.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let started = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Its children go when they notice; wait until nothing listens on the port any more.
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("maillog")).unwrap_or_default()
    }

    /// The messages delivered to `user`'s maildir so far (oldest first by name).
    pub fn delivered(&self, user: &str) -> Vec<Vec<u8>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.path(&format!("mail/{user}/new")))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
    }

    /// Waits (at most `limit`) until `user` has `n` messages, and returns them.
    pub fn wait_delivered(&self, user: &str, n: usize, limit: Duration) -> Vec<Vec<u8>> {
        let started = Instant::now();
        loop {
            let got = self.delivered(user);
            if got.len() >= n || started.elapsed() > limit {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many SMTP connections its smtpd accepted (`connect from` lines of its log).
    pub fn connections(&self) -> usize {
        self.log().lines().filter(|l| l.contains("postfix/smtpd") && l.contains(": connect from ")).count()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop();
    }
}

fn chown(path: &Path, owner: &str) {
    let ok = Command::new("chown").arg(owner).arg(path).status().is_ok_and(|s| s.success());
    assert!(ok, "chown {owner} {}", path.display());
}
