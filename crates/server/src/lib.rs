//! The wasmtpd daemon: accept loop, connection limits, graceful shutdown.
//!
//! Code map:
//! - [`config`]: the configuration directory (qpsmtpd's layout) and its errors.
//! - [`config_files`]: the config files plugins read (`host.config`), cached.
//! - [`admission`]: connection limits, total and per IP.
//! - `connection`: one task per client; the only code that touches a client socket.
//! - [`spool`]: where a message is written while DATA streams in; the Received header.
//! - [`plugins`]: from `config/plugins` and `config/sandbox` to a loaded plugin chain.
//! - [`tls`]: certificates, SNI, reload; the facts of a TLS session.
//! - `stream`: the client's byte stream, plain or TLS.
//! - [`auth`]: AUTH's rules and its limit on failed attempts.
//! - [`users`]: the users file of `auth_flat_file`, and `wasmtpd add-user`.

pub mod admission;
pub mod auth;
pub mod config;
pub mod config_files;
mod connection;
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
    pub shutdown: CancellationToken,
}

/// A bound listening socket.
pub struct Listener {
    pub tcp: TcpListener,
    /// Implicit TLS (RFC 8314, port 465 style): the TLS handshake comes before the greeting.
    pub implicit_tls: bool,
}

/// Serves SMTP on `listeners` until `shutdown` completes, then drains: clients get 421 at
/// their next command, messages in flight may finish within `shutdown_grace`.
pub async fn serve<R: HookRunner>(
    listeners: Vec<Listener>,
    config: Config,
    runner: R,
    spool: Spool,
    tls: Arc<Tls>,
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
    let shared =
        Arc::new(Shared { config, runner, spool, tls, auth_mechanisms, auth_failures, shutdown: token.clone() });
    let tracker = TaskTracker::new();
    // Connection ids: start time + counter, unique across restarts.
    let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let counter = Arc::new(AtomicU64::new(0));

    for Listener { tcp: listener, implicit_tls } in listeners {
        let (shared, admission, tracker2, token, counter) =
            (shared.clone(), admission.clone(), tracker.clone(), token.clone(), counter.clone());
        tracker.spawn(async move {
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
                };
                let session =
                    Session::new(Connection::new(id, remote, local), shared.config.limits.clone()).with_offer(offer);
                let admitted = admission.admit(remote.ip());
                let serve = connection::serve(stream, implicit_tls, shared.clone(), session, admitted);
                tracker2.spawn(serve.instrument(span));
            }
        });
    }
    tracker.close();
    shutdown.await;
    info!(open = admission.open(), "shutting down: refusing new commands, finishing messages in flight");
    token.cancel();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        error!(open = admission.open(), "shutdown grace period over; closing the remaining connections");
    }
}

/// Binds every `--listen` address (and `--listen-tls`, with `implicit_tls`); an address that
/// cannot be bound stops start-up.
pub async fn bind(addrs: &[SocketAddr], implicit_tls: bool) -> anyhow::Result<Vec<Listener>> {
    let mut out = Vec::new();
    for addr in addrs {
        let tcp = TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        out.push(Listener { tcp, implicit_tls });
    }
    Ok(out)
}
