//! One task per client: socket ⇄ [`Session`] ⇄ [`HookRunner`]. This is the only code that
//! reads from or writes to a client socket.
//!
//! - Replies are collected in `output` and written when the input holds no complete command
//!   (RFC 2920 pipelining: replies in order, one write for a pipelined group).
//! - Every wait on the client is bounded: an idle timeout and a deadline for each command line,
//!   an idle timeout and a deadline for the whole DATA transfer, and `write_timeout` for every
//!   write (a client that pipelines commands and never reads the replies would otherwise block
//!   us in a write, where no read timeout fires). After a failed write nothing more is written.
//! - Input before the greeting, or between DATA and our 354, is early talking: 554 and close.
//! - On shutdown a client gets 421 at its next command; a DATA transfer in flight finishes.
//! - STARTTLS: after `220`, whatever the client already sent in plaintext is thrown away (never
//!   executed), the handshake runs within `command_deadline`, and the session starts over.
//! - AUTH: the SASL exchange (334 challenges) is read here; the credentials go to the auth
//!   hooks; failures are counted per address (before the hooks run) and answered late. The
//!   response lines a client sent for an AUTH that was refused are read as such, never run as
//!   commands (see `ClientConnection::refused_sasl_lines`). No line of a SASL exchange is
//!   logged.
//! - BDAT: not offered (no CHUNKING), but its chunk is skipped, never read as commands.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn};
use wasmtpd_smtp::command::{self, CommandError};
use wasmtpd_smtp::reply::{self, Reply};
use wasmtpd_smtp::sasl::{self, Credentials, Step};
use wasmtpd_smtp::verdict::{self, Decision, ReplyContext};
use wasmtpd_smtp::{
    Address, Command, DataEnd, DataReader, Hook, HookArgs, HookContext, HookResult, HookRunner, LineEvent, LineReader,
    Session, TlsInfo,
};
use wasmtpd_smtp::{AddressError, Mechanism, UnbracketedPath, Verdict};

use crate::Shared;
use crate::admission::Ticket;
use crate::spool;
use crate::stream::ClientStream;
use crate::tls;

/// Read sizes: small while exchanging commands (many idle clients stay cheap), large in DATA.
const COMMAND_READ: usize = 4 * 1024;
const DATA_READ: usize = 64 * 1024;

/// How long a client refused by a connection limit may take for its TLS handshake, and for
/// reading its 421 (refusals must stay cheap under a flood).
const REFUSED_HANDSHAKE_LIMIT: Duration = Duration::from_secs(5);

/// Whether the session goes on after a command.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// Why a wait for client input ended without input, or a write to the client failed.
#[derive(Debug)]
enum Stop {
    Eof,
    Timeout,
    Deadline,
    Shutdown,
    Io(std::io::Error),
    /// A write did not complete within `write_timeout`: the client does not read.
    WriteTimeout,
    Write(std::io::Error),
}

/// One complete unit of command-phase input.
enum Input {
    Line(Vec<u8>),
    BareNewline,
    TooLong,
}

pub(crate) struct ClientConnection<R: HookRunner> {
    stream: ClientStream,
    shared: Arc<Shared<R>>,
    session: Session,
    scope: R::Scope,
    input: Vec<u8>,
    /// Bytes of `input` already consumed.
    pos: usize,
    output: Vec<u8>,
    /// A write failed or timed out: nothing more is written (the connection is closing).
    write_failed: bool,
    lines: LineReader,
    transactions: u32,
    /// Lines the client may still send for an AUTH exchange that was refused (before it began,
    /// or part-way). A client that does not wait for our `334`s sends its responses right
    /// behind `AUTH`; after a refusal they would otherwise run as commands (a password handed
    /// to `unrecognized_command` plugins and logged). While this is not zero, a line is read
    /// as a response (up to the SASL line limit), answered `503` and forgotten: never parsed,
    /// logged or given to a hook. The one exception is a line that starts with the verb of a
    /// command we carry out: a client that waited for the refusal sends its next command, not
    /// a response, and that command runs (and ends the count). This cannot expose a secret:
    /// base64 holds no space, so a response can only look like an argument-less verb, and
    /// none of those repeats the line anywhere. It also keeps our framing the same as that of
    /// a front end that treats the line after a refused AUTH as a command (`DATA`, `BDAT`).
    refused_sasl_lines: u8,
}

/// Serves one client from accept to close. `admitted` is `Err` when a connection limit was hit.
/// On an implicit-TLS listener the handshake comes first, even for a client that is refused.
pub(crate) async fn serve<R: HookRunner>(
    tcp: TcpStream,
    implicit_tls: bool,
    shared: Arc<Shared<R>>,
    mut session: Session,
    admitted: Result<Ticket, Reply>,
) {
    let mut stream = ClientStream::Plain(tcp);
    if implicit_tls {
        // A refused client still gets its 421 over TLS, but only a short while to shake hands:
        // refusals must stay cheap under a flood.
        let limit = match admitted {
            Ok(_) => shared.config.server.command_deadline,
            Err(_) => REFUSED_HANDSHAKE_LIMIT.min(shared.config.server.command_deadline),
        };
        match handshake(&mut stream, &shared, limit).await {
            Ok(info) => session.connection.tls = Some(info),
            Err(e) => {
                warn!(error = %e, "TLS handshake failed");
                return;
            }
        }
    }
    let _ticket = match admitted {
        Ok(t) => t,
        Err(reply) => {
            info!(remote = %session.connection.remote, reply = reply.code(), "connection refused: {}", reply.lines()[0]);
            let mut out = Vec::new();
            reply.write_to(&mut out);
            let limit = REFUSED_HANDSHAKE_LIMIT.min(shared.config.server.write_timeout);
            match write_within(&mut stream, &out, limit).await {
                Ok(()) => linger(stream, limit).await,
                Err(stop) => debug!(?stop, "could not send the refusal"),
            }
            return;
        }
    };
    let scope = shared.runner.open_scope();
    let lines = LineReader::new(session.limits().max_command_line);
    let mut conn = ClientConnection {
        stream,
        shared,
        session,
        scope,
        input: Vec::new(),
        pos: 0,
        output: Vec::new(),
        write_failed: false,
        lines,
        transactions: 0,
        refused_sasl_lines: 0,
    };
    info!("connected");
    conn.converse().await;
    conn.end_transaction().await;
    conn.run_hook(Hook::Disconnect, HookArgs::None).await;
    if !conn.write_failed {
        match conn.flush().await {
            Ok(()) => linger(conn.stream, conn.shared.config.server.write_timeout).await,
            Err(stop) => conn.stopped(stop, false),
        }
    }
    info!("disconnected");
}

/// Runs the server side of a TLS handshake on the plain stream, within `limit`; on success the
/// stream is TLS from then on.
async fn handshake<R: HookRunner>(
    stream: &mut ClientStream,
    shared: &Shared<R>,
    limit: Duration,
) -> Result<TlsInfo, String> {
    let tcp = stream.take_plain().ok_or("the connection is not plain TCP")?;
    let accepted: TlsStream<TcpStream> = match tokio::time::timeout(limit, shared.tls.acceptor().accept(tcp)).await {
        Err(_) => return Err(format!("the handshake took longer than {limit:?}")),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(s)) => s,
    };
    let info = tls::session_info(&accepted);
    info!(version = %info.version, cipher = %info.cipher, sni = info.server_name.as_deref().unwrap_or("-"), "TLS established");
    *stream = ClientStream::Tls(Box::new(accepted));
    Ok(info)
}

/// Writes `bytes` and flushes them (TLS keeps records buffered until flushed), within `limit`.
async fn write_within(stream: &mut ClientStream, bytes: &[u8], limit: Duration) -> Result<(), Stop> {
    let write = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Stop::Write(e)),
        Err(_) => Err(Stop::WriteTimeout),
    }
}

/// Closes our side (for TLS, a close_notify, a write bounded by `write_limit`), then reads and
/// drops whatever the client still sends, briefly. Closing a socket with unread input makes
/// the kernel send a RST, which can destroy our last reply (a 421 or 554) before the client
/// reads it.
async fn linger(mut stream: ClientStream, write_limit: Duration) {
    match tokio::time::timeout(write_limit, stream.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return,
        Err(_) => {
            debug!("the client did not take our close within the write timeout");
            return;
        }
    }
    let mut sink = [0u8; 4096];
    let drain = async {
        let mut total = 0usize;
        while total < 1 << 20 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

impl<R: HookRunner> ClientConnection<R> {
    /// The whole SMTP conversation; returns when the connection must close.
    async fn converse(&mut self) {
        let early = self.watch_for_early_talk().await;
        if early == Some(true) {
            self.session.connection.early_talker = true;
        }
        if early.is_none() {
            return; // closed before the greeting
        }
        let result = self.run_hook(Hook::Connect, HookArgs::None).await;
        let decision = self.decide(Hook::Connect, &result, "", "");
        if self.session.connection.early_talker && self.shared.config.server.reject_early_talkers && !decision.close {
            warn!("early talker: client sent data before the greeting");
            self.send(reply::early_talker());
            return;
        }
        if self.apply(decision).await == Flow::Close {
            return;
        }
        loop {
            let input =
                if self.refused_sasl_lines > 0 { self.next_sasl_response().await } else { self.next_command().await };
            let input = match input {
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

    /// Waits `greeting_delay` (or only looks, when it is zero) for input sent before our
    /// greeting. `Some(true)`: the client talked early; `None`: it already closed.
    async fn watch_for_early_talk(&mut self) -> Option<bool> {
        let delay = self.shared.config.server.greeting_delay;
        self.input.reserve(COMMAND_READ);
        if delay.is_zero() {
            // Only look: a zero timeout would still wait for the timer's next tick (1 ms).
            return match self.stream.try_read_now(&mut self.input) {
                Ok(0) => None,
                Ok(_) => Some(true),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some(false),
                Err(_) => None,
            };
        }
        match tokio::time::timeout(delay, self.stream.read_buf(&mut self.input)).await {
            Err(_) => Some(false),
            Ok(Ok(0)) | Ok(Err(_)) => None,
            Ok(Ok(_)) => Some(true),
        }
    }

    /// Answers the end of a wait that brought no input.
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

    /// Reads the next command line, within the command timeout and deadline.
    async fn next_command(&mut self) -> Result<Input, Stop> {
        let timeout = self.shared.config.server.command_timeout;
        let deadline = self.shared.config.server.command_deadline;
        let mut started: Option<Instant> = None;
        loop {
            if self.shared.shutdown.is_cancelled() {
                return Err(Stop::Shutdown);
            }
            let (n, event) = self.lines.next(&self.input[self.pos..]);
            let event = event.map(|e| match e {
                LineEvent::Line(l) => Input::Line(l.to_vec()),
                LineEvent::BareNewline => Input::BareNewline,
                LineEvent::TooLong => Input::TooLong,
            });
            self.pos += n;
            if let Some(event) = event {
                return Ok(event);
            }
            if n > 0 && self.pos < self.input.len() {
                continue; // skipped the tail of an overlong line; what follows is already here
            }
            // Part of a line is here already: its deadline is running.
            if self.pos < self.input.len() || self.lines.is_skipping() {
                started.get_or_insert_with(Instant::now);
            }
            let (wait, limited_by_deadline) = match started {
                Some(t) => {
                    let left = deadline.saturating_sub(t.elapsed());
                    (left.min(timeout), left < timeout)
                }
                None => (timeout, false),
            };
            match self.fill(COMMAND_READ, wait, true).await {
                Ok(()) => {
                    started.get_or_insert_with(Instant::now);
                }
                Err(Stop::Timeout) if limited_by_deadline => return Err(Stop::Deadline),
                Err(stop) => return Err(stop),
            }
        }
    }

    /// Flushes replies, then reads more input into `input`, waiting at most `wait`.
    async fn fill(&mut self, chunk: usize, wait: Duration, watch_shutdown: bool) -> Result<(), Stop> {
        self.flush().await?;
        if wait.is_zero() {
            return Err(Stop::Timeout);
        }
        if self.pos == self.input.len() {
            self.input.clear();
        } else if self.pos > 0 {
            self.input.drain(..self.pos);
        }
        self.pos = 0;
        self.input.reserve(chunk);
        let shutdown = self.shared.shutdown.clone();
        let read = tokio::time::timeout(wait, self.stream.read_buf(&mut self.input));
        tokio::select! {
            r = read => match r {
                Err(_) => Err(Stop::Timeout),
                Ok(Ok(0)) => Err(Stop::Eof),
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(Stop::Io(e)),
            },
            _ = shutdown.cancelled(), if watch_shutdown => Err(Stop::Shutdown),
        }
    }

    /// Writes the queued replies, within `write_timeout`. After a failed write, nothing more
    /// is written: the stream is in an unknown state, and the connection is closing.
    async fn flush(&mut self) -> Result<(), Stop> {
        if self.output.is_empty() {
            return Ok(());
        }
        if self.write_failed {
            return Err(Stop::Write(std::io::ErrorKind::BrokenPipe.into()));
        }
        let limit = self.shared.config.server.write_timeout;
        match write_within(&mut self.stream, &self.output, limit).await {
            Ok(()) => {
                self.output.clear();
                Ok(())
            }
            Err(stop) => {
                self.write_failed = true;
                Err(stop)
            }
        }
    }

    /// Queues a reply; counts protocol errors and closes past `max_errors`.
    fn send(&mut self, reply: Reply) -> Flow {
        debug!(code = reply.code(), "reply: {}", reply.lines()[0]);
        reply.write_to(&mut self.output);
        if reply.code() == 421 {
            return Flow::Close;
        }
        if reply::is_protocol_error(reply.code()) && self.session.count_error() {
            warn!("too many errors");
            reply::too_many_errors().write_to(&mut self.output);
            return Flow::Close;
        }
        Flow::Continue
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

    fn decide(&self, hook: Hook, result: &HookResult, hello_host: &str, address: &str) -> Decision {
        let capabilities = self.session.capabilities();
        let config = &self.shared.config;
        let ctx = ReplyContext {
            me: &config.me,
            greeting: config.greeting.as_deref(),
            remote_ip: self.session.connection.remote.ip(),
            hello_host,
            capabilities: &capabilities,
            address,
        };
        verdict::decide(hook, result, &ctx)
    }

    /// Carries out a decision's reset, then sends its reply.
    async fn apply(&mut self, decision: Decision) -> Flow {
        if decision.reset {
            self.end_transaction().await;
        }
        let flow = self.send(decision.reply);
        if decision.close { Flow::Close } else { flow }
    }

    /// Ends the transaction, if any: runs `reset_transaction` and removes its spool file.
    async fn end_transaction(&mut self) {
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

    async fn command(&mut self, line: &[u8]) -> Flow {
        let command = match Command::parse(line) {
            Ok(c) => c,
            Err(CommandError::Address(AddressError::NotBracketed)) => match self.rewrite_path(line).await {
                Some(Ok(c)) => c,
                Some(Err(e)) => return self.send(parse_error_reply(&e)),
                None => return self.send(parse_error_reply(&CommandError::Address(AddressError::NotBracketed))),
            },
            Err(CommandError::BadBdat) => {
                warn!("BDAT without a valid chunk size: closing, the client's framing is unknown");
                self.send(reply::bdat_bad_size());
                return Flow::Close;
            }
            Err(e) => {
                debug!(error = %e, "unparsable command");
                return self.send(parse_error_reply(&e));
            }
        };
        match command {
            Command::Helo(host) => self.hello(false, host).await,
            Command::Ehlo(host) => self.hello(true, host).await,
            Command::Mail { from, params } => {
                if let Err(r) = self.session.check_mail(from.as_ref(), &params) {
                    return self.send(r);
                }
                let address = path_display(from.as_ref());
                self.transactions += 1;
                let id = format!("{}.{}", self.session.connection.id, self.transactions);
                self.session.begin_transaction(id, from.clone(), params.clone());
                let args = HookArgs::Mail { from: from.as_ref(), params: &params };
                let result = self.run_hook(Hook::Mail, args).await;
                let decision = self.decide(Hook::Mail, &result, "", &address);
                if !decision.accept {
                    self.end_transaction().await;
                }
                self.apply(decision).await
            }
            Command::Rcpt { to, params } => {
                if let Err(r) = self.session.check_rcpt(&to, &params) {
                    return self.send(r);
                }
                let address = path_display(Some(&to));
                let result = self.run_hook(Hook::Rcpt, HookArgs::Rcpt { to: &to, params: &params }).await;
                let decision = self.decide(Hook::Rcpt, &result, "", &address);
                if decision.accept {
                    self.session.accept_rcpt(to, params);
                }
                self.apply(decision).await
            }
            Command::Data => self.data().await,
            Command::Rset => {
                self.end_transaction().await;
                self.send(reply::reset_ok())
            }
            Command::Noop => self.simple_hook(Hook::Noop, HookArgs::None).await,
            Command::Vrfy(argument) => self.simple_hook(Hook::Vrfy, HookArgs::Vrfy { argument: &argument }).await,
            Command::Help(argument) => self.simple_hook(Hook::Help, HookArgs::Help { argument: &argument }).await,
            Command::Quit => self.simple_hook(Hook::Quit, HookArgs::None).await,
            Command::StartTls => self.start_tls().await,
            Command::Auth { mechanism, initial_response } => self.auth(&mechanism, initial_response.as_deref()).await,
            Command::Bdat { size, .. } => self.skip_chunk(size).await,
            Command::NotImplemented(verb) => self.send(reply::command_not_implemented(&verb)),
            Command::Unrecognized { verb, args } => {
                debug!(verb = %verb, "unrecognized command");
                self.simple_hook(Hook::UnrecognizedCommand, HookArgs::Unrecognized { verb: &verb, args: &args }).await
            }
        }
    }

    /// MAIL/RCPT with an address not in angle brackets: the `mail_pre`/`rcpt_pre` hooks may
    /// rewrite it (OK with the new address as the message). `None`: nobody did.
    async fn rewrite_path(&mut self, line: &[u8]) -> Option<Result<Command, CommandError>> {
        let unbracketed = UnbracketedPath::find(line)?;
        let hook = if unbracketed.verb.starts_with("MAIL") { Hook::MailPre } else { Hook::RcptPre };
        let result = self.run_hook(hook, HookArgs::Pre { path: &unbracketed.path }).await;
        match (result.verdict, result.message) {
            (Verdict::Ok, Some(path)) if !result.fault => {
                debug!(hook = hook.name(), from = %unbracketed.path, to = %path, "address rewritten");
                Some(Command::parse(&unbracketed.rewrite(&path)))
            }
            _ => None,
        }
    }

    /// A hook whose decision is the whole answer.
    async fn simple_hook(&mut self, hook: Hook, args: HookArgs<'_>) -> Flow {
        let result = self.run_hook(hook, args).await;
        let decision = self.decide(hook, &result, "", "");
        self.apply(decision).await
    }

    /// STARTTLS (RFC 3207): `220`, then the handshake, then a session that starts over.
    async fn start_tls(&mut self) -> Flow {
        if let Err(r) = self.session.check_starttls() {
            return self.send(r);
        }
        self.send(reply::starttls_ready());
        // Whatever the client sent after STARTTLS came in plaintext, outside the TLS session
        // it asked for: a man in the middle could have put it there (CVE-2011-0411). It is
        // thrown away, never executed.
        let injected = self.input.len() - self.pos;
        if injected > 0 {
            warn!(bytes = injected, "discarded plaintext sent after STARTTLS, before the TLS handshake");
        }
        self.input.clear();
        self.pos = 0;
        self.lines = LineReader::new(self.session.limits().max_command_line);
        if let Err(stop) = self.flush().await {
            self.stopped(stop, false);
            return Flow::Close;
        }
        match handshake(&mut self.stream, &self.shared, self.shared.config.server.command_deadline).await {
            Ok(info) => {
                self.end_transaction().await;
                self.session.accept_starttls(info);
                // Plugin instances start over too: nothing they learnt in plaintext carries over.
                self.scope = self.shared.runner.open_scope();
                Flow::Continue
            }
            Err(e) => {
                warn!(error = %e, "TLS handshake failed");
                Flow::Close
            }
        }
    }

    /// AUTH (RFC 4954): the SASL exchange, then the auth hooks decide.
    ///
    /// Nothing of the exchange is logged but the mechanism, the outcome and (on success) the
    /// user. A failure is counted before the hooks run (`AuthFailures::attempt`: parallel
    /// connections cannot all slip under the limit) and given back unless the credentials
    /// were wrong (`535`).
    async fn auth(&mut self, mechanism: &str, initial_response: Option<&str>) -> Flow {
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
        let (mut exchange, mut step) = sasl::Exchange::start(mechanism, initial_response);
        let mut read = 0u8;
        let credentials = loop {
            let left = responses.saturating_sub(read);
            match step {
                Step::Done(Ok(c)) => break c,
                Step::Done(Err(e)) => {
                    debug!(mechanism = %mechanism, error = %e, "AUTH exchange ended without credentials");
                    let left = if e == sasl::SaslError::Cancelled { 0 } else { left };
                    return self.refuse_auth(e.reply(), left);
                }
                Step::Challenge(challenge) => {
                    self.send(reply::sasl_challenge(challenge));
                    let input = self.next_sasl_response().await;
                    read += 1;
                    let left = responses.saturating_sub(read);
                    match input {
                        Ok(Input::Line(line)) => step = exchange.respond(&line),
                        Ok(Input::TooLong) => return self.refuse_auth(reply::auth_response_too_long(), left),
                        Ok(Input::BareNewline) => return self.refuse_auth(reply::auth_bad_response(), left),
                        Err(stop) => {
                            self.stopped(stop, false);
                            return Flow::Close;
                        }
                    }
                }
            }
        };
        let shared = self.shared.clone();
        let Some(attempt) = shared.auth_failures.attempt(ip) else {
            warn!(mechanism = %mechanism, "AUTH refused: too many failed attempts from this address");
            return self.send(reply::auth_too_many_failures());
        };
        let result = self.check_credentials(&credentials).await;
        let decision = self.decide(Hook::Auth, &result, "", "");
        if decision.accept {
            // The user name is logged on success only: a failed one may be a mistyped password.
            info!(user = %credentials.user, mechanism = %mechanism, plugin = result.plugin.as_deref().unwrap_or("-"), "authenticated");
            self.session.accept_auth(credentials.user, mechanism);
            drop(attempt);
        } else {
            warn!(mechanism = %mechanism, code = decision.reply.code(), plugin = result.plugin.as_deref().unwrap_or("-"), "authentication failed");
            if decision.reply.code() == 535 {
                attempt.failed();
                tokio::time::sleep(self.shared.config.auth.failure_delay).await;
            }
        }
        self.apply(decision).await
    }

    /// Refuses AUTH with `reply`; the client may still send `responses` lines of its exchange,
    /// which are read as responses, not commands (see `refused_sasl_lines`).
    fn refuse_auth(&mut self, reply: Reply, responses: u8) -> Flow {
        self.refused_sasl_lines = responses;
        self.send(reply)
    }

    /// A line while `refused_sasl_lines` is not zero: a command if it starts with a verb we
    /// carry out, otherwise a response of the refused exchange, answered `503` and dropped
    /// unread (never parsed, logged or given to a hook).
    async fn after_refused_auth(&mut self, input: Input) -> Flow {
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
    /// the generic `auth` hook (qpsmtpd's order).
    async fn check_credentials(&mut self, c: &Credentials) -> HookResult {
        let args = HookArgs::Auth { mechanism: c.mechanism, user: &c.user, password: &c.password };
        let result = self.run_hook(Hook::for_mechanism(c.mechanism), args).await;
        if result.fault || result.verdict != Verdict::Declined {
            return result;
        }
        self.run_hook(Hook::Auth, args).await
    }

    /// One SASL response line: longer lines are allowed than for commands (RFC 4954 section 4).
    async fn next_sasl_response(&mut self) -> Result<Input, Stop> {
        self.lines.set_max(sasl::MAX_RESPONSE_LINE);
        let input = self.next_command().await;
        self.lines.set_max(self.session.limits().max_command_line);
        input
    }

    async fn hello(&mut self, esmtp: bool, host: String) -> Flow {
        let hook = if esmtp { Hook::Ehlo } else { Hook::Helo };
        let result = self.run_hook(hook, HookArgs::Hello { host: &host }).await;
        let decision = self.decide(hook, &result, &host, "");
        if decision.accept {
            // A new EHLO clears the transaction, exactly as RSET would (RFC 5321 4.1.4).
            self.end_transaction().await;
            self.session.accept_hello(esmtp, &host);
        }
        self.apply(decision).await
    }

    async fn data(&mut self) -> Flow {
        if let Err(r) = self.session.check_data() {
            return self.send(r);
        }
        let result = self.run_hook(Hook::Data, HookArgs::None).await;
        let decision = self.decide(Hook::Data, &result, "", "");
        if !decision.accept {
            return self.apply(decision).await;
        }
        if self.pos < self.input.len() {
            // RFC 2920: DATA ends a pipelined group; content before our 354 is a client that
            // does not wait for replies (or an attack on one that does).
            warn!(bytes = self.input.len() - self.pos, "message data sent before the 354 reply");
            self.send(reply::data_before_354());
            return Flow::Close;
        }
        self.send(decision.reply);
        self.receive_message().await
    }

    /// BDAT (RFC 3030) without CHUNKING offered: its chunk follows the command at once, and is
    /// message text that must never be read as commands (a front end that does offer CHUNKING
    /// would pass it on, and commands hidden in it would be smuggled). So exactly `size` octets
    /// are read and thrown away, within the DATA timeouts, and only then is BDAT answered
    /// `502`. A chunk larger than `max_message_size` is not skipped: `552` and close.
    async fn skip_chunk(&mut self, size: u64) -> Flow {
        let max = self.session.limits().max_message_size;
        if max != 0 && size > max {
            warn!(size, "BDAT chunk larger than the message size limit; closing");
            self.send(reply::bdat_chunk_too_big(max));
            return Flow::Close;
        }
        let (timeout, deadline) = (self.shared.config.server.data_timeout, self.shared.config.server.data_deadline);
        let started = Instant::now();
        let mut left = size;
        loop {
            let here = (self.input.len() - self.pos).min(usize::try_from(left).unwrap_or(usize::MAX));
            self.pos += here;
            left -= here as u64;
            if left == 0 {
                break;
            }
            let remaining = deadline.saturating_sub(started.elapsed());
            if let Err(stop) = self.fill(DATA_READ, remaining.min(timeout), true).await {
                let stop = if matches!(stop, Stop::Timeout) && remaining < timeout { Stop::Deadline } else { stop };
                self.stopped(stop, true);
                return Flow::Close;
            }
        }
        self.input.drain(..self.pos);
        self.pos = 0;
        self.input.shrink_to(COMMAND_READ);
        info!(size, "BDAT chunk skipped: CHUNKING is not offered");
        self.send(reply::command_not_implemented("BDAT"))
    }

    /// Streams the message into the spool, then runs data_post and queue.
    async fn receive_message(&mut self) -> Flow {
        let shared = self.shared.clone();
        let limits = self.session.limits().clone();
        let server = &shared.config.server;
        let Some(txn) = &self.session.transaction else {
            return Flow::Close;
        };
        let header = spool::received_header(&shared.config.me, &self.session.connection, txn);
        let mut incoming = shared.spool.incoming(&txn.id, limits.spool_threshold);
        let mut write_error: Option<std::io::Error> = incoming.write(header.as_bytes()).await.err();
        let mut reader = DataReader::new(limits.max_message_size, limits.max_text_line);
        let mut out = Vec::with_capacity(DATA_READ);
        let started = Instant::now();
        let end = loop {
            let (n, end) = reader.feed(&self.input[self.pos..], &mut out);
            self.pos += n;
            if !out.is_empty() {
                if write_error.is_none()
                    && let Err(e) = incoming.write(&out).await
                {
                    write_error = Some(e);
                }
                out.clear();
            }
            if let Some(end) = end {
                break end;
            }
            let left = server.data_deadline.saturating_sub(started.elapsed());
            let wait = left.min(server.data_timeout);
            match self.fill(DATA_READ, wait, false).await {
                Ok(()) => {}
                Err(stop) => {
                    let stop =
                        if matches!(stop, Stop::Timeout) && left < server.data_timeout { Stop::Deadline } else { stop };
                    incoming.discard().await;
                    self.stopped(stop, true);
                    return Flow::Close;
                }
            }
        };
        // Give back the large DATA buffer; idle connections stay small.
        self.input.drain(..self.pos);
        self.pos = 0;
        self.input.shrink_to(COMMAND_READ);

        let spooled = match write_error {
            None => incoming.finish().await,
            Some(e) => {
                incoming.discard().await;
                Err(e)
            }
        };
        let message = match (end, spooled) {
            (DataEnd::Complete { .. }, Ok(message)) => message,
            (end, spooled) => {
                let spooled = match spooled {
                    Ok(message) => {
                        spool::discard(message).await;
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                let reply = match (end, spooled) {
                    (DataEnd::TooBig, _) => reply::message_too_big(),
                    (DataEnd::BareNewline, _) => reply::bare_newline_in_data(),
                    (DataEnd::LineTooLong, _) => reply::data_line_too_long(limits.max_text_line),
                    (_, Err(e)) if e.raw_os_error() == Some(28) => reply::insufficient_storage(),
                    (_, Err(e)) => {
                        warn!(error = %e, "spool write failed");
                        reply::local_error()
                    }
                    (DataEnd::Complete { .. }, Ok(_)) => unreachable!(),
                };
                info!(size = reader.size(), code = reply.code(), "message refused: {}", reply.lines()[0]);
                self.end_transaction().await;
                return self.send(reply);
            }
        };
        if let Some(txn) = &mut self.session.transaction {
            txn.message = Some(message);
        }

        let result = self.run_hook(Hook::DataPost, HookArgs::None).await;
        let decision = self.decide(Hook::DataPost, &result, "", "");
        if !decision.accept {
            self.log_outcome(&decision, &result);
            return self.apply(decision).await;
        }
        let result = self.run_hook(Hook::Queue, HookArgs::None).await;
        let decision = self.decide(Hook::Queue, &result, "", "");
        self.log_outcome(&decision, &result);
        self.apply(decision).await
    }

    fn log_outcome(&self, decision: &Decision, result: &HookResult) {
        let Some(txn) = &self.session.transaction else {
            return;
        };
        let size = txn.message.as_ref().map_or(0, |m| m.size);
        let plugin = result.plugin.as_deref().unwrap_or("-");
        info!(
            txn = %txn.id,
            from = %txn.sender_path(),
            recipients = txn.recipients.len(),
            size,
            plugin,
            code = decision.reply.code(),
            "message {}: {}",
            if decision.reply.code() == 250 { "accepted" } else { "refused" },
            decision.reply.lines()[0]
        );
    }
}

fn path_display(address: Option<&Address>) -> String {
    match address {
        Some(a) => format!("<{a}>"),
        None => "<>".to_string(),
    }
}

fn parse_error_reply(e: &CommandError) -> Reply {
    match e {
        CommandError::BadCharacters => reply::invalid_characters(),
        other => reply::syntax_error(&other.to_string()),
    }
}
