//! The hooks, declared once: [`for_each_hook!`](crate::for_each_hook) holds one row per hook, and
//! every Rust list of hooks is generated from it ([`Hook`](crate::Hook), `Hook::ALL` and
//! `Hook::name` here; the plugin host's export lookup and its call of each hook in
//! `crates/host/src/bindings.rs`). The SDK (`crates/plugin`, `crates/plugin-macros`) reads
//! `wit/` itself, since it is compiled for wasm. `tests/tests/tidy.rs` checks that this table
//! and `wit/world.wit` (and `wit/hooks.wit`) name the same hooks in the same order.
//!
//! Adding a hook is one row here plus its interface in `wit/hooks.wit` and its export in
//! `wit/world.wit` (and, if it takes new kinds of arguments, a [`HookArgs`](crate::HookArgs)
//! variant and the conversion of the new engine types in `bindings.rs`).
//!
//! A row is `Variant name call_name (pattern) [param = value, ...]`:
//! - `Variant`: the [`Hook`](crate::Hook) variant; `name`: qpsmtpd's name of the hook, which is
//!   also the WIT interface's name with `_` for `-` (`data_post` is `data-post`).
//! - `call_name`: `call_` and the WIT function's name with `_` for `-`; it names the call that
//!   wasmtime's bindings generate for the interface (`macro_rules!` cannot build an identifier
//!   from `name`).
//! - `(pattern)`: the [`HookArgs`](crate::HookArgs) the hook is run with (`_` for a hook without
//!   arguments).
//! - `[param = value, ...]`: the WIT function's parameters in WIT order, each an engine value
//!   taken from the pattern's bindings. How each engine type looks in WIT is `bindings.rs`'s
//!   business, so nothing here names a WIT type.

/// Calls `$callback! { rows }` with one row per hook, in the order of `wit/world.wit`'s
/// exports (see the [module docs](crate::hook_table) for a row's parts). `$callback` is a
/// `macro_rules!` macro of the caller's that matches:
///
/// ```text
/// $( $(#[$doc:meta])* $variant:ident $name:ident $call:ident ($args:pat)
///    [$($param:ident = $value:expr),*] ),*
/// ```
#[macro_export]
macro_rules! for_each_hook {
    ($callback:ident) => {
        $callback! {
            /// A client has connected, before the greeting.
            Connect connect call_connect (_) [],
            /// HELO, with the name the client gave.
            Helo helo call_helo ($crate::HookArgs::Hello { host }) [host = host],
            /// EHLO, with the name the client gave.
            Ehlo ehlo call_ehlo ($crate::HookArgs::Hello { host }) [host = host],
            /// MAIL FROM whose address is not in angle brackets.
            MailPre mail_pre call_mail_pre ($crate::HookArgs::Pre { path }) [address = path],
            /// MAIL FROM, after the server's own checks.
            Mail mail call_mail ($crate::HookArgs::Mail { from, params }) [sender = from, params = params],
            /// RCPT TO whose address is not in angle brackets.
            RcptPre rcpt_pre call_rcpt_pre ($crate::HookArgs::Pre { path }) [address = path],
            /// RCPT TO, after the server's own checks.
            Rcpt rcpt call_rcpt ($crate::HookArgs::Rcpt { to, params }) [recipient = to, params = params],
            /// DATA, before the 354 reply.
            Data data call_data (_) [],
            /// The whole message has been received and spooled.
            DataPost data_post call_data_post (_) [],
            /// Queue (deliver) the message.
            Queue queue call_queue (_) [],
            /// QUIT.
            Quit quit call_quit (_) [],
            /// The connection is closing, for any reason.
            Disconnect disconnect call_disconnect (_) [],
            /// VRFY, with its argument.
            Vrfy vrfy call_vrfy ($crate::HookArgs::Vrfy { argument }) [argument = argument],
            /// NOOP.
            Noop noop call_noop (_) [],
            /// HELP, with its argument (may be empty).
            Help help call_help ($crate::HookArgs::Help { argument }) [argument = argument],
            /// A command the server does not know: its verb and the words after it.
            UnrecognizedCommand unrecognized_command call_unrecognized_command
                ($crate::HookArgs::Unrecognized { verb, args }) [verb = verb, args = args],
            /// The transaction ends.
            ResetTransaction reset_transaction call_reset_transaction (_) [],
            /// Another plugin's hook denied: which hook, which plugin, its verdict and message.
            Deny deny call_deny ($crate::HookArgs::Deny { hook, result }) [
                hook = hook,
                plugin = result.plugin.as_deref().unwrap_or(""),
                verdict = result.verdict,
                message = result.message.as_deref()
            ],
            /// AUTH PLAIN credentials (qpsmtpd's `auth-plain`); runs before `auth`.
            AuthPlain auth_plain call_auth_plain ($crate::HookArgs::Auth { user, password, .. })
                [user = user, password = password],
            /// AUTH LOGIN credentials (qpsmtpd's `auth-login`); runs before `auth`.
            AuthLogin auth_login call_auth_login ($crate::HookArgs::Auth { user, password, .. })
                [user = user, password = password],
            /// Credentials of any mechanism, when the mechanism's own hook declined (qpsmtpd's
            /// `auth`).
            Auth auth call_auth ($crate::HookArgs::Auth { mechanism, user, password })
                [mechanism = mechanism, user = user, password = password],
            /// A client has connected, before anything else (qpsmtpd's `pre-connection`): a
            /// refusal answers and closes before the greeting delay and the `connect` hook.
            PreConnection pre_connection call_pre_connection (_) []
        }
    };
}

/// The callback that makes [`Hook`](crate::Hook) and its lists from the table.
macro_rules! hook_enum {
    ($( $(#[$doc:meta])* $variant:ident $name:ident $call:ident ($args:pat)
        [$($param:ident = $value:expr),*] ),* $(,)?) => {
        /// Every hook of the session, in qpsmtpd's vocabulary, in the order of `wit/world.wit`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Hook {
            $( $(#[$doc])* $variant, )*
        }

        impl Hook {
            /// Every hook, in declaration order (so `hook as usize` indexes this array).
            pub const ALL: [Hook; [$(Hook::$variant),*].len()] = [$(Hook::$variant),*];

            /// qpsmtpd's name for the hook (`data_post`, `unrecognized_command`, ...); with `-`
            /// for `_` it is the name of the hook's WIT interface.
            pub fn name(self) -> &'static str {
                match self {
                    $( Hook::$variant => stringify!($name), )*
                }
            }
        }
    };
}

pub(crate) use hook_enum;
