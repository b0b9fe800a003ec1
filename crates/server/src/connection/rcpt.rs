//! RCPT TO (RFC 5321 4.1.1.3): the session's checks (a transaction, the recipient limit,
//! SMTPUTF8), then the `rcpt` hook decides; only an accepted recipient joins the envelope.

use wasmtpd_smtp::command::EsmtpParam;
use wasmtpd_smtp::{Address, Hook, HookArgs, HookRunner};

use super::{ClientConnection, Flow};
use crate::stream::ClientIo;

impl<R: HookRunner, S: ClientIo> ClientConnection<R, S> {
    pub(super) async fn rcpt(&mut self, to: Address, params: Vec<EsmtpParam>) -> Flow {
        if let Err(r) = self.session.check_rcpt(&to, &params) {
            return self.send(r);
        }
        let args = HookArgs::Rcpt { to: &to, params: &params };
        let result = self.run_hook(Hook::Rcpt, args).await;
        let decision = self.decide(Hook::Rcpt, &args, &result);
        if decision.accept {
            self.session.accept_rcpt(to, params);
        }
        self.apply(decision).await
    }
}
