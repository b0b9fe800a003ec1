//! The test harness: starts the real `wasmtpd` binary on `127.0.0.1:0` with a config directory
//! of the test's own, and speaks SMTP to it over real sockets.
//!
//! - [`TestServer::start`] writes the config files, starts the server, reads the port it
//!   printed, and kills it on drop (its log is kept in the test's directory for assertions).
//! - [`Client`] is a blocking SMTP client with reply-code expectations; bytes are sent exactly
//!   as given, so tests can send what a real client never would. It can switch to TLS.
//! - [`tls`]: a certificate authority per test, and the client side of TLS.
//! - [`dkim`]: a DKIM key for a test zone, and messages signed with it.
//! - [`dns`]: name servers for the DNS tests (a private nsd with the test's zones, one that
//!   never answers, one that answers SERVFAIL).
//! - [`postfix`]: a private Postfix the delivery tests forward to (maildirs under the test's
//!   directory, XCLIENT allowed, its log in a file); [`dovecot`]: a private Dovecot LMTP.

pub mod clamd;
pub mod daemon;
pub mod dkim;
pub mod dns;
pub mod dovecot;
pub mod postfix;
pub mod redis;
pub mod rspamd;
pub mod spamd;
pub mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Where `cargo xtask build-plugins` puts the plugin components.
pub fn plugin_dir() -> PathBuf {
    repo_root().join("target").join("plugins")
}

/// Compiled plugins, shared by every test server of a run (compiling is the slow part of start-up).
pub fn plugin_cache() -> PathBuf {
    repo_root().join("target").join("test-plugin-cache")
}

/// The `wasmtpd` binary, built once per test run if it is missing or stale, together with the
/// plugins (`cargo xtask build-plugins`).
pub fn server_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--package", "wasmtpd", "--bin", "wasmtpd"])
            .current_dir(repo_root())
            .status()
            .expect("running cargo build for wasmtpd");
        assert!(status.success(), "cargo build -p wasmtpd failed");
        let status = Command::new(env!("CARGO"))
            .args(["run", "--quiet", "--package", "xtask", "--", "build-plugins"])
            .current_dir(repo_root())
            .status()
            .expect("running cargo xtask build-plugins");
        assert!(status.success(), "cargo xtask build-plugins failed");
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from);
        target.join("debug").join("wasmtpd")
    })
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "wasmtpd-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server command for the state under `dir` (`dir/state`), with the built plugins and
/// the shared plugin cache; the caller adds `--config` and `--listen`.
pub fn server_command(dir: &Path) -> Command {
    let mut c = Command::new(server_binary());
    c.arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--plugin-dir")
        .arg(plugin_dir())
        .arg("--plugin-cache")
        .arg(plugin_cache());
    c
}

/// Starts the server on the config and state under `dir`, with `args` added; returns it, its
/// plain address and (with `--listen-tls` in `args`) its implicit-TLS address. The address of
/// a `--listen-proxy` listener is in `PROXY_ADDR_FILE` of `dir`, for [`TestServer::proxy_addr`].
fn spawn(dir: &Path, args: &[String]) -> (Child, SocketAddr, Option<SocketAddr>) {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("server.log")).unwrap();
    let mut child = server_command(dir)
        .arg("--config")
        .arg(dir.join("config"))
        .args(["--listen", "127.0.0.1:0"])
        .args(["--log", "info,wasmtpd=debug,wasmtpd_host=debug"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("starting wasmtpd");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let listeners = 1 + args.iter().filter(|a| *a == "--listen-tls" || *a == "--listen-proxy").count();
    let (mut plain, mut tls) = (None, None);
    for _ in 0..listeners {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let Some(addr) = line.trim().strip_prefix("wasmtpd listening on ") else {
            let _ = child.wait();
            panic!(
                "server did not start: {line:?}\n{}",
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            );
        };
        if let Some(a) = addr.strip_suffix(" (PROXY)") {
            std::fs::write(dir.join(PROXY_ADDR_FILE), a).unwrap();
            continue;
        }
        match addr.strip_suffix(" (TLS)") {
            Some(a) => tls = Some(a.parse().unwrap()),
            None => plain = Some(addr.parse().unwrap()),
        }
    }
    (child, plain.expect("a plain listener"), tls)
}

/// The rights the standard plugins need to do their job (the default configuration grants
/// the first two): `rights` lines for those in the chain (`config/plugins`, without `$include`)
/// are appended to the test's `config/sandbox`, so tests of what they do need not repeat them.
/// Fixtures get no rights unless a test grants them.
pub const STANDARD_RIGHTS: &[(&str, &str)] = &[
    ("rcpt_ok", "accept-recipient"),
    ("queue/maildir", "queue"),
    ("queue/discard", "queue"),
    ("queue/smtp-forward", "queue"),
    ("queue/lmtp", "queue"),
    ("auth_flat_file", "authenticate"),
    ("relay", "relay-client accept-recipient"),
];

/// `files` with [`STANDARD_RIGHTS`] added to `sandbox` for the standard plugins in `plugins`.
pub fn with_standard_rights(files: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = files.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
    let chain = files.iter().find(|(n, _)| *n == "plugins").map_or("", |(_, t)| *t);
    let mut rights = String::new();
    for line in chain.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let instance = line.split_whitespace().next().unwrap_or_default();
        let name = instance.split(':').next().unwrap_or_default();
        if let Some((_, right)) = STANDARD_RIGHTS.iter().find(|(p, _)| *p == name) {
            rights.push_str(&format!("{instance} rights {right}\n"));
        }
    }
    if rights.is_empty() {
        return out;
    }
    match out.iter_mut().find(|(n, _)| n == "sandbox") {
        Some((_, text)) => {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&rights);
        }
        None => out.push(("sandbox".to_string(), rights)),
    }
    out
}

/// Where [`spawn`] leaves the address of a `--listen-proxy` listener.
const PROXY_ADDR_FILE: &str = "proxy-listener";

/// A running server process.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The implicit-TLS listener, when started with `--listen-tls`.
    pub tls_addr: Option<SocketAddr>,
    pub dir: TempDir,
    args: Vec<String>,
    child: Child,
}

impl TestServer {
    /// Starts the server with these config files (name, contents) in its config directory.
    pub fn start(files: &[(&str, &str)]) -> TestServer {
        TestServer::start_in(TempDir::new("server"), files)
    }

    /// As [`TestServer::start`], in a directory the test prepared (its state directory is
    /// `dir/state`, which may be a small file system the test mounted, say).
    pub fn start_in(dir: TempDir, files: &[(&str, &str)]) -> TestServer {
        TestServer::start_with_args(dir, files, &[])
    }

    /// As [`TestServer::start_in`], with extra command-line arguments (`--listen-tls ...`).
    /// The standard plugins of the chain get their standard rights ([`with_standard_rights`]).
    pub fn start_with_args(dir: TempDir, files: &[(&str, &str)], args: &[&str]) -> TestServer {
        let config = dir.0.join("config");
        let files = with_standard_rights(files);
        for (name, text) in &files {
            let p = config.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        std::fs::create_dir_all(&config).unwrap();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let (child, addr, tls_addr) = spawn(&dir.0, &args);
        TestServer { addr, tls_addr, dir, args, child }
    }

    /// The config directory (tests may change files in it while the server runs).
    pub fn config_dir(&self) -> PathBuf {
        self.dir.0.join("config")
    }

    /// Kills the server with SIGKILL (no chance to clean up), then starts it again on the same
    /// config and state directory (and a new port).
    pub fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, addr, tls_addr) = spawn(&self.dir.0, &self.args);
        self.child = child;
        self.addr = addr;
        self.tls_addr = tls_addr;
    }

    /// The standard chain: accept mail for `example.com` into the maildir `maildir` (under the
    /// state directory), with queue/maildir granted that directory as `/maildir`. Files in
    /// `extra` replace the defaults of the same name.
    pub fn start_delivering(extra: &[(&str, &str)]) -> TestServer {
        let mut files = vec![
            ("me", "mx.test"),
            ("rcpthosts", "example.com\n"),
            ("plugins", "rcpt_ok\nqueue/maildir /maildir\n"),
            ("sandbox", "queue/maildir grant-dir maildir /maildir rw\n"),
        ];
        for (name, text) in extra {
            files.retain(|(n, _)| n != name);
            files.push((name, text));
        }
        // The default grant names queue/maildir, which a chain of the test's own may not have.
        let chain = files.iter().find(|(n, _)| *n == "plugins").map_or("", |(_, t)| *t);
        if !chain.contains("queue/maildir") && !extra.iter().any(|(n, _)| *n == "sandbox") {
            files.retain(|(n, _)| *n != "sandbox");
        }
        TestServer::start(&files)
    }

    /// The plugins in `plugins` (one per line), then queue/maildir, accepting mail for
    /// example.com like [`TestServer::start_delivering`].
    pub fn start_with_chain(plugins: &str, extra: &[(&str, &str)]) -> TestServer {
        let chain = format!("{plugins}\nqueue/maildir /maildir\n");
        let mut files: Vec<(&str, &str)> = vec![("plugins", chain.as_str())];
        files.extend_from_slice(extra);
        TestServer::start_delivering(&files)
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// The address of the `--listen-proxy` listener the server was started with.
    pub fn proxy_addr(&self) -> SocketAddr {
        let text = std::fs::read_to_string(self.dir.0.join(PROXY_ADDR_FILE)).expect("started with --listen-proxy");
        text.parse().unwrap()
    }

    /// Connects and reads the 220 greeting.
    pub fn greeted(&self) -> Client {
        let mut c = self.connect();
        c.expect(220);
        c
    }

    /// Connects from `source` ([`Client::connect_from`]) and reads the 220 greeting.
    pub fn greeted_from(&self, source: IpAddr) -> Client {
        let mut c = Client::connect_from(self.addr, source);
        c.expect(220);
        c
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("server.log")).unwrap_or_default()
    }

    /// Messages delivered to the maildir `maildir`, oldest first.
    pub fn delivered(&self) -> Vec<Vec<u8>> {
        let new = self.dir.0.join("state/maildir/new");
        let mut files: Vec<_> =
            std::fs::read_dir(new).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        // Maildir names are `<secs>.M<micros>.<id>...` with unpadded numbers: order by their values,
        // not by the text ("M999" would sort after "M1000").
        files.sort_by_key(|f| {
            let name = f.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let mut parts = name.splitn(3, '.');
            let secs: u64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let micros: u64 = parts.next().and_then(|p| p.strip_prefix('M')).and_then(|p| p.parse().ok()).unwrap_or(0);
            (secs, micros, name)
        });
        files.iter().map(|f| std::fs::read(f).unwrap()).collect()
    }

    /// Files in the incoming spool (should be empty between transactions).
    pub fn spool_files(&self) -> usize {
        std::fs::read_dir(self.dir.0.join("state/spool")).map(|d| d.count()).unwrap_or(0)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends a signal (`HUP`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        Command::new("kill").args([&format!("-{name}"), &self.pid().to_string()]).status().unwrap();
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Peak resident memory of the server process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A reply as read from the wire.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    /// The text lines, without the `NNN-`/`NNN ` prefix.
    pub lines: Vec<String>,
}

impl Reply {
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// A blocking SMTP client that sends exactly the bytes it is given.
pub struct Client {
    stream: Option<tls::ClientStream>,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::over(TcpStream::connect(addr).unwrap())
    }

    /// Connects from the address `source` (any of 127.0.0.0/8 is local on Linux, so a test
    /// can be a client at 127.0.0.2, say, which a test DNS list lists).
    pub fn connect_from(addr: SocketAddr, source: IpAddr) -> Client {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).unwrap();
        socket.bind(&SocketAddr::new(source, 0).into()).unwrap_or_else(|e| panic!("binding to {source}: {e}"));
        socket.connect(&addr.into()).unwrap_or_else(|e| panic!("connecting from {source} to {addr}: {e}"));
        Client::over(socket.into())
    }

    /// A client on a connected stream, with the read timeout and no Nagle delay.
    /// A client on a stream the test connected itself.
    pub fn over(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream: Some(tls::ClientStream::Plain(stream)), buf: Vec::new() }
    }

    /// Connects to an implicit-TLS listener: the handshake (SNI `server_name`) comes first.
    pub fn connect_tls(addr: SocketAddr, ca: &tls::TestCa, server_name: &str) -> Client {
        let mut c = Client::connect(addr);
        c.start_tls(ca, server_name).expect("TLS handshake");
        c
    }

    /// Runs a TLS handshake on the connection as it is (after `220 Ready to start TLS`, or at
    /// once on an implicit-TLS port); returns the server's certificate (DER).
    pub fn start_tls(&mut self, ca: &tls::TestCa, server_name: &str) -> std::io::Result<Vec<u8>> {
        assert!(self.buf.is_empty(), "unread bytes before the handshake: {:?}", String::from_utf8_lossy(&self.buf));
        let (stream, peer) = self.stream.take().unwrap().upgrade(ca.client_config(), server_name)?;
        self.stream = Some(stream);
        Ok(peer)
    }

    /// `TLSv1_3`, `TLSv1_2`, or `None` on a plain connection.
    pub fn tls_version(&self) -> Option<String> {
        self.stream.as_ref().unwrap().tls_version()
    }

    fn stream(&mut self) -> &mut tls::ClientStream {
        self.stream.as_mut().expect("connection lost in a failed handshake")
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream().write_all(bytes.as_ref()).unwrap();
    }

    /// Sends bytes; false if the server has closed the connection.
    pub fn try_send(&mut self, bytes: impl AsRef<[u8]>) -> bool {
        self.stream().write_all(bytes.as_ref()).is_ok()
    }

    /// Sends one command line with CRLF.
    pub fn line(&mut self, line: &str) {
        self.send(format!("{line}\r\n"));
    }

    /// Reads one whole (possibly multi-line) reply; `None` on EOF.
    pub fn read_reply(&mut self) -> Option<Reply> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line()?;
            assert!(line.len() >= 3, "short reply line {line:?}");
            let code: u16 = line[..3].parse().unwrap_or_else(|_| panic!("bad reply line {line:?}"));
            let sep = line.as_bytes().get(3).copied().unwrap_or(b' ');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if sep == b' ' {
                return Some(Reply { code, lines });
            }
        }
    }

    fn read_line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8(self.buf[..i].to_vec()).expect("reply is UTF-8");
                self.buf.drain(..i + 2);
                return Some(line);
            }
            let mut chunk = [0u8; 4096];
            match self.stream().read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                // A signal (a child's exit, say) may cut a read short; std's own loops retry.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // A TLS peer that closes without close_notify reads as UnexpectedEof.
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof) =>
                {
                    return None;
                }
                Err(e) => panic!("reading reply: {e}"),
            }
        }
    }

    /// Reads a reply and checks its code.
    #[track_caller]
    pub fn expect(&mut self, code: u16) -> Reply {
        let r = self.read_reply().unwrap_or_else(|| panic!("connection closed, expected {code}"));
        assert_eq!(r.code, code, "expected {code}, got {r:?}");
        r
    }

    /// Sends a command and checks the reply's code.
    #[track_caller]
    pub fn cmd(&mut self, line: &str, code: u16) -> Reply {
        self.line(line);
        self.expect(code)
    }

    /// True once the server has closed the connection (reads EOF, nothing else pending).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream().read(&mut b), Ok(0) | Err(_))
    }

    /// EHLO, MAIL, RCPT; ready for DATA.
    pub fn envelope(&mut self, from: &str, to: &[&str]) {
        self.cmd("EHLO client.test", 250);
        self.cmd(&format!("MAIL FROM:<{from}>"), 250);
        for t in to {
            self.cmd(&format!("RCPT TO:<{t}>"), 250);
        }
    }

    /// DATA, the (already dot-stuffed) body, the terminator; returns the final reply.
    pub fn data(&mut self, body: &[u8]) -> Reply {
        self.cmd("DATA", 354);
        self.send(body);
        self.send(b"\r\n.\r\n");
        self.read_reply().expect("reply to end of data")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_connects_from_the_loopback_address_it_is_given() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let source: IpAddr = "127.0.0.2".parse().unwrap();
        let _client = Client::connect_from(listener.local_addr().unwrap(), source);
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), source);
    }
}
