//! Sessions tested in memory: the real engine (transport, handlers, verdict table) over an
//! in-memory duplex, with a scripted [`HookRunner`] (a table of hook → verdict) instead of
//! plugins. Each test is a transcript: what the client sends, what it must hear, and which
//! hooks ran with what. Time is tokio's paused clock where a test waits on a limit, so a
//! five-minute timeout takes no time.
//!
//! The end-to-end tests (`tests/tests/e2e/`) prove the binary, real sockets, real clients and
//! real plugins; these cover the protocol detail.

mod auth;
mod bdat;
mod data;
mod limits;
mod pipelining;
mod proxy;
mod starttls;
mod verdicts;
mod xclient;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wasmtpd_smtp::session::Connection;
use wasmtpd_smtp::{Content, Hook, HookArgs, HookContext, HookResult, HookRunner, Mechanism, Offer, Session, Verdict};

use crate::Shared;
use crate::admission::Admission;
use crate::auth::AuthFailures;
use crate::config::{Config, ConfigSource};
use crate::spool::Spool;
use crate::tls::Tls;

/// What a hook saw when it ran.
#[derive(Debug, Clone)]
pub(super) struct Call {
    pub hook: Hook,
    /// The arguments, as `{:?}` of [`HookArgs`] (with any password redacted by `Secret`).
    pub args: String,
    /// The open transaction's id, if any.
    pub transaction: Option<String>,
    /// The message as spooled (with our Received header), once DATA has ended.
    pub message: Option<Vec<u8>>,
    pub hello: Option<String>,
    pub tls: bool,
    pub relay_client: bool,
    pub authenticated: Option<String>,
    /// The client's address as the hook saw it.
    pub remote: SocketAddr,
}

/// What a hook does to the session besides answering (as a plugin may, through the host).
pub(super) type Effect = fn(&mut HookContext<'_>);

/// The scripted runner: each hook answers from its queue of results (then declines), or with
/// its fixed result; every call is recorded.
#[derive(Default)]
pub(super) struct Scripted {
    queued: Mutex<HashMap<Hook, VecDeque<HookResult>>>,
    fixed: HashMap<Hook, HookResult>,
    effects: HashMap<Hook, Effect>,
    implemented: Vec<Hook>,
    calls: Arc<Mutex<Vec<Call>>>,
    scopes: Arc<AtomicUsize>,
}

impl Scripted {
    /// `hook` answers `verdict` every time.
    pub fn answer(mut self, hook: Hook, verdict: Verdict) -> Self {
        self.fixed.insert(hook, HookResult::new(verdict).from_plugin("scripted"));
        self
    }

    /// `hook` answers `result` every time.
    pub fn result(mut self, hook: Hook, result: HookResult) -> Self {
        self.fixed.insert(hook, result);
        self
    }

    /// `hook` answers these results in turn, then as scripted otherwise.
    pub fn queue(self, hook: Hook, results: impl IntoIterator<Item = HookResult>) -> Self {
        self.queued.lock().unwrap().entry(hook).or_default().extend(results);
        self
    }

    pub fn effect(mut self, hook: Hook, effect: Effect) -> Self {
        self.effects.insert(hook, effect);
        self
    }

    /// Some plugin implements `hook` (the engine offers AUTH only then).
    pub fn implementing(mut self, hook: Hook) -> Self {
        self.implemented.push(hook);
        self
    }

    /// A session that gets as far as a message: every recipient accepted, the message queued.
    pub fn accepting() -> Self {
        Scripted::default().answer(Hook::Rcpt, Verdict::Ok).answer(Hook::Queue, Verdict::Ok)
    }
}

impl HookRunner for Scripted {
    type Scope = ();

    fn open_scope(&self) {
        self.scopes.fetch_add(1, Ordering::Relaxed);
    }

    fn implements(&self, hook: Hook) -> bool {
        self.implemented.contains(&hook) || self.fixed.contains_key(&hook)
    }

    async fn run(&self, _: &mut (), hook: Hook, args: HookArgs<'_>, mut ctx: HookContext<'_>) -> HookResult {
        let message = ctx.transaction.as_ref().and_then(|t| t.message.as_ref()).map(|m| match &m.content {
            Content::Memory(bytes) => bytes.to_vec(),
            Content::File(path) => std::fs::read(path).unwrap(),
        });
        self.calls.lock().unwrap().push(Call {
            hook,
            args: format!("{args:?}"),
            transaction: ctx.transaction.as_ref().map(|t| t.id.clone()),
            message,
            hello: ctx.connection.hello.as_ref().map(|h| h.host.clone()),
            tls: ctx.connection.tls.is_some(),
            relay_client: ctx.connection.relay_client,
            authenticated: ctx.connection.auth.as_ref().map(|a| a.user.clone()),
            remote: ctx.connection.remote,
        });
        if let Some(effect) = self.effects.get(&hook) {
            effect(&mut ctx);
        }
        if let Some(r) = self.queued.lock().unwrap().get_mut(&hook).and_then(VecDeque::pop_front) {
            return r;
        }
        self.fixed.get(&hook).cloned().unwrap_or_else(HookResult::declined)
    }
}

/// How a test's server is set up.
pub(super) struct Setup {
    pub runner: Scripted,
    pub config: Config,
    pub starttls: bool,
    pub implicit_tls: bool,
    /// Where the client connects from.
    pub remote: SocketAddr,
    /// A PROXY listener.
    pub proxy: bool,
}

impl Setup {
    pub fn new(runner: Scripted) -> Self {
        let mut config = Config::load(ConfigSource::Embedded).expect("the embedded config loads");
        config.me = "mx.test".to_string();
        config.greeting = None;
        // Messages stay in memory unless a test wants the spool file.
        config.limits.spool_threshold = 1 << 20;
        config.auth.failure_delay = Duration::ZERO;
        let remote = "192.0.2.7:40000".parse().unwrap();
        Setup { runner, config, starttls: false, implicit_tls: false, remote, proxy: false }
    }

    pub fn config(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(&mut self.config);
        self
    }

    fn listener(&self) -> crate::ListenerKind {
        crate::ListenerKind { implicit_tls: self.implicit_tls, proxy: self.proxy }
    }

    /// A PROXY listener: the client must send a PROXY header first.
    pub fn proxy(mut self) -> Self {
        self.proxy = true;
        self
    }

    /// The client connects from `remote`.
    pub fn from(mut self, remote: &str) -> Self {
        self.remote = remote.parse().expect("an address");
        self
    }

    /// A certificate for `mx.test`, and STARTTLS offered.
    pub fn starttls(mut self) -> Self {
        self.starttls = true;
        self
    }

    /// Connects a client; the greeting is not read yet.
    pub async fn connect(self) -> Client {
        let listener = self.listener();
        let dir = TempDir::new();
        let (tls, client_tls) = if self.starttls || self.implicit_tls {
            let cert = TestCertificate::new(&dir.0);
            (
                Tls::load(std::slice::from_ref(&cert.files), &dir.0).expect("certificate loads"),
                Some(cert.client_config()),
            )
        } else {
            (Tls::load(&[], &dir.0).expect("no certificates"), None)
        };
        let runner = self.runner;
        let calls = runner.calls.clone();
        let scopes = runner.scopes.clone();
        let auth_mechanisms: Vec<Mechanism> = Mechanism::ALL
            .into_iter()
            .filter(|m| runner.implements(Hook::for_mechanism(*m)) || runner.implements(Hook::Auth))
            .collect();
        let config = self.config;
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            auth_failures: AuthFailures::new(&config.auth),
            spool: Spool::open(dir.0.join("spool")).expect("spool"),
            tls: Arc::new(tls),
            auth_mechanisms: auth_mechanisms.clone(),
            authenticator: None,
            shutdown: shutdown.clone(),
            runner,
            config,
        });
        let remote = self.remote;
        let local: SocketAddr = "198.51.100.1:25".parse().unwrap();
        let xclient = shared.config.frontends.may_xclient(remote.ip());
        let offer = Offer { starttls: self.starttls, auth_mechanisms, auth_without_tls: true, xclient };
        let session =
            Session::new(Connection::new("t1".into(), remote, local), shared.config.limits.clone()).with_offer(offer);
        let admission = Admission::new(10, 10);
        let ticket = admission.admit(remote.ip());
        let (client, server) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(super::serve(server, listener, shared, session, ticket));
        Client { io: ClientIo::Plain(client), read: Vec::new(), task, calls, scopes, shutdown, client_tls, _dir: dir }
    }
}

/// The client side of a session in memory.
pub(super) struct Client {
    io: ClientIo,
    read: Vec<u8>,
    task: JoinHandle<()>,
    calls: Arc<Mutex<Vec<Call>>>,
    scopes: Arc<AtomicUsize>,
    shutdown: CancellationToken,
    client_tls: Option<Arc<rustls::ClientConfig>>,
    _dir: TempDir,
}

/// How long a test waits for a reply before it fails (virtual time under a paused clock).
const REPLY_WAIT: Duration = Duration::from_secs(3600);

impl Client {
    /// Sends bytes as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("send");
        self.io.flush().await.expect("flush");
    }

    /// Reads one whole reply (all its lines), as text with CRLFs.
    pub async fn reply(&mut self) -> String {
        match self.next_reply().await {
            Some(reply) => reply,
            None => panic!("no reply; unread: {:?}", String::from_utf8_lossy(&self.read)),
        }
    }

    /// The next whole reply, or `None` if the server closed (or said nothing) first.
    async fn next_reply(&mut self) -> Option<String> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = reply_end(&self.read) {
                let reply: Vec<u8> = self.read.drain(..end).collect();
                return Some(String::from_utf8(reply).expect("replies are UTF-8"));
            }
            match tokio::time::timeout(REPLY_WAIT, self.io.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.read.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sends a command line and reads its reply.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Sends a command line and checks its reply's code; returns the reply.
    pub async fn expect(&mut self, line: &str, code: u16) -> String {
        let reply = self.cmd(line).await;
        assert_eq!(code_of(&reply), code, "{line} -> {reply}");
        reply
    }

    /// Reads the greeting and says EHLO.
    pub async fn ehlo(&mut self) {
        let greeting = self.reply().await;
        assert_eq!(code_of(&greeting), 220, "{greeting}");
        self.expect("EHLO client.test", 250).await;
    }

    /// Reads the greeting, then EHLO, `MAIL FROM:<a@b.test>`, `RCPT TO:<c@d.test>` and DATA,
    /// each accepted: the server waits for the message.
    pub async fn start_message(&mut self) {
        self.ehlo().await;
        self.expect("MAIL FROM:<a@b.test>", 250).await;
        self.expect("RCPT TO:<c@d.test>", 250).await;
        self.expect("DATA", 354).await;
    }

    /// Whether the server closed the connection (having nothing more to say).
    pub async fn closed(&mut self) -> bool {
        let wait = async {
            let mut chunk = [0u8; 4096];
            loop {
                match self.io.read(&mut chunk).await {
                    Ok(0) | Err(_) => return self.read.is_empty(),
                    Ok(n) => self.read.extend_from_slice(&chunk[..n]),
                }
            }
        };
        let closed = tokio::time::timeout(REPLY_WAIT, wait).await.unwrap_or(false);
        closed && self.task_ends().await
    }

    /// Closes the client's side of the connection.
    pub async fn hang_up(&mut self) {
        let _ = self.io.shutdown().await;
    }

    pub(super) async fn task_ends(&mut self) -> bool {
        tokio::time::timeout(REPLY_WAIT, &mut self.task).await.is_ok()
    }

    /// Whether the session is still open: a RSET (which no hook decides) is answered.
    pub async fn still_open(&mut self) -> bool {
        self.send(b"RSET\r\n").await;
        self.next_reply().await.is_some_and(|r| r.starts_with("250"))
    }

    /// The hooks that ran, in order.
    pub fn hooks(&self) -> Vec<Hook> {
        self.calls.lock().unwrap().iter().map(|c| c.hook).collect()
    }

    /// The calls of `hook`, in order.
    pub fn calls_of(&self, hook: Hook) -> Vec<Call> {
        self.calls.lock().unwrap().iter().filter(|c| c.hook == hook).cloned().collect()
    }

    /// How many times the runner opened a scope (once per connection, again after STARTTLS).
    pub fn scopes(&self) -> usize {
        self.scopes.load(Ordering::Relaxed)
    }

    /// Starts the server's shutdown.
    pub fn shut_down(&self) {
        self.shutdown.cancel();
    }

    /// The TLS handshake, after the server's 220 to STARTTLS.
    pub async fn start_tls(&mut self) {
        let config = self.client_tls.clone().expect("set up with starttls()");
        let ClientIo::Plain(plain) = std::mem::replace(&mut self.io, ClientIo::None) else {
            panic!("already TLS");
        };
        let name = rustls::pki_types::ServerName::try_from("mx.test").unwrap();
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, plain).await.expect("TLS handshake");
        self.io = ClientIo::Tls(Box::new(tls));
    }
}

/// Where the first whole reply in `buf` ends: after the CRLF of a line whose code is followed
/// by a space (or nothing).
fn reply_end(buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(i) = buf[start..].windows(2).position(|w| w == b"\r\n") {
        let line = &buf[start..start + i];
        start += i + 2;
        if line.len() == 3 || line.get(3) == Some(&b' ') {
            return Some(start);
        }
    }
    None
}

/// The code of a reply.
pub(super) fn code_of(reply: &str) -> u16 {
    reply.get(..3).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("not a reply: {reply:?}"))
}

/// A message as a client sends it after 354 (already dot-stuffed, ending in CRLF.CRLF).
pub(super) const MESSAGE: &[u8] = b"Subject: test\r\n\r\nHello.\r\n..a line that starts with a dot\r\n.\r\n";

/// What a queue plugin sees of [`MESSAGE`] after our Received header.
pub(super) const MESSAGE_SPOOLED: &[u8] = b"Subject: test\r\n\r\nHello.\r\n.a line that starts with a dot\r\n";

/// The message text after the server's Received header (which a spooled message begins with).
pub(super) fn without_received(message: &[u8]) -> &[u8] {
    assert!(message.starts_with(b"Received: "), "{:?}", String::from_utf8_lossy(message));
    // The header's continuation lines start with white space; the message follows it.
    let mut at = 0;
    loop {
        let end = at + message[at..].windows(2).position(|w| w == b"\r\n").expect("a header line") + 2;
        at = end;
        if !matches!(message.get(at), Some(b' ' | b'\t')) {
            return &message[at..];
        }
    }
}

enum ClientIo {
    Plain(DuplexStream),
    Tls(Box<tokio_rustls::client::TlsStream<DuplexStream>>),
    None,
}

impl AsyncRead for ClientIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientIo::Tls(s) => Pin::new(s).poll_read(cx, buf),
            ClientIo::None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientIo::Tls(s) => Pin::new(s).poll_write(cx, buf),
            ClientIo::None => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientIo::Tls(s) => Pin::new(s).poll_flush(cx),
            ClientIo::None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientIo::Tls(s) => Pin::new(s).poll_shutdown(cx),
            ClientIo::None => Poll::Ready(Ok(())),
        }
    }
}

/// A directory of the test's own, removed when it ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wasmtpd-transcript-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate for `mx.test`, written to `dir`.
struct TestCertificate {
    files: crate::tls::CertificateFiles,
    der: rustls::pki_types::CertificateDer<'static>,
}

impl TestCertificate {
    fn new(dir: &std::path::Path) -> TestCertificate {
        let certified = rcgen::generate_simple_self_signed(vec!["mx.test".to_string()]).expect("certificate");
        let (chain, key) = (dir.join("mx.test.pem"), dir.join("mx.test.key"));
        std::fs::write(&chain, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let files = crate::tls::CertificateFiles {
            chain,
            key,
            origin: crate::config::Origin { file: "test".to_string(), line: 1 },
        };
        TestCertificate { files, der: certified.cert.der().clone() }
    }

    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}
