//! queue/smtp-forward (qpsmtpd's name; Haraka's `queue/smtp_forward`): wasmtpd as a filtering
//! front end for the MTA the operator already runs. Each recipient is checked with the
//! downstream as it arrives, and each message is handed to it while the client waits: the
//! client hears 250 only once the downstream accepted the message for every recipient.
//!
//! Arguments: the downstream's name in `config/downstreams` (`queue/smtp-forward postfix`);
//! without one, routes from the config file `smtp-forward`, `DOMAIN DOWNSTREAM` per line
//! (`example.com postfix-a`, `.example.com` for its subdomains, `* postfix-b` for the rest).
//! Grant it the downstreams and the right to queue in `config/sandbox`:
//!
//! ```text
//! queue/smtp-forward  downstream  postfix
//! queue/smtp-forward  rights      queue
//! queue/smtp-forward  timeout     60s
//! ```
//!
//! Put it before `rcpt_ok` in `config/plugins` so it sees every recipient: a recipient the
//! downstream refuses is refused with its reply; one it accepts goes on to the next plugin
//! (`rcpt_ok`, relay rules), which decides as before. See `queue_forward` for every reply.

use queue_forward::Forward;
use wasmtpd_plugin::{Address, EsmtpParam, HookResult, Plugin};

struct SmtpForward;

#[wasmtpd_plugin::plugin]
impl Plugin for SmtpForward {
    fn rcpt(recipient: Address, _params: Vec<EsmtpParam>) -> HookResult {
        Forward::new("smtp-forward").rcpt(&recipient)
    }

    fn queue() -> HookResult {
        Forward::new("smtp-forward").queue()
    }
}
