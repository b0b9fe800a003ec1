//! MAIL FROM (RFC 5321 4.1.1.2): the session's checks (HELO first, one transaction at a time,
//! SIZE, SMTPUTF8), then the transaction begins, the server checks SPF (when enabled), and the
//! `mail` hook decides; refused, it ends.

use wasmtpd_smtp::command::MailParams;
use wasmtpd_smtp::{Address, Hook, HookArgs, HookRunner};

use super::{ClientConnection, Flow};
use crate::stream::ClientIo;

impl<R: HookRunner, S: ClientIo> ClientConnection<R, S> {
    pub(super) async fn mail(&mut self, from: Option<Address>, params: MailParams) -> Flow {
        if let Err(r) = self.session.check_mail(from.as_ref(), &params) {
            return self.send(r);
        }
        self.transactions += 1;
        let id = format!("{}.{}", self.session.connection.id, self.transactions);
        // The transaction exists while the hook runs, so plugins can keep transaction notes.
        self.session.begin_transaction(id, from.clone(), params.clone());
        if let (Some(authenticator), Some(txn)) = (&self.shared.authenticator, &mut self.session.transaction) {
            authenticator.spf(&self.session.connection, txn).await;
        }
        let args = HookArgs::Mail { from: from.as_ref(), params: &params };
        let result = self.run_hook(Hook::Mail, args).await;
        let decision = self.decide(Hook::Mail, &args, &result);
        if !decision.accept {
            self.end_transaction().await;
        }
        self.apply(decision).await
    }
}
