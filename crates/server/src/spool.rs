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

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use tokio::io::AsyncWriteExt;
use wasmtpd_smtp::address;
use wasmtpd_smtp::session::Connection;
use wasmtpd_smtp::{Address, Content, Message, Transaction};

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
        Ok(Message { content, size: self.written, authentication_results: None })
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
///
/// What the client supplied is written only where it cannot pass for trace information of
/// its own (another hop, a date):
/// - The HELO/EHLO name stands after `from` only when it is a domain or an IPv4/IPv6 address
///   literal (RFC 5321's `Extended-Domain`). Anything else (`trusted.example([10.1.2.3])by`)
///   puts the client's address literal after `from` and the name into the comment as
///   `helo=...`, with every character but letters, digits, `-`, `.` and `_` replaced by `?`:
///   no parenthesis, bracket, space or `;` of the client's reaches the header.
/// - The `for` clause names the recipient only when there is exactly one (more would disclose
///   the others) and its address is plain: an unquoted local part (a dot-string, which cannot
///   hold a space, `;`, `(` or `"`) at a domain or IPv4/IPv6 literal. A quoted local part
///   (`"x; Mon, 1 Jan 2024"@example.com`) leaves the clause out; it is optional (RFC 5321 4.4).
pub fn received_header(me: &str, conn: &Connection, txn: &Transaction) -> String {
    let (esmtp, helo) = match &conn.hello {
        Some(h) => (h.esmtp, Some(h.host.as_str())),
        None => (false, None),
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
    let literal = address_literal(conn.remote.ip());
    // The client's name as a trusted front end gave it (XCLIENT NAME), when it is a plain one.
    let ip = match conn.remote_name.as_deref() {
        Some(name) if address::is_domain(name) => format!("{name} {literal}"),
        _ => literal.clone(),
    };
    let from = match helo {
        Some(name) if is_plain_host(name) => format!("{name} ({ip})"),
        Some(name) => format!("{literal} (helo={} {ip})", sanitised(name)),
        None => format!("{literal} ({ip})"),
    };
    let tls = match &conn.tls {
        Some(t) => format!("\r\n\t(using {} with cipher {})", t.version, t.cipher),
        None => String::new(),
    };
    let mut h = format!("Received: from {from}{tls}\r\n\tby {me} (wasmtpd) with {with} id {}", txn.id);
    if let [only] = txn.recipients.as_slice()
        && is_plain_address(&only.address)
    {
        h.push_str(&format!("\r\n\tfor <{}>", only.address));
    }
    h.push_str(&format!(";\r\n\t{}\r\n", Utc::now().to_rfc2822()));
    h
}

/// RFC 5321 4.1.3: `[192.0.2.1]`, `[IPv6:2001:db8::1]` (an IPv4-mapped IPv6 address is IPv4).
fn address_literal(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
    }
}

/// A domain (LDH labels, or U-labels), or an IPv4 or IPv6 address literal.
fn is_plain_host(name: &str) -> bool {
    if address::is_domain(name) {
        return true;
    }
    let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) else {
        return false;
    };
    match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inner[5..].parse::<Ipv6Addr>().is_ok(),
        _ => inner.parse::<Ipv4Addr>().is_ok(),
    }
}

/// An address the `for` clause may show as it is: unquoted local part, plain domain (or the
/// bare `postmaster`).
fn is_plain_address(a: &Address) -> bool {
    !a.local_part().starts_with('"') && a.domain().is_none_or(is_plain_host)
}

/// The name with every character but ASCII letters, digits, `-`, `.` and `_` replaced by `?`.
fn sanitised(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') { c } else { '?' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtpd_smtp::session::{Hello, TlsInfo};
    use wasmtpd_smtp::{MailParams, Recipient};

    fn header(helo: &str, remote: &str, recipients: &[&str]) -> String {
        let mut conn = Connection::new("c1".into(), remote.parse().unwrap(), "192.0.2.1:25".parse().unwrap());
        conn.hello = Some(Hello { esmtp: true, host: helo.to_string() });
        let mut txn = Transaction::new("c1.1".into(), None, MailParams::default());
        for r in recipients {
            let (local, domain) = r.rsplit_once('@').unwrap();
            txn.recipients.push(Recipient {
                address: Address::new(local, domain).unwrap(),
                params: vec![],
                dsn: Default::default(),
            });
        }
        received_header("mx.test", &conn, &txn)
    }

    /// The header up to the date (which changes).
    fn trace(h: &str) -> &str {
        &h[..h.rfind(";\r\n\t").unwrap()]
    }

    #[test]
    fn plain_names_are_written_as_they_are() {
        let h = header("client.example", "192.0.2.7:1234", &["rcpt@example.com"]);
        assert_eq!(
            trace(&h),
            "Received: from client.example ([192.0.2.7])\r\n\tby mx.test (wasmtpd) with ESMTP id c1.1\r\n\tfor <rcpt@example.com>"
        );
        assert!(h.ends_with("\r\n") && !h[..h.len() - 2].contains("\r\n\r\n"));
        for name in ["[192.0.2.7]", "[IPv6:2001:db8::1]", "[ipv6:::1]", "bücher.example", "localhost"] {
            assert!(header(name, "192.0.2.7:1", &[]).starts_with(&format!("Received: from {name} ([192.0.2.7])")));
        }
        let h = header("client.example", "[2001:db8::7]:25", &[]);
        assert!(h.starts_with("Received: from client.example ([IPv6:2001:db8::7])"), "{h}");
        let h = header("client.example", "[::ffff:192.0.2.7]:25", &[]);
        assert!(h.starts_with("Received: from client.example ([192.0.2.7])"), "{h}");
    }

    #[test]
    fn a_name_that_could_pass_for_another_hop_is_defused() {
        let h = header("trusted.example([10.1.2.3])by", "192.0.2.7:1234", &[]);
        assert_eq!(
            trace(&h),
            "Received: from [192.0.2.7] (helo=trusted.example??10.1.2.3??by [192.0.2.7])\r\n\tby mx.test (wasmtpd) with ESMTP id c1.1"
        );
        for name in
            ["a;b", "[10.1.2.3]x", "[10.1.2]", "[IPv6:zz]", "[tag:x;y]", "a..b", "-a.example", "\"q\"", "a)b(c", "ä(b"]
        {
            let h = header(name, "192.0.2.7:1", &[]);
            let first = h.lines().next().unwrap();
            assert!(first.starts_with("Received: from [192.0.2.7] (helo="), "{name}: {h}");
            let helo = &first["Received: from [192.0.2.7] (helo=".len()..first.len() - " [192.0.2.7])".len()];
            assert!(helo.chars().all(|c| c.is_ascii_alphanumeric() || "-._?".contains(c)), "{name}: {helo}");
        }
    }

    #[test]
    fn the_for_clause_names_only_a_plain_address() {
        let h = header("client.example", "192.0.2.7:1", &["\"x; Mon, 1 Jan 2024 00:00:00 +0000\"@example.com"]);
        assert!(!h.contains("\tfor"), "{h}");
        assert_eq!(h.matches(';').count(), 1, "only our own date separator: {h}");
        let h = header("client.example", "192.0.2.7:1", &["a@[tag:x;y]"]);
        assert!(!h.contains("\tfor"), "{h}");
        for plain in ["a.b+c@example.com", "zoë@bücher.example", "x@[192.0.2.9]"] {
            assert!(header("client.example", "192.0.2.7:1", &[plain]).contains(&format!("\tfor <{plain}>")), "{plain}");
        }
        assert!(!header("client.example", "192.0.2.7:1", &["a@example.com", "b@example.com"]).contains("\tfor"));
    }

    #[test]
    fn protocol_names() {
        let mut conn = Connection::new("c1".into(), "192.0.2.7:1".parse().unwrap(), "192.0.2.1:25".parse().unwrap());
        conn.hello = Some(Hello { esmtp: true, host: "c.example".into() });
        conn.tls =
            Some(TlsInfo { version: "TLSv1.3".into(), cipher: "TLS13_AES_128_GCM_SHA256".into(), server_name: None });
        let txn = Transaction::new("t".into(), None, MailParams::default());
        let h = received_header("mx.test", &conn, &txn);
        assert!(
            h.contains(
                "\r\n\t(using TLSv1.3 with cipher TLS13_AES_128_GCM_SHA256)\r\n\tby mx.test (wasmtpd) with ESMTPS id t"
            ),
            "{h}"
        );
    }
}
