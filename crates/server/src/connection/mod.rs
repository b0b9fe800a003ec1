//! One task per client: stream ⇄ [`Session`] ⇄ [`HookRunner`]. This module is the only code
//! that reads from or writes to a client's stream.
//!
//! Where to look:
//! - [`transport`]: buffers, timeouts and deadlines, pipelined replies, the TLS swap.
//! - [`parse`]: a command line becomes a [`Command`] (with the `mail_pre`/`rcpt_pre` rewrite).
//! - One file per command, each `check → run hook → decide → apply`: [`hello`] (HELO, EHLO),
//!   [`mail`], [`rcpt`], [`data`] (DATA and the message), [`bdat`], [`auth`], [`starttls`],
//!   [`xclient`] (a trusted front end's client facts), and [`simple`] (RSET, NOOP, VRFY, HELP, QUIT, unknown and unimplemented commands).
//! - This file: the session from accept to close, the dispatch of a command to its handler,
//!   and the steps every handler shares (run a hook, decide, apply the decision).
//!
//! What a verdict does is decided only in `wasmtpd_smtp::verdict`; the handlers carry a
//! [`Decision`] out.
//!
//! - Input before the greeting, or between DATA and our 354, is early talking: 554 and close.
//! - On shutdown a client gets 421 at its next command; a DATA transfer in flight finishes.

mod auth;
mod bdat;
mod data;
mod hello;
mod mail;
mod parse;
mod proxy;
mod rcpt;
mod simple;
mod starttls;
mod transport;
mod xclient;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};
use wasmtpd_smtp::reply::{self, Reply};
use wasmtpd_smtp::verdict::{self, Decision, ReplyContext};
use wasmtpd_smtp::{Command, Hook, HookArgs, HookContext, HookResult, HookRunner, Session};

use crate::Shared;
use crate::admission::Ticket;
use crate::spool;
use crate::stream::{ClientIo, ClientStream};
use transport::{Input, Stop, Transport};

/// How long a client refused by a connection limit may take for its TLS handshake, and for
/// reading its 421 (refusals must stay cheap under a flood).
const REFUSED_HANDSHAKE_LIMIT: Duration = Duration::from_secs(5);

/// Whether the session goes on after a command.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

pub(crate) struct ClientConnection<R: HookRunner, S> {
    transport: Transport<S>,
    shared: Arc<Shared<R>>,
    session: Session,
    scope: R::Scope,
    /// Transactions begun on this connection (the second half of a transaction id).
    transactions: u32,
    /// Lines the client may still send for an AUTH exchange that was refused (see
    /// [`auth`]): while this is not zero, a line is read as such a response, never as a
    /// command.
    refused_sasl_lines: u8,
    /// The message of the transaction, while it arrives in BDAT chunks.
    chunks: Option<bdat::Chunks>,
}

/// Serves one client from accept to close. `admitted` is `Err` when a connection limit was hit.
/// On a PROXY listener the header comes first ([`proxy`]), then on an implicit-TLS listener
/// the handshake, even for a client that is refused.
pub(crate) async fn serve<R: HookRunner, S: ClientIo>(
    mut stream: S,
    listener: crate::ListenerKind,
    shared: Arc<Shared<R>>,
    mut session: Session,
    admitted: Result<Ticket, Reply>,
) {
    let implicit_tls = listener.implicit_tls;
    if listener.proxy {
        match proxy::receive(&mut stream, &shared.config.frontends, session.connection.remote).await {
            Err(()) => return,
            Ok(None) => {}
            Ok(Some((client, local))) => {
                session.connection.remote = client;
                session.connection.local = local;
                // What the server allows by address is the client's, never the load balancer's.
                let offer = session.offer_mut();
                offer.auth_without_tls = shared.config.auth.plaintext.allows(client.ip());
                offer.xclient = shared.config.frontends.may_xclient(client.ip());
            }
        }
    }
    let mut stream = ClientStream::Plain(stream);
    let limits = shared.config.server.clone();
    if implicit_tls {
        // A refused client still gets its 421 over TLS, but only a short while to shake hands:
        // refusals must stay cheap under a flood.
        let limit = match admitted {
            Ok(_) => limits.command_deadline,
            Err(_) => REFUSED_HANDSHAKE_LIMIT.min(limits.command_deadline),
        };
        match transport::handshake(&mut stream, shared.tls.acceptor(), limit).await {
            Ok(info) => session.connection.tls = Some(info),
            Err(e) => {
                warn!(error = %e, "TLS handshake failed");
                return;
            }
        }
    }
    let _ticket = match admitted {
        Ok(t) => t,
        Err(reply) => return refuse_connection(stream, &session, reply, limits.write_timeout).await,
    };
    let transport = Transport::new(stream, session.limits().max_command_line, limits, shared.shutdown.clone());
    let scope = shared.runner.open_scope();
    let mut conn =
        ClientConnection { transport, shared, session, scope, transactions: 0, refused_sasl_lines: 0, chunks: None };
    info!("connected");
    conn.converse().await;
    conn.end_transaction().await;
    conn.run_hook(Hook::Disconnect, HookArgs::None).await;
    if let Err(stop) = conn.transport.close().await {
        conn.stopped(stop, false);
    }
    info!("disconnected");
}

/// A client over a connection limit: its 421, and close.
async fn refuse_connection<S: ClientIo>(
    mut stream: ClientStream<S>,
    session: &Session,
    reply: Reply,
    write_timeout: Duration,
) {
    info!(remote = %session.connection.remote, reply = reply.code(), "connection refused: {}", reply.lines()[0]);
    let mut out = Vec::new();
    reply.write_to(&mut out);
    let limit = REFUSED_HANDSHAKE_LIMIT.min(write_timeout);
    match transport::write_within(&mut stream, &out, limit).await {
        Ok(()) => transport::linger(&mut stream, limit).await,
        Err(stop) => debug!(?stop, "could not send the refusal"),
    }
}

impl<R: HookRunner, S: ClientIo> ClientConnection<R, S> {
    /// The whole SMTP conversation; returns when the connection must close.
    async fn converse(&mut self) {
        if self.greet().await == Flow::Close {
            return;
        }
        loop {
            let input = match self.next_input().await {
                Ok(input) => input,
                Err(stop) => {
                    self.stopped(stop, false);
                    return;
                }
            };
            let flow = match input {
                input if self.refused_sasl_lines > 0 => self.after_refused_auth(input).await,
                Input::Line(line) => self.command(&line).await,
                Input::TooLong => self.send(reply::line_too_long(self.session.limits().max_command_line)),
                Input::BareNewline => self.send(reply::bare_newline_in_command()),
            };
            if flow == Flow::Close {
                return;
            }
        }
    }

    /// The greeting: `pre_connection` may refuse at once; then watch for early talkers, and the
    /// `connect` hook decides.
    async fn greet(&mut self) -> Flow {
        if self.shared.runner.implements(Hook::PreConnection) {
            let result = self.run_hook(Hook::PreConnection, HookArgs::None).await;
            let decision = self.decide(Hook::PreConnection, &HookArgs::None, &result);
            if decision.close {
                return self.apply(decision).await;
            }
        }
        match self.transport.watch_for_early_talk(self.shared.config.server.greeting_delay).await {
            None => return Flow::Close, // closed before the greeting
            Some(early) => self.session.connection.early_talker = early,
        }
        let decision = self.connect_hook().await;
        if self.session.connection.early_talker && self.shared.config.server.reject_early_talkers && !decision.close {
            warn!("early talker: client sent data before the greeting");
            self.send(reply::early_talker());
            return Flow::Close;
        }
        self.apply(decision).await
    }

    /// The `connect` hook's decision on the client (after the greeting's wait, or after
    /// XCLIENT named another client), with the client's iprev result checked first.
    async fn connect_hook(&mut self) -> Decision {
        if let Some(authenticator) = &self.shared.authenticator {
            self.session.connection.iprev = authenticator.iprev(self.session.connection.remote.ip()).await;
        }
        let args = HookArgs::None;
        let result = self.run_hook(Hook::Connect, args).await;
        self.decide(Hook::Connect, &args, &result)
    }

    /// After XCLIENT named another client: `pre_connection` (where `hosts_allow` decides) and
    /// `connect` again, on the named client's facts; the first that refuses decides.
    async fn client_hooks_again(&mut self) -> Decision {
        if self.shared.runner.implements(Hook::PreConnection) {
            let result = self.run_hook(Hook::PreConnection, HookArgs::None).await;
            let decision = self.decide(Hook::PreConnection, &HookArgs::None, &result);
            if decision.close {
                return decision;
            }
        }
        self.connect_hook().await
    }

    /// The next line: a command, or a response line of a refused AUTH exchange.
    async fn next_input(&mut self) -> Result<Input, Stop> {
        if self.refused_sasl_lines > 0 {
            self.next_sasl_response().await
        } else {
            self.transport.next_line(self.session.limits().max_command_line).await
        }
    }

    /// Runs one command line to its reply.
    async fn command(&mut self, line: &[u8]) -> Flow {
        let command = match self.parse(line).await {
            Ok(c) => c,
            Err(refusal) => return refusal,
        };
        match command {
            Command::Helo(host) => self.hello(false, host).await,
            Command::Ehlo(host) => self.hello(true, host).await,
            Command::Mail { from, params } => self.mail(from, params).await,
            Command::Rcpt { to, params } => self.rcpt(to, params).await,
            Command::Data => self.data().await,
            Command::Bdat { size, last } => self.bdat(size, last).await,
            Command::Auth { mechanism, initial_response } => self.auth(&mechanism, initial_response.as_deref()).await,
            Command::StartTls => self.starttls().await,
            Command::Rset => self.rset().await,
            Command::Noop => self.simple_hook(Hook::Noop, HookArgs::None).await,
            Command::Vrfy(argument) => self.simple_hook(Hook::Vrfy, HookArgs::Vrfy { argument: &argument }).await,
            Command::Help(argument) => self.simple_hook(Hook::Help, HookArgs::Help { argument: &argument }).await,
            Command::Quit => self.simple_hook(Hook::Quit, HookArgs::None).await,
            Command::Xclient(x) => self.xclient(x).await,
            Command::NotImplemented(verb) => self.send(reply::command_not_implemented(&verb)),
            Command::Unrecognized { verb, args } => self.unrecognized(&verb, &args).await,
        }
    }

    /// Runs a hook chain; a deny-family verdict also runs the `deny` hook.
    async fn run_hook(&mut self, hook: Hook, args: HookArgs<'_>) -> HookResult {
        let shared = self.shared.clone();
        let ctx =
            HookContext { connection: &mut self.session.connection, transaction: self.session.transaction.as_mut() };
        let result = shared.runner.run(&mut self.scope, hook, args, ctx).await;
        if let Some(plugin) = &result.plugin {
            debug!(hook = hook.name(), plugin = %plugin, verdict = result.verdict.name(), "hook decided");
        }
        if result.verdict.is_deny() && !hook.result_is_ignored() {
            let ctx = HookContext {
                connection: &mut self.session.connection,
                transaction: self.session.transaction.as_mut(),
            };
            shared.runner.run(&mut self.scope, Hook::Deny, HookArgs::Deny { hook, result: &result }, ctx).await;
        }
        result
    }

    /// What `hook`'s answer means (`wasmtpd_smtp::verdict`, the one table).
    fn decide(&self, hook: Hook, args: &HookArgs<'_>, result: &HookResult) -> Decision {
        let capabilities = self.session.capabilities();
        let config = &self.shared.config;
        let ctx = ReplyContext {
            me: &config.me,
            greeting: config.greeting.as_deref(),
            remote_ip: self.session.connection.remote.ip(),
            capabilities: &capabilities,
        };
        verdict::decide(hook, args, result, &ctx)
    }

    /// Carries out a decision's reset, then sends its reply, then closes if it says so.
    async fn apply(&mut self, decision: Decision) -> Flow {
        if decision.reset {
            self.end_transaction().await;
        }
        let flow = self.send(decision.reply);
        if decision.close { Flow::Close } else { flow }
    }

    /// Queues a reply; counts protocol errors and closes past `max_errors`.
    fn send(&mut self, reply: Reply) -> Flow {
        debug!(code = reply.code(), "reply: {}", reply.lines()[0]);
        self.transport.queue(&reply);
        if reply::is_protocol_error(reply.code()) && self.session.count_error() {
            warn!("too many errors");
            self.transport.queue(&reply::too_many_errors());
            return Flow::Close;
        }
        Flow::Continue
    }

    /// Ends the transaction, if any: runs `reset_transaction` and removes its spool file.
    async fn end_transaction(&mut self) {
        self.drop_chunks().await;
        if self.session.transaction.is_none() {
            return;
        }
        self.run_hook(Hook::ResetTransaction, HookArgs::None).await;
        if let Some(txn) = self.session.reset()
            && let Some(message) = txn.message
        {
            spool::discard(message).await;
        }
    }

    /// Answers the end of a wait that brought no input, or logs a failed write; the
    /// connection closes after it.
    fn stopped(&mut self, stop: Stop, in_data: bool) {
        match stop {
            Stop::Eof if in_data => warn!("connection lost during DATA"),
            Stop::Eof => debug!("client closed the connection"),
            Stop::Io(e) => warn!(error = %e, "read error"),
            Stop::Write(e) => warn!(error = %e, "write error"),
            Stop::WriteTimeout => warn!(
                limit = ?self.shared.config.server.write_timeout,
                "write timeout: the client does not read its replies; closing"
            ),
            Stop::Timeout => {
                warn!(in_data, "timeout");
                self.send(if in_data { reply::data_timeout() } else { reply::command_timeout() });
            }
            Stop::Deadline => {
                warn!(in_data, "deadline exceeded");
                self.send(if in_data { reply::data_deadline() } else { reply::command_deadline() });
            }
            Stop::Shutdown => {
                info!("shutting down");
                self.send(reply::shutting_down());
            }
        }
    }
}
