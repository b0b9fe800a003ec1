//! The wasmtpd daemon: accept loop, connection limits, graceful shutdown.
//!
//! Code map:
//! - [`config`]: the configuration directory (qpsmtpd's layout) and its errors.
//! - [`config_files`]: the config files plugins read (`host.config`), cached.
//! - [`plugin_files`]: which config files each plugin may read.
//! - [`frontends`]: the front ends trusted with XCLIENT and PROXY headers.
//! - [`admission`]: connection limits, total and per IP.
//! - `connection`: one task per client, a handler per command; the only code that touches a
//!   client's stream.
//! - [`spool`]: where a message is written while DATA streams in; the Received header.
//! - [`plugins`]: from `config/plugins` and `config/sandbox` to a loaded plugin chain.
//! - [`tls`]: certificates, SNI, reload; the facts of a TLS session.
//! - `stream`: the client's byte stream, plain or TLS.
//! - [`auth`]: AUTH's rules and its limit on failed attempts.
//! - [`authentication`]: the iprev, SPF, DKIM and DMARC checks, and the
//!   `Authentication-Results` field.
//! - [`users`]: the users file of `auth_flat_file`, and `wasmtpd add-user`.

pub mod admission;
pub mod auth;
pub mod authentication;
pub mod config;
pub mod config_files;
mod connection;
pub mod frontends;
pub mod inspect;
pub mod plugin_arguments;
pub mod plugin_files;
pub mod plugin_test;
pub mod plugins;
pub mod spool;
mod stream;
pub mod tls;
pub mod users;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, warn};
use wasmtpd_smtp::session::Connection;
use wasmtpd_smtp::{Hook, HookRunner, Mechanism, Offer, Session};

use crate::admission::Admission;
use crate::auth::AuthFailures;
use crate::authentication::Authenticator;
use crate::config::Config;
use crate::spool::Spool;
use crate::tls::Tls;

/// What every connection task shares.
pub(crate) struct Shared<R> {
    pub config: Config,
    pub runner: R,
    pub spool: Spool,
    pub tls: Arc<Tls>,
    /// The SASL mechanisms some plugin can check (AUTH is offered only if there is one).
    pub auth_mechanisms: Vec<Mechanism>,
    pub auth_failures: AuthFailures,
    /// The email authentication checks, when the operator enabled any.
    pub authenticator: Option<Authenticator>,
    pub shutdown: CancellationToken,
}

/// A bound listening socket, not yet tied to a runtime.
pub struct Listener {
    pub tcp: std::net::TcpListener,
    pub kind: ListenerKind,
}

/// What a listener's connections begin with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerKind {
    /// Implicit TLS (RFC 8314, port 465 style): the TLS handshake comes before the greeting.
    pub implicit_tls: bool,
    /// A PROXY protocol header (v1 or v2) from a trusted load balancer comes first
    /// (`--listen-proxy`; the peers in `config/frontends`).
    pub proxy: bool,
}

/// What an accept loop needs.
struct Acceptor<R> {
    shared: Arc<Shared<R>>,
    admission: Arc<Admission>,
    tracker: TaskTracker,
    token: CancellationToken,
    counter: Arc<AtomicU64>,
    /// Start time, the first half of every connection id (unique across restarts).
    epoch: u64,
}

impl<R> Clone for Acceptor<R> {
    fn clone(&self) -> Self {
        Acceptor {
            shared: self.shared.clone(),
            admission: self.admission.clone(),
            tracker: self.tracker.clone(),
            token: self.token.clone(),
            counter: self.counter.clone(),
            epoch: self.epoch,
        }
    }
}

impl<R: HookRunner> Acceptor<R> {
    /// Starts an accept loop per listener on the current runtime; each connection is a task
    /// there too, so it never moves between threads.
    fn start(&self, listeners: Vec<Listener>) {
        for Listener { tcp, kind } in listeners {
            let listener = match TcpListener::from_std(tcp) {
                Ok(l) => l,
                Err(e) => {
                    error!(error = %e, "cannot register a listener");
                    continue;
                }
            };
            let this = self.clone();
            self.tracker.spawn(async move { this.accept_loop(listener, kind).await });
        }
    }

    async fn accept_loop(self, listener: TcpListener, kind: ListenerKind) {
        let implicit_tls = kind.implicit_tls;
        let Acceptor { shared, admission, tracker, token, counter, epoch } = self;
        loop {
            let (stream, remote) = tokio::select! {
                _ = token.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off rather than spin.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().unwrap_or(remote);
            let id = format!("{epoch:x}.{}", counter.fetch_add(1, Ordering::Relaxed));
            let span = tracing::info_span!("conn", id = %id, remote = %remote);
            let offer = Offer {
                starttls: !implicit_tls && shared.tls.has_certificates(),
                auth_mechanisms: shared.auth_mechanisms.clone(),
                auth_without_tls: shared.config.auth.plaintext.allows(remote.ip()),
                xclient: shared.config.frontends.may_xclient(remote.ip()),
            };
            let mut session =
                Session::new(Connection::new(id, remote, local), shared.config.limits.clone()).with_offer(offer);
            let admitted = admission.admit(remote.ip());
            if let Ok(ticket) = &admitted {
                session.connection.connections_from_ip = u32::try_from(ticket.from_ip).unwrap_or(u32::MAX);
            }
            let serve = connection::serve(stream, kind, shared.clone(), session, admitted);
            tracker.spawn(serve.instrument(span));
        }
    }
}

/// Serves SMTP until `shutdown` completes, then drains: clients get 421 at their next command,
/// messages in flight may finish within `shutdown_grace`.
///
/// `workers` holds one set of listeners per worker thread (see [`bind`]). The first set is
/// served on the calling runtime; each other set gets a thread with a single-threaded runtime
/// of its own. The kernel spreads new connections over the workers (SO_REUSEPORT), and a
/// connection stays on its worker: no work stealing, no wake-ups across threads.
pub async fn serve<R: HookRunner>(
    workers: Vec<Vec<Listener>>,
    config: Config,
    runner: R,
    spool: Spool,
    tls: Arc<Tls>,
    authenticator: Option<Authenticator>,
    shutdown: impl Future<Output = ()>,
) {
    let grace = config.server.shutdown_grace;
    let admission = Admission::new(config.server.max_connections, config.server.max_connections_per_ip);
    let token = CancellationToken::new();
    // A mechanism is offered when its own hook or the generic `auth` hook is implemented.
    let auth_mechanisms = Mechanism::ALL
        .into_iter()
        .filter(|m| runner.implements(Hook::for_mechanism(*m)) || runner.implements(Hook::Auth))
        .collect();
    let auth_failures = AuthFailures::new(&config.auth);
    let shared = Arc::new(Shared {
        config,
        runner,
        spool,
        tls,
        auth_mechanisms,
        auth_failures,
        authenticator,
        shutdown: token.clone(),
    });
    let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let acceptor = Acceptor {
        shared,
        admission: admission.clone(),
        tracker: TaskTracker::new(),
        token: token.clone(),
        counter: Arc::new(AtomicU64::new(0)),
        epoch,
    };
    let mut sets = workers.into_iter();
    let here = sets.next().unwrap_or_default();
    let mut threads = Vec::new();
    for (n, set) in sets.enumerate() {
        let acceptor = acceptor.clone();
        let worker = std::thread::Builder::new().name(format!("wasmtpd-worker-{}", n + 1)).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => return error!(error = %e, "cannot start a worker thread's runtime"),
            };
            runtime.block_on(async {
                acceptor.start(set);
                // Keep serving this worker's connections until they are done (or the grace is over).
                acceptor.token.cancelled().await;
                let _ = tokio::time::timeout(grace, acceptor.tracker.wait()).await;
            });
            runtime.shutdown_timeout(std::time::Duration::from_millis(100));
        });
        match worker {
            Ok(t) => threads.push(t),
            Err(e) => error!(error = %e, "cannot start a worker thread"),
        }
    }
    acceptor.start(here);
    acceptor.tracker.close();
    shutdown.await;
    info!(open = admission.open(), "shutting down: refusing new commands, finishing messages in flight");
    token.cancel();
    if tokio::time::timeout(grace, acceptor.tracker.wait()).await.is_err() {
        error!(open = admission.open(), "shutdown grace period over; closing the remaining connections");
    }
    for t in threads {
        let _ = t.join();
    }
}

/// Binds every `--listen` address (and `--listen-tls`, with `implicit_tls`, and
/// `--listen-proxy`, with `proxy`) once for each of `workers` workers, with SO_REUSEPORT;
/// returns a set of listeners per worker. An address that cannot be bound stops start-up. A
/// port 0 is chosen once, for all workers.
pub fn bind(addrs: &[(SocketAddr, ListenerKind)], workers: usize) -> anyhow::Result<Vec<Vec<Listener>>> {
    let mut sets: Vec<Vec<Listener>> = (0..workers.max(1)).map(|_| Vec::new()).collect();
    for &(addr, kind) in addrs {
        let mut bound = addr;
        for set in &mut sets {
            let tcp = reuse_port_listener(bound).map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
            bound = tcp.local_addr()?;
            set.push(Listener { tcp, kind });
        }
    }
    Ok(sets)
}

fn reuse_port_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}
