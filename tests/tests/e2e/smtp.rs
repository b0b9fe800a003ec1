//! Protocol conformance over a real socket: replies, sequence, pipelining, framing.

use wasmtpd_tests::TestServer;

#[test]
fn ehlo_advertises_the_extensions() {
    let s = TestServer::start_delivering(&[("limits", "max_message_size 1M\n")]);
    let mut c = s.connect();
    let greeting = c.expect(220);
    assert_eq!(greeting.text(), "mx.test ESMTP wasmtpd ready");
    let ehlo = c.cmd("EHLO client.test", 250);
    assert_eq!(ehlo.lines[0], "mx.test Hi client.test [127.0.0.1]");
    assert_eq!(
        &ehlo.lines[1..],
        ["PIPELINING", "SIZE 1048576", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING", "BINARYMIME", "DSN"]
    );
    let helo = c.cmd("HELO client.test", 250);
    assert_eq!(helo.lines.len(), 1);
    c.cmd("QUIT", 221);
    assert!(c.is_closed());
}

#[test]
fn a_message_is_delivered_with_a_received_header_on_top() {
    let s = TestServer::start_delivering(&[]);
    let mut c = s.greeted();
    c.envelope("sender@remote.test", &["rcpt@example.com"]);
    let body = b"Subject: hi\r\n\r\n..a stuffed line\r\n..\r\nlast line";
    let r = c.data(body);
    assert_eq!(r.code, 250, "{r:?}");
    assert!(r.text().starts_with("2.0.0 Queued as "), "{r:?}");
    c.cmd("QUIT", 221);
    let msgs = s.delivered();
    assert_eq!(msgs.len(), 1);
    let m = String::from_utf8(msgs[0].clone()).unwrap();
    assert!(m.starts_with("Return-Path: <sender@remote.test>\r\nReceived: from client.test ([127.0.0.1])\r\n\tby mx.test (wasmtpd) with ESMTP id "), "{m}");
    assert!(m.contains("\r\n\tfor <rcpt@example.com>;\r\n"), "{m}");
    assert!(m.ends_with("Subject: hi\r\n\r\n.a stuffed line\r\n.\r\nlast line\r\n"), "dot-unstuffed, CRLF kept: {m:?}");
    assert_eq!(s.spool_files(), 0, "spool file removed after queueing");
}

#[test]
fn null_sender_and_bare_postmaster() {
    let s = TestServer::start_delivering(&[]);
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    assert_eq!(c.cmd("MAIL FROM:<>", 250).text(), "2.1.0 <>, sender OK");
    c.cmd("RCPT TO:<postmaster>", 250);
    c.cmd("RCPT TO:<PostMaster@example.com>", 250);
    assert_eq!(c.data(b"Subject: bounce\r\n\r\nx").code, 250);
    assert!(String::from_utf8_lossy(&s.delivered()[0]).starts_with("Return-Path: <>\r\n"));
}

#[test]
fn defaults_without_plugins_are_qpsmtpds() {
    // No plugin decides RCPT: soft deny.
    let s = TestServer::start(&[("me", "mx.test")]);
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    let r = c.cmd("RCPT TO:<b@example.com>", 450);
    assert_eq!(r.text(), "4.7.1 No plugin decided if relaying is allowed");
    // An accepting RCPT but no queue plugin: 451.
    let s = TestServer::start(&[("me", "mx.test"), ("rcpthosts", "example.com"), ("plugins", "rcpt_ok")]);
    let mut c = s.greeted();
    c.envelope("a@remote.test", &["b@example.com"]);
    let r = c.data(b"Subject: x\r\n\r\nbody");
    assert_eq!((r.code, r.text().as_str()), (451, "4.3.0 Queuing declined or disabled; try again later"));
    c.cmd("RCPT TO:<b@example.com>", 503); // the transaction is over
    assert_eq!(s.spool_files(), 0);
    // rcpt_ok denies other domains.
    let r = c.cmd("MAIL FROM:<a@remote.test>", 250);
    assert!(r.text().contains("sender OK"));
    assert_eq!(c.cmd("RCPT TO:<b@elsewhere.test>", 550).text(), "5.7.1 Relaying denied");
}

#[test]
fn commands_and_their_codes() {
    let s = TestServer::start_delivering(&[("limits", "max_recipients 2\nmax_message_size 100\n")]);
    let mut c = s.greeted();
    c.cmd("MAIL FROM:<a@remote.test>", 503); // before HELO
    c.cmd("RCPT TO:<b@example.com>", 503);
    c.cmd("DATA", 503);
    c.cmd("EHLO", 501);
    c.cmd("EHLO client.test", 250);
    c.cmd("RCPT TO:<b@example.com>", 503); // before MAIL
    c.cmd("MAIL FROM:a@remote.test", 501); // no brackets
    c.cmd("MAIL FROM:<a@remote.test> SIZE=101", 552);
    c.cmd("MAIL FROM:<a@remote.test> SIZE=18446744073709551616", 501);
    c.cmd("MAIL FROM:<a@remote.test> FROBNICATE=1", 555);
    c.cmd("MAIL FROM:<jürgen@remote.test>", 553); // no SMTPUTF8
    c.cmd("MAIL FROM:<a@remote.test> SIZE=100", 250);
    c.cmd("MAIL FROM:<a@remote.test>", 503); // nested
    c.cmd("DATA", 503); // no RCPT yet
    c.cmd("RCPT TO:<b@example.com>", 250);
    c.cmd("RCPT TO:<c@example.com>", 250);
    assert_eq!(c.cmd("RCPT TO:<d@example.com>", 452).text(), "4.5.3 Too many recipients");
    c.cmd("RSET", 250);
    c.cmd("DATA", 503);
    c.cmd("VRFY someone", 252);
    assert!(c.cmd("HELP", 214).lines.len() > 1);
    c.cmd("NOOP", 250);
    c.cmd("EXPN list", 502);
    c.cmd("STARTTLS", 502);
    c.cmd("XYZZY plugh", 500);
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    c.cmd("RCPT TO:<b@example.com>", 250);
    let big = "x".repeat(200);
    let r = c.data(big.as_bytes());
    assert_eq!((r.code, r.text().as_str()), (552, "5.3.4 Message too big"));
    c.cmd("QUIT", 221);
    assert!(s.delivered().is_empty());
    assert_eq!(s.spool_files(), 0);
}

#[test]
fn a_failed_rcpt_then_data_gets_554() {
    let s = TestServer::start_delivering(&[]);
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    c.cmd("RCPT TO:<b@elsewhere.test>", 550);
    assert_eq!(c.cmd("DATA", 554).text(), "5.5.1 No valid recipients");
}

#[test]
fn smtputf8_addresses_when_asked_for() {
    let s = TestServer::start_delivering(&[("rcpthosts", "example.com\nbücher.example\n")]);
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<jürgen@remote.test> SMTPUTF8", 250);
    c.cmd("RCPT TO:<kätchen@bücher.example>", 250);
    assert_eq!(c.data("Subject: grüße\r\n\r\nhallo".as_bytes()).code, 250);
    let m = String::from_utf8(s.delivered()[0].clone()).unwrap();
    assert!(m.contains("with UTF8SMTP id"), "{m}");
    assert!(m.contains("for <kätchen@bücher.example>"), "{m}");
}

#[test]
fn pipelined_envelope_gets_replies_in_order() {
    let s = TestServer::start_delivering(&[]);
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    c.send("MAIL FROM:<a@remote.test>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<x@elsewhere.test>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n");
    c.expect(250);
    assert!(c.expect(250).text().contains("<b@example.com>"));
    c.expect(550);
    assert!(c.expect(250).text().contains("<c@example.com>"));
    c.expect(354);
    c.send("Subject: pipelined\r\n\r\nbody\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n");
    c.expect(250);
    c.expect(250);
    c.expect(250);
    c.expect(221);
    let m = String::from_utf8(s.delivered()[0].clone()).unwrap();
    assert!(!m.contains("\tfor <"), "two recipients are not named: {m}");
}

#[test]
fn end_of_data_split_across_tcp_writes() {
    let s = TestServer::start_delivering(&[]);
    let mut c = s.greeted();
    c.envelope("a@remote.test", &["b@example.com"]);
    c.cmd("DATA", 354);
    c.send("Subject: split\r\n\r\nbody");
    for piece in ["\r", "\n", ".", "\r", "\n"] {
        std::thread::sleep(std::time::Duration::from_millis(60));
        c.send(piece);
    }
    c.expect(250);
    assert!(String::from_utf8_lossy(&s.delivered()[0]).ends_with("\r\n\r\nbody\r\n"));
}

#[test]
fn lf_dot_crlf_does_not_end_the_message_and_nothing_is_smuggled() {
    let s = TestServer::start_delivering(&[]);
    let mut c = s.greeted();
    c.envelope("a@remote.test", &["b@example.com"]);
    c.cmd("DATA", 354);
    // A server that took `\n.\r\n` as the end would now run this second transaction.
    c.send("Subject: one\r\n\r\nbody\n.\r\nMAIL FROM:<evil@remote.test>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n");
    let r = c.expect(550);
    assert!(r.text().contains("bare CR or LF"), "{r:?}");
    // Exactly one reply: the smuggled commands were message content.
    c.cmd("NOOP", 250);
    assert!(s.delivered().is_empty());
    assert!(s.log().contains("message refused"), "the refusal is logged");
}

#[test]
fn bare_cr_dot_cr_is_content_too() {
    let s = TestServer::start_delivering(&[]);
    let mut c = s.greeted();
    c.envelope("a@remote.test", &["b@example.com"]);
    c.cmd("DATA", 354);
    c.send("Subject: one\r\n\r\nbody\r.\rMAIL FROM:<evil@remote.test>\r\n.\r\n");
    c.expect(550);
    c.cmd("NOOP", 250);
}

#[test]
fn overlong_lines() {
    let s = TestServer::start_delivering(&[]);
    let mut c = s.greeted();
    // A 1001-octet command line (999 + CRLF over the 512 limit): 500, the session goes on.
    let long = format!("NOOP {}", "x".repeat(994));
    assert_eq!(long.len() + 2, 1001);
    let r = c.cmd(&long, 500);
    assert_eq!(r.text(), "5.5.6 Line too long (limit is 512 octets with CRLF)");
    // Exactly at the limit is fine.
    c.cmd(&format!("NOOP {}", "x".repeat(505)), 250);
    // A huge line is skipped with bounded memory: one 500, no more.
    c.send(vec![b'A'; 5 << 20]);
    c.send("\r\n");
    c.expect(500);
    c.cmd("NOOP", 250);
    // A 1001-octet line of message text: 550 after the message ends.
    c.envelope("a@remote.test", &["b@example.com"]);
    let r = c.data(format!("Subject: x\r\n\r\n{}", "y".repeat(999)).as_bytes());
    assert_eq!(r.code, 550, "{r:?}");
    // 1000 octets with CRLF is allowed.
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    c.cmd("RCPT TO:<b@example.com>", 250);
    assert_eq!(c.data(format!("Subject: x\r\n\r\n{}", "y".repeat(998)).as_bytes()).code, 250);
}

#[test]
fn bare_lf_and_control_characters_in_commands() {
    let s = TestServer::start_delivering(&[]);
    let mut c = s.greeted();
    c.send("NOOP\n");
    assert_eq!(c.expect(500).text(), "5.5.2 Syntax error: command lines must end with CRLF");
    c.send("EHLO a\0b\r\n");
    c.expect(500);
    c.send("MAIL FROM:<a\rb@remote.test>\r\n");
    c.expect(500);
    c.cmd("EHLO client.test", 250);
}

#[test]
fn early_talker_before_the_greeting() {
    let s = TestServer::start_delivering(&[("limits", "greeting_delay 500ms\n")]);
    let mut c = s.connect();
    c.line("EHLO impatient.test");
    let r = c.expect(554);
    assert!(r.text().contains("before the greeting"));
    assert!(c.is_closed());
    // A patient client is greeted after the delay.
    let mut c = s.connect();
    c.expect(220);
    c.cmd("EHLO patient.test", 250);
}

#[test]
fn message_before_the_354_is_early_talking() {
    let s = TestServer::start_delivering(&[]);
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    c.send("MAIL FROM:<a@remote.test>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nSubject: eager\r\n\r\nx\r\n.\r\n");
    c.expect(250);
    c.expect(250);
    c.expect(554);
    assert!(c.is_closed());
    assert!(s.delivered().is_empty());
}

#[test]
fn ehlo_again_resets_the_transaction() {
    let s = TestServer::start_delivering(&[]);
    let mut c = s.greeted();
    c.envelope("a@remote.test", &["b@example.com"]);
    c.cmd("EHLO client.test", 250);
    c.cmd("DATA", 503);
    c.cmd("MAIL FROM:<a@remote.test>", 250);
}

#[test]
fn large_message_streams_with_flat_memory() {
    // Copying 256 MiB into the maildir takes the unoptimised test build several seconds: this
    // test is about memory, so the queue plugin gets more than the default 10 s.
    let s = TestServer::start_delivering(&[
        ("limits", "max_message_size 1G\nmax_text_line 0\n"),
        ("sandbox", "queue/maildir grant-dir maildir /maildir rw\nqueue/maildir timeout 2m\n"),
    ]);
    let mut c = s.greeted();
    c.envelope("a@remote.test", &["b@example.com"]);
    assert_eq!(c.data(b"Subject: small\r\n\r\nwarm-up").code, 250);
    let baseline = s.peak_rss_kib();
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    c.cmd("RCPT TO:<b@example.com>", 250);
    c.cmd("DATA", 354);
    let line = [vec![b'z'; 1022], b"\r\n".to_vec()].concat();
    let chunk: Vec<u8> = line.iter().copied().cycle().take(1 << 20).collect();
    c.send("Subject: big\r\n\r\n");
    for _ in 0..256 {
        c.send(&chunk);
    }
    c.send("\r\n.\r\n");
    c.expect(250);
    let peak = s.peak_rss_kib();
    assert!(peak < baseline + 16 * 1024, "peak RSS grew from {baseline} KiB to {peak} KiB for a 256 MiB message");
    let newest = s.delivered().into_iter().map(|m| m.len()).max().unwrap();
    assert!(newest > 256 << 20, "whole message delivered ({newest} octets)");
}

#[test]
fn smtp_smuggling_look_alikes_over_a_socket() {
    let s = TestServer::start_delivering(&[]);
    let smuggled =
        "MAIL FROM:<evil@remote.test>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n";
    let mut accepted = 0;
    for (fake_end, code) in [
        ("\n.\n", 550),
        ("\n.\r\n", 550),
        ("\r.\r", 550),
        ("\r.\r\n", 550),
        ("\r\n.\r\r\n", 550),
        ("\r\n.\n\r\n", 550),
        ("\n..\n", 550),
        // NUL is refused by default (`nul_in_data refuse`), as bare CR and LF are.
        ("\r\n\0.\r\n", 550),
        ("\r\n.\0\r\n", 550),
    ] {
        let mut c = s.greeted();
        c.envelope("a@remote.test", &["b@example.com"]);
        c.cmd("DATA", 354);
        c.send(format!("Subject: real\r\n\r\nbody{fake_end}{smuggled}"));
        let r = c.expect(code);
        if code == 250 {
            accepted += 1;
        }
        // Exactly one reply: nothing after the fake end was taken as a command.
        assert_eq!(c.cmd("NOOP", 250).text(), "2.0.0 OK", "{fake_end:?}");
        c.cmd("QUIT", 221);
        let _ = r;
    }
    let delivered = s.delivered();
    assert_eq!(delivered.len(), accepted, "one message per accepted DATA, none smuggled");
    for m in delivered {
        let m = String::from_utf8_lossy(&m).to_string();
        let header_end = m.find("\r\n\r\n").unwrap();
        assert!(m[..header_end].contains("Subject: real"), "{m:?}");
        assert!(!m[..header_end].contains("smuggled"));
    }
}

#[test]
fn encoded_cr_lf_in_esmtp_parameters_go_nowhere() {
    let s = TestServer::start_delivering(&[]);
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    // xtext-encoded CR LF in DSN's parameters: the decoded value holds control characters,
    // so the parameter is a syntax error (RFC 3461 xtext, checked in `dsn.rs`).
    c.cmd("MAIL FROM:<a@remote.test> ENVID=x+0D+0ABcc:+20victim@example.com", 501);
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    c.cmd("RCPT TO:<b@example.com> ORCPT=rfc822;b+0D+0AX-Evil:+20yes", 501);
    // Raw control characters anywhere in a command never get that far.
    c.send("RCPT TO:<b@example.com>\rX-Evil: yes\r\n");
    c.expect(500);
    c.cmd("RCPT TO:<b@example.com>", 250);
    assert_eq!(c.data(b"Subject: clean\r\n\r\nx").code, 250);
    let m = String::from_utf8(s.delivered()[0].clone()).unwrap();
    assert!(!m.contains("X-Evil") && !m.contains("victim"), "{m}");
}

#[test]
fn client_supplied_names_cannot_pass_for_trace_information_in_the_received_header() {
    let s = TestServer::start_delivering(&[]);
    let mut c = s.greeted();
    // An EHLO name written to look like the end of one hop and the start of another, and a
    // quoted local part with a date in it (after a `;`, where the header's date goes).
    c.cmd("EHLO trusted.example([10.1.2.3])by", 250);
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    c.cmd("RCPT TO:<\"x; Mon, 1 Jan 2024 00:00:00 +0000\"@example.com>", 250);
    assert_eq!(c.data(b"Subject: trace\r\n\r\nx\r\n").code, 250);
    let m = String::from_utf8(s.delivered()[0].clone()).unwrap();
    let received: String = m
        .split("\r\n")
        .skip_while(|l| !l.starts_with("Received:"))
        .take_while(|l| l.starts_with("Received:") || l.starts_with('\t'))
        .collect::<Vec<_>>()
        .join("\r\n");
    assert!(
        received.starts_with(
            "Received: from [127.0.0.1] (helo=trusted.example??10.1.2.3??by [127.0.0.1])\r\n\tby mx.test (wasmtpd) with ESMTP id "
        ),
        "{received}"
    );
    assert!(!received.contains("\tfor"), "a quoted local part is not named: {received}");
    assert_eq!(received.matches(';').count(), 1, "one date, ours: {received}");
    assert!(!received.contains("10.1.2.3]") && !received.contains("2024"), "{received}");
}

#[test]
fn ehlo_keywords_are_the_servers_even_when_a_plugin_answers_done() {
    // AUTH is not usable without TLS here, so the server itself offers no AUTH.
    let s = TestServer::start_delivering(&[
        (
            "plugins",
            "testing/scripted ehlo=done:mx.test_welcomes_you|AUTH_PLAIN_LOGIN|CHUNKING|XCLIENT_NAME_ADDR\nrcpt_ok\nqueue/maildir /maildir\n",
        ),
        ("auth", "plaintext never\n"),
        ("limits", "max_message_size 1M\n"),
    ]);
    let mut c = s.greeted();
    let ehlo = c.cmd("EHLO client.test", 250);
    assert_eq!(ehlo.lines[0], "mx.test welcomes you", "the plugin may word the first line");
    assert_eq!(
        &ehlo.lines[1..],
        ["PIPELINING", "SIZE 1048576", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING", "BINARYMIME", "DSN"]
    );
    let helo = c.cmd("HELO client.test", 250);
    assert_eq!(helo.lines.len(), 1, "{helo:?}");
}

#[test]
fn a_bdat_chunk_is_skipped_never_run_as_commands() {
    let s = TestServer::start_delivering(&[("limits", "max_message_size 1k\n")]);
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    // No transaction to take it: a BDAT and its chunk in one packet, the chunk full of commands.
    let chunk = "MAIL FROM:<smuggled@evil.test>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nQUIT\r\n";
    c.send(format!("BDAT {} LAST\r\n{chunk}", chunk.len()));
    assert_eq!(c.expect(503).text(), "5.5.1 MAIL first");
    // The next reply is HELP's: none of the chunk's commands ran (no 250 for MAIL, no 221).
    c.cmd("HELP", 214);
    c.cmd("MAIL FROM:<a@remote.test>", 250); // no transaction was begun by the chunk
    c.cmd("RSET", 250);
    // A chunk that arrives in pieces is skipped to its exact end.
    c.send("BDAT 32\r\nMAIL FROM:<smuggled@evil.test>\r");
    std::thread::sleep(std::time::Duration::from_millis(200));
    c.send("\nNOOP\r\n");
    c.expect(503);
    assert_eq!(c.expect(250).text(), "2.0.0 OK", "the NOOP after the chunk");
    c.cmd("BDAT 0 LAST", 503);
    // A chunk larger than max_message_size is not skipped: 552 and close.
    c.send(format!("BDAT 5000\r\n{}", "MAIL FROM:<x@evil.test>\r\n".repeat(10)));
    let r = c.expect(552);
    assert!(r.text().contains("closing connection"), "{r:?}");
    assert!(c.read_reply().is_none(), "closed");
    // A BDAT without a valid size: its framing is unknown, 501 and close.
    for bad in ["BDAT", "BDAT soon", "BDAT 10 NOW"] {
        let mut c = s.greeted();
        c.cmd("EHLO client.test", 250);
        c.send(format!("{bad}\r\nMAIL FROM:<x@evil.test>\r\nQUIT\r\n"));
        assert_eq!(c.expect(501).text(), "5.5.4 Syntax error: BDAT <chunk-size> [LAST]; closing connection");
        assert!(c.read_reply().is_none(), "{bad}: closed, nothing after it ran");
    }
    assert!(s.delivered().is_empty());
    assert!(!s.log().contains("smuggled@evil.test") && !s.log().contains("x@evil.test"), "{}", s.log());
}
