//! XCLIENT (Postfix's XCLIENT_README): a front end the operator trusts (`config/frontends`)
//! names the client it speaks for. From anyone else: `550 5.7.0` (see `parse.rs` for a
//! malformed one, `501`). Accepted, the session starts over as a connection from that client:
//! the server's facts change ([`wasmtpd_smtp::Session::accept_xclient`]), plugin instances
//! start over, and the `connect` hook decides on the new client, whose answer is the reply:
//! the `220` greeting again, as Postfix sends, or `hosts_allow`'s refusal.

use tracing::{info, warn};
use wasmtpd_smtp::HookRunner;
use wasmtpd_smtp::xclient::Xclient;

use super::{ClientConnection, Flow};
use crate::stream::ClientIo;

impl<R: HookRunner, S: ClientIo> ClientConnection<R, S> {
    pub(super) async fn xclient(&mut self, x: Xclient) -> Flow {
        if let Err(r) = self.session.check_xclient() {
            warn!(code = r.code(), "XCLIENT refused: {}", r.lines()[0]);
            return self.send(r);
        }
        let front_end = self.session.connection.remote;
        self.end_transaction().await;
        self.session.accept_xclient(&x);
        self.scope = self.shared.runner.open_scope();
        let c = &self.session.connection;
        info!(
            %front_end,
            client = %c.remote,
            name = c.remote_name.as_deref().unwrap_or("-"),
            helo = c.hello.as_ref().map_or("-", |h| h.host.as_str()),
            login = c.auth.as_ref().map_or("-", |a| a.user.as_str()),
            "XCLIENT: the session speaks for this client now"
        );
        let decision = self.client_hooks_again().await;
        self.apply(decision).await
    }
}
