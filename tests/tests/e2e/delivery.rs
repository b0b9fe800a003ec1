//! Delivery onward (`wit/delivery.wit`, `queue/smtp-forward`, `queue/lmtp`) end to end: the
//! real server forwarding to a private Postfix (`tests/src/postfix.rs`) or Dovecot LMTP
//! (`tests/src/dovecot.rs`) on loopback ports, and, for the faults no real server makes on
//! purpose, a listener of the test's own that accepts and then stays silent or answers
//! garbage.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use wasmtpd_tests::dovecot::Dovecot;
use wasmtpd_tests::postfix::Postfix;
use wasmtpd_tests::{Client, TestServer};

/// A server forwarding mail for example.test with `plugin` (`queue/smtp-forward postfix`)
/// before `rcpt_ok`, to the downstreams of `downstreams`.
fn forwarding(plugin: &str, downstreams: &str) -> TestServer {
    let name = plugin.split_whitespace().next().unwrap();
    let granted: Vec<&str> = downstreams.lines().filter_map(|l| l.split_whitespace().next()).collect();
    let sandbox = format!("{name} downstream {}\n{name} timeout 30s\n", granted.join(" "));
    let chain = format!("{plugin}\nrcpt_ok\n");
    TestServer::start(&[
        ("me", "mx.test"),
        ("rcpthosts", "example.test\n"),
        ("plugins", &chain),
        ("sandbox", &sandbox),
        ("downstreams", downstreams),
    ])
}

fn to_postfix(postfix: &Postfix, settings: &str) -> TestServer {
    forwarding("queue/smtp-forward postfix", &format!("postfix 127.0.0.1:{} smtp {settings}\n", postfix.port))
}

/// The body of a delivered message (after the header's empty line), line ends as CRLF
/// (Postfix's maildir writes LF).
fn body(message: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(message).replace("\r\n", "\n");
    let (_, body) = text.split_once("\n\n").expect("a header and a body");
    body.replace('\n', "\r\n").into_bytes()
}

fn header(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message).replace("\r\n", "\n");
    text.split_once("\n\n").expect("a header and a body").0.to_string()
}

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn a_forwarded_message_arrives_whole_with_our_received_header_and_the_client_via_xclient() {
    let postfix = Postfix::start(&["alice", "carol"]);
    let server = to_postfix(&postfix, "xclient on");
    let mut c = server.greeted_from("127.0.0.9".parse().unwrap());
    c.envelope("sender@remote.test", &["alice@example.test"]);
    // Leading dots (stuffed by the client, unstuffed by us, stuffed again on the way out), and
    // a would-be second transaction inside the body: what leaves us must keep them body.
    let sent = b"Subject: forwarded\r\nMessage-ID: <m1@remote.test>\r\n\r\nline one\r\n..\r\n...dots\r\n\
..\r\nMAIL FROM:<evil@remote.test>\r\nRCPT TO:<carol@example.test>\r\nDATA\r\nsmuggled\r\n..\r\n\tlast line\r\n";
    let reply = c.data(sent);
    assert_eq!(reply.code, 250, "{reply:?}");
    assert!(reply.text().contains("Queued by downstream postfix"), "{reply:?}");
    let got = postfix.wait_delivered("alice", 1, WAIT);
    assert_eq!(got.len(), 1, "{}", postfix.log());
    let unstuffed = b"line one\r\n.\r\n..dots\r\n.\r\nMAIL FROM:<evil@remote.test>\r\nRCPT TO:<carol@example.test>\r\nDATA\r\nsmuggled\r\n.\r\n\tlast line\r\n\r\n";
    // (`Client::data` ends the body with CRLF before the final dot: the empty last line.)
    assert_eq!(body(&got[0]), unstuffed, "the body is byte for byte what the client sent");
    let header = header(&got[0]);
    assert!(header.contains("by mx.test (wasmtpd)"), "our Received header: {header}");
    assert!(header.contains("Subject: forwarded"), "{header}");
    // Postfix saw our client, not us: its Received header and its log name 127.0.0.9.
    assert!(header.contains("from client.test (unknown [127.0.0.9])"), "XCLIENT: {header}");
    assert!(postfix.log().contains("client=unknown[127.0.0.9]"), "{}", postfix.log());
    std::thread::sleep(Duration::from_millis(500));
    assert!(postfix.delivered("carol").is_empty(), "nothing smuggled past the end of data");
}

#[test]
fn a_recipient_postfix_refuses_is_refused_at_rcpt_with_its_reply() {
    let postfix = Postfix::start(&["alice"]);
    let server = to_postfix(&postfix, "");
    let mut c = server.greeted();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<sender@remote.test>", 250);
    let refused = c.cmd("RCPT TO:<bob@example.test>", 550);
    let text = refused.text();
    assert!(text.starts_with("5.1.1 downstream postfix: 550 5.1.1"), "{text}");
    assert!(text.contains("User unknown in virtual mailbox table"), "Postfix's own words: {text}");
    c.cmd("RCPT TO:<alice@example.test>", 250);
    assert_eq!(c.data(b"Subject: x\r\n\r\nhello\r\n").code, 250);
    assert_eq!(postfix.wait_delivered("alice", 1, WAIT).len(), 1);
    // Postfix heard bob's RCPT once, at RCPT time, and the message went to alice alone.
    assert_eq!(postfix.log().matches("<bob@example.test>: Recipient address rejected").count(), 1);
}

#[test]
fn a_stopped_downstream_gives_451_and_nothing_is_acknowledged() {
    let mut postfix = Postfix::start(&["alice"]);
    let server = to_postfix(&postfix, "connect-timeout 2s io-timeout 2s");
    // Down before the transaction: refused at RCPT.
    postfix.stop();
    let mut c = server.greeted();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<sender@remote.test>", 250);
    let r = c.cmd("RCPT TO:<alice@example.test>", 451);
    assert!(r.text().starts_with("4.4.1 downstream postfix unavailable"), "{r:?}");
    c.cmd("QUIT", 221);
    // Down between RCPT and the end of data: 451 after the message, and nothing delivered.
    let postfix = Postfix::start(&["alice"]);
    let server = to_postfix(&postfix, "connect-timeout 2s io-timeout 2s");
    let mut c = server.greeted();
    c.envelope("sender@remote.test", &["alice@example.test"]);
    let mut postfix = postfix;
    postfix.stop();
    let reply = c.data(b"Subject: x\r\n\r\nhello\r\n");
    assert_eq!(reply.code, 451, "{reply:?}");
    assert!(reply.text().starts_with("4.4."), "{reply:?}");
    assert!(postfix.delivered("alice").is_empty());
    assert!(server.log().contains("queue/smtp-forward"), "the log names the plugin");
}

/// A listener that accepts connections and runs `answer` on each, in a thread of its own.
fn fake_downstream(answer: fn(std::net::TcpStream)) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer(stream));
        }
    });
    port
}

#[test]
fn a_downstream_that_never_answers_gives_451_within_the_timeout() {
    let port = fake_downstream(|s| {
        std::thread::sleep(Duration::from_secs(30));
        drop(s);
    });
    let server = forwarding(
        "queue/smtp-forward silent",
        &format!("silent 127.0.0.1:{port} smtp connect-timeout 1s io-timeout 1s\n"),
    );
    let mut c = server.greeted();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<sender@remote.test>", 250);
    let started = Instant::now();
    let r = c.cmd("RCPT TO:<alice@example.test>", 451);
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    assert!(r.text().starts_with("4.4.2 downstream silent did not answer"), "{r:?}");
}

#[test]
fn a_downstream_that_answers_garbage_gives_451_and_no_crash() {
    let greetings: [fn(std::net::TcpStream); 4] = [
        |mut s| {
            let _ = s.write_all(b"hello, I am not SMTP\r\n");
            std::thread::sleep(Duration::from_secs(2));
        },
        |mut s| {
            let _ = s.write_all(b"220 bare LF\n");
            std::thread::sleep(Duration::from_secs(2));
        },
        |mut s| {
            let _ = s.write_all(b"220 ");
            let line = vec![b'x'; 64 * 1024];
            for _ in 0..16 {
                if s.write_all(&line).is_err() {
                    break;
                }
            }
        },
        // A good start, then garbage in answer to MAIL.
        |mut s| {
            let _ = s.write_all(b"220 fake ESMTP\r\n");
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                if seen.ends_with(b"\r\n") {
                    let reply: &[u8] = if seen.starts_with(b"EHLO") {
                        b"250-fake\r\n250 PIPELINING\r\n"
                    } else {
                        b"250-ok\r\n354 mixed\r\n"
                    };
                    seen.clear();
                    let _ = s.write_all(reply);
                }
            }
        },
    ];
    for (i, greeting) in greetings.into_iter().enumerate() {
        let port = fake_downstream(greeting);
        let server = forwarding(
            "queue/smtp-forward fake",
            &format!("fake 127.0.0.1:{port} smtp connect-timeout 1s io-timeout 1s\n"),
        );
        let mut c = server.greeted();
        c.cmd("EHLO client.test", 250);
        c.cmd("MAIL FROM:<sender@remote.test>", 250);
        let r = c.cmd("RCPT TO:<alice@example.test>", 451);
        assert!(r.text().starts_with("4.4.2 downstream fake"), "case {i}: {r:?}");
        c.cmd("QUIT", 221);
        // The server is still there.
        server.greeted().cmd("QUIT", 221);
    }
}

#[test]
fn many_messages_reuse_one_downstream_connection() {
    let postfix = Postfix::start(&["alice"]);
    let server = to_postfix(&postfix, "max-messages 100");
    // Postfix's own log counts the helper's readiness probe as a connection too.
    let started = Instant::now();
    while postfix.connections() == 0 && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = postfix.connections();
    let mut c = server.greeted();
    for i in 0..5 {
        c.envelope("sender@remote.test", &["alice@example.test"]);
        assert_eq!(c.data(format!("Subject: {i}\r\n\r\nmessage {i}\r\n").as_bytes()).code, 250);
    }
    c.cmd("QUIT", 221);
    // Another client connection, later: the same downstream connection again (no XCLIENT).
    let mut c = server.greeted();
    c.envelope("sender@remote.test", &["alice@example.test"]);
    assert_eq!(c.data(b"Subject: 5\r\n\r\nmessage 5\r\n").code, 250);
    assert_eq!(postfix.wait_delivered("alice", 6, WAIT).len(), 6);
    assert_eq!(postfix.connections() - before, 1, "{}", postfix.log());
}

#[test]
#[ignore = "unfinished: its sender threads got no 250 within 60 s on the loaded machine, while the single-client tests pass; not yet diagnosed"]
fn kill_9_while_forwarding_loses_no_acknowledged_message() {
    let postfix = Postfix::start(&["alice"]);
    let server = to_postfix(&postfix, "");
    let addr = server.addr;
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let acknowledged = acknowledged.clone();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    let Ok(stream) = std::net::TcpStream::connect(addr) else { return };
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut c = Client::over(stream);
                    if c.read_reply().is_none_or(|r| r.code != 220) {
                        return;
                    }
                    let id = format!("t{t}-m{i}");
                    let body = format!("Subject: {id}\r\nMessage-ID: <{id}@remote.test>\r\n\r\n{}\r\n", id.repeat(200));
                    let steps = [
                        "EHLO client.test".to_string(),
                        "MAIL FROM:<sender@remote.test>".into(),
                        "RCPT TO:<alice@example.test>".into(),
                        "DATA".into(),
                    ];
                    for s in &steps {
                        if !c.try_send(format!("{s}\r\n")) || c.read_reply().is_none_or(|r| r.code >= 400) {
                            return;
                        }
                    }
                    if !c.try_send(format!("{body}.\r\n")) {
                        return;
                    }
                    match c.read_reply() {
                        Some(r) if r.code == 250 => acknowledged.lock().unwrap().push(id),
                        _ => return,
                    }
                }
            })
        })
        .collect();
    // Kill it once messages are flowing (bounded: a loaded machine is slow to start).
    let started = Instant::now();
    while acknowledged.lock().unwrap().len() < 5 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    server.signal("KILL");
    for s in senders {
        s.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(!acknowledged.is_empty(), "some messages were acknowledged before the kill");
    let got = postfix.wait_delivered("alice", acknowledged.len(), WAIT);
    let delivered: Vec<String> = got.iter().map(|m| String::from_utf8_lossy(m).replace("\r\n", "\n")).collect();
    for id in &acknowledged {
        let whole = format!("Subject: {id}\n");
        let m = delivered.iter().find(|m| m.contains(&whole));
        let m = m.unwrap_or_else(|| panic!("{id} got 250 but is not in the maildir"));
        assert!(m.contains(&format!("\n\n{}\n", id.repeat(200))), "{id} whole");
    }
}

#[test]
fn lmtp_to_dovecot_refuses_an_unknown_recipient_among_known_ones() {
    let dovecot = Dovecot::start(&["alice", "carol"]);
    let server = forwarding("queue/lmtp dovecot", &format!("dovecot 127.0.0.1:{} lmtp\n", dovecot.port));
    let mut c = server.greeted();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<sender@remote.test>", 250);
    c.cmd("RCPT TO:<alice@example.test>", 250);
    let refused = c.cmd("RCPT TO:<bob@example.test>", 550);
    assert!(refused.text().starts_with("5.1.1 downstream dovecot: 550 5.1.1"), "{refused:?}");
    assert!(refused.text().contains("User doesn't exist"), "Dovecot's own words: {refused:?}");
    c.cmd("RCPT TO:<carol@example.test>", 250);
    let reply = c.data(b"Subject: lmtp\r\n\r\nfor two of three\r\n");
    assert_eq!(reply.code, 250, "{reply:?}");
    for user in ["alice", "carol"] {
        let got = dovecot.delivered(user);
        assert_eq!(got.len(), 1, "{user}: {}", dovecot.log());
        assert!(String::from_utf8_lossy(&got[0]).contains("by mx.test (wasmtpd)"));
        assert_eq!(body(&got[0]), b"for two of three\r\n\r\n", "as sent, with `Client::data`'s CRLF");
    }
    assert!(dovecot.delivered("bob").is_empty());
}

/// An LMTP server that accepts every recipient, then answers the message with `after` (one
/// reply line per recipient, in order).
fn fake_lmtp(after: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = s.write_all(b"220 fake LMTP\r\n");
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let mut in_data = false;
                while let Ok(n) = s.read(&mut chunk) {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    loop {
                        if in_data {
                            let Some(end) = buf.windows(5).position(|w| w == b"\r\n.\r\n") else { break };
                            buf.drain(..end + 5);
                            in_data = false;
                            let _ = s.write_all(after);
                            continue;
                        }
                        let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else { break };
                        let line: Vec<u8> = buf.drain(..eol + 2).collect();
                        let reply: &[u8] = match &line[..4] {
                            b"LHLO" => b"250-fake\r\n250 PIPELINING\r\n",
                            b"DATA" => {
                                in_data = true;
                                b"354 go on\r\n"
                            }
                            b"QUIT" => b"221 bye\r\n",
                            _ => b"250 2.1.5 OK\r\n",
                        };
                        let _ = s.write_all(reply);
                    }
                }
            });
        }
    });
    port
}

#[test]
fn mixed_lmtp_replies_after_the_message_defer_it_so_nothing_is_lost() {
    for (after, code, starts) in [
        // One saved, one not: 451, the client keeps the message and tries again.
        (
            &b"250 2.0.0 <alice@example.test> Saved\r\n452 4.2.2 <carol@example.test> Mailbox is full\r\n"[..],
            451,
            "4.4.0 delivered to 1 of 2 recipients",
        ),
        (
            &b"250 2.0.0 <alice@example.test> Saved\r\n552 5.2.2 <carol@example.test> Quota exceeded\r\n"[..],
            451,
            "4.4.0 delivered to 1 of 2 recipients",
        ),
        // Every recipient refused for good: the downstream's 5xx.
        (
            &b"552 5.2.2 <alice@example.test> Quota exceeded\r\n552 5.2.2 <carol@example.test> Quota exceeded\r\n"[..],
            552,
            "5.2.2 downstream lmtp: 552 5.2.2",
        ),
        (
            &b"250 2.0.0 <alice@example.test> Saved\r\n250 2.0.0 <carol@example.test> Saved\r\n"[..],
            250,
            "2.0.0 Queued by downstream lmtp",
        ),
    ] {
        let after: &'static [u8] = Box::leak(after.to_vec().into_boxed_slice());
        let port = fake_lmtp(after);
        let server = forwarding("queue/lmtp lmtp", &format!("lmtp 127.0.0.1:{port} lmtp io-timeout 2s\n"));
        let mut c = server.greeted();
        c.envelope("sender@remote.test", &["alice@example.test", "carol@example.test"]);
        let reply = c.data(b"Subject: x\r\n\r\nhello\r\n");
        assert_eq!(reply.code, code, "{reply:?}");
        assert!(reply.text().starts_with(starts), "{reply:?}");
    }
}
