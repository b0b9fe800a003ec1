//! RFC 5321 as pure data. This crate does no I/O, knows nothing of tokio or wasm, and can be
//! tested and fuzzed with byte strings alone.
//!
//! Code map:
//! - [`command`]: one SMTP command line → [`Command`] (where MAIL and RCPT are parsed).
//! - [`address`]: the RFC 5321 path grammar (`<local@domain>`, `<>`, `<postmaster>`).
//! - [`line`]: command-line framing: CRLF only, bounded length.
//! - [`data`]: DATA framing: dot-unstuffing, `CRLF.CRLF` and nothing else ends a message.
//! - [`chunk`]: BDAT framing (RFC 3030): chunks checked by DATA's rules, BINARYMIME.
//! - [`dsn`]: RFC 3461's RET, ENVID, NOTIFY and ORCPT, checked and typed.
//! - [`session`]: which command may follow which; the envelope-level checks.
//! - [`transaction`]: the envelope (sender, recipients, ESMTP parameters) and its spooled message.
//! - [`hook`]: the hooks a session runs and the [`HookRunner`] seam plugins plug into.
//! - [`hook_table`]: the one list of hooks, from which [`Hook`] and the plugin host's calls are made.
//! - [`notes`]: what plugins leave for each other, and the server's records of their answers.
//! - [`authentication`]: the results of the server's iprev, SPF, DKIM and DMARC checks.
//! - [`sasl`]: AUTH's SASL exchanges (PLAIN, LOGIN): from base64 lines to credentials.
//! - [`verdict`]: the one table that turns a hook's verdict into a reply.
//! - [`proxy`]: the PROXY protocol header (v1 and v2) a load balancer sends first.
//! - [`reply`]: the reply type, and every fixed reply text the server sends.
//! - [`xclient`]: Postfix's XCLIENT: a trusted front end's facts of its client.
//! - [`xtext`]: RFC 3461's xtext encoding of parameter values.
//! - [`downstream`]: the client side, for delivery onward: a downstream's replies read, the
//!   message made clean for the wire (CRLF, dot-stuffing, line limits), XCLIENT's xtext.

pub mod address;
pub mod authentication;
pub mod chunk;
pub mod command;
pub mod data;
pub mod downstream;
pub mod dsn;
pub mod hook;
pub mod hook_table;
pub mod line;
pub mod notes;
pub mod proxy;
pub mod reply;
pub mod sasl;
pub mod session;
pub mod transaction;
pub mod verdict;
pub mod xclient;
pub mod xtext;

pub use address::{Address, AddressError};
pub use command::{Command, CommandError, EsmtpParam, MailParams, UnbracketedPath};
pub use data::{DataEnd, DataReader};
pub use hook::{Hook, HookArgs, HookContext, HookResult, HookRunner, Verdict};
pub use line::{LineEvent, LineReader};
pub use notes::{Note, Notes};
pub use reply::{EnhancedCode, Reply};
pub use sasl::{Credentials, Mechanism, Secret};
pub use session::{AuthInfo, Connection, Limits, Offer, Session, TlsInfo};
pub use transaction::{Chunking, Content, Message, Recipient, Transaction};
pub use verdict::Decision;
