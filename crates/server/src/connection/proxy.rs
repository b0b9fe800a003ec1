//! The PROXY protocol header (v1 or v2) on a listener the operator started with
//! `--listen-proxy`: before anything else (the greeting, a TLS handshake), the load balancer
//! names the client. Only a peer listed in `config/frontends` (`proxy ADDR[/PREFIX]`) may send
//! one; a connection from anyone else, a malformed header, or one that does not arrive whole
//! within `proxy_timeout` is closed with a log line and no reply (the peer is not an SMTP
//! client we know how to answer). Exactly the header's octets are read
//! ([`wasmtpd_smtp::proxy::parse`] says how many), so what follows is untouched.

use std::net::SocketAddr;

use tokio::io::AsyncReadExt;
use tracing::{info, warn};
use wasmtpd_smtp::proxy::{self, Parsed};

use crate::frontends::Frontends;
use crate::stream::ClientIo;

/// The client's and the local address the header names (`None`: LOCAL or UNKNOWN, the
/// connection's own stay), or `Err` when the connection must close (already logged).
pub(super) async fn receive<S: ClientIo>(
    stream: &mut S,
    frontends: &Frontends,
    peer: SocketAddr,
) -> Result<Option<(SocketAddr, SocketAddr)>, ()> {
    if !frontends.may_proxy(peer.ip()) {
        warn!(%peer, "PROXY listener: the peer is not a trusted front end (config/frontends); closing");
        return Err(());
    }
    let mut header = Vec::with_capacity(64);
    let read = async {
        loop {
            match proxy::parse(&header) {
                Ok(Parsed::Header { header, .. }) => return Ok(header),
                Ok(Parsed::Incomplete(n)) => {
                    let at = header.len();
                    header.resize(at + n, 0);
                    if let Err(e) = stream.read_exact(&mut header[at..]).await {
                        return Err(format!("the connection ended in the PROXY header ({e})"));
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    match tokio::time::timeout(frontends.proxy_timeout, read).await {
        Err(_) => {
            warn!(%peer, limit = ?frontends.proxy_timeout, "no whole PROXY header in time; closing");
            Err(())
        }
        Ok(Err(e)) => {
            warn!(%peer, error = %e, "bad PROXY header; closing");
            Err(())
        }
        Ok(Ok(h)) => {
            match h.addresses {
                Some((client, local)) => info!(%peer, %client, %local, version = h.version, "PROXY header"),
                None => info!(%peer, version = h.version, "PROXY header without a client (LOCAL or UNKNOWN)"),
            }
            Ok(h.addresses)
        }
    }
}
