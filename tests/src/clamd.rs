//! A private `clamd` for the tests (Debian's clamav-daemon, which `cargo xtask test` installs
//! without starting it): in the foreground, on 127.0.0.1 and a port of its own, with its
//! config, log and a signature database of the test's own in a directory of its own, stopped
//! by its PID on drop. No official signatures exist offline (freshclam never runs); the
//! database holds one `.ndb` signature matching [`TEST_VIRUS`], which clamd reports as
//! [`TEST_VIRUS_NAME`].

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long clamd may take to answer PING after it is started (it compiles its engine first,
/// slowly on a busy machine).
const START_LIMIT: Duration = Duration::from_secs(90);
/// How many ports are tried when clamd cannot bind the one picked.
const START_ATTEMPTS: u32 = 3;

/// Text the test signature matches, anywhere in a message.
pub const TEST_VIRUS: &str = "WASMTPD-TEST-VIRUS-7f3a9c";
/// The name clamd gives it (a signature not from ClamAV's own databases is `.UNOFFICIAL`).
pub const TEST_VIRUS_NAME: &str = "Wasmtpd.Test.Sig-1.UNOFFICIAL";

/// A running clamd.
pub struct Clamd {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl Clamd {
    /// Starts one on a free loopback port.
    pub fn start() -> Clamd {
        for _ in 0..START_ATTEMPTS {
            let mut clamd = Clamd::stopped(crate::redis::free_port());
            if clamd.run() {
                return clamd;
            }
        }
        panic!("could not start clamd on a free loopback port");
    }

    fn stopped(port: u16) -> Clamd {
        let dir = crate::daemon::scratch_dir("clamd");
        std::fs::create_dir_all(dir.join("db")).unwrap();
        let hex: String = TEST_VIRUS.bytes().map(|b| format!("{b:02x}")).collect();
        std::fs::write(dir.join("db/wasmtpd.ndb"), format!("Wasmtpd.Test.Sig-1:0:*:{hex}\n")).unwrap();
        Clamd { child: None, port, dir }
    }

    /// The path of clamd; a test fails (never passes) without it.
    fn binary() -> &'static str {
        let path = "/usr/sbin/clamd";
        if !Path::new(path).is_file() {
            panic!("clamd is not installed: `cargo xtask test` installs it (Debian package clamav-daemon)");
        }
        path
    }

    /// Starts it with its own config; whether it answers PING within [`START_LIMIT`].
    fn run(&mut self) -> bool {
        let config = self.dir.join("clamd.conf");
        let text = format!(
            "Foreground yes\nTCPSocket {}\nTCPAddr 127.0.0.1\nDatabaseDirectory {}\nPidFile {}\nLogFile {}\n\
             MaxThreads 4\nStreamMaxLength 100M\nSelfCheck 0\n",
            self.port,
            self.dir.join("db").display(),
            self.dir.join("clamd.pid").display(),
            self.dir.join("clamd.log").display()
        );
        std::fs::write(&config, text).unwrap();
        let child = Command::new(Self::binary())
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting clamd");
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < START_LIMIT {
            if self.ping() {
                return true;
            }
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.stop();
        false
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"zPING\0").is_err() {
            return false;
        }
        let mut out = Vec::new();
        let _ = s.take(64).read_to_end(&mut out);
        out.starts_with(b"PONG")
    }

    /// `NAME tcp 127.0.0.1:PORT` for `config/upstreams`, with `settings` after it.
    pub fn upstream_line(&self, name: &str, settings: &str) -> String {
        format!("{name} tcp 127.0.0.1:{} {settings}\n", self.port)
    }

    /// What clamd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("clamd.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Stops it (SIGKILL, by its PID) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
