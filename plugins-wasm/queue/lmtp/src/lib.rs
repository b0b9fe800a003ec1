//! queue/lmtp (Haraka's name): delivery to an LMTP server (Dovecot's `lmtp`) while the client
//! waits. Recipients are checked with it at RCPT (Dovecot looks the user up there, so an
//! unknown user is refused with its reply); after the message, LMTP answers once per
//! recipient, and the client's one reply is:
//!
//! - 250 if every recipient was delivered;
//! - the downstream's 5xx if every recipient failed permanently;
//! - otherwise (some delivered and some not, or any temporary failure) 451 4.4.0, naming how
//!   many were delivered: the client keeps the message and tries again, so nothing is lost;
//!   those delivered already may get it twice, which is the price of one reply for many
//!   outcomes without a queue of our own.
//!
//! Arguments and config as `queue/smtp-forward` (its routes file is `lmtp`), with a downstream
//! of protocol `lmtp` in `config/downstreams`.

use queue_forward::Forward;
use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin};

struct Lmtp;

#[wasmtpd_plugin::plugin]
impl Plugin for Lmtp {
    fn rcpt(recipient: Address, _params: Vec<EsmtpParam>) -> HookResult {
        Forward::new("lmtp").rcpt(&recipient)
    }

    fn queue() -> HookResult {
        Forward::new("lmtp").queue()
    }
}
