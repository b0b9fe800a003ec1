//! The filters built on DNS (dnsbl, rhsbl, resolvable_fromhost, helo, fcrdns) and on the
//! server's SPF, DKIM and DMARC checks, against a real authoritative DNS server (nsd) serving
//! zones of the test's own, with clients connecting from chosen loopback addresses.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use wasmtpd_tests::dkim::DkimKey;
use wasmtpd_tests::dns::{DnsServer, FailingNameServer, SilentNameServer, resolver_config};
use wasmtpd_tests::{Client, TestServer};

/// `127.0.0.N`: the client addresses of these tests (all of 127/8 is local on Linux).
fn client(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// The zone `test.`: blocklists, senders' domains, SPF, DKIM and DMARC records, names of the
/// clients. `extra` is added (a DKIM key's record, say).
fn test_zone(extra: &str) -> String {
    format!(
        r#"
; DNSBL bl.test: 127.0.0.2 listed with a reason, 127.0.0.4 listed without one.
2.0.0.127.bl.test.       300 IN A   127.0.0.2
2.0.0.127.bl.test.       300 IN TXT "Listed: see https://bl.test/?127.0.0.2"
4.0.0.127.bl.test.       300 IN A   127.0.0.4
; bl2.test lists 127.0.0.4 too, with a code outside 127/8 (a broken list, ignored).
4.0.0.127.bl2.test.      300 IN A   192.0.2.1
; RHSBL dbl.test: the domain spammer.test.
spammer.test.dbl.test.   300 IN A   127.0.1.2
spammer.test.dbl.test.   300 IN TXT "is a known spam source"
; Senders' domains.
good.test.               300 IN MX  10 mx.good.test.
mx.good.test.            300 IN A   192.0.2.10
spammer.test.            300 IN MX  10 mx.good.test.
aonly.test.              300 IN A   192.0.2.11
nullmx.test.             300 IN MX  0 .
nullmx.test.             300 IN A   192.0.2.12
badmx.test.              300 IN MX  10 nowhere.badmx.test.
textonly.test.           300 IN TXT "nothing to deliver to"
; SPF: spf.test permits 127.0.0.3 only; soft.test soft-fails the rest.
spf.test.                300 IN MX  10 mx.good.test.
spf.test.                300 IN TXT "v=spf1 ip4:127.0.0.3 -all"
soft.test.               300 IN MX  10 mx.good.test.
soft.test.               300 IN TXT "v=spf1 ip4:127.0.0.3 ~all"
; signed.test: SPF for 127.0.0.3, DKIM key below, DMARC p=reject.
signed.test.             300 IN MX  10 mx.good.test.
signed.test.             300 IN TXT "v=spf1 ip4:127.0.0.3 -all"
_dmarc.signed.test.      300 IN TXT "v=DMARC1; p=reject"
; quarantined.test: SPF for 127.0.0.3 only, DMARC p=quarantine.
quarantined.test.        300 IN MX  10 mx.good.test.
quarantined.test.        300 IN TXT "v=spf1 ip4:127.0.0.3 -all"
_dmarc.quarantined.test. 300 IN TXT "v=DMARC1; p=quarantine"
; Client names. Reverse DNS for 127/8 is never asked of a name server: resolvers answer
; `localhost` themselves (RFC 6761 section 6.3), so no reverse zone here.
client3.test.            300 IN A   127.0.0.3
liar.test.               300 IN A   192.0.2.99
{extra}
"#
    )
}

fn dns_server(extra: &str) -> DnsServer {
    DnsServer::start(&[("test", &test_zone(extra))])
}

/// The chain `plugins`, then rcpt_ok and queue/maildir, for example.com, with DNS through the
/// server on `dns`; `sandbox` is added to the maildir grant; `extra` files go in as they are.
fn start(plugins: &str, sandbox: &str, dns: std::net::SocketAddr, extra: &[(&str, &str)]) -> TestServer {
    let sandbox = format!("queue/maildir grant-dir maildir /maildir rw\n{sandbox}\n");
    let resolver = resolver_config(dns, Duration::from_secs(1));
    let mut files: Vec<(&str, &str)> = vec![("sandbox", &sandbox), ("resolver", &resolver)];
    files.extend_from_slice(extra);
    TestServer::start_with_chain(&format!("{plugins}\nrcpt_ok"), &files)
}

const MESSAGE: &[u8] = b"From: <a@signed.test>\r\nTo: <b@example.com>\r\nSubject: hello\r\nDate: Fri, 4 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@signed.test>\r\n\r\nHello there.\r\n";

#[test]
fn dnsbl_refuses_listed_clients_at_rcpt_with_the_lists_reason_but_not_postmaster() {
    let dns = dns_server("");
    let s = start(
        "dnsbl",
        "dnsbl dns bl.test bl2.test",
        dns.addr(),
        &[("dnsbl_zones", "bl2.test:Your address %IP% is listed in bl2.test\nbl.test\n")],
    );
    // Listed, with a TXT reason: refused at RCPT with it.
    let mut c = s.greeted_from(client(2));
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@good.test>", 250);
    let r = c.cmd("RCPT TO:<b@example.com>", 550);
    assert_eq!(r.text(), "5.7.1 Listed: see https://bl.test/?127.0.0.2");
    // postmaster and abuse still get through, so the sender can ask to be delisted.
    c.cmd("RCPT TO:<postmaster@example.com>", 250);
    c.cmd("RCPT TO:<Abuse@example.com>", 250);
    c.cmd("QUIT", 221);
    // Not listed anywhere.
    let mut c = s.greeted_from(client(3));
    c.envelope("a@good.test", &["b@example.com"]);
    assert_eq!(c.data(b"Subject: hi\r\n\r\nhi\r\n").code, 250);
    // Listed by bl2.test with an answer outside 127/8, which is a broken list, not a listing; and
    // by bl.test without a TXT record: the "Blocked by" text.
    let mut c = s.greeted_from(client(4));
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@good.test>", 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.com>", 550).text(), "5.7.1 Blocked by bl.test");
    let log = s.log();
    assert!(log.contains("127.0.0.2 listed by bl.test"), "{log}");
    assert!(log.contains("bl2.test could not be asked"), "{log}");
}

#[test]
fn dnsbl_custom_message_allowlist_and_reject_types() {
    let dns = dns_server("");
    let s = start(
        "dnsbl reject_type disconnect",
        "dnsbl dns bl.test",
        dns.addr(),
        &[
            ("dnsbl_zones", "bl.test:Go away %IP%\n"),
            ("dnsbl_allow", "127.0.0.4\n"),
            ("dnsbl_rejectmsg", "Blocked, see our policy:\n"),
        ],
    );
    let mut c = s.greeted_from(client(2));
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@good.test>", 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.com>", 550).text(), "5.7.1 Blocked, see our policy: Go away 127.0.0.2");
    assert!(c.is_closed(), "reject_type disconnect closes the connection");
    // 127.0.0.4 is listed but allow-listed.
    let mut c = s.greeted_from(client(4));
    c.envelope("a@good.test", &["b@example.com"]);
    drop(s);

    let s = start("dnsbl reject_type temp", "dnsbl dns bl.test", dns.addr(), &[("dnsbl_zones", "bl.test\n")]);
    let mut c = s.greeted_from(client(2));
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@good.test>", 250);
    assert!(c.cmd("RCPT TO:<b@example.com>", 450).text().starts_with("4.7.1 Listed"));
    drop(s);

    // reject 0: only noted and logged.
    let s = start("dnsbl reject 0", "dnsbl dns bl.test", dns.addr(), &[("dnsbl_zones", "bl.test\n")]);
    let mut c = s.greeted_from(client(2));
    c.envelope("a@good.test", &["b@example.com"]);
    assert!(s.log().contains("127.0.0.2 listed by bl.test"));
}

#[test]
fn dnsbl_outside_its_grant_is_refused_and_mail_flows() {
    let dns = dns_server("");
    // Granted a zone other than its list's (with no DNS grant at all it would not start:
    // `vetting.rs`): its lookups are refused, it counts the list as not listing.
    let s = start("dnsbl", "dnsbl dns other.test", dns.addr(), &[("dnsbl_zones", "bl.test\n")]);
    let mut c = s.greeted_from(client(2));
    c.envelope("a@good.test", &["b@example.com"]);
    let log = s.log();
    assert!(log.contains("dnsbl") && log.contains("refused"), "{log}");
}

#[test]
fn dnsbl_with_a_silent_name_server_goes_on_within_the_deadline() {
    let silent = SilentNameServer::start();
    let s = start("dnsbl", "dnsbl dns bl.test", silent.addr(), &[("dnsbl_zones", "bl.test\nbl2.test\n")]);
    let start = Instant::now();
    let mut c = s.greeted_from(client(2));
    // Both lists asked in parallel, each bounded by the resolver's 1 s timeout.
    assert!(start.elapsed() < Duration::from_secs(4), "greeting after {:?}", start.elapsed());
    c.envelope("a@good.test", &["b@example.com"]);
    assert!(s.log().contains("could not be asked: timed out"), "{}", s.log());
}

#[test]
fn rhsbl_refuses_listed_sender_domains() {
    let dns = dns_server("");
    let s = start("rhsbl", "rhsbl dns dbl.test", dns.addr(), &[("rhsbl_zones", "dbl.test\n")]);
    let mut c = s.greeted_from(client(3));
    c.cmd("EHLO client.test", 250);
    let r = c.cmd("MAIL FROM:<x@spammer.test>", 550);
    assert_eq!(r.text(), "5.7.1 Mail from spammer.test rejected because it is a known spam source");
    c.cmd("MAIL FROM:<a@good.test>", 250);
    c.cmd("RSET", 250);
    c.cmd("MAIL FROM:<>", 250);
}

#[test]
fn resolvable_fromhost_mx_a_null_mx_and_missing_domains() {
    let dns = dns_server("");
    let s = start("resolvable_fromhost", "resolvable_fromhost dns any", dns.addr(), &[]);
    let mut c = s.greeted_from(client(3));
    c.cmd("EHLO client.test", 250);
    for ok in ["a@good.test", "a@aonly.test", ""] {
        c.cmd(&format!("MAIL FROM:<{ok}>"), 250);
        c.cmd("RSET", 250);
    }
    assert_eq!(c.cmd("MAIL FROM:<a@gone.test>", 550).text(), "5.1.8 FQDN required in the envelope sender");
    assert_eq!(c.cmd("MAIL FROM:<a@textonly.test>", 550).text(), "5.1.8 FQDN required in the envelope sender");
    assert_eq!(c.cmd("MAIL FROM:<a@badmx.test>", 550).text(), "5.1.8 FQDN required in the envelope sender");
    assert_eq!(c.cmd("MAIL FROM:<a@nullmx.test>", 550).text(), "5.7.27 Sender address has null MX");
    drop(s);

    // Networks that do not count as an address (an MX pointing at 192.0.2.0/24).
    let s = start(
        "resolvable_fromhost",
        "resolvable_fromhost dns any",
        dns.addr(),
        &[("invalid_resolvable_fromhost", "192.0.2.0/24\n")],
    );
    let mut c = s.greeted_from(client(3));
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@good.test>", 550);
}

#[test]
fn resolvable_fromhost_defers_when_dns_fails() {
    let failing = FailingNameServer::start();
    let silent = SilentNameServer::start();
    for (trouble, addr) in [("SERVFAIL", failing.addr()), ("no answer", silent.addr())] {
        let s = start("resolvable_fromhost", "resolvable_fromhost dns any", addr, &[]);
        let mut c = s.greeted_from(client(3));
        c.cmd("EHLO client.test", 250);
        let started = Instant::now();
        let r = c.cmd("MAIL FROM:<a@good.test>", 450);
        assert_eq!(r.text(), "4.4.3 Temporary address resolution failure", "{trouble}");
        assert!(started.elapsed() < Duration::from_secs(5), "{trouble}: {:?}", started.elapsed());
    }
}

#[test]
fn helo_checks_by_policy() {
    let dns = dns_server("");
    let s = start("helo", "helo dns any", dns.addr(), &[("badhelo", "aol.com\n")]);
    let mut c = s.greeted_from(client(3));
    assert_eq!(c.cmd("EHLO AOL.com", 550).text(), "I do not believe you are AOL.com.");
    assert!(c.is_closed(), "reject_type disconnect is the default");
    for (helo, text) in [
        ("192.0.2.1", "Plain IP is invalid HELO hostname (RFC 5321)"),
        ("[192.0.2.1]", "Forged IPs not accepted here"),
        ("mx.test", "You are not mx.test: that is us"),
    ] {
        let mut c = s.greeted_from(client(3));
        assert_eq!(c.cmd(&format!("EHLO {helo}"), 550).text(), text);
    }
    let mut c = s.greeted_from(client(3));
    c.cmd("EHLO [127.0.0.3]", 250);
    let mut c = s.greeted_from(client(3));
    c.cmd("EHLO nonexistent.test", 250); // lenient: no DNS checks
    drop(s);

    let s = start("helo policy rfc reject_type perm", "helo dns any", dns.addr(), &[]);
    let mut c = s.greeted_from(client(3));
    assert_eq!(c.cmd("EHLO nonexistent.test", 550).text(), "HELO hostname does not exist");
    assert_eq!(c.cmd("EHLO textonly.test", 550).text(), "HELO hostname did not resolve");
    assert_eq!(c.cmd("EHLO laptop", 550).text(), "HELO name is not fully qualified. Read RFC 5321");
    c.cmd("EHLO client3.test", 250);
    drop(s);

    // strict, with no_reverse_dns switched off: the name must match the client. (Its failure,
    // no PTR at all, cannot be shown from 127/8, which resolvers answer as localhost.)
    let s = start("helo policy strict no_reverse_dns 0 reject_type perm", "helo dns any", dns.addr(), &[]);
    let mut c = s.greeted_from(client(3));
    c.cmd("EHLO client3.test", 250);
    assert_eq!(c.cmd("EHLO liar.test", 550).text(), "That HELO hostname fails FCrDNS");
    assert_eq!(c.cmd("EHLO [127.0.0.3]", 550).text(), "RFC 5321 allows an address literal, but we do not");
    let mut c = s.greeted_from(client(5));
    // qpsmtpd's loose match: client3.test resolves to 127.0.0.3, in the /24 of 127.0.0.5.
    c.cmd("EHLO client3.test", 250);
}

#[test]
fn fcrdns_notes_and_with_reject_refuses_clients_whose_name_does_not_resolve_back() {
    // Reverse DNS of 127/8 is `localhost` by RFC 6761 (the resolver answers it without asking),
    // and localhost is 127.0.0.1: so 127.0.0.1 is forward-confirmed, and 127.0.0.6 is not.
    let dns = dns_server("");
    let s = start("fcrdns reject 1 reject_type perm", "", dns.addr(), &[("authentication", "iprev\n")]);
    let mut c = s.greeted_from(client(1));
    c.envelope("a@good.test", &["b@example.com"]);
    assert_eq!(c.data(b"Subject: hi\r\n\r\nhi\r\n").code, 250);
    let delivered = String::from_utf8(s.delivered().remove(0)).unwrap();
    let results = authentication_results(&delivered);
    assert!(results.contains("iprev=pass policy.iprev=127.0.0.1"), "{delivered}");
    let mut c = Client::connect_from(s.addr, client(6));
    let r = c.expect(550);
    assert_eq!(r.text(), "Sorry, the reverse DNS of 127.0.0.6 does not resolve back to it");
    assert!(c.is_closed());
    assert!(s.log().contains("fail, 127.0.0.6"), "{}", s.log());
    drop(s);

    // reject 0 (the default): only noted.
    let s = start("fcrdns", "", dns.addr(), &[("authentication", "iprev\n")]);
    let mut c = s.greeted_from(client(6));
    c.envelope("a@good.test", &["b@example.com"]);
}

/// The value of the message's first Authentication-Results field.
fn authentication_results(message: &str) -> String {
    message
        .lines()
        .find_map(|l| l.strip_prefix("Authentication-Results: "))
        .unwrap_or_else(|| panic!("no Authentication-Results field in {message}"))
        .to_string()
}

/// Sends MESSAGE-like mail from `from` (envelope and header), from 127.0.0.`n`; the final reply.
fn send(s: &TestServer, n: u8, from: &str, message: &[u8]) -> wasmtpd_tests::Reply {
    let mut c = s.greeted_from(client(n));
    c.cmd("EHLO client3.test", 250);
    c.cmd(&format!("MAIL FROM:<{from}>"), 250);
    c.cmd("RCPT TO:<b@example.com>", 250);
    c.data(message)
}

#[test]
fn spf_results_reach_the_message_and_the_policy_refuses_by_level() {
    let dns = dns_server("");
    let s = start("sender_permitted_from reject 3", "", dns.addr(), &[("authentication", "spf\n")]);
    // Pass: delivered, with the result in Authentication-Results.
    assert_eq!(send(&s, 3, "a@spf.test", b"Subject: hi\r\n\r\nhi\r\n").code, 250);
    let delivered = String::from_utf8(s.delivered().remove(0)).unwrap();
    let first = authentication_results(&delivered);
    assert!(first.starts_with("mx.test;"), "{delivered}");
    assert!(first.contains("spf=pass smtp.mailfrom=a@spf.test"), "{first}");
    assert!(first.contains("spf=none smtp.helo=client3.test"), "{first}");
    // Fail: refused at MAIL with 550 5.7.23.
    let mut c = s.greeted_from(client(5));
    c.cmd("EHLO client.test", 250);
    let r = c.cmd("MAIL FROM:<a@spf.test>", 550);
    assert!(r.text().starts_with("5.7.23 SPF - forgery: "), "{r:?}");
    // Softfail at level 3: deferred; the rest of the session goes on.
    let r = c.cmd("MAIL FROM:<a@soft.test>", 450);
    assert!(r.text().starts_with("4.7.24 SPF - fail: "), "{r:?}");
    // No SPF record: passes at level 3.
    c.cmd("MAIL FROM:<a@good.test>", 250);
    drop(s);

    // reject 1: nothing refused, every result recorded in the message.
    let s = start("sender_permitted_from reject 1", "", dns.addr(), &[("authentication", "spf\n")]);
    assert_eq!(send(&s, 5, "a@spf.test", b"Subject: hi\r\n\r\nhi\r\n").code, 250);
    assert_eq!(send(&s, 5, "a@soft.test", b"Subject: hi\r\n\r\nhi\r\n").code, 250);
    let delivered: Vec<String> = s.delivered().into_iter().map(|m| String::from_utf8(m).unwrap()).collect();
    assert!(authentication_results(&delivered[0]).contains("spf=fail smtp.mailfrom=a@spf.test"), "{}", delivered[0]);
    assert!(
        authentication_results(&delivered[1]).contains("spf=softfail smtp.mailfrom=a@soft.test"),
        "{}",
        delivered[1]
    );
}

#[test]
fn dkim_signed_mail_passes_and_the_same_mail_altered_is_refused() {
    let key = DkimKey::generate("signed.test", "sel1");
    let dns = dns_server(&key.zone_record());
    let s = start("dkim", "", dns.addr(), &[("authentication", "dkim\n")]);
    let signed = key.sign(MESSAGE);
    assert_eq!(send(&s, 3, "a@signed.test", &signed).code, 250);
    let delivered = String::from_utf8(s.delivered().remove(0)).unwrap();
    assert!(authentication_results(&delivered).contains("dkim=pass header.d=signed.test"), "{delivered}");
    // The body changed after signing.
    let altered = String::from_utf8(signed).unwrap().replace("Hello there.", "Hello there, send money.");
    let r = send(&s, 3, "a@signed.test", altered.as_bytes());
    assert_eq!(r.code, 552, "{r:?}");
    assert!(r.text().starts_with("5.7.20 signature invalid"), "{r:?}");
    assert_eq!(s.delivered().len(), 1);
}

#[test]
fn dmarc_reject_refuses_and_quarantine_marks() {
    let key = DkimKey::generate("signed.test", "sel1");
    let dns = dns_server(&key.zone_record());
    let s = start("dmarc", "", dns.addr(), &[("authentication", "dmarc\n")]);
    // From an address SPF permits, signed: DMARC passes.
    assert_eq!(send(&s, 3, "a@signed.test", &key.sign(MESSAGE)).code, 250);
    // From elsewhere and unsigned: SPF fails, no DKIM: p=reject.
    let r = send(&s, 5, "a@signed.test", MESSAGE);
    // 552 is the engine's (and qpsmtpd's) reply to a refusal after the message.
    assert_eq!((r.code, r.text()), (552, "5.7.1 failed DMARC policy".to_string()));
    // The envelope passes SPF, but the From domain is another: not aligned, so DMARC fails too.
    let forged = String::from_utf8(MESSAGE.to_vec()).unwrap();
    let r = send(&s, 3, "a@spf.test", forged.as_bytes());
    assert_eq!(r.code, 552, "{r:?}");
    // p=quarantine: delivered with the mark.
    let quarantined = forged.replace("a@signed.test", "a@quarantined.test");
    assert_eq!(send(&s, 5, "a@quarantined.test", quarantined.as_bytes()).code, 250);
    let delivered: Vec<String> = s.delivered().into_iter().map(|m| String::from_utf8(m).unwrap()).collect();
    assert_eq!(delivered.len(), 2);
    assert!(authentication_results(&delivered[0]).contains("dmarc=pass"), "{}", delivered[0]);
    assert!(!delivered[0].contains("X-DMARC-Quarantine"), "{}", delivered[0]);
    assert!(delivered[1].contains("\r\nX-DMARC-Quarantine: quarantined.test\r\n"), "{}", delivered[1]);
    assert!(authentication_results(&delivered[1]).contains("dmarc=fail"), "{}", delivered[1]);
}

#[test]
fn naughty_refuses_what_dnsbl_recorded_with_reject_naughty_at_the_chosen_hook() {
    // qpsmtpd's sample chain: `dnsbl reject naughty reject_type disconnect`, `naughty reject mail`:
    // the listed client is greeted, says EHLO, and is refused at MAIL with the list's text.
    let dns = dns_server("");
    let s = start(
        "dnsbl reject naughty reject_type disconnect\nnaughty reject mail",
        "dnsbl dns bl.test",
        dns.addr(),
        &[("dnsbl_zones", "bl.test\n")],
    );
    let mut c = s.greeted_from(client(2));
    c.cmd("EHLO client.test", 250);
    let r = c.cmd("MAIL FROM:<a@good.test>", 550);
    assert_eq!(r.text(), "5.7.1 Listed: see https://bl.test/?127.0.0.2");
    assert!(c.is_closed(), "reject_type disconnect");
    // A client not listed is not refused.
    let mut c = s.greeted_from(client(3));
    c.envelope("a@good.test", &["b@example.com"]);
    drop(s);
    // By default at RCPT, with naughty's own reject_type (disconnect) when dnsbl named none;
    // dnsbl itself lets RCPT through when it only records.
    let s = start(
        "dnsbl reject naughty\nnaughty reject_type temp",
        "dnsbl dns bl.test",
        dns.addr(),
        &[("dnsbl_zones", "bl.test\n")],
    );
    let mut c = s.greeted_from(client(2));
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@good.test>", 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.com>", 450).text(), "4.7.1 Listed: see https://bl.test/?127.0.0.2");
}
