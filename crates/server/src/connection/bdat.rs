//! BDAT (RFC 3030) while CHUNKING is not offered. Its chunk follows the command at once, and
//! is message text that must never be read as commands (a front end that does offer CHUNKING
//! would pass it on, and commands hidden in it would be smuggled). So exactly `size` octets
//! are read and thrown away, within the DATA timeouts, and only then is BDAT answered `502`.
//! A chunk larger than `max_message_size` is not skipped: `552` and close.

use tokio::time::Instant;

use tracing::{info, warn};
use wasmtpd_smtp::HookRunner;
use wasmtpd_smtp::reply;

use super::{ClientConnection, Flow};
use crate::stream::ClientIo;

impl<R: HookRunner, S: ClientIo> ClientConnection<R, S> {
    pub(super) async fn bdat(&mut self, size: u64) -> Flow {
        let max = self.session.limits().max_message_size;
        if max != 0 && size > max {
            warn!(size, "BDAT chunk larger than the message size limit; closing");
            self.send(reply::bdat_chunk_too_big(max));
            return Flow::Close;
        }
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
                return Flow::Close;
            }
        }
        self.transport.end_message_text();
        info!(size, "BDAT chunk skipped: CHUNKING is not offered");
        self.send(reply::command_not_implemented("BDAT"))
    }
}
