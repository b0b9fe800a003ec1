//! One connection to a downstream: the client side of SMTP (RFC 5321) or LMTP (RFC 2033),
//! with STARTTLS, AUTH PLAIN, XCLIENT and PIPELINING. Every read and write waits at most the
//! downstream's `io-timeout` and the caller's deadline; replies are read by
//! `wasmtpd_smtp::downstream::ReplyReader` (bounded lines, CRLF only), so a downstream that
//! sends garbage, a bare LF or an endless line is a [`Fault`], never a hang or a reply read
//! two ways. A session that faulted is never reused.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use wasmtpd_smtp::downstream::{DownstreamReply, Extensions, OutboundMessage, ReplyReader, xtext};

use super::{Address, DownstreamSettings, Protocol, StartTls};

/// Why a downstream gave no reply to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// No connection (refused, unreachable, no TLS when required, a refused AUTH, a greeting
    /// that is not 220).
    Unavailable(String),
    Timeout(String),
    /// Not SMTP, or the connection closed.
    Protocol(String),
    /// A pooled connection that cannot serve this client: XCLIENT named another client on it,
    /// and a downstream allows XCLIENT only from the real client (Postfix: after it, the
    /// session is the named client's). The caller opens a fresh one.
    Stale,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Unavailable(s) | Fault::Timeout(s) | Fault::Protocol(s) => f.write_str(s),
            Fault::Stale => f.write_str("a connection made for another client"),
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The facts of our client a downstream learns through XCLIENT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFacts {
    pub addr: SocketAddr,
    pub helo: Option<String>,
    pub esmtp: bool,
    pub login: Option<String>,
}

impl ClientFacts {
    /// What identifies the client to the pool (a connection XCLIENT made for it serves it only).
    pub fn key(&self) -> String {
        format!("{}|{:?}|{}|{:?}", self.addr, self.helo, self.esmtp, self.login)
    }
}

/// One open connection.
pub struct Session {
    io: Pin<Box<dyn Io>>,
    reader: ReplyReader,
    ext: Extensions,
    protocol: Protocol,
    io_timeout: std::time::Duration,
    me: String,
    /// A transaction was begun (MAIL sent) and not ended: RSET before the next.
    dirty: bool,
    /// A fault: never reused.
    broken: bool,
    messages: u32,
    /// The XCLIENT attributes offered before any XCLIENT (the EHLO after one offers none).
    xclient_offered: Option<Vec<String>>,
    /// The client (`ClientFacts::key`) XCLIENT named on this connection: it serves it only.
    xclient_sent: Option<String>,
    _slot: OwnedSemaphorePermit,
}

impl Session {
    /// Connects (by `connect_deadline`), reads the greeting, says EHLO (LHLO), and does
    /// STARTTLS and AUTH as configured (by `deadline`).
    pub(super) async fn connect(
        s: &DownstreamSettings,
        tls: Option<Arc<rustls::ClientConfig>>,
        me: &str,
        slot: OwnedSemaphorePermit,
        connect_deadline: Instant,
        deadline: Instant,
    ) -> Result<Session, Fault> {
        let timeout = |what: &str| Fault::Timeout(format!("no connection to the downstream within the time ({what})"));
        let (io, loopback, host): (Pin<Box<dyn Io>>, bool, Option<String>) = match &s.address {
            Address::Tcp { host, port } => {
                let connect = TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), *port));
                let stream = tokio::time::timeout_at(connect_deadline, connect)
                    .await
                    .map_err(|_| timeout("connect"))?
                    .map_err(|e| Fault::Unavailable(format!("connecting to {host}:{port}: {e}")))?;
                let _ = stream.set_nodelay(true);
                let loopback = stream.peer_addr().is_ok_and(|a| a.ip().is_loopback());
                (Box::pin(stream), loopback, Some(host.clone()))
            }
            Address::Unix(path) => {
                let stream = tokio::time::timeout_at(connect_deadline, UnixStream::connect(path))
                    .await
                    .map_err(|_| timeout("connect"))?
                    .map_err(|e| Fault::Unavailable(format!("connecting to {}: {e}", path.display())))?;
                (Box::pin(stream), true, None)
            }
        };
        let mut session = Session {
            io,
            reader: ReplyReader::new(),
            ext: Extensions::default(),
            protocol: s.protocol,
            io_timeout: s.io_timeout,
            me: me.to_string(),
            dirty: false,
            broken: false,
            messages: 0,
            xclient_offered: None,
            xclient_sent: None,
            _slot: slot,
        };
        let greeting = session.read_reply(deadline).await?;
        if greeting.code != 220 {
            return Err(Fault::Unavailable(format!(
                "the downstream's greeting: {} {}",
                greeting.code,
                greeting.text()
            )));
        }
        session.hello(deadline).await?;
        let mut encrypted = false;
        if let (Some(config), Some(host)) = (tls, host.as_ref())
            && s.starttls != StartTls::Off
        {
            if session.ext.starttls {
                session.send(b"STARTTLS\r\n", deadline).await?;
                let r = session.read_reply(deadline).await?;
                if r.code != 220 {
                    if s.starttls == StartTls::Required {
                        return Err(Fault::Unavailable(format!("STARTTLS refused: {} {}", r.code, r.text())));
                    }
                } else {
                    session.start_tls(config, s.tls_name.as_deref().unwrap_or(host), deadline).await?;
                    encrypted = true;
                    session.hello(deadline).await?;
                }
            } else if s.starttls == StartTls::Required {
                return Err(Fault::Unavailable("the downstream does not offer STARTTLS, which is required".into()));
            }
        }
        if let Some((user, password)) = &s.auth {
            if !encrypted && !loopback {
                return Err(Fault::Unavailable("AUTH is configured but the connection is not encrypted".into()));
            }
            if !session.ext.auth.iter().any(|m| m == "PLAIN") {
                return Err(Fault::Unavailable("the downstream does not offer AUTH PLAIN".into()));
            }
            let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
            session.send(format!("AUTH PLAIN {token}\r\n").as_bytes(), deadline).await?;
            let r = session.read_reply(deadline).await?;
            if r.code != 235 {
                return Err(Fault::Unavailable(format!("the downstream refused our AUTH: {} {}", r.code, r.text())));
            }
        }
        session.xclient_offered = session.ext.xclient.clone();
        Ok(session)
    }

    /// The client XCLIENT named on it, if any (the pool hands it only to that client again).
    pub(super) fn xclient_sent(&self) -> Option<&str> {
        self.xclient_sent.as_deref()
    }

    async fn start_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: &str,
        deadline: Instant,
    ) -> Result<(), Fault> {
        if self.reader.has_pending() {
            return Err(Fault::Protocol("the downstream sent data before the TLS handshake".into()));
        }
        let name = rustls::pki_types::ServerName::try_from(name.to_string())
            .map_err(|e| Fault::Unavailable(format!("TLS name {name}: {e}")))?;
        let plain = std::mem::replace(&mut self.io, Box::pin(tokio::io::duplex(1).0));
        let connector = tokio_rustls::TlsConnector::from(config);
        let tls = tokio::time::timeout_at(self.step(deadline), connector.connect(name, PinnedIo(plain)))
            .await
            .map_err(|_| Fault::Timeout("TLS handshake with the downstream timed out".into()))?
            .map_err(|e| Fault::Unavailable(format!("TLS handshake with the downstream: {e}")))?;
        self.io = Box::pin(tls);
        Ok(())
    }

    /// EHLO (LHLO for LMTP; HELO if EHLO is refused), and the extensions it offers.
    async fn hello(&mut self, deadline: Instant) -> Result<(), Fault> {
        let me = self.me.clone();
        self.hello_as(&me, deadline).await
    }

    /// EHLO with `name`: ours, or after XCLIENT the client's own (the downstream takes the
    /// name of the EHLO after XCLIENT as the client's HELO, as Postfix's proxy filter sends it).
    async fn hello_as(&mut self, name: &str, deadline: Instant) -> Result<(), Fault> {
        let verb = if self.protocol == Protocol::Lmtp { "LHLO" } else { "EHLO" };
        self.send(format!("{verb} {name}\r\n").as_bytes(), deadline).await?;
        let r = self.read_reply(deadline).await?;
        if r.code == 250 {
            self.ext = Extensions::parse(&r);
            return Ok(());
        }
        if self.protocol == Protocol::Smtp && r.is_permanent() {
            self.send(format!("HELO {name}\r\n").as_bytes(), deadline).await?;
            let r = self.read_reply(deadline).await?;
            if r.code == 250 {
                self.ext = Extensions::default();
                return Ok(());
            }
        }
        Err(Fault::Unavailable(format!("the downstream refused {verb}: {} {}", r.code, r.text())))
    }

    /// Whether it may go back to the pool.
    pub(super) fn reusable(&self, max_messages: u32) -> bool {
        !self.broken && self.messages < max_messages
    }

    /// Starts a transaction: RSET if one was begun, XCLIENT if configured, offered and for
    /// another client than the last, then MAIL FROM. Returns MAIL's reply.
    pub async fn begin(
        &mut self,
        xclient: Option<&ClientFacts>,
        sender: &str,
        smtputf8: bool,
        deadline: Instant,
    ) -> Result<DownstreamReply, Fault> {
        let r = self.begin_inner(xclient, sender, smtputf8, deadline).await;
        if r.as_ref().is_err_and(|e| *e != Fault::Stale) {
            self.broken = true;
        }
        r
    }

    async fn begin_inner(
        &mut self,
        xclient: Option<&ClientFacts>,
        sender: &str,
        smtputf8: bool,
        deadline: Instant,
    ) -> Result<DownstreamReply, Fault> {
        if self.dirty {
            self.send(b"RSET\r\n", deadline).await?;
            let r = self.read_reply(deadline).await?;
            if r.code != 250 {
                return Err(Fault::Protocol(format!("the downstream refused RSET: {} {}", r.code, r.text())));
            }
            self.dirty = false;
        }
        if let (Some(facts), Some(offered)) = (xclient, self.xclient_offered.clone()) {
            let key = facts.key();
            match (self.xclient_sent.clone(), xclient_line(facts, &offered)) {
                (Some(sent), _) if sent == key => {}
                (Some(_), _) => return Err(Fault::Stale),
                (None, None) => {}
                (None, Some(line)) => {
                    self.send(line.as_bytes(), deadline).await?;
                    let r = self.read_reply(deadline).await?;
                    if r.code != 220 {
                        return Err(Fault::Unavailable(format!(
                            "the downstream refused XCLIENT: {} {}",
                            r.code,
                            r.text()
                        )));
                    }
                    self.xclient_sent = Some(key);
                    let plain = |h: &&str| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic());
                    let name = facts.helo.as_deref().filter(plain).unwrap_or(&self.me).to_string();
                    self.hello_as(&name, deadline).await?;
                }
            }
        }
        let utf8 = if smtputf8 && self.ext.smtputf8 { " SMTPUTF8" } else { "" };
        let body = if self.ext.eight_bit { " BODY=8BITMIME" } else { "" };
        self.dirty = true;
        self.send(format!("MAIL FROM:<{sender}>{body}{utf8}\r\n").as_bytes(), deadline).await?;
        self.read_reply(deadline).await
    }

    /// RCPT TO for each of `recipients`, pipelined if the downstream offers PIPELINING; the
    /// replies in order.
    pub async fn recipients(
        &mut self,
        recipients: &[String],
        deadline: Instant,
    ) -> Result<Vec<DownstreamReply>, Fault> {
        let r = self.recipients_inner(recipients, deadline).await;
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    async fn recipients_inner(
        &mut self,
        recipients: &[String],
        deadline: Instant,
    ) -> Result<Vec<DownstreamReply>, Fault> {
        let mut replies = Vec::with_capacity(recipients.len());
        if self.ext.pipelining {
            let mut out = Vec::new();
            for r in recipients {
                out.extend_from_slice(format!("RCPT TO:<{r}>\r\n").as_bytes());
            }
            self.send(&out, deadline).await?;
            for _ in recipients {
                replies.push(self.read_reply(deadline).await?);
            }
        } else {
            for r in recipients {
                self.send(format!("RCPT TO:<{r}>\r\n").as_bytes(), deadline).await?;
                replies.push(self.read_reply(deadline).await?);
            }
        }
        Ok(replies)
    }

    /// DATA, the message (each chunk `next_chunk` gives, until an empty one, made clean by
    /// `OutboundMessage`), and the replies after it: one for SMTP, one per accepted recipient
    /// (`accepted` of them) for LMTP. `Err` with the reply to DATA if it was not 354.
    pub async fn data(
        &mut self,
        accepted: usize,
        mut next_chunk: impl FnMut(u64) -> Result<Vec<u8>, String>,
        deadline: Instant,
    ) -> Result<Result<Vec<DownstreamReply>, DownstreamReply>, Fault> {
        let r = self.data_inner(accepted, &mut next_chunk, deadline).await;
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    async fn data_inner(
        &mut self,
        accepted: usize,
        next_chunk: &mut impl FnMut(u64) -> Result<Vec<u8>, String>,
        deadline: Instant,
    ) -> Result<Result<Vec<DownstreamReply>, DownstreamReply>, Fault> {
        self.send(b"DATA\r\n", deadline).await?;
        let r = self.read_reply(deadline).await?;
        if r.code != 354 {
            return Ok(Err(r));
        }
        let mut encoder = OutboundMessage::new();
        let mut offset = 0u64;
        let mut out = Vec::new();
        loop {
            let chunk = next_chunk(offset).map_err(|e| Fault::Protocol(format!("reading the message: {e}")))?;
            if chunk.is_empty() {
                break;
            }
            offset += chunk.len() as u64;
            out.clear();
            encoder.encode(&chunk, &mut out);
            self.send(&out, deadline).await?;
        }
        out.clear();
        encoder.finish(&mut out);
        self.send(&out, deadline).await?;
        let n = if self.protocol == Protocol::Lmtp { accepted.max(1) } else { 1 };
        let mut replies = Vec::with_capacity(n);
        for _ in 0..n {
            replies.push(self.read_reply(deadline).await?);
        }
        self.messages += 1;
        self.dirty = false;
        Ok(Ok(replies))
    }

    /// The deadline of one step: the io-timeout from now, or `deadline` if sooner.
    fn step(&self, deadline: Instant) -> Instant {
        deadline.min(Instant::now() + self.io_timeout)
    }

    async fn send(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), Fault> {
        let step = self.step(deadline);
        let write = async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        };
        match tokio::time::timeout_at(step, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.broken = true;
                Err(Fault::Protocol(format!("writing to the downstream: {e}")))
            }
            Err(_) => {
                self.broken = true;
                Err(Fault::Timeout("the downstream did not take our data within the time".into()))
            }
        }
    }

    async fn read_reply(&mut self, deadline: Instant) -> Result<DownstreamReply, Fault> {
        let step = self.step(deadline);
        let mut buf = [0u8; 4096];
        loop {
            match self.reader.next_reply() {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(Fault::Protocol(format!("the downstream's reply: {e}")));
                }
            }
            match tokio::time::timeout_at(step, self.io.read(&mut buf)).await {
                Ok(Ok(0)) => {
                    self.broken = true;
                    return Err(Fault::Protocol("the downstream closed the connection".into()));
                }
                Ok(Ok(n)) => self.reader.feed(&buf[..n]),
                Ok(Err(e)) => {
                    self.broken = true;
                    return Err(Fault::Protocol(format!("reading from the downstream: {e}")));
                }
                Err(_) => {
                    self.broken = true;
                    return Err(Fault::Timeout("no reply from the downstream within the time".into()));
                }
            }
        }
    }
}

/// The XCLIENT command for `facts`, with the attributes the downstream offers.
fn xclient_line(facts: &ClientFacts, offered: &[String]) -> Option<String> {
    let mut line = String::from("XCLIENT");
    let mut any = false;
    let mut add = |name: &str, value: String| {
        if offered.iter().any(|o| o == name) {
            line.push_str(&format!(" {name}={value}"));
            any = true;
        }
    };
    let ip = facts.addr.ip().to_canonical();
    add("ADDR", if ip.is_ipv6() { format!("IPV6:{ip}") } else { ip.to_string() });
    add("NAME", "[UNAVAILABLE]".into());
    add("PORT", facts.addr.port().to_string());
    add("HELO", facts.helo.as_deref().map(xtext).unwrap_or_else(|| "[UNAVAILABLE]".into()));
    add("PROTO", if facts.esmtp { "ESMTP" } else { "SMTP" }.into());
    add("LOGIN", facts.login.as_deref().map(xtext).unwrap_or_else(|| "[UNAVAILABLE]".into()));
    line.push_str("\r\n");
    any.then_some(line)
}

/// A boxed stream as the TLS connector wants it (it needs a sized type).
struct PinnedIo(Pin<Box<dyn Io>>);

impl AsyncRead for PinnedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.0.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for PinnedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        self.0.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.0.as_mut().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xclient_sends_what_is_offered() {
        let facts = ClientFacts {
            addr: "192.0.2.7:4321".parse().unwrap(),
            helo: Some("client example".into()),
            esmtp: true,
            login: None,
        };
        let offered: Vec<String> = ["ADDR", "HELO", "PROTO", "PORT", "LOGIN"].map(String::from).into();
        assert_eq!(
            xclient_line(&facts, &offered).unwrap(),
            "XCLIENT ADDR=192.0.2.7 PORT=4321 HELO=client+20example PROTO=ESMTP LOGIN=[UNAVAILABLE]\r\n"
        );
        assert_eq!(xclient_line(&facts, &[]), None);
    }
}
