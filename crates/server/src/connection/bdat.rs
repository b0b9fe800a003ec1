//! BDAT (RFC 3030, CHUNKING, and BINARYMIME): the message in chunks, each of exactly the
//! octets its command line says, which follow the line at once. Whatever the answer, a chunk
//! is read whole (within the DATA timeouts) and never as commands: the framing is never lost.
//!
//! - The first chunk of a transaction runs the `data` hook, as DATA does; taken, the chunks
//!   stream into the spool after our Received header, checked by DATA's rules
//!   ([`wasmtpd_smtp::chunk`]: size, bare CR/LF, line length, NUL; BINARYMIME only the size).
//!   Each is answered `250` when taken; the LAST one, once the message is whole, by
//!   `data_post` and then `queue`, as after DATA.
//! - A chunk refused before LAST (the `data` hook, a broken rule, the spool) leaves a defined
//!   state: the message so far is dropped, the transaction stays, and every later chunk of it
//!   is read, dropped and answered `503` until RSET (or EHLO) ends it. DATA may not follow
//!   BDAT in a transaction. A refused LAST chunk ends the transaction, as a refused DATA does.
//! - BDAT with no transaction to take it: its chunk is read and dropped, then `503`.
//! - A chunk larger than `max_message_size` is not read: `552` and close (reading it all to
//!   keep the framing would cost more than it is worth).
//! - A chunk cut short by a disconnect or a timeout drops the message and closes.

use tokio::time::Instant;

use tracing::{info, warn};
use wasmtpd_smtp::chunk::ChunkReader;
use wasmtpd_smtp::reply::{self, Reply};
use wasmtpd_smtp::{Chunking, DataEnd, Hook, HookArgs, HookRunner};

use super::data::{framing_error, spool_failure};
use super::transport::DATA_READ;
use super::{ClientConnection, Flow};
use crate::spool::{self, Incoming};
use crate::stream::ClientIo;

/// A message arriving in chunks: where it goes, and the rules it is checked by.
pub(super) struct Chunks {
    incoming: Incoming,
    reader: ChunkReader,
    write_error: Option<std::io::Error>,
}

impl<R: HookRunner, S: ClientIo> ClientConnection<R, S> {
    pub(super) async fn bdat(&mut self, size: u64, last: bool) -> Flow {
        let max = self.session.limits().max_message_size;
        if max != 0 && size > max {
            warn!(size, "BDAT chunk larger than the message size limit; closing");
            self.fail_chunks();
            self.send(reply::bdat_chunk_too_big(max));
            return Flow::Close;
        }
        let refusal = match self.session.check_bdat() {
            Err(r) => Some(r),
            Ok(()) if self.chunks.is_none() => match self.first_chunk().await {
                Ok(()) => None,
                Err(Some(r)) => Some(r),
                Err(None) => return Flow::Close,
            },
            Ok(()) => None,
        };
        if let Some(refusal) = refusal {
            if !self.skip_chunk(size).await {
                return Flow::Close;
            }
            info!(size, code = refusal.code(), "BDAT chunk refused: {}", refusal.lines()[0]);
            return self.send(refusal);
        }
        if !self.take_chunk(size).await {
            return Flow::Close;
        }
        if !last {
            if let Some(refusal) = self.chunk_failure() {
                info!(size, code = refusal.code(), "message refused in a BDAT chunk: {}", refusal.lines()[0]);
                self.drop_chunks().await;
                self.fail_chunks();
                return self.send(refusal);
            }
            return self.send(reply::bdat_chunk_received(size));
        }
        self.last_chunk().await
    }

    /// The first chunk of a transaction: the `data` hook decides, as for DATA. `Err(Some)`:
    /// refused (the transaction's chunks fail); `Err(None)`: the connection closes (replied).
    async fn first_chunk(&mut self) -> Result<(), Option<Reply>> {
        let result = self.run_hook(Hook::Data, HookArgs::None).await;
        let decision = self.decide(Hook::Data, &HookArgs::None, &result);
        if !decision.accept {
            if decision.close {
                self.apply(decision).await;
                return Err(None);
            }
            self.fail_chunks();
            return Err(Some(decision.reply));
        }
        let limits = self.session.limits().clone();
        let Some(txn) = &mut self.session.transaction else {
            return Err(None);
        };
        txn.chunking = Chunking::Receiving;
        let header = spool::received_header(&self.shared.config.me, &self.session.connection, txn);
        let mut incoming = self.shared.spool.incoming(&txn.id, limits.spool_threshold);
        let write_error = incoming.write(header.as_bytes()).await.err();
        let binary = txn.mail_params.binarymime;
        let reader = ChunkReader::new(limits.max_message_size, limits.max_text_line, binary, limits.refuse_nul);
        self.chunks = Some(Chunks { incoming, reader, write_error });
        Ok(())
    }

    /// Reads `size` octets of chunk into the message. `false`: the connection is lost (the
    /// message is dropped, the stop answered).
    async fn take_chunk(&mut self, size: u64) -> bool {
        let started = Instant::now();
        let mut left = size;
        let mut out = Vec::with_capacity(DATA_READ.min(size as usize));
        while left > 0 {
            if self.transport.unread() == 0
                && let Err(stop) = self.transport.read_message_text(started, true).await
            {
                self.drop_chunks().await;
                self.stopped(stop, true);
                return false;
            }
            let here = self.transport.unread().min(usize::try_from(left).unwrap_or(usize::MAX));
            let Some(chunks) = &mut self.chunks else { return false };
            chunks.reader.feed(&self.transport.unread_input()[..here], &mut out);
            self.transport.consume(here);
            left -= here as u64;
            if !out.is_empty() {
                if chunks.write_error.is_none()
                    && let Err(e) = chunks.incoming.write(&out).await
                {
                    chunks.write_error = Some(e);
                }
                out.clear();
            }
        }
        self.transport.end_message_text();
        true
    }

    /// Reads and drops `size` octets. `false`: the connection is lost.
    async fn skip_chunk(&mut self, size: u64) -> bool {
        let started = Instant::now();
        let mut left = size;
        loop {
            let here = self.transport.unread().min(usize::try_from(left).unwrap_or(usize::MAX));
            self.transport.consume(here);
            left -= here as u64;
            if left == 0 {
                break;
            }
            if let Err(stop) = self.transport.read_message_text(started, false).await {
                self.stopped(stop, true);
                return false;
            }
        }
        self.transport.end_message_text();
        true
    }

    /// Why the message so far is refused, if it is.
    fn chunk_failure(&self) -> Option<Reply> {
        let chunks = self.chunks.as_ref()?;
        if let Some(end) = chunks.reader.failure() {
            return framing_error(end, self.session.limits().max_text_line);
        }
        chunks.write_error.as_ref().map(spool_failure)
    }

    /// The LAST chunk is in: the message is whole, or refused and the transaction ends.
    async fn last_chunk(&mut self) -> Flow {
        let Some(mut chunks) = self.chunks.take() else {
            return Flow::Close;
        };
        let end = chunks.reader.finish();
        let spooled = match chunks.write_error.take() {
            None if matches!(end, DataEnd::Complete { .. }) => chunks.incoming.finish().await,
            None => {
                chunks.incoming.discard().await;
                Err(std::io::ErrorKind::InvalidData.into())
            }
            Some(e) => {
                chunks.incoming.discard().await;
                Err(e)
            }
        };
        let refusal = match (framing_error(end, self.session.limits().max_text_line), spooled) {
            (None, Ok(message)) => {
                if let Some(txn) = &mut self.session.transaction {
                    txn.message = Some(message);
                    if let Some(authenticator) = &self.shared.authenticator {
                        authenticator.message(&self.session.connection, txn).await;
                    }
                }
                return self.post_and_queue().await;
            }
            (None, Err(e)) => spool_failure(&e),
            (Some(reply), _) => reply,
        };
        info!(size = chunks.reader.size(), code = refusal.code(), "message refused: {}", refusal.lines()[0]);
        self.end_transaction().await;
        self.send(refusal)
    }

    /// The transaction's chunks are refused from now on (until RSET).
    fn fail_chunks(&mut self) {
        if let Some(txn) = &mut self.session.transaction {
            txn.chunking = Chunking::Failed;
        }
    }

    /// Drops the message received so far in chunks, if any.
    pub(super) async fn drop_chunks(&mut self) {
        if let Some(chunks) = self.chunks.take() {
            chunks.incoming.discard().await;
        }
    }
}
