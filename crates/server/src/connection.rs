//! One task per client: socket ⇄ [`Session`] ⇄ [`HookRunner`]. This is the only code that
//! reads from or writes to a client socket.
//!
//! - Replies are collected in `output` and written when the input holds no complete command
//!   (RFC 2920 pipelining: replies in order, one write for a pipelined group).
//! - Every wait on the client is bounded: an idle timeout and a deadline for each command line,
//!   an idle timeout and a deadline for the whole DATA transfer.
//! - Input before the greeting, or between DATA and our 354, is early talking: 554 and close.
//! - On shutdown a client gets 421 at its next command; a DATA transfer in flight finishes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};
use wasmtpd_smtp::command::CommandError;
use wasmtpd_smtp::reply::{self, Reply};
use wasmtpd_smtp::verdict::{self, Decision, ReplyContext};
use wasmtpd_smtp::{
    Address, Command, DataEnd, DataReader, Hook, HookArgs, HookContext, HookResult, HookRunner, LineEvent, LineReader,
    Message, Session,
};
use wasmtpd_smtp::{AddressError, UnbracketedPath, Verdict};

use crate::Shared;
use crate::admission::Ticket;
use crate::spool;

/// Read sizes: small while exchanging commands (many idle clients stay cheap), large in DATA.
const COMMAND_READ: usize = 4 * 1024;
const DATA_READ: usize = 64 * 1024;

/// Whether the session goes on after a command.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// Why a wait for client input ended without input.
#[derive(Debug)]
enum Stop {
    Eof,
    Timeout,
    Deadline,
    Shutdown,
    Io(std::io::Error),
}

/// One complete unit of command-phase input.
enum Input {
    Line(Vec<u8>),
    BareNewline,
    TooLong,
}

pub(crate) struct ClientConnection<R: HookRunner> {
    stream: TcpStream,
    shared: Arc<Shared<R>>,
    session: Session,
    scope: R::Scope,
    input: Vec<u8>,
    /// Bytes of `input` already consumed.
    pos: usize,
    output: Vec<u8>,
    lines: LineReader,
    transactions: u32,
}

/// Serves one client from accept to close. `admitted` is `Err` when a connection limit was hit.
pub(crate) async fn serve<R: HookRunner>(
    stream: TcpStream,
    shared: Arc<Shared<R>>,
    session: Session,
    admitted: Result<Ticket, Reply>,
) {
    let _ticket = match admitted {
        Ok(t) => t,
        Err(reply) => {
            info!(remote = %session.connection.remote, reply = reply.code(), "connection refused: {}", reply.lines()[0]);
            let mut out = Vec::new();
            reply.write_to(&mut out);
            let mut stream = stream;
            if tokio::time::timeout(Duration::from_secs(5), stream.write_all(&out)).await.is_ok() {
                linger(stream).await;
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
        lines,
        transactions: 0,
    };
    info!("connected");
    conn.converse().await;
    conn.end_transaction().await;
    conn.run_hook(Hook::Disconnect, HookArgs::None).await;
    if let Err(e) = conn.flush().await {
        debug!(error = %e, "could not send the last replies");
    }
    linger(conn.stream).await;
    info!("disconnected");
}

/// Closes our side, then reads and drops whatever the client still sends, briefly. Closing a
/// socket with unread input makes the kernel send a RST, which can destroy our last reply
/// (a 421 or 554) before the client reads it.
async fn linger(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
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
            let input = match self.next_command().await {
                Ok(input) => input,
                Err(stop) => {
                    self.stopped(stop, false);
                    return;
                }
            };
            let flow = match input {
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
        let deadline = Instant::now() + self.shared.config.server.greeting_delay;
        self.input.reserve(COMMAND_READ);
        loop {
            match self.stream.try_read_buf(&mut self.input) {
                Ok(0) => return None,
                Ok(_) => return Some(true),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return None,
            }
            // Readiness can be reported with nothing to read: wait again until the delay is over.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, self.stream.readable()).await.is_err() {
                return Some(false);
            }
        }
    }

    /// Answers the end of a wait that brought no input.
    fn stopped(&mut self, stop: Stop, in_data: bool) {
        match stop {
            Stop::Eof if in_data => warn!("connection lost during DATA"),
            Stop::Eof => debug!("client closed the connection"),
            Stop::Io(e) => warn!(error = %e, "read error"),
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
        self.flush().await.map_err(Stop::Io)?;
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

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.output.clear();
        }
        Ok(())
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
            spool::remove(&message.path).await;
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

    /// Streams the message into the spool, then runs data_post and queue.
    async fn receive_message(&mut self) -> Flow {
        let shared = self.shared.clone();
        let limits = self.session.limits().clone();
        let server = &shared.config.server;
        let Some(txn) = &self.session.transaction else {
            return Flow::Close;
        };
        let header = spool::received_header(&shared.config.me, &self.session.connection, txn);
        let mut file = match shared.spool.create(&txn.id).await {
            Ok(f) => Some(f),
            Err(e) => {
                warn!(error = %e, "cannot create spool file; the message will be refused");
                None
            }
        };
        let mut write_error: Option<std::io::Error> = None;
        if let Some(f) = &mut file
            && let Err(e) = f.write(header.as_bytes()).await
        {
            write_error = Some(e);
        }
        let mut reader = DataReader::new(limits.max_message_size, limits.max_text_line);
        let mut out = Vec::with_capacity(DATA_READ);
        let started = Instant::now();
        let end = loop {
            let (n, end) = reader.feed(&self.input[self.pos..], &mut out);
            self.pos += n;
            if !out.is_empty() {
                if let (Some(f), None) = (&mut file, &write_error)
                    && let Err(e) = f.write(&out).await
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
                    if let Some(f) = file {
                        spool::remove(f.path()).await;
                    }
                    self.stopped(stop, true);
                    return Flow::Close;
                }
            }
        };
        // Give back the large DATA buffer; idle connections stay small.
        self.input.drain(..self.pos);
        self.pos = 0;
        self.input.shrink_to(COMMAND_READ);

        let spooled = match (file, write_error) {
            (Some(f), None) => f.finish().await,
            (Some(f), Some(e)) => {
                spool::remove(f.path()).await;
                Err(e)
            }
            (None, _) => Err(std::io::Error::other("no spool file")),
        };
        let (path, size) = match (end, spooled) {
            (DataEnd::Complete { .. }, Ok(spooled)) => spooled,
            (end, spooled) => {
                if let Ok((path, _)) = &spooled {
                    spool::remove(path).await;
                }
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
            txn.message = Some(Message { path, size });
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
