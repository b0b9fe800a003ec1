//! Behind a front end: XCLIENT from a trusted relay and the PROXY protocol from a trusted load
//! balancer, through the real server and real plugins (hosts_allow sees the named client),
//! from trusted and untrusted loopback addresses (127.0.0.2..6); and BDAT delivered to a
//! maildir.

use std::net::IpAddr;

use wasmtpd_tests::{Client, TestServer};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// hosts_allow refuses 203.0.113.66, a client no test can connect from: only a front end can
/// name it. The front end itself (127.0.0.2) is not refused.
fn server(extra: &[(&str, &str)], args: &[&str]) -> TestServer {
    let mut files = vec![("hosts_allow", "203.0.113.66 deny Not you\n")];
    files.extend_from_slice(extra);
    let chain = "hosts_allow\nrcpt_ok\nqueue/maildir /maildir\n";
    let mut all = vec![
        ("me", "mx.test"),
        ("rcpthosts", "example.com\n"),
        ("plugins", chain),
        ("sandbox", "queue/maildir grant-dir maildir /maildir rw\n"),
    ];
    all.extend(files);
    TestServer::start_with_args(wasmtpd_tests::TempDir::new("frontends"), &all, args)
}

fn deliver(c: &mut Client) {
    c.envelope("a@remote.test", &["b@example.com"]);
    c.cmd("DATA", 354);
    c.send("Subject: via a front end\r\n\r\nhello\r\n.\r\n");
    c.expect(250);
}

#[test]
fn xclient_from_a_trusted_relay_is_the_client_plugins_and_received_see() {
    let s = server(&[("frontends", "xclient 127.0.0.2\n")], &[]);
    let mut c = s.greeted_from(ip("127.0.0.2"));
    let ehlo = c.cmd("EHLO relay.test", 250);
    assert!(ehlo.lines.iter().any(|l| l == "XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT"), "{ehlo:?}");
    c.cmd("XCLIENT ADDR=198.51.100.7 NAME=client.example HELO=orig.example", 220);
    deliver(&mut c);
    let m = String::from_utf8(s.delivered().pop().unwrap()).unwrap();
    // (`envelope` says EHLO client.test, after the XCLIENT's HELO.)
    assert!(m.contains("\r\nReceived: from client.test (client.example [198.51.100.7])\r\n"), "{m}");
    // hosts_allow sees the client XCLIENT names.
    let mut c = s.greeted_from(ip("127.0.0.2"));
    let r = c.cmd("XCLIENT ADDR=203.0.113.66", 550);
    assert_eq!(r.text(), "Not you");
    assert!(c.is_closed());
    // Malformed: 501, nothing changes.
    let mut c = s.greeted_from(ip("127.0.0.2"));
    c.cmd("XCLIENT ADDR=203.0.113.666", 501);
    c.cmd("XCLIENT FOO=bar", 501);
    deliver(&mut c);
    let m = String::from_utf8(s.delivered().pop().unwrap()).unwrap();
    assert!(m.contains("[127.0.0.2]"), "{m}");
}

#[test]
fn xclient_from_an_untrusted_client_is_550_and_spoofs_nothing() {
    let s = server(&[("frontends", "xclient 127.0.0.2\n")], &[]);
    let mut c = s.greeted_from(ip("127.0.0.3"));
    let ehlo = c.cmd("EHLO client.test", 250);
    assert!(!ehlo.lines.iter().any(|l| l.starts_with("XCLIENT")), "{ehlo:?}");
    assert_eq!(c.cmd("XCLIENT ADDR=198.51.100.7", 550).text(), "5.7.0 Error: insufficient authorization");
    c.cmd("XCLIENT LOGIN=admin", 550);
    deliver(&mut c);
    let m = String::from_utf8(s.delivered().pop().unwrap()).unwrap();
    assert!(m.contains("[127.0.0.3]") && !m.contains("198.51.100.7"), "{m}");
}

#[test]
fn proxy_headers_from_a_trusted_balancer_name_the_client() {
    let s = server(&[("frontends", "proxy 127.0.0.4\nproxy_timeout 1s\n")], &["--listen-proxy", "127.0.0.1:0"]);
    let v1 = Client::connect_from(s.proxy_addr(), ip("127.0.0.4"));
    let mut c = v1;
    c.send("PROXY TCP4 198.51.100.9 192.0.2.25 4711 25\r\n");
    c.expect(220);
    deliver(&mut c);
    let m = String::from_utf8(s.delivered().pop().unwrap()).unwrap();
    assert!(m.contains("\r\nReceived: from client.test ([198.51.100.9])\r\n"), "{m}");
    // v2, naming the client hosts_allow refuses.
    let mut c = Client::connect_from(s.proxy_addr(), ip("127.0.0.4"));
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    h.extend([203, 0, 113, 66, 192, 0, 2, 25, 0x12, 0x67, 0, 25]);
    c.send(&h);
    assert_eq!(c.expect(550).text(), "Not you");
}

#[test]
fn proxy_headers_from_anyone_else_or_malformed_or_late_close_the_connection() {
    let s = server(&[("frontends", "proxy 127.0.0.4\nproxy_timeout 1s\n")], &["--listen-proxy", "127.0.0.1:0"]);
    let header = "PROXY TCP4 198.51.100.9 192.0.2.25 4711 25\r\n";
    for (source, sent) in [
        ("127.0.0.5", header),
        ("127.0.0.4", "PROXY TCP4 198.51.100.9 192.0.2.25 4711\r\n"),
        ("127.0.0.4", "EHLO client.test\r\n"),
        ("127.0.0.4", "PROXY TCP4 198.51"),
    ] {
        let mut c = Client::connect_from(s.proxy_addr(), ip(source));
        c.send(sent);
        assert!(c.read_reply().is_none(), "{source} {sent:?}: closed without a reply");
    }
    let log = s.log();
    assert!(log.contains("not a trusted front end"), "{log}");
    assert!(log.contains("bad PROXY header"), "{log}");
    assert!(log.contains("no whole PROXY header in time"), "{log}");
    // The plain listener takes no PROXY header: it is a command there (and not one).
    let mut c = s.greeted_from(ip("127.0.0.4"));
    c.cmd(header.trim_end(), 500);
}

#[test]
fn bdat_chunks_are_delivered_as_sent() {
    let s = TestServer::start_delivering(&[("limits", "max_message_size 1k\n")]);
    let mut c = s.greeted();
    let ehlo = c.cmd("EHLO client.test", 250);
    assert!(ehlo.lines.iter().any(|l| l == "CHUNKING") && ehlo.lines.iter().any(|l| l == "BINARYMIME"), "{ehlo:?}");
    assert!(ehlo.lines.iter().any(|l| l == "DSN"), "{ehlo:?}");
    c.envelope("a@remote.test", &["b@example.com"]);
    let body = "Subject: chunked\r\n\r\n.a dot, not stuffed\r\nMAIL FROM:<inside@chunk.test>\r\n";
    let (a, b) = body.split_at(20);
    c.send(format!("BDAT {}\r\n{a}BDAT {} LAST\r\n{b}", a.len(), b.len()));
    c.expect(250);
    c.expect(250);
    let m = String::from_utf8(s.delivered().pop().unwrap()).unwrap();
    assert!(m.ends_with(body), "{m}");
    // Past the size limit in chunks: 552, the rest refused until RSET, framing kept.
    c.envelope("a@remote.test", &["b@example.com"]);
    let big = "x".repeat(598) + "\r\n";
    c.send(format!("BDAT 600\r\n{big}BDAT 600\r\n{big}BDAT 6 LAST\r\nQUIT\r\n"));
    c.expect(250);
    c.expect(552);
    c.expect(503);
    c.cmd("RSET", 250);
    c.cmd("QUIT", 221);
    assert_eq!(s.delivered().len(), 1);
}
