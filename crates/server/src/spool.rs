//! The incoming spool: where a message is written while DATA streams in, before any plugin
//! has seen it. A spool file holds our `Received:` header followed by the message exactly as
//! received (dot-unstuffed). It is not durable and needs no fsync: nothing has been promised
//! to the client yet. Durability is the queue's job (a queue plugin says OK only once the
//! message is safe), and the spool file is removed when its transaction ends.
//!
//! Files left over by a crash belong to transactions that never got a 250 (and directories to
//! plugins of connections that never ended), so start-up removes them.

use std::path::{Path, PathBuf};

use chrono::Utc;
use tokio::io::AsyncWriteExt;
use wasmtpd_smtp::Transaction;
use wasmtpd_smtp::session::Connection;

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

    /// Creates the spool file for a transaction.
    pub async fn create(&self, txn_id: &str) -> std::io::Result<SpoolFile> {
        let path = self.dir.join(format!("{txn_id}.eml"));
        let file = tokio::fs::OpenOptions::new().write(true).create_new(true).open(&path).await?;
        Ok(SpoolFile { path, file: tokio::io::BufWriter::with_capacity(128 * 1024, file), written: 0 })
    }
}

/// A spool file being written.
#[derive(Debug)]
pub struct SpoolFile {
    path: PathBuf,
    file: tokio::io::BufWriter<tokio::fs::File>,
    written: u64,
}

impl SpoolFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes).await?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Flushes and closes the file, returning its size.
    pub async fn finish(mut self) -> std::io::Result<(PathBuf, u64)> {
        self.file.flush().await?;
        Ok((self.path, self.written))
    }
}

/// Removes a spool file; a file that is already gone is fine.
pub async fn remove(path: &Path) {
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
