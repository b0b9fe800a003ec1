//! AUTH (RFC 4954): the SASL exchange (334 challenges) is read here; the credentials go to the
//! auth hooks, the mechanism's own (`auth_plain`, `auth_login`) first, then `auth` (qpsmtpd's
//! order).
//!
//! - Nothing of the exchange is logged but the mechanism, the outcome and (on success) the
//!   user.
//! - A failure is counted before the hooks run (`AuthFailures::attempt`: parallel connections
//!   cannot all slip under the limit) and given back unless the credentials were wrong
//!   ([`Decision::bad_credentials`](wasmtpd_smtp::Decision)); wrong credentials are answered
//!   late.
//! - The response lines a client sent for an AUTH that was refused are read as such, never
//!   run as commands. A client that does not wait for our `334`s sends its responses right
//!   behind `AUTH`; after a refusal they would otherwise run as commands (a password handed to
//!   `unrecognized_command` plugins and logged). While `refused_sasl_lines` is not zero, a line
//!   is read as a response (up to the SASL line limit), answered `503` and forgotten: never
//!   parsed, logged or given to a hook. The one exception is a line that starts with the verb
//!   of a command we carry out: a client that waited for the refusal sends its next command,
//!   not a response, and that command runs (and ends the count). This cannot expose a secret:
//!   base64 holds no space, so a response can only look like an argument-less verb, and none
//!   of those repeats the line anywhere. It also keeps our framing the same as that of a front
//!   end that treats the line after a refused AUTH as a command (`DATA`, `BDAT`).

use tracing::{debug, info, warn};
use wasmtpd_smtp::command;
use wasmtpd_smtp::reply::{self, Reply};
use wasmtpd_smtp::sasl::{self, Credentials, Step};
use wasmtpd_smtp::{Hook, HookArgs, HookResult, HookRunner, Mechanism, Verdict};

use super::transport::{Input, Stop};
use super::{ClientConnection, Flow};
use crate::stream::ClientIo;

impl<R: HookRunner, S: ClientIo> ClientConnection<R, S> {
    pub(super) async fn auth(&mut self, mechanism: &str, initial_response: Option<&str>) -> Flow {
        // What a client that does not wait for our challenges sends behind this AUTH.
        let responses = Mechanism::parse(mechanism).map_or(0, |m| m.responses(initial_response.is_some()));
        let mechanism = match self.session.check_auth(mechanism) {
            Ok(m) => m,
            Err(r) => return self.refuse_auth(r, responses),
        };
        let ip = self.session.connection.remote.ip();
        if !self.shared.auth_failures.allowed(ip) {
            warn!(mechanism = %mechanism, "AUTH refused: too many failed attempts from this address");
            return self.refuse_auth(reply::auth_too_many_failures(), responses);
        }
        let credentials = match self.sasl_exchange(mechanism, initial_response, responses).await {
            Ok(c) => c,
            Err(flow) => return flow,
        };
        let shared = self.shared.clone();
        let Some(attempt) = shared.auth_failures.attempt(ip) else {
            warn!(mechanism = %mechanism, "AUTH refused: too many failed attempts from this address");
            return self.send(reply::auth_too_many_failures());
        };
        let args = HookArgs::Auth { mechanism, user: &credentials.user, password: &credentials.password };
        let (hook, result) = self.check_credentials(mechanism, args).await;
        let decision = self.decide(hook, &args, &result);
        let plugin = result.plugin.as_deref().unwrap_or("-");
        if decision.accept {
            // The user name is logged on success only: a failed one may be a mistyped password.
            info!(user = %credentials.user, mechanism = %mechanism, plugin, "authenticated");
            self.session.accept_auth(credentials.user, mechanism);
            drop(attempt);
        } else {
            warn!(mechanism = %mechanism, code = decision.reply.code(), plugin, "authentication failed");
            if decision.bad_credentials {
                attempt.failed();
                tokio::time::sleep(self.shared.config.auth.failure_delay).await;
            }
        }
        self.apply(decision).await
    }

    /// The SASL exchange: challenges and responses until the mechanism has the credentials.
    /// `responses` is how many lines a client that does not wait would send; `Err`: the
    /// exchange was refused (and the rest of those lines will be read as responses).
    async fn sasl_exchange(
        &mut self,
        mechanism: Mechanism,
        initial_response: Option<&str>,
        responses: u8,
    ) -> Result<Credentials, Flow> {
        let (mut exchange, mut step) = sasl::Exchange::start(mechanism, initial_response);
        let mut read = 0u8;
        loop {
            let left = responses.saturating_sub(read);
            match step {
                Step::Done(Ok(c)) => return Ok(c),
                Step::Done(Err(e)) => {
                    debug!(mechanism = %mechanism, error = %e, "AUTH exchange ended without credentials");
                    let left = if e == sasl::SaslError::Cancelled { 0 } else { left };
                    return Err(self.refuse_auth(e.reply(), left));
                }
                Step::Challenge(challenge) => {
                    self.send(reply::sasl_challenge(challenge));
                    let input = self.next_sasl_response().await;
                    read += 1;
                    let left = responses.saturating_sub(read);
                    match input {
                        Ok(Input::Line(line)) => step = exchange.respond(&line),
                        Ok(Input::TooLong) => return Err(self.refuse_auth(reply::auth_response_too_long(), left)),
                        Ok(Input::BareNewline) => return Err(self.refuse_auth(reply::auth_bad_response(), left)),
                        Err(stop) => {
                            self.stopped(stop, false);
                            return Err(Flow::Close);
                        }
                    }
                }
            }
        }
    }

    /// Refuses AUTH with `reply`; the client may still send `responses` lines of its exchange,
    /// which are read as responses, not commands.
    fn refuse_auth(&mut self, reply: Reply, responses: u8) -> Flow {
        self.refused_sasl_lines = responses;
        self.send(reply)
    }

    /// A line while `refused_sasl_lines` is not zero: a command if it starts with a verb we
    /// carry out, otherwise a response of the refused exchange, answered `503` and dropped
    /// unread (never parsed, logged or given to a hook).
    pub(super) async fn after_refused_auth(&mut self, input: Input) -> Flow {
        if let Input::Line(line) = &input
            && command::names_an_implemented_verb(line)
        {
            self.refused_sasl_lines = 0;
            // It was read with the SASL line limit; a command has its own.
            let max = self.session.limits().max_command_line;
            if line.len() + 2 > max {
                return self.send(reply::line_too_long(max));
            }
            return self.command(line).await;
        }
        self.refused_sasl_lines -= 1;
        debug!(still_expected = self.refused_sasl_lines, "ignored a response line sent for a refused AUTH");
        self.send(reply::auth_response_ignored())
    }

    /// The mechanism's own hook (`auth_plain`, `auth_login`), then, if every plugin declined,
    /// the generic `auth` hook (qpsmtpd's order). Returns the hook that answered.
    async fn check_credentials(&mut self, mechanism: Mechanism, args: HookArgs<'_>) -> (Hook, HookResult) {
        let own = Hook::for_mechanism(mechanism);
        let result = self.run_hook(own, args).await;
        if result.fault || result.verdict != Verdict::Declined {
            return (own, result);
        }
        (Hook::Auth, self.run_hook(Hook::Auth, args).await)
    }

    /// One SASL response line: longer lines are allowed than for commands (RFC 4954 section 4).
    pub(super) async fn next_sasl_response(&mut self) -> Result<Input, Stop> {
        self.transport.next_line(sasl::MAX_RESPONSE_LINE).await
    }
}
