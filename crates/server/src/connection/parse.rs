//! A command line becomes a [`Command`]. MAIL and RCPT with an address not in angle brackets
//! go to the `mail_pre`/`rcpt_pre` hooks first, which may rewrite the address
//! ([`verdict::rewritten_path`]); otherwise a line that does not parse gets its syntax error.

use tracing::{debug, warn};
use wasmtpd_smtp::command::CommandError;
use wasmtpd_smtp::reply::{self, Reply};
use wasmtpd_smtp::verdict;
use wasmtpd_smtp::{AddressError, Command, Hook, HookArgs, HookRunner, UnbracketedPath};

use super::{ClientConnection, Flow};
use crate::stream::ClientIo;

impl<R: HookRunner, S: ClientIo> ClientConnection<R, S> {
    /// The command on `line`, or the reply that refuses it (already sent).
    pub(super) async fn parse(&mut self, line: &[u8]) -> Result<Command, Flow> {
        match Command::parse(line) {
            Ok(c) => Ok(c),
            Err(CommandError::Address(AddressError::NotBracketed)) => match self.rewrite_path(line).await {
                Some(Ok(c)) => Ok(c),
                Some(Err(e)) => Err(self.send(syntax_error(&e))),
                None => Err(self.send(syntax_error(&CommandError::Address(AddressError::NotBracketed)))),
            },
            Err(CommandError::BadBdat) => {
                warn!("BDAT without a valid chunk size: closing, the client's framing is unknown");
                self.send(reply::bdat_bad_size());
                Err(Flow::Close)
            }
            // Postfix answers an XCLIENT from a client it does not trust 550, however malformed.
            Err(CommandError::Xclient(e)) => match self.session.check_xclient() {
                Err(refusal) => {
                    warn!("XCLIENT from a client that is not a trusted front end");
                    Err(self.send(refusal))
                }
                Ok(()) => {
                    warn!(error = %e, "malformed XCLIENT");
                    Err(self.send(syntax_error(&CommandError::Xclient(e))))
                }
            },
            Err(e) => {
                debug!(error = %e, "unparsable command");
                Err(self.send(syntax_error(&e)))
            }
        }
    }

    /// MAIL/RCPT with an address not in angle brackets: the `mail_pre`/`rcpt_pre` hooks may
    /// rewrite it. `None`: nobody did.
    async fn rewrite_path(&mut self, line: &[u8]) -> Option<Result<Command, CommandError>> {
        let unbracketed = UnbracketedPath::find(line)?;
        let hook = if unbracketed.verb.starts_with("MAIL") { Hook::MailPre } else { Hook::RcptPre };
        let result = self.run_hook(hook, HookArgs::Pre { path: &unbracketed.path }).await;
        let path = verdict::rewritten_path(&result)?;
        debug!(hook = hook.name(), from = %unbracketed.path, to = %path, "address rewritten");
        Some(Command::parse(&unbracketed.rewrite(path)))
    }
}

fn syntax_error(e: &CommandError) -> Reply {
    match e {
        CommandError::BadCharacters => reply::invalid_characters(),
        other => reply::syntax_error(&other.to_string()),
    }
}
