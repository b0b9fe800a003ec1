//! The commands whose hook's decision is the whole answer (NOOP, VRFY, HELP, QUIT, and a verb
//! nobody knows, which goes to `unrecognized_command`), RSET, and verbs we know but do not
//! carry out (502).

use tracing::debug;
use wasmtpd_smtp::reply;
use wasmtpd_smtp::{Hook, HookArgs, HookRunner};

use super::{ClientConnection, Flow};
use crate::stream::ClientIo;

impl<R: HookRunner, S: ClientIo> ClientConnection<R, S> {
    /// A hook whose decision is the whole answer.
    pub(super) async fn simple_hook(&mut self, hook: Hook, args: HookArgs<'_>) -> Flow {
        let result = self.run_hook(hook, args).await;
        let decision = self.decide(hook, &args, &result);
        self.apply(decision).await
    }

    /// RSET (RFC 5321 4.1.1.5): no hook decides; the transaction ends.
    pub(super) async fn rset(&mut self) -> Flow {
        self.end_transaction().await;
        self.send(reply::reset_ok())
    }

    pub(super) async fn unrecognized(&mut self, verb: &str, args: &[String]) -> Flow {
        debug!(verb = %verb, "unrecognized command");
        self.simple_hook(Hook::UnrecognizedCommand, HookArgs::Unrecognized { verb, args }).await
    }
}
