//! The transaction: one envelope (sender, recipients, their ESMTP parameters) and, once DATA
//! is complete, the spooled message. It begins with an accepted MAIL and ends with a queued or
//! rejected message, RSET, a new EHLO, or the end of the connection.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::address::Address;
use crate::command::{EsmtpParam, MailParams};
use crate::notes::Notes;

#[derive(Debug, Clone, Default)]
pub struct Transaction {
    /// Unique id, used in the spool file name, the Received header and every log line.
    pub id: String,
    /// The reverse path; `None` is the null sender `<>`.
    pub sender: Option<Address>,
    pub mail_params: MailParams,
    pub recipients: Vec<Recipient>,
    /// Whether any RCPT was tried (to answer DATA with 554 rather than 503 when all failed).
    pub rcpt_attempted: bool,
    /// The message, once DATA has ended.
    pub message: Option<Message>,
    /// The server's SPF, DKIM and DMARC results, as far as they are computed.
    pub authentication: crate::authentication::MessageAuthentication,
    /// Notes for this transaction (plugins share state here), and the server's records.
    pub notes: Notes,
    /// Where the message stands if it comes in BDAT chunks.
    pub chunking: Chunking,
}

/// A transaction's BDAT chunks (RFC 3030).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Chunking {
    /// No BDAT yet (DATA may still come).
    #[default]
    None,
    /// The first chunk was taken; more may follow until LAST.
    Receiving,
    /// A chunk was refused: every later chunk of the transaction is read, thrown away and
    /// refused (503) until RSET (or a new EHLO) ends it.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub address: Address,
    /// Every parameter as given (NOTIFY and ORCPT too).
    pub params: Vec<EsmtpParam>,
    /// NOTIFY and ORCPT (RFC 3461), checked and decoded.
    pub dsn: crate::dsn::RcptDsn,
}

/// A message received with DATA, as spooled by the server: our Received header, then the
/// message exactly as received (dot-unstuffed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub content: Content,
    /// Size in octets.
    pub size: u64,
    /// The value of the server's `Authentication-Results` field, when it checked the message
    /// (it starts with the server's authserv-id). Wherever the message is read, this field is
    /// added on top and fields that claim the same authserv-id are removed as forged.
    pub authentication_results: Option<String>,
}

/// Where a received message is: small ones stay in memory, larger ones go to a spool file
/// (the `spool_threshold` limit decides).
#[derive(Clone, PartialEq, Eq)]
pub enum Content {
    Memory(Arc<[u8]>),
    File(PathBuf),
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Content::Memory(m) => write!(f, "Memory({} octets)", m.len()),
            Content::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

impl Transaction {
    pub fn new(id: String, sender: Option<Address>, mail_params: MailParams) -> Self {
        Transaction {
            id,
            sender,
            mail_params,
            recipients: Vec::new(),
            rcpt_attempted: false,
            message: None,
            authentication: Default::default(),
            notes: Notes::default(),
            chunking: Chunking::None,
        }
    }

    /// `<sender>` as it appears in replies and headers (`<>` for the null sender).
    pub fn sender_path(&self) -> String {
        match &self.sender {
            Some(a) => format!("<{a}>"),
            None => "<>".to_string(),
        }
    }
}
