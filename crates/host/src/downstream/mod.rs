//! The downstreams of `config/downstreams`: the servers (a Postfix, an Exim, a Dovecot LMTP)
//! plugins hand messages to (`wit/delivery.wit`), each with its settings and its pool of
//! connections, reused across transactions (RSET between messages) within a bound on idle
//! time and on messages per connection.
//!
//! - this file: the settings, [`Downstreams`] by name, and the pool ([`Downstream::checkout`],
//!   [`Downstream::checkin`]);
//! - `session.rs`: one connection's SMTP or LMTP client (greeting, EHLO/LHLO, STARTTLS, AUTH,
//!   XCLIENT, MAIL, RCPT, DATA), every wait bounded by a deadline;
//! - `tls.rs`: the client side of STARTTLS (certificates checked, or not for `opportunistic`).
//!
//! The credentials of a downstream stay here: no plugin can read `config/downstreams`, and
//! nothing of it but the name reaches a plugin.

mod session;
mod tls;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

pub use session::{ClientFacts, Fault, Session};

use crate::sandbox::Origin;

/// Where a downstream listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `HOST:PORT` (a name or an IP address; IPv6 in brackets).
    Tcp { host: String, port: u16 },
    /// `unix PATH`.
    Unix(PathBuf),
}

/// Which protocol it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Smtp,
    /// RFC 2033: LHLO, and a reply per recipient after the message.
    Lmtp,
}

/// Whether STARTTLS is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTls {
    /// TLS or no delivery; the certificate is checked against `ca` (or the system's roots)
    /// and the host name (or `tls-name`).
    Required,
    /// TLS when the downstream offers it, its certificate not checked (RFC 7435, Postfix's
    /// `may`): against a passive listener only.
    Opportunistic,
    Off,
}

/// One line of `config/downstreams`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownstreamSettings {
    pub name: String,
    pub address: Address,
    pub protocol: Protocol,
    pub starttls: StartTls,
    /// PEM certificates to trust for `starttls required` (default: the system's,
    /// `/etc/ssl/certs/ca-certificates.crt`).
    pub ca: Option<PathBuf>,
    /// The name the certificate must carry (default: the host of the address).
    pub tls_name: Option<String>,
    /// AUTH PLAIN with this user and password, sent only over TLS or to a loopback address or
    /// a Unix socket.
    pub auth: Option<(String, String)>,
    /// XCLIENT when the downstream offers it: it sees our client's address, HELO and login.
    pub xclient: bool,
    pub connect_timeout: Duration,
    pub io_timeout: Duration,
    /// Most connections open to it at once.
    pub max_connections: usize,
    /// How long an unused connection is kept.
    pub idle_time: Duration,
    /// Most messages sent over one connection.
    pub max_messages: u32,
    /// Where it was defined, for error messages.
    pub origin: Origin,
}

impl DownstreamSettings {
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);
    pub const TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> = Duration::from_millis(10)..=Duration::from_secs(600);

    pub fn new(name: &str, address: Address, protocol: Protocol, origin: Origin) -> DownstreamSettings {
        DownstreamSettings {
            name: name.to_string(),
            address,
            protocol,
            starttls: StartTls::Opportunistic,
            ca: None,
            tls_name: None,
            auth: None,
            xclient: false,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            io_timeout: Self::DEFAULT_IO_TIMEOUT,
            max_connections: 16,
            idle_time: Duration::from_secs(30),
            max_messages: 100,
            origin,
        }
    }
}

/// Whether `name` may name a downstream: 1 to 64 of `a-z 0-9 - _ .`, starting with a letter or
/// digit.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok { Ok(()) } else { Err(format!("`{name}` is not a downstream name (a-z, 0-9, -, _, ., at most 64)")) }
}

/// An idle connection in the pool.
struct Idle {
    session: Session,
    since: Instant,
}

/// A downstream and its pool.
pub struct Downstream {
    pub settings: DownstreamSettings,
    idle: Mutex<Vec<Idle>>,
    /// One permit per open connection (`max-connections`).
    slots: Arc<Semaphore>,
    opened: AtomicU64,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Our name, for EHLO.
    me: String,
}

impl Downstream {
    /// The downstream of `settings`, with no connection yet. Its certificates are read now, so
    /// a `ca` file that cannot be read stops start-up.
    pub fn new(settings: DownstreamSettings, me: &str) -> anyhow::Result<Downstream> {
        let tls = match settings.starttls {
            StartTls::Off => None,
            StartTls::Required => Some(tls::verifying(settings.ca.as_deref())?),
            StartTls::Opportunistic => Some(tls::unverified()),
        };
        Ok(Downstream {
            slots: Arc::new(Semaphore::new(settings.max_connections)),
            settings,
            idle: Mutex::new(Vec::new()),
            opened: AtomicU64::new(0),
            tls,
            me: if me.is_empty() { "localhost".to_string() } else { me.to_string() },
        })
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Connections opened since the server started.
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// A connection ready for a transaction: an idle one (still within `idle-time` and
    /// `max-messages`), or a new one if fewer than `max-connections` are open, by `deadline`.
    /// A reused connection may have been closed by the downstream meanwhile; the caller
    /// finds that at its first command and asks again (`fresh` then).
    /// `xclient` is this client's `ClientFacts::key` if XCLIENT is on: a connection on which
    /// XCLIENT named another client cannot serve it (and is closed if a connection is needed
    /// and none is free).
    pub async fn checkout(&self, deadline: Instant, fresh: bool, xclient: Option<&str>) -> Result<Session, Fault> {
        {
            let now = Instant::now();
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|i| now.duration_since(i.since) < self.settings.idle_time);
            let fits = |s: &Session| s.xclient_sent().is_none() || s.xclient_sent() == xclient;
            if !fresh && let Some(at) = idle.iter().rposition(|i| fits(&i.session)) {
                return Ok(idle.remove(at).session);
            }
            if self.slots.available_permits() == 0 {
                idle.retain(|i| fits(&i.session));
                if fresh {
                    idle.clear();
                }
            }
        }
        let permit = match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(Fault::Unavailable("the downstream's pool is closed".into())),
            Err(_) => {
                // Every connection busy: an idle one may do after all (fresh or not).
                return Err(Fault::Unavailable(format!(
                    "all {} connections to the downstream are busy",
                    self.settings.max_connections
                )));
            }
        };
        let connect_deadline = deadline.min(Instant::now() + self.settings.connect_timeout);
        let session =
            Session::connect(&self.settings, self.tls.clone(), &self.me, permit, connect_deadline, deadline).await?;
        let n = self.opened.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(downstream = self.name(), opened = n, "downstream connection opened");
        Ok(session)
    }

    /// Puts `session` back for reuse, unless it is broken or has carried `max-messages`.
    pub fn checkin(&self, session: Session) {
        if session.reusable(self.settings.max_messages) {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.push(Idle { session, since: Instant::now() });
        }
    }
}

/// The downstreams the server runs, by name.
#[derive(Clone, Default)]
pub struct Downstreams(Arc<HashMap<String, Arc<Downstream>>>);

impl Downstreams {
    /// The downstreams of `list`; `me` is the name we give in EHLO.
    pub fn new(list: Vec<DownstreamSettings>, me: &str) -> anyhow::Result<Downstreams> {
        let mut map = HashMap::new();
        for s in list {
            let origin = s.origin.clone();
            let d = Downstream::new(s, me).map_err(|e| anyhow::anyhow!("{origin}: {e:#}"))?;
            map.insert(d.settings.name.clone(), Arc::new(d));
        }
        Ok(Downstreams(Arc::new(map)))
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Downstream>> {
        self.0.get(name)
    }
}
