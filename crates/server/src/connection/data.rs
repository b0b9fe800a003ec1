//! DATA (RFC 5321 4.1.1.4): the `data` hook decides whether the client may send; after our
//! 354 the message streams into the spool (dot-unstuffed and bounded by `DataReader`), the
//! server checks DKIM and DMARC and records its results (when enabled), then `data_post` and
//! `queue` decide. The client hears `250` only when a queue plugin said OK.

use tokio::time::Instant;

use tracing::{info, warn};
use wasmtpd_smtp::reply::{self, Reply};
use wasmtpd_smtp::verdict::Decision;
use wasmtpd_smtp::{DataEnd, DataReader, HookResult, Message};
use wasmtpd_smtp::{Hook, HookArgs, HookRunner};

use super::transport::DATA_READ;
use super::{ClientConnection, Flow};
use crate::spool;
use crate::stream::ClientIo;

impl<R: HookRunner, S: ClientIo> ClientConnection<R, S> {
    pub(super) async fn data(&mut self) -> Flow {
        if let Err(r) = self.session.check_data() {
            return self.send(r);
        }
        let result = self.run_hook(Hook::Data, HookArgs::None).await;
        let decision = self.decide(Hook::Data, &HookArgs::None, &result);
        if !decision.accept {
            return self.apply(decision).await;
        }
        if self.transport.unread() > 0 {
            // RFC 2920: DATA ends a pipelined group; content before our 354 is a client that
            // does not wait for replies (or an attack on one that does).
            warn!(bytes = self.transport.unread(), "message data sent before the 354 reply");
            self.send(reply::data_before_354());
            return Flow::Close;
        }
        self.send(decision.reply);
        let message = match self.receive_message().await {
            Ok(message) => message,
            Err(flow) => return flow,
        };
        if let Some(txn) = &mut self.session.transaction {
            txn.message = Some(message);
            if let Some(authenticator) = &self.shared.authenticator {
                authenticator.message(&self.session.connection, txn).await;
            }
        }
        self.post_and_queue().await
    }

    /// Streams the message into the spool. `Err`: it was refused (the reply is sent, the
    /// transaction ended) or the connection is lost.
    async fn receive_message(&mut self) -> Result<Message, Flow> {
        let limits = self.session.limits().clone();
        let Some(txn) = &self.session.transaction else {
            return Err(Flow::Close);
        };
        let header = spool::received_header(&self.shared.config.me, &self.session.connection, txn);
        let mut incoming = self.shared.spool.incoming(&txn.id, limits.spool_threshold);
        let mut write_error = incoming.write(header.as_bytes()).await.err();
        let mut reader = DataReader::new(limits.max_message_size, limits.max_text_line).refusing_nul(limits.refuse_nul);
        let mut out = Vec::with_capacity(DATA_READ);
        let started = Instant::now();
        let end = loop {
            let (n, end) = reader.feed(self.transport.unread_input(), &mut out);
            self.transport.consume(n);
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
            // A message in flight may finish after shutdown began.
            if let Err(stop) = self.transport.read_message_text(started, true).await {
                incoming.discard().await;
                self.stopped(stop, true);
                return Err(Flow::Close);
            }
        };
        self.transport.end_message_text();
        let spooled = match write_error {
            None => incoming.finish().await,
            Some(e) => {
                incoming.discard().await;
                Err(e)
            }
        };
        // A message that did not arrive whole is refused for that, whatever the spool did.
        let refusal = match (framing_error(end, limits.max_text_line), spooled) {
            (None, Ok(message)) => return Ok(message),
            (None, Err(e)) => spool_failure(&e),
            (Some(reply), Ok(message)) => {
                spool::discard(message).await;
                reply
            }
            (Some(reply), Err(_)) => reply,
        };
        info!(size = reader.size(), code = refusal.code(), "message refused: {}", refusal.lines()[0]);
        self.end_transaction().await;
        Err(self.send(refusal))
    }

    /// The message is spooled: `data_post` may refuse it, then `queue` decides.
    pub(super) async fn post_and_queue(&mut self) -> Flow {
        let result = self.run_hook(Hook::DataPost, HookArgs::None).await;
        let decision = self.decide(Hook::DataPost, &HookArgs::None, &result);
        if !decision.accept {
            self.log_outcome(&decision, &result);
            return self.apply(decision).await;
        }
        let result = self.run_hook(Hook::Queue, HookArgs::None).await;
        let decision = self.decide(Hook::Queue, &HookArgs::None, &result);
        self.log_outcome(&decision, &result);
        self.apply(decision).await
    }

    /// One line per message: its fate, and the plugin that decided it.
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

/// The spool could not hold the message: a full disk is 452 (RFC 5321 4.5.3.1.4), anything
/// else a local error.
pub(super) fn spool_failure(e: &std::io::Error) -> Reply {
    if e.raw_os_error() == Some(28) {
        return reply::insufficient_storage();
    }
    warn!(error = %e, "spool write failed");
    reply::local_error()
}

/// Why a message that ended this way is refused; `None` if it arrived whole.
pub(super) fn framing_error(end: DataEnd, max_text_line: usize) -> Option<Reply> {
    match end {
        DataEnd::Complete { .. } => None,
        DataEnd::TooBig => Some(reply::message_too_big()),
        DataEnd::BareNewline => Some(reply::bare_newline_in_data()),
        DataEnd::LineTooLong => Some(reply::data_line_too_long(max_text_line)),
        DataEnd::Nul => Some(reply::nul_in_data()),
    }
}
