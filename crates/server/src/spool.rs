//! The incoming spool: where a message is written while DATA streams in, before any plugin
//! has seen it: our `Received:` header followed by the message exactly as received
//! (dot-unstuffed). A message stays in memory up to `spool_threshold` octets (most mail is a
//! few KiB, and a file would cost four system calls and as many thread hops); past that it goes
//! to a spool file, so memory stays flat whatever the size. Neither is durable, nor needs to be:
//! nothing has been promised to the client yet. Durability is the queue's job (a queue plugin
//! says OK only once the message is safe), and the spool file is removed when its transaction
//! ends.
//!
//! Files left over by a crash belong to transactions that never got a 250 (and directories to
//! plugins of connections that never ended), so start-up removes them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use tokio::io::AsyncWriteExt;
use wasmtpd_smtp::session::Connection;
use wasmtpd_smtp::{Content, Message, Transaction};

#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// Opens (creating) the spool directory and removes files left by an earlier run.
    pub fn open(dir: PathBuf) -> std::io::Result<Spool> {
        std::fs::create_dir_all(&dir)?;
        let mut stale = 0;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                // Plugins' temporary directories of connections that never ended.
                std::fs::remove_dir_all(entry.path())?;
            } else {
                std::fs::remove_file(entry.path())?;
            }
            stale += 1;
        }
        if stale > 0 {
            tracing::info!(dir = %dir.display(), entries = stale, "removed what an earlier run left in the spool");
        }
        Ok(Spool { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts receiving the message of a transaction: in memory up to `threshold` octets.
    pub fn incoming(&self, txn_id: &str, threshold: u64) -> Incoming {
        Incoming { path: self.dir.join(format!("{txn_id}.eml")), threshold, memory: Vec::new(), file: None, written: 0 }
    }
}

/// A message being received.
#[derive(Debug)]
pub struct Incoming {
    path: PathBuf,
    threshold: u64,
    memory: Vec<u8>,
    /// The spool file, once the message outgrew `threshold`.
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    written: u64,
}

impl Incoming {
    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.written += bytes.len() as u64;
        if self.file.is_none() {
            if self.written <= self.threshold {
                self.memory.extend_from_slice(bytes);
                return Ok(());
            }
            let file = tokio::fs::OpenOptions::new().write(true).create_new(true).open(&self.path).await?;
            let mut file = tokio::io::BufWriter::with_capacity(128 * 1024, file);
            file.write_all(&std::mem::take(&mut self.memory)).await?;
            self.file = Some(file);
        }
        self.file.as_mut().expect("just created").write_all(bytes).await
    }

    /// The message, complete.
    pub async fn finish(self) -> std::io::Result<Message> {
        let content = match self.file {
            None => Content::Memory(Arc::from(self.memory)),
            Some(mut f) => {
                f.flush().await?;
                Content::File(self.path)
            }
        };
        Ok(Message { content, size: self.written })
    }

    /// Throws the message away (a refused or broken transfer).
    pub async fn discard(self) {
        if self.file.is_some() {
            remove(&self.path).await;
        }
    }
}

/// Throws a received message away at the end of its transaction.
pub async fn discard(message: Message) {
    if let Content::File(path) = message.content {
        remove(&path).await;
    }
}

/// Removes a spool file; a file that is already gone is fine.
async fn remove(path: &Path) {
    if let Err(e) = tokio::fs::remove_file(path).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not remove spool file");
    }
}

/// Our trace header (RFC 5321 4.4), with the protocol names of RFC 3848 and RFC 6531: ESMTP,
/// then `S` for TLS and `A` for an authenticated client (ESMTPS, ESMTPA, ESMTPSA; UTF8SMTP
/// likewise). The TLS version and cipher go in a comment; the user name does not (it is
/// nobody else's business who sent it).
pub fn received_header(me: &str, conn: &Connection, txn: &Transaction) -> String {
    let (esmtp, helo) = match &conn.hello {
        Some(h) => (h.esmtp, h.host.as_str()),
        None => (false, "unknown"),
    };
    let mut with = match (esmtp, txn.mail_params.smtputf8) {
        (true, true) => "UTF8SMTP".to_string(),
        (true, false) => "ESMTP".to_string(),
        (false, _) => "SMTP".to_string(),
    };
    if esmtp {
        with.push_str(match (conn.tls.is_some(), conn.auth.is_some()) {
            (true, true) => "SA",
            (true, false) => "S",
            (false, true) => "A",
            (false, false) => "",
        });
    }
    let ip = conn.remote.ip();
    let tls = match &conn.tls {
        Some(t) => format!("\r\n\t(using {} with cipher {})", t.version, t.cipher),
        None => String::new(),
    };
    let mut h = format!("Received: from {helo} ([{ip}]){tls}\r\n\tby {me} (wasmtpd) with {with} id {}", txn.id);
    // Name the recipient only when there is exactly one (more would disclose the others).
    if let [only] = txn.recipients.as_slice() {
        h.push_str(&format!("\r\n\tfor <{}>", only.address));
    }
    h.push_str(&format!(";\r\n\t{}\r\n", Utc::now().to_rfc2822()));
    h
}
