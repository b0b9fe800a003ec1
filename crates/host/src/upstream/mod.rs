//! The named upstreams of `config/upstreams` (`wit/upstream.wit`): services the operator runs
//! next to the server (rspamd, spamd, clamd), each an address the plugins never see, with its
//! timeouts, its most connections and TLS. This module connects (by a deadline, within the
//! upstream's connection limit), keeps idle HTTP connections for reuse, and bounds what is read;
//! `http.rs` frames HTTP/1.1. Which plugin may use which upstream, and the per-call budget,
//! are the host module's (`imports/upstream.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::sandbox::Origin;

pub mod http;

/// Default time to connect.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default time per call after connecting (a scan takes a while).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The range `connect-timeout` and `timeout` may be set in.
pub const TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> = Duration::from_millis(1)..=Duration::from_secs(300);
/// Default most connections to one upstream, server-wide.
pub const DEFAULT_MAX_CONNECTIONS: usize = 32;
/// The most `max-connections` may be.
pub const MAX_CONNECTIONS: usize = 4096;
/// Default most octets read back from one connection or HTTP answer.
pub const DEFAULT_MAX_ANSWER: u64 = 1 << 20;
/// The range `max-answer` may be set in.
pub const MAX_ANSWER_RANGE: std::ops::RangeInclusive<u64> = 1..=64 << 20;
/// How long an idle HTTP connection is kept for reuse.
pub const IDLE_FOR: Duration = Duration::from_secs(10);

/// Where an upstream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `HOST:PORT` (an IP address or a name the system resolves).
    Tcp { host: String, port: u16 },
    /// A Unix socket's path.
    Unix(PathBuf),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Address::Tcp { host, port } => write!(f, "{host}:{port}"),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// TLS to an upstream over TCP: the certificates to trust, and the name to expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// A PEM file of the CA certificates trusted for this upstream (relative: to the config
    /// directory).
    pub ca: PathBuf,
    /// The name its certificate must carry (default: the host of its address).
    pub server_name: Option<String>,
}

/// One line of `config/upstreams`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    pub name: String,
    pub address: Address,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_connections: usize,
    pub max_answer: u64,
    pub tls: Option<TlsSettings>,
    pub origin: Origin,
}

impl UpstreamSettings {
    pub fn new(name: &str, address: Address, origin: Origin) -> UpstreamSettings {
        UpstreamSettings {
            name: name.to_string(),
            address,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_answer: DEFAULT_MAX_ANSWER,
            tls: None,
            origin,
        }
    }
}

/// An upstream's name: 1 to 64 of `a-z 0-9 _ -`, starting with a letter.
pub fn check_upstream_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    match ok {
        true => Ok(()),
        false => Err(format!(
            "`{}` is not an upstream name (1 to 64 of a-z, 0-9, `_`, `-`, starting with a letter)",
            name.escape_debug()
        )),
    }
}

/// `HOST:PORT` or `[IPV6]:PORT`.
pub fn parse_tcp_address(text: &str) -> Result<Address, String> {
    let bad = || format!("`{}` is not HOST:PORT", text.escape_debug());
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let (host, port) = rest.split_once("]:").ok_or_else(bad)?;
            host.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
            (host, port)
        }
        None => text.rsplit_once(':').ok_or_else(bad)?,
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
    if !host_ok || port == 0 {
        return Err(bad());
    }
    Ok(Address::Tcp { host: host.to_string(), port })
}

/// Why an upstream could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("timeout")]
    Timeout,
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("protocol: {0}")]
    Protocol(String),
}

/// A byte stream to an upstream: TCP, Unix or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// An open connection to an upstream, holding one of its connection slots until dropped.
pub struct Connection {
    stream: Pin<Box<dyn Stream>>,
    /// Octets read so far (bounded by `max-answer`).
    pub read: u64,
    max_answer: u64,
    timeout: Duration,
    upstream: Arc<Upstream>,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    /// The upstream it is to.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// The upstream's time per call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `data`, all of it, by `deadline`.
    pub async fn write_all(&mut self, data: &[u8], deadline: Instant) -> Result<(), UpstreamError> {
        match tokio::time::timeout_at(deadline, self.stream.write_all(data)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.io_error("writing to", e)),
            Err(_) => Err(UpstreamError::Timeout),
        }
    }

    pub async fn flush(&mut self, deadline: Instant) -> Result<(), UpstreamError> {
        match tokio::time::timeout_at(deadline, self.stream.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.io_error("writing to", e)),
            Err(_) => Err(UpstreamError::Timeout),
        }
    }

    /// At most `max` octets, as soon as there are any; empty at the end of the stream. Past
    /// `max-answer` octets read on this connection, `TooLarge`.
    pub async fn read(&mut self, max: usize, deadline: Instant) -> Result<Vec<u8>, UpstreamError> {
        let room = self.max_answer.saturating_sub(self.read);
        let mut buf = vec![0; max.min(room.saturating_add(1).min(usize::MAX as u64) as usize).max(1)];
        let n = match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(self.io_error("reading from", e)),
            Err(_) => return Err(UpstreamError::Timeout),
        };
        self.read += n as u64;
        if self.read > self.max_answer {
            return Err(self.too_large());
        }
        buf.truncate(n);
        Ok(buf)
    }

    /// Everything until the upstream closes its side, at most `max` octets (and `max-answer`).
    pub async fn read_to_end(&mut self, max: usize, deadline: Instant) -> Result<Vec<u8>, UpstreamError> {
        let mut out = Vec::new();
        loop {
            let chunk = self.read(64 << 10, deadline).await?;
            if chunk.is_empty() {
                return Ok(out);
            }
            if out.len() + chunk.len() > max {
                return Err(UpstreamError::TooLarge(format!("the answer is longer than the {max} octets asked for")));
            }
            out.extend_from_slice(&chunk);
        }
    }

    fn too_large(&self) -> UpstreamError {
        UpstreamError::TooLarge(format!(
            "upstream `{}` sent more than its max-answer of {} octets",
            self.upstream.settings.name, self.max_answer
        ))
    }

    fn io_error(&self, doing: &str, e: std::io::Error) -> UpstreamError {
        UpstreamError::Unavailable(format!("{doing} upstream `{}`: {e}", self.upstream.settings.name))
    }

    /// Back to the upstream's idle connections, for the next HTTP request.
    pub fn keep(mut self) {
        self.read = 0;
        let upstream = self.upstream.clone();
        let mut idle = upstream.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.push((std::time::Instant::now(), self));
    }
}

/// An upstream the server can connect to.
pub struct Upstream {
    pub settings: UpstreamSettings,
    slots: Arc<Semaphore>,
    tls: Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
    idle: Mutex<Vec<(std::time::Instant, Connection)>>,
}

/// The upstreams by name.
pub type Upstreams = BTreeMap<String, Arc<Upstream>>;

/// Makes ready the upstreams of `settings` (TLS certificates read, `base` the directory their
/// relative paths are taken from). An error names the line.
pub fn open(settings: &[UpstreamSettings], base: &std::path::Path) -> Result<Upstreams, String> {
    let mut out = Upstreams::new();
    for s in settings {
        let upstream = Upstream::new(s.clone(), base).map_err(|e| format!("{}: upstream {}: {e}", s.origin, s.name))?;
        out.insert(s.name.clone(), Arc::new(upstream));
    }
    Ok(out)
}

impl Upstream {
    pub fn new(settings: UpstreamSettings, base: &std::path::Path) -> Result<Upstream, String> {
        let tls = match (&settings.tls, &settings.address) {
            (None, _) => None,
            (Some(_), Address::Unix(_)) => return Err("TLS is for TCP upstreams".into()),
            (Some(t), Address::Tcp { host, .. }) => Some(tls_connector(t, host, base)?),
        };
        let slots = Arc::new(Semaphore::new(settings.max_connections));
        Ok(Upstream { settings, slots, tls, idle: Mutex::new(Vec::new()) })
    }

    /// An idle connection kept from an earlier HTTP request, if one is fresh enough.
    pub fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|(since, _)| since.elapsed() < IDLE_FOR);
        idle.pop().map(|(_, c)| c)
    }

    /// Idle connections kept now.
    pub fn idle_connections(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// A new connection by `deadline` (and the upstream's `connect-timeout`): a slot of its
    /// `max-connections` (an idle HTTP connection is closed to make room if all are taken),
    /// then the connection and, for TLS, the handshake.
    pub async fn connect(self: &Arc<Self>, deadline: Instant) -> Result<Connection, UpstreamError> {
        let deadline = deadline.min(Instant::now() + self.settings.connect_timeout);
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Idle connections hold slots: one is closed to make room.
                drop(self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop());
                match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => return Err(UpstreamError::Unavailable("closed".into())),
                    Err(_) => {
                        return Err(UpstreamError::Unavailable(format!(
                            "all {} connections to upstream `{}` are in use",
                            self.settings.max_connections, self.settings.name
                        )));
                    }
                }
            }
        };
        let name = &self.settings.name;
        let unavailable = |e: std::io::Error| {
            UpstreamError::Unavailable(format!("connecting to upstream `{name}` ({}): {e}", self.settings.address))
        };
        let connecting = async {
            let stream: Pin<Box<dyn Stream>> = match &self.settings.address {
                Address::Tcp { host, port } => {
                    let tcp = tokio::net::TcpStream::connect((host.as_str(), *port)).await.map_err(unavailable)?;
                    let _ = tcp.set_nodelay(true);
                    match &self.tls {
                        None => Box::pin(tcp),
                        Some((connector, server_name)) => {
                            Box::pin(connector.connect(server_name.clone(), tcp).await.map_err(unavailable)?)
                        }
                    }
                }
                Address::Unix(path) => Box::pin(tokio::net::UnixStream::connect(path).await.map_err(unavailable)?),
            };
            Ok::<_, UpstreamError>(stream)
        };
        let stream = match tokio::time::timeout_at(deadline, connecting).await {
            Ok(r) => r?,
            Err(_) => return Err(UpstreamError::Timeout),
        };
        Ok(Connection {
            stream,
            read: 0,
            max_answer: self.settings.max_answer,
            timeout: self.settings.timeout,
            upstream: self.clone(),
            _permit: permit,
        })
    }
}

fn tls_connector(
    t: &TlsSettings,
    host: &str,
    base: &std::path::Path,
) -> Result<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>), String> {
    use rustls::pki_types::pem::PemObject;
    let path = base.join(&t.ca);
    let pem = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
        roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = t.server_name.as_deref().unwrap_or(host).to_string();
    let server_name = rustls::pki_types::ServerName::try_from(name).map_err(|e| format!("server name: {e}"))?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), server_name))
}
