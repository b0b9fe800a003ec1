//! A private `redis-server` for the tests (Debian's package, which `cargo xtask test` installs):
//! on 127.0.0.1 and a port of its own, with its config, data directory and log in a directory
//! of its own, no persistence, and stopped by its PID on drop (the system's Redis, if any, is
//! never touched). Optionally a Redis Cluster of one node with every slot, which refuses an
//! operation over keys of two slots (CROSSSLOT) as a real cluster does.
//!
//! Self-contained (std only): `crates/host/tests/stores.rs` includes this file too.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long redis-server may take to answer after it is started.
const START_LIMIT: Duration = Duration::from_secs(10);
/// How many ports are tried when redis-server cannot bind the one picked.
const START_ATTEMPTS: u32 = 5;

/// A running redis-server.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    cluster: bool,
}

impl RedisServer {
    /// Starts one on a free loopback port.
    pub fn start() -> RedisServer {
        RedisServer::start_with(false)
    }

    /// Starts a one-node Redis Cluster that holds every slot.
    pub fn start_cluster() -> RedisServer {
        RedisServer::start_with(true)
    }

    fn start_with(cluster: bool) -> RedisServer {
        // A port that was free a moment ago; another process may take it first, so try again.
        for _ in 0..START_ATTEMPTS {
            let mut server = RedisServer::stopped(free_port());
            server.cluster = cluster;
            if server.run() {
                return server;
            }
        }
        panic!("could not start redis-server on a free loopback port");
    }

    /// One that is not running yet, for `port` (start it with [`RedisServer::run`]).
    pub fn stopped(port: u16) -> RedisServer {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wasmtpd-redis-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        RedisServer { child: None, port, dir, cluster: false }
    }

    /// The path of redis-server; a test fails (never passes) without it.
    fn binary() -> &'static str {
        for path in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] {
            if Path::new(path).is_file() {
                return path;
            }
        }
        panic!("redis-server is not installed: `cargo xtask test` installs it (Debian package redis-server)")
    }

    /// Starts it on its port with its own config; whether it answers within [`START_LIMIT`].
    pub fn run(&mut self) -> bool {
        let config = self.dir.join("redis.conf");
        let mut text = format!(
            "bind 127.0.0.1\nport {}\ndir {}\nsave \"\"\nappendonly no\ndaemonize no\nlogfile {}\nprotected-mode yes\n",
            self.port,
            self.dir.display(),
            self.dir.join("redis.log").display()
        );
        if self.cluster {
            text.push_str(&format!(
                "cluster-enabled yes\ncluster-config-file {}\n",
                self.dir.join("nodes.conf").display()
            ));
        }
        std::fs::write(&config, text).unwrap();
        let child = Command::new(Self::binary())
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < START_LIMIT {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return !self.cluster || self.take_every_slot();
            }
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The one node of a cluster takes all 16384 slots; whether the cluster is up in time.
    fn take_every_slot(&self) -> bool {
        if !self.command(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]).contains("+OK") {
            return false;
        }
        let started = Instant::now();
        while started.elapsed() < START_LIMIT {
            if self.command(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Sends one command (RESP) and returns what came back within a second, as text.
    pub fn command(&self, args: &[&str]) -> String {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).unwrap();
        let mut out = Vec::new();
        let mut buf = [0; 4096];
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(1) {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                // Nothing more for a while: the reply is complete.
                Err(_) if !out.is_empty() => break,
                Err(_) => {}
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends it a signal by its PID (`STOP`, `CONT`, ...).
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status().unwrap();
        assert!(ok.success(), "kill -{signal} {}", self.pid());
    }

    /// Stops it (SIGKILL, by its PID) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: it keeps nothing).
    pub fn restart(&mut self) {
        self.stop();
        assert!(self.run(), "redis-server did not start again on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
