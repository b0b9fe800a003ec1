//! STARTTLS (RFC 3207): `220`, then the handshake, then a session that starts over. Whatever
//! the client sent after STARTTLS came in plaintext, outside the TLS session it asked for: a
//! man in the middle could have put it there (CVE-2011-0411). It is thrown away, never
//! executed. The handshake runs within `command_deadline`. Plugin instances start over too:
//! nothing they learnt in plaintext carries over.

use tracing::warn;
use wasmtpd_smtp::HookRunner;
use wasmtpd_smtp::reply;

use super::{ClientConnection, Flow};
use crate::stream::ClientIo;

impl<R: HookRunner, S: ClientIo> ClientConnection<R, S> {
    pub(super) async fn starttls(&mut self) -> Flow {
        if let Err(r) = self.session.check_starttls() {
            return self.send(r);
        }
        self.send(reply::starttls_ready());
        let injected = self.transport.discard_unread(self.session.limits().max_command_line);
        if injected > 0 {
            warn!(bytes = injected, "discarded plaintext sent after STARTTLS, before the TLS handshake");
        }
        if let Err(stop) = self.transport.flush().await {
            self.stopped(stop, false);
            return Flow::Close;
        }
        let deadline = self.shared.config.server.command_deadline;
        match self.transport.start_tls(self.shared.tls.acceptor(), deadline).await {
            Ok(info) => {
                self.end_transaction().await;
                self.session.accept_starttls(info);
                self.scope = self.shared.runner.open_scope();
                Flow::Continue
            }
            Err(e) => {
                warn!(error = %e, "TLS handshake failed");
                Flow::Close
            }
        }
    }
}
