//! HELO and EHLO (RFC 5321 4.1.1.1): the `helo`/`ehlo` hook decides; accepted, the name is
//! recorded and any transaction ends, as RSET would (RFC 5321 4.1.4).

use wasmtpd_smtp::{Hook, HookArgs, HookRunner};

use super::{ClientConnection, Flow};
use crate::stream::ClientIo;

impl<R: HookRunner, S: ClientIo> ClientConnection<R, S> {
    pub(super) async fn hello(&mut self, esmtp: bool, host: String) -> Flow {
        let hook = if esmtp { Hook::Ehlo } else { Hook::Helo };
        let args = HookArgs::Hello { host: &host };
        let result = self.run_hook(hook, args).await;
        let decision = self.decide(hook, &args, &result);
        if decision.accept {
            self.end_transaction().await;
            self.session.accept_hello(esmtp, &host);
        }
        self.apply(decision).await
    }
}
