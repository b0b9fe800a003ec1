//! The session state machine: which command may follow which, and the checks on an envelope
//! that involve no plugin (sequence, limits, parameters).
//!
//! The connection task drives it: for each command it asks `check_*` (an `Err` is the reply to
//! send; no hook runs), runs the hook, and on an accepting verdict calls `accept_*`. The
//! session never does I/O.
//!
//! Sequence rules (RFC 5321 4.1.4 and 3.3):
//! - HELO/EHLO may come again at any time; it resets the transaction (as RSET would).
//! - MAIL needs a HELO/EHLO first, and no transaction in progress (nested MAIL is 503).
//! - RCPT needs MAIL; DATA needs MAIL and at least one accepted RCPT.
//! - ESMTP parameters need EHLO; only SIZE, BODY and SMTPUTF8 are understood on MAIL and none
//!   on RCPT (555 otherwise); a non-ASCII address needs SMTPUTF8 (553 5.6.7).
//! - STARTTLS (RFC 3207) needs EHLO, a certificate, no TLS yet, no transaction and no AUTH yet;
//!   after the handshake the session starts over: everything learnt in plaintext is forgotten
//!   (see [`Session::accept_starttls`] for what is kept) and a new EHLO is required.
//! - AUTH (RFC 4954) needs EHLO, an auth plugin, no transaction and no earlier success; over a
//!   connection without TLS it is refused (538) unless the operator allows plaintext AUTH for
//!   this client.

use std::net::SocketAddr;

use crate::address::Address;
use crate::command::{EsmtpParam, MailParams};
use crate::data::DEFAULT_MAX_TEXT_LINE;
use crate::line::DEFAULT_MAX_COMMAND_LINE;
use crate::notes::Notes;
use crate::reply::{self, Reply};
use crate::sasl::Mechanism;
use crate::transaction::{Chunking, Recipient, Transaction};

/// Protocol limits enforced by the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted, in octets (advertised as SIZE); 0 = no limit.
    pub max_message_size: u64,
    /// Most recipients per transaction (RFC 5321 4.5.3.1.8 requires at least 100).
    pub max_recipients: usize,
    /// Longest command line, including CRLF.
    pub max_command_line: usize,
    /// Longest message text line, including CRLF; 0 = no limit.
    pub max_text_line: usize,
    /// Error replies (4xx/5xx to commands) before the engine answers 421 and closes.
    pub max_errors: u32,
    /// Messages up to this size stay in memory; larger ones are written to a spool file.
    pub spool_threshold: u64,
    /// A message (7BIT or 8BITMIME) with a NUL octet is refused with 550 (`true`, the
    /// default), or kept as it is.
    pub refuse_nul: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 100,
            max_command_line: DEFAULT_MAX_COMMAND_LINE,
            max_text_line: DEFAULT_MAX_TEXT_LINE,
            max_errors: 20,
            spool_threshold: 64 * 1024,
            refuse_nul: true,
        }
    }
}

/// Facts about the client connection, and the connection's notes.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Unique id of the connection (for logs).
    pub id: String,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// The HELO/EHLO name, once a HELO/EHLO was accepted.
    pub hello: Option<Hello>,
    /// The client sent data before our greeting.
    pub early_talker: bool,
    /// The client may relay (set by plugins, and by a successful AUTH).
    pub relay_client: bool,
    /// The TLS session, once the connection is encrypted (STARTTLS or implicit TLS).
    pub tls: Option<TlsInfo>,
    /// Who the client authenticated as, after a successful AUTH.
    pub auth: Option<AuthInfo>,
    /// Forward-confirmed reverse DNS of the client's address, once the server checked it.
    pub iprev: Option<crate::authentication::AuthCheck>,
    /// Connections open from the client's address when this one was admitted, this one
    /// included (the server's own count; `wit/server-load.wit`).
    pub connections_from_ip: u32,
    /// Notes for the whole connection (plugins share state here), and the server's records.
    pub notes: Notes,
    /// The client's host name as a trusted front end gave it (XCLIENT NAME), for the Received
    /// header.
    pub remote_name: Option<String>,
}

/// Facts about an established TLS session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: String,
    /// The IANA name of the cipher suite (`TLS13_AES_256_GCM_SHA384`).
    pub cipher: String,
    /// The server name the client asked for (SNI), if it sent one.
    pub server_name: Option<String>,
}

/// A successful AUTH: the user and the SASL mechanism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthInfo {
    pub user: String,
    pub mechanism: Mechanism,
}

/// What the server offers this client beyond the base protocol (decided per connection by the
/// server: whether a certificate is configured, which auth hooks plugins implement, where
/// plaintext AUTH is allowed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offer {
    /// STARTTLS can be offered (a certificate is configured, and the connection is not TLS).
    pub starttls: bool,
    /// The SASL mechanisms some plugin can check; empty: no AUTH.
    pub auth_mechanisms: Vec<Mechanism>,
    /// AUTH may be used without TLS on this connection (operator's choice, e.g. loopback).
    pub auth_without_tls: bool,
    /// The client is a front end the operator trusts with XCLIENT (`config/frontends`).
    pub xclient: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// EHLO (true) or HELO (false).
    pub esmtp: bool,
    pub host: String,
}

impl Default for Connection {
    fn default() -> Self {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        Connection::new(String::new(), unspecified, unspecified)
    }
}

impl Connection {
    pub fn new(id: String, remote: SocketAddr, local: SocketAddr) -> Self {
        Connection {
            id,
            remote,
            local,
            hello: None,
            early_talker: false,
            relay_client: false,
            tls: None,
            auth: None,
            iprev: None,
            connections_from_ip: 1,
            notes: Notes::default(),
            remote_name: None,
        }
    }
}

#[derive(Debug)]
pub struct Session {
    pub connection: Connection,
    pub transaction: Option<Transaction>,
    limits: Limits,
    offer: Offer,
    errors: u32,
}

impl Session {
    pub fn new(connection: Connection, limits: Limits) -> Self {
        Session { connection, transaction: None, limits, offer: Offer::default(), errors: 0 }
    }

    /// The same session, offering STARTTLS and AUTH as `offer` says.
    pub fn with_offer(mut self, offer: Offer) -> Self {
        self.offer = offer;
        self
    }

    /// What is offered, to change before the greeting (a PROXY header named another client).
    pub fn offer_mut(&mut self) -> &mut Offer {
        &mut self.offer
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The EHLO keywords we advertise, in order.
    pub fn capabilities(&self) -> Vec<String> {
        let mut caps = vec!["PIPELINING".to_string()];
        caps.push(match self.limits.max_message_size {
            0 => "SIZE".to_string(),
            n => format!("SIZE {n}"),
        });
        caps.extend(["8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING", "BINARYMIME", "DSN"].map(String::from));
        if self.offer.starttls && self.connection.tls.is_none() {
            caps.push("STARTTLS".to_string());
        }
        if self.auth_usable() {
            let names: Vec<&str> = self.offer.auth_mechanisms.iter().map(|m| m.name()).collect();
            caps.push(format!("AUTH {}", names.join(" ")));
        }
        if self.offer.xclient {
            caps.push(format!("XCLIENT {}", crate::xclient::ATTRIBUTES.join(" ")));
        }
        caps
    }

    /// AUTH is offered, and allowed on this connection now (TLS, or plaintext allowed).
    fn auth_usable(&self) -> bool {
        !self.offer.auth_mechanisms.is_empty() && (self.connection.tls.is_some() || self.offer.auth_without_tls)
    }

    /// Counts an error reply; returns true when the client has used up its allowance and the
    /// connection must be closed with 421.
    pub fn count_error(&mut self) -> bool {
        self.errors += 1;
        self.limits.max_errors != 0 && self.errors >= self.limits.max_errors
    }

    /// HELO/EHLO accepted: remember the name; no transaction goes on (RFC 5321 4.1.4). The
    /// engine ends the transaction before (it runs `reset_transaction` and removes the spool
    /// file).
    pub fn accept_hello(&mut self, esmtp: bool, host: &str) {
        self.connection.hello = Some(Hello { esmtp, host: host.to_string() });
        self.transaction = None;
    }

    pub fn check_mail(&self, from: Option<&Address>, params: &MailParams) -> Result<(), Reply> {
        let Some(hello) = &self.connection.hello else {
            return Err(reply::bad_sequence("Send HELO or EHLO first"));
        };
        if self.transaction.is_some() {
            return Err(reply::bad_sequence("Nested MAIL command: a transaction is already in progress"));
        }
        let has_params = params.size.is_some()
            || params.dsn != Default::default()
            || params.body_8bitmime
            || params.binarymime
            || params.smtputf8
            || !params.other.is_empty();
        if has_params && !hello.esmtp {
            return Err(reply::bad_sequence("ESMTP parameters need EHLO, not HELO"));
        }
        if let Some(p) = params.other.first() {
            return Err(reply::parameter_not_recognized(&p.keyword));
        }
        if let Some(size) = params.size
            && self.limits.max_message_size != 0
            && size > self.limits.max_message_size
        {
            return Err(reply::size_exceeds_limit(self.limits.max_message_size));
        }
        if from.is_some_and(|a| !a.is_ascii()) && !params.smtputf8 {
            return Err(reply::smtputf8_required());
        }
        Ok(())
    }

    /// MAIL passed the checks: the transaction begins (before the `mail` hook, so plugins see
    /// it; if the hook refuses the sender, the transaction is reset).
    pub fn begin_transaction(&mut self, id: String, from: Option<Address>, params: MailParams) {
        self.transaction = Some(Transaction::new(id, from, params));
    }

    pub fn check_rcpt(&mut self, to: &Address, params: &[EsmtpParam]) -> Result<(), Reply> {
        let Some(txn) = &mut self.transaction else {
            return Err(reply::bad_sequence("Use MAIL before RCPT"));
        };
        txn.rcpt_attempted = true;
        if let Some(p) = params.iter().find(|p| !matches!(p.keyword.as_str(), "NOTIFY" | "ORCPT")) {
            return Err(reply::parameter_not_recognized(&p.keyword));
        }
        if !to.is_ascii() && !txn.mail_params.smtputf8 {
            return Err(reply::smtputf8_required());
        }
        if txn.recipients.len() >= self.limits.max_recipients {
            return Err(reply::too_many_recipients());
        }
        Ok(())
    }

    /// RCPT accepted: add the recipient.
    pub fn accept_rcpt(&mut self, to: Address, params: Vec<EsmtpParam>) {
        if let Some(txn) = &mut self.transaction {
            let dsn = crate::command::rcpt_dsn(&params).unwrap_or_default();
            txn.recipients.push(Recipient { address: to, params, dsn });
        }
    }

    pub fn check_data(&self) -> Result<(), Reply> {
        self.check_message()?;
        match &self.transaction {
            Some(t) if t.chunking != Chunking::None => {
                Err(reply::bad_sequence("DATA may not follow BDAT in a transaction (RFC 3030)"))
            }
            Some(t) if t.mail_params.binarymime => Err(reply::bad_sequence("BODY=BINARYMIME needs BDAT, not DATA")),
            _ => Ok(()),
        }
    }

    /// Checks a BDAT chunk's command (RFC 3030): as DATA, an envelope with a recipient first;
    /// after a refused chunk, none of the transaction's chunks is taken until RSET.
    pub fn check_bdat(&self) -> Result<(), Reply> {
        self.check_message()?;
        match &self.transaction {
            Some(t) if t.chunking == Chunking::Failed => Err(reply::bdat_after_failure()),
            _ => Ok(()),
        }
    }

    /// A message may come now: a transaction with an accepted recipient.
    fn check_message(&self) -> Result<(), Reply> {
        match &self.transaction {
            None => Err(reply::bad_sequence("MAIL first")),
            Some(t) if t.recipients.is_empty() && t.rcpt_attempted => Err(reply::no_valid_recipients()),
            Some(t) if t.recipients.is_empty() => Err(reply::bad_sequence("RCPT first")),
            Some(_) => Ok(()),
        }
    }

    pub fn check_starttls(&self) -> Result<(), Reply> {
        if self.connection.tls.is_some() {
            return Err(reply::tls_already_active());
        }
        if !self.offer.starttls {
            return Err(reply::command_not_implemented("STARTTLS"));
        }
        if !self.connection.hello.as_ref().is_some_and(|h| h.esmtp) {
            return Err(reply::bad_sequence("Send EHLO first"));
        }
        if self.transaction.is_some() {
            return Err(reply::bad_sequence("STARTTLS is not allowed during a mail transaction"));
        }
        if self.connection.auth.is_some() {
            return Err(reply::bad_sequence("Already authenticated"));
        }
        Ok(())
    }

    /// The TLS handshake succeeded: the session starts over (RFC 3207 section 4.2: the server
    /// "MUST discard any knowledge obtained from the client ... which was not obtained from the
    /// TLS negotiation itself"). The engine ends the transaction first, as for EHLO.
    ///
    /// Forgotten, because a man in the middle could have written or shaped it in plaintext:
    /// the EHLO name (a new EHLO is required), any transaction, an AUTH identity, the relay flag
    /// and every connection note (both set by plugins from what the client said, or could have
    /// been). A plugin that grants relaying by the client's address must grant it again over
    /// TLS (it sees `tls-info` in its next hook).
    ///
    /// Kept, because they are the server's own observations of the connection, which no
    /// plaintext byte can change: the connection id, the remote and local addresses, whether
    /// the client talked before the greeting, and the count of protocol errors (`max_errors`
    /// is an allowance for the whole connection, not one per TLS session).
    pub fn accept_starttls(&mut self, tls: TlsInfo) {
        let c = &mut self.connection;
        c.tls = Some(tls);
        c.hello = None;
        c.auth = None;
        c.relay_client = false;
        c.notes = Default::default();
        self.transaction = None;
    }

    /// Checks XCLIENT: only a front end the operator trusts may send it (550 5.7.0 otherwise, as
    /// Postfix answers), and not in a transaction.
    pub fn check_xclient(&self) -> Result<(), Reply> {
        if !self.offer.xclient {
            return Err(reply::xclient_unauthorized());
        }
        if self.transaction.is_some() {
            return Err(reply::bad_sequence("Error: MAIL transaction in progress"));
        }
        Ok(())
    }

    /// XCLIENT accepted: the session starts over as a connection from the client the front end
    /// speaks for (Postfix resets to the initial state, then greets again). The attributes given
    /// replace the server's facts: ADDR and PORT the remote address, DESTADDR and DESTPORT the
    /// local one, NAME the client's host name, HELO (with PROTO) the HELO/EHLO name, LOGIN who
    /// authenticated (at the front end; the client may relay, as after AUTH).
    /// `[UNAVAILABLE]` clears NAME, HELO and LOGIN; an unavailable address or port keeps ours.
    /// Forgotten, as after STARTTLS: the transaction, the relay flag, the connection notes, the
    /// iprev result (it was for the front end's address). Kept: the connection id, TLS, early
    /// talking and the error count.
    pub fn accept_xclient(&mut self, x: &crate::xclient::Xclient) {
        let c = &mut self.connection;
        let esmtp = c.hello.as_ref().is_none_or(|h| h.esmtp);
        c.hello = None;
        c.auth = None;
        c.relay_client = false;
        c.notes = Default::default();
        c.iprev = None;
        self.transaction = None;
        if let Some(Some(ip)) = x.addr {
            c.remote.set_ip(ip);
        }
        if let Some(Some(port)) = x.port {
            c.remote.set_port(port);
        }
        if let Some(Some(ip)) = x.dest_addr {
            c.local.set_ip(ip);
        }
        if let Some(Some(port)) = x.dest_port {
            c.local.set_port(port);
        }
        if let Some(name) = &x.name {
            c.remote_name = name.clone();
        }
        let esmtp = x.proto.flatten().unwrap_or(esmtp);
        if let Some(Some(host)) = &x.helo {
            c.hello = Some(Hello { esmtp, host: host.clone() });
        }
        if let Some(Some(user)) = &x.login {
            c.auth = Some(AuthInfo { user: user.clone(), mechanism: Mechanism::Xclient });
            c.relay_client = true;
        }
    }

    /// Checks `AUTH <mechanism>`; `Ok` gives the mechanism to run.
    pub fn check_auth(&self, mechanism: &str) -> Result<Mechanism, Reply> {
        if self.offer.auth_mechanisms.is_empty() {
            return Err(reply::command_not_implemented("AUTH"));
        }
        if !self.connection.hello.as_ref().is_some_and(|h| h.esmtp) {
            return Err(reply::bad_sequence("Send EHLO first"));
        }
        if self.connection.auth.is_some() {
            return Err(reply::bad_sequence("Already authenticated"));
        }
        if self.transaction.is_some() {
            return Err(reply::bad_sequence("AUTH is not allowed during a mail transaction"));
        }
        if !self.auth_usable() {
            return Err(reply::auth_encryption_required());
        }
        match Mechanism::parse(mechanism) {
            Some(m) if self.offer.auth_mechanisms.contains(&m) => Ok(m),
            _ => Err(reply::auth_mechanism_unknown()),
        }
    }

    /// A plugin accepted the credentials: the client is authenticated for the rest of the
    /// connection, and may relay.
    pub fn accept_auth(&mut self, user: String, mechanism: Mechanism) {
        self.connection.auth = Some(AuthInfo { user, mechanism });
        self.connection.relay_client = true;
    }

    /// Ends the transaction (RSET, queued, rejected, disconnect). Returns it if there was one.
    pub fn reset(&mut self) -> Option<Transaction> {
        self.transaction.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, MailParams};

    fn session() -> Session {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        Session::new(
            Connection::new("c1".into(), a, a),
            Limits { max_recipients: 2, max_message_size: 1000, ..Limits::default() },
        )
    }

    fn mail(s: &str) -> (Option<Address>, MailParams) {
        match Command::parse(s.as_bytes()).unwrap() {
            Command::Mail { from, params } => (from, params),
            c => panic!("{c:?}"),
        }
    }

    fn code(r: Result<(), Reply>) -> u16 {
        r.map(|_| 250).unwrap_or_else(|r| r.code())
    }

    #[test]
    fn sequence() {
        let mut s = session();
        let (f, p) = mail("MAIL FROM:<a@b.example>");
        assert_eq!(code(s.check_mail(f.as_ref(), &p)), 503);
        s.accept_hello(true, "client.example");
        assert_eq!(code(s.check_data()), 503);
        let to = Address::new("x", "y.example").unwrap();
        assert_eq!(code(s.check_rcpt(&to, &[])), 503);
        assert_eq!(code(s.check_mail(f.as_ref(), &p)), 250);
        s.begin_transaction("t1".into(), f.clone(), p.clone());
        assert_eq!(code(s.check_mail(f.as_ref(), &p)), 503, "nested MAIL");
        assert_eq!(code(s.check_data()), 503, "no RCPT tried yet");
        assert_eq!(code(s.check_rcpt(&to, &[])), 250);
        assert_eq!(code(s.check_data()), 554, "RCPT tried, none accepted");
        s.accept_rcpt(to.clone(), vec![]);
        s.accept_rcpt(to.clone(), vec![]);
        assert_eq!(code(s.check_rcpt(&to, &[])), 452);
        assert_eq!(code(s.check_data()), 250);
        s.accept_hello(true, "again");
        assert!(s.transaction.is_none(), "EHLO resets the transaction");
    }

    #[test]
    fn parameters() {
        let mut s = session();
        s.accept_hello(false, "old.example");
        let (f, p) = mail("MAIL FROM:<a@b.example> SIZE=10");
        assert_eq!(code(s.check_mail(f.as_ref(), &p)), 503, "ESMTP params after HELO");
        s.accept_hello(true, "new.example");
        assert_eq!(code(s.check_mail(f.as_ref(), &p)), 250);
        let (f, p) = mail("MAIL FROM:<a@b.example> SIZE=1001");
        assert_eq!(code(s.check_mail(f.as_ref(), &p)), 552);
        let (f, p) = mail("MAIL FROM:<a@b.example> XFOO=1");
        assert_eq!(code(s.check_mail(f.as_ref(), &p)), 555);
        let (f, p) = mail("MAIL FROM:<jürgen@b.example>");
        assert_eq!(code(s.check_mail(f.as_ref(), &p)), 553);
        let (f, p) = mail("MAIL FROM:<jürgen@b.example> SMTPUTF8");
        assert_eq!(code(s.check_mail(f.as_ref(), &p)), 250);
        s.begin_transaction("t".into(), None, MailParams::default());
        let utf8 = Address::new("jürgen", "b.example").unwrap();
        assert_eq!(code(s.check_rcpt(&utf8, &[])), 553);
        let to = Address::new("x", "y.example").unwrap();
        let notify = [EsmtpParam { keyword: "NOTIFY".into(), value: Some("NEVER".into()) }];
        assert_eq!(code(s.check_rcpt(&to, &notify)), 250, "DSN's NOTIFY is understood");
        let xfoo = [EsmtpParam { keyword: "XFOO".into(), value: None }];
        assert_eq!(code(s.check_rcpt(&to, &xfoo)), 555);
    }

    fn tls() -> TlsInfo {
        TlsInfo { version: "TLSv1.3".into(), cipher: "TLS13_AES_128_GCM_SHA256".into(), server_name: None }
    }

    #[test]
    fn starttls_sequence() {
        let s = session();
        assert_eq!(code(s.check_starttls()), 502, "no certificate: not offered");
        let offer = Offer { starttls: true, ..Offer::default() };
        let mut s = session().with_offer(offer);
        assert_eq!(code(s.check_starttls()), 503, "EHLO first");
        s.accept_hello(false, "old.example");
        assert_eq!(code(s.check_starttls()), 503, "HELO is not enough");
        s.accept_hello(true, "client.example");
        assert!(s.capabilities().contains(&"STARTTLS".to_string()));
        s.begin_transaction("t".into(), None, MailParams::default());
        assert_eq!(code(s.check_starttls()), 503, "not in a transaction");
        s.reset();
        assert_eq!(code(s.check_starttls()), 250);
        s.accept_starttls(tls());
        assert!(s.connection.hello.is_none(), "the EHLO name is forgotten");
        let (f, p) = mail("MAIL FROM:<a@b.example>");
        assert_eq!(code(s.check_mail(f.as_ref(), &p)), 503, "a new EHLO is required");
        s.accept_hello(true, "client.example");
        assert!(!s.capabilities().contains(&"STARTTLS".to_string()));
        assert_eq!(code(s.check_starttls()), 503, "TLS already active");
    }

    #[test]
    fn starttls_forgets_what_was_learnt_in_plaintext_and_keeps_the_servers_observations() {
        let remote: SocketAddr = "192.0.2.7:2525".parse().unwrap();
        let local: SocketAddr = "198.51.100.1:25".parse().unwrap();
        let offer = Offer { starttls: true, ..Offer::default() };
        let mut s = Session::new(Connection::new("c9".into(), remote, local), Limits::default()).with_offer(offer);
        s.connection.early_talker = true;
        s.accept_hello(true, "client.example");
        s.connection.relay_client = true;
        s.connection
            .notes
            .entries
            .insert("plugin.trusted".into(), crate::notes::Note { writer: 0, value: "yes".into() });
        s.connection.notes.set_record(1, 0, crate::Hook::Connect, "OK");
        s.count_error();
        assert_eq!(code(s.check_starttls()), 250);
        s.accept_starttls(tls());
        let c = &s.connection;
        assert_eq!((c.id.as_str(), c.remote, c.local, c.early_talker), ("c9", remote, local, true));
        assert!(c.tls.is_some());
        assert!(c.hello.is_none() && c.auth.is_none(), "EHLO name and AUTH forgotten");
        assert!(!c.relay_client, "the relay flag set in plaintext is forgotten");
        assert!(c.notes.entries.is_empty(), "connection notes set in plaintext are forgotten");
        assert_eq!(c.notes.record(0, crate::Hook::Connect), None, "and the records of plaintext answers");
        assert_eq!(s.errors, 1, "the error allowance is for the whole connection");
    }

    #[test]
    fn auth_sequence() {
        let s = session();
        assert_eq!(code(s.check_auth("PLAIN").map(|_| ())), 502, "no auth plugin: not offered");
        let offer =
            Offer { starttls: true, auth_mechanisms: vec![Mechanism::Plain], auth_without_tls: false, xclient: false };
        let mut s = session().with_offer(offer);
        s.accept_hello(true, "client.example");
        assert!(!s.capabilities().iter().any(|c| c.starts_with("AUTH")), "not offered before TLS");
        assert_eq!(code(s.check_auth("PLAIN").map(|_| ())), 538);
        s.accept_starttls(tls());
        assert_eq!(code(s.check_auth("PLAIN").map(|_| ())), 503, "EHLO again after STARTTLS");
        s.accept_hello(true, "client.example");
        assert!(s.capabilities().contains(&"AUTH PLAIN".to_string()));
        assert_eq!(code(s.check_auth("LOGIN").map(|_| ())), 504, "not offered");
        assert_eq!(code(s.check_auth("CRAM-MD5").map(|_| ())), 504);
        assert_eq!(s.check_auth("plain"), Ok(Mechanism::Plain));
        s.accept_auth("alice".into(), Mechanism::Plain);
        assert!(s.connection.relay_client);
        assert_eq!(code(s.check_auth("PLAIN").map(|_| ())), 503, "already authenticated");

        let offer =
            Offer { starttls: false, auth_mechanisms: Mechanism::ALL.to_vec(), auth_without_tls: true, xclient: false };
        let mut s = session().with_offer(offer);
        s.accept_hello(true, "client.example");
        assert!(s.capabilities().contains(&"AUTH PLAIN LOGIN".to_string()), "plaintext allowed here");
        s.begin_transaction("t".into(), None, MailParams::default());
        assert_eq!(code(s.check_auth("LOGIN").map(|_| ())), 503, "not in a transaction");
    }

    #[test]
    fn error_allowance() {
        let mut s = session();
        assert!((1..20).all(|_| !s.count_error()));
        assert!(s.count_error());
    }
}
