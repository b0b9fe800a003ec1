//! The transport of one session: the client's stream, what it sent that is not yet read, the
//! replies not yet written, and every wait on the client bounded in time. Generic over the
//! stream, so a session runs over an in-memory duplex (the transcript tests) as it does over
//! a socket.
//!
//! - Replies are collected and written when the input holds no complete command (RFC 2920
//!   pipelining: replies in order, one write for a pipelined group).
//! - Every wait is bounded: an idle timeout and a deadline for each command line, an idle
//!   timeout and a deadline for the whole DATA transfer (or BDAT chunk), and `write_timeout`
//!   for every write (a client that pipelines commands and never reads the replies would
//!   otherwise block us in a write, where no read timeout fires). After a failed write nothing
//!   more is written.
//! - The TLS swap: the plain stream is handed to the handshake and the session goes on over TLS.

use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use wasmtpd_smtp::reply::Reply;
use wasmtpd_smtp::{LineEvent, LineReader, TlsInfo};

use crate::config::ServerLimits;
use crate::stream::{ClientIo, ClientStream};
use crate::tls;

/// Read sizes: small while exchanging commands (many idle clients stay cheap), large in DATA.
pub(super) const COMMAND_READ: usize = 4 * 1024;
pub(super) const DATA_READ: usize = 64 * 1024;

/// Why a wait for client input ended without input, or a write to the client failed.
#[derive(Debug)]
pub(super) enum Stop {
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
pub(super) enum Input {
    Line(Vec<u8>),
    BareNewline,
    TooLong,
}

pub(super) struct Transport<S> {
    stream: ClientStream<S>,
    input: Vec<u8>,
    /// Bytes of `input` already consumed.
    pos: usize,
    output: Vec<u8>,
    /// A write failed or timed out: nothing more is written (the connection is closing).
    write_failed: bool,
    lines: LineReader,
    limits: ServerLimits,
    shutdown: CancellationToken,
}

impl<S: ClientIo> Transport<S> {
    pub(super) fn new(
        stream: ClientStream<S>,
        max_command_line: usize,
        limits: ServerLimits,
        shutdown: CancellationToken,
    ) -> Self {
        Transport {
            stream,
            input: Vec::new(),
            pos: 0,
            output: Vec::new(),
            write_failed: false,
            lines: LineReader::new(max_command_line),
            limits,
            shutdown,
        }
    }

    /// Octets the client sent that are not read yet.
    pub(super) fn unread(&self) -> usize {
        self.input.len() - self.pos
    }

    /// Waits `delay` (or only looks, when it is zero) for input sent before our greeting.
    /// `Some(true)`: the client talked early; `None`: it already closed.
    pub(super) async fn watch_for_early_talk(&mut self, delay: Duration) -> Option<bool> {
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

    /// Reads the next line of at most `max` octets (with its CRLF), within the command timeout
    /// and deadline.
    pub(super) async fn next_line(&mut self, max: usize) -> Result<Input, Stop> {
        self.lines.set_max(max);
        let timeout = self.limits.command_timeout;
        let deadline = self.limits.command_deadline;
        let mut started: Option<Instant> = None;
        loop {
            if self.shutdown.is_cancelled() {
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

    /// The unread input, for the DATA reader; `consume` says how much of it was taken.
    pub(super) fn unread_input(&self) -> &[u8] {
        &self.input[self.pos..]
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.pos += n;
    }

    /// Reads more message text (DATA, or a BDAT chunk that began at `started`), within the
    /// DATA timeout and deadline. Shutdown is not watched when `finish_on_shutdown`: a message
    /// in flight may finish.
    pub(super) async fn read_message_text(&mut self, started: Instant, finish_on_shutdown: bool) -> Result<(), Stop> {
        let (timeout, deadline) = (self.limits.data_timeout, self.limits.data_deadline);
        let left = deadline.saturating_sub(started.elapsed());
        match self.fill(DATA_READ, left.min(timeout), !finish_on_shutdown).await {
            Err(Stop::Timeout) if left < timeout => Err(Stop::Deadline),
            other => other,
        }
    }

    /// After a message: gives back the large DATA buffer, so idle connections stay small.
    pub(super) fn end_message_text(&mut self) {
        self.input.drain(..self.pos);
        self.pos = 0;
        self.input.shrink_to(COMMAND_READ);
    }

    /// Throws away everything the client sent that is not read yet; the next line starts
    /// fresh (at most `max_command_line` long). Returns how many octets were dropped.
    pub(super) fn discard_unread(&mut self, max_command_line: usize) -> usize {
        let dropped = self.unread();
        self.input.clear();
        self.pos = 0;
        self.lines = LineReader::new(max_command_line);
        dropped
    }

    /// Flushes replies, then reads more input, waiting at most `wait`.
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
        let shutdown = self.shutdown.clone();
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

    /// Queues a reply; it is written at the next flush.
    pub(super) fn queue(&mut self, reply: &Reply) {
        reply.write_to(&mut self.output);
    }

    /// Writes the queued replies, within `write_timeout`. After a failed write, nothing more
    /// is written: the stream is in an unknown state, and the connection is closing.
    pub(super) async fn flush(&mut self) -> Result<(), Stop> {
        if self.output.is_empty() {
            return Ok(());
        }
        if self.write_failed {
            return Err(Stop::Write(std::io::ErrorKind::BrokenPipe.into()));
        }
        match write_within(&mut self.stream, &self.output, self.limits.write_timeout).await {
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

    /// Runs the server side of a TLS handshake on the plain stream, within `limit`; on success
    /// the stream is TLS from then on.
    pub(super) async fn start_tls(&mut self, acceptor: TlsAcceptor, limit: Duration) -> Result<TlsInfo, String> {
        handshake(&mut self.stream, acceptor, limit).await
    }

    /// Flushes what is queued and closes (see [`linger`]).
    pub(super) async fn close(&mut self) -> Result<(), Stop> {
        if !self.write_failed {
            self.flush().await?;
            linger(&mut self.stream, self.limits.write_timeout).await;
        }
        Ok(())
    }
}

/// Runs the server side of a TLS handshake on a plain stream, within `limit`.
pub(super) async fn handshake<S: ClientIo>(
    stream: &mut ClientStream<S>,
    acceptor: TlsAcceptor,
    limit: Duration,
) -> Result<TlsInfo, String> {
    let plain = stream.take_plain().ok_or("the connection is not plain")?;
    let accepted = match tokio::time::timeout(limit, acceptor.accept(plain)).await {
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
pub(super) async fn write_within<S: ClientIo>(
    stream: &mut ClientStream<S>,
    bytes: &[u8],
    limit: Duration,
) -> Result<(), Stop> {
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
pub(super) async fn linger<S: ClientIo>(stream: &mut ClientStream<S>, write_limit: Duration) {
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
