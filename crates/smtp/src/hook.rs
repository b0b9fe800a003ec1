//! The hooks a session runs, what a hook answers, and [`HookRunner`]: the one seam through
//! which plugins decide what happens.
//!
//! Hook names and verdicts are qpsmtpd's; plugins see them in `wit/hooks.wit` (one interface per
//! hook, with its arguments and what each verdict does). The hooks are declared once, in
//! [`crate::hook_table`], from which [`Hook`] is generated. The engine calls the runner at every
//! point where qpsmtpd runs a hook, then turns the answer into a reply with
//! [`crate::verdict::decide`]. A runner that declines everything gives qpsmtpd's defaults: RCPT
//! is soft-denied and a message is not queued.
//!
//! Two runners exist: the plugin host (`wasmtpd_host::PluginHost`), and the scripted runner of
//! the server's transcript tests (`crates/server/src/connection/tests/`), a table of hook →
//! verdict.

use std::future::Future;

use crate::address::Address;
use crate::command::{EsmtpParam, MailParams};
use crate::hook_table::hook_enum;
use crate::reply::EnhancedCode;
use crate::sasl::{Mechanism, Secret};
use crate::session::Connection;
use crate::transaction::Transaction;

crate::for_each_hook!(hook_enum);

impl Hook {
    /// The hook of a SASL mechanism, which runs before the generic `auth`.
    pub fn for_mechanism(mechanism: Mechanism) -> Hook {
        match mechanism {
            Mechanism::Plain => Hook::AuthPlain,
            Mechanism::Login => Hook::AuthLogin,
            Mechanism::Xclient => Hook::Auth,
        }
    }

    /// Whether a verdict from this hook can change the reply. For these hooks the result is
    /// ignored (qpsmtpd: disconnect, reset_transaction, deny).
    pub fn result_is_ignored(self) -> bool {
        matches!(self, Hook::Disconnect | Hook::ResetTransaction | Hook::Deny)
    }
}

/// A plugin's verdict (qpsmtpd's return codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Accept; stop the chain.
    Ok,
    /// Permanent rejection (5xx).
    Deny,
    /// Temporary rejection (4xx).
    DenySoft,
    /// Permanent rejection, then close the connection (qpsmtpd DENY_DISCONNECT / DENYHARD).
    DenyDisconnect,
    /// Temporary rejection, then close the connection.
    DenySoftDisconnect,
    /// Not my business: ask the next plugin; with none left, the hook's default applies.
    Declined,
    /// The plugin has handled it: the engine skips its own action for this hook.
    Done,
}

impl Verdict {
    /// DENY, DENYSOFT and their disconnecting forms: these run the `deny` hook.
    pub fn is_deny(self) -> bool {
        matches!(self, Verdict::Deny | Verdict::DenySoft | Verdict::DenyDisconnect | Verdict::DenySoftDisconnect)
    }

    pub fn name(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Deny => "DENY",
            Verdict::DenySoft => "DENYSOFT",
            Verdict::DenyDisconnect => "DENY_DISCONNECT",
            Verdict::DenySoftDisconnect => "DENYSOFT_DISCONNECT",
            Verdict::Declined => "DECLINED",
            Verdict::Done => "DONE",
        }
    }
}

/// What a hook chain answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookResult {
    pub verdict: Verdict,
    /// Reply text; `None` takes the hook's default text. May hold `\n` for a multi-line reply.
    pub message: Option<String>,
    /// Enhanced status code; `None` takes the hook's default. Its class follows the verdict.
    pub enhanced: Option<EnhancedCode>,
    /// The plugin that decided, if any (for logs and the `deny` hook).
    pub plugin: Option<String>,
    /// The plugin did not answer: it trapped, ran out of time or memory, or a host call failed.
    /// The reply is a temporary failure whatever `verdict` says (see [`crate::verdict`]).
    pub fault: bool,
}

impl HookResult {
    pub fn new(verdict: Verdict) -> Self {
        HookResult { verdict, message: None, enhanced: None, plugin: None, fault: false }
    }

    pub fn declined() -> Self {
        Self::new(Verdict::Declined)
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// A plugin fault: the reply will be a temporary failure.
    pub fn fault(plugin: impl Into<String>) -> Self {
        HookResult { fault: true, ..Self::new(Verdict::DenySoft).from_plugin(plugin) }
    }

    pub fn from_plugin(mut self, plugin: impl Into<String>) -> Self {
        self.plugin = Some(plugin.into());
        self
    }
}

/// A hook's arguments (qpsmtpd's hook arguments, typed).
#[derive(Debug, Clone, Copy)]
pub enum HookArgs<'a> {
    None,
    /// `helo` / `ehlo`: the name the client gave.
    Hello {
        host: &'a str,
    },
    /// `mail_pre` / `rcpt_pre`: the address as the client wrote it, without angle brackets.
    Pre {
        path: &'a str,
    },
    /// `mail`: the sender (`None` for `<>`) and its parameters.
    Mail {
        from: Option<&'a Address>,
        params: &'a MailParams,
    },
    /// `rcpt`: the recipient and its parameters.
    Rcpt {
        to: &'a Address,
        params: &'a [EsmtpParam],
    },
    /// `vrfy`: the argument of VRFY.
    Vrfy {
        argument: &'a str,
    },
    /// `help`: the argument of HELP (may be empty).
    Help {
        argument: &'a str,
    },
    /// `unrecognized_command`: the verb and the words after it.
    Unrecognized {
        verb: &'a str,
        args: &'a [String],
    },
    /// `deny`: the hook that denied and its result.
    Deny {
        hook: Hook,
        result: &'a HookResult,
    },
    /// `auth_plain`, `auth_login`, `auth`: the credentials to check.
    Auth {
        mechanism: Mechanism,
        user: &'a str,
        password: &'a Secret,
    },
}

/// What a hook may look at and change: the connection, and the transaction if one is open.
pub struct HookContext<'a> {
    pub connection: &'a mut Connection,
    pub transaction: Option<&'a mut Transaction>,
}

/// The seam between the SMTP engine and whatever decides (built-in defaults, or the plugin
/// chain). One runner serves every connection; `Scope` is its per-connection state (for the
/// plugin host: the plugin instances of this connection and transaction).
pub trait HookRunner: Send + Sync + 'static {
    type Scope: Send;

    /// Called once when a client connects, before the `connect` hook, and again when the
    /// session starts over after STARTTLS (the old scope is dropped).
    fn open_scope(&self) -> Self::Scope;

    /// Whether running `hook` can do anything but decline (some plugin implements it). The
    /// engine offers AUTH only when some plugin can check credentials.
    fn implements(&self, hook: Hook) -> bool;

    /// Runs `hook`'s chain. A fault inside the runner must come back as a verdict (DENYSOFT,
    /// or DECLINED where the operator says so), never as a panic.
    fn run(
        &self,
        scope: &mut Self::Scope,
        hook: Hook,
        args: HookArgs<'_>,
        ctx: HookContext<'_>,
    ) -> impl Future<Output = HookResult> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tables indexed by `hook as usize` (the plugin host's note keys) rely on this.
    #[test]
    fn all_is_in_declaration_order() {
        for (i, h) in Hook::ALL.iter().enumerate() {
            assert_eq!(*h as usize, i, "{}", h.name());
        }
    }
}
