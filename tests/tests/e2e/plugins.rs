//! The standard plugins, each with its config files, through real SMTP.

use wasmtpd_tests::TestServer;

#[test]
fn check_badmailfrom_refuses_at_rcpt() {
    let s = TestServer::start_with_chain(
        "check_badmailfrom\nrcpt_ok",
        &[(
            "badmailfrom",
            "spammer@bad.test\n@worse.test Go away, worse.test\nliar@bad.example   Go away\n\
             ^return.*@.*\\.pidplate\\.biz$ I don't want it regardless of subdomain\n^[unclosed(\n",
        )],
    );
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    let refused = |c: &mut wasmtpd_tests::Client, from: &str| {
        c.cmd(&format!("MAIL FROM:<{from}>"), 250);
        let text = c.cmd("RCPT TO:<b@example.com>", 550).text();
        c.cmd("RSET", 250);
        text
    };
    // qpsmtpd's text when the line gives no reason, the line's reason when it does.
    assert_eq!(refused(&mut c, "spammer@bad.test"), "5.7.1 Your envelope sender is in my badmailfrom list");
    assert_eq!(refused(&mut c, "anyone@WORSE.test"), "5.7.1 Go away, worse.test");
    assert_eq!(refused(&mut c, "liar@bad.example"), "5.7.1 Go away");
    // A pattern line (a regular expression), matched without case.
    assert_eq!(refused(&mut c, "Return-7@mx.PidPlate.biz"), "5.7.1 I don't want it regardless of subdomain");
    c.cmd("MAIL FROM:<friend@good.test>", 250);
    c.cmd("RCPT TO:<b@example.com>", 250);
    // A pattern that does not compile matches nothing, and says so.
    assert!(s.log().contains("does not compile"), "{}", s.log());
}

#[test]
fn check_badrcptto() {
    let s = TestServer::start_with_chain(
        "check_badrcptto\nrcpt_ok",
        &[("badrcptto", "nobody@example.com\n@closed.example.com Closed for good\n^bounce-.*@example\\.com$\n")],
    );
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    assert_eq!(c.cmd("RCPT TO:<nobody@example.com>", 550).text(), "5.1.1 mail to nobody@example.com not accepted here");
    assert_eq!(c.cmd("RCPT TO:<x@closed.example.com>", 550).text(), "5.1.1 Closed for good");
    c.cmd("RCPT TO:<BOUNCE-42@example.com>", 550);
    c.cmd("RCPT TO:<somebody@example.com>", 250);
}

#[test]
fn check_spamhelo() {
    let s = TestServer::start_with_chain("check_spamhelo\nrcpt_ok", &[("badhelo", "mx.test\nexample.com\n")]);
    let mut c = s.greeted();
    assert!(c.cmd("EHLO example.com", 550).text().contains("I don't believe that you are example.com"));
    assert!(c.is_closed(), "qpsmtpd's DENY_DISCONNECT: a liar gets no second try");
    let mut c = s.greeted();
    c.cmd("HELO MX.test", 550);
    let mut c = s.greeted();
    c.cmd("EHLO honest.test", 250);
}

#[test]
fn rcpt_ok_takes_our_own_name_as_local() {
    // config/me is mx.test; rcpthosts lists only example.com.
    let s = TestServer::start_with_chain("rcpt_ok", &[]);
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    c.cmd("RCPT TO:<postmaster@MX.test>", 250);
    c.cmd("RCPT TO:<a@elsewhere.test>", 550);
}

#[test]
fn relay_lets_listed_networks_send_anywhere() {
    let files: &[(&str, &str)] = &[
        ("relayclients", "127.0.0.3\n127.0.1.\n10.0.0.0/8\n"),
        ("morerelayclients", "127.0.0.4\n"),
        ("norelayclients", "127.0.1.9\n"),
    ];
    let s = TestServer::start_with_chain("relay\nrcpt_ok", files);
    let relays = |n: [u8; 4]| {
        let mut c = wasmtpd_tests::Client::connect_from(s.addr, std::net::IpAddr::from(n));
        c.expect(220);
        c.cmd("EHLO office.test", 250);
        c.cmd("MAIL FROM:<a@office.test>", 250);
        c.line("RCPT TO:<someone@elsewhere.test>");
        c.read_reply().unwrap().code == 250
    };
    assert!(relays([127, 0, 0, 3]), "relayclients, an address");
    assert!(relays([127, 0, 1, 2]), "relayclients, a prefix");
    assert!(relays([127, 0, 0, 4]), "morerelayclients");
    assert!(!relays([127, 0, 1, 9]), "norelayclients overrides");
    assert!(!relays([127, 0, 0, 5]), "not listed");
    drop(s);

    // only 1: a submission-only server refuses everyone who may not relay.
    let s = TestServer::start_with_chain("relay only 1\nrcpt_ok", files);
    let mut c = wasmtpd_tests::Client::connect_from(s.addr, std::net::IpAddr::from([127, 0, 0, 5]));
    c.expect(220);
    c.cmd("EHLO stranger.test", 250);
    c.cmd("MAIL FROM:<a@stranger.test>", 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.com>", 550).text(), "5.7.1 Relaying denied");
}

#[test]
fn count_unrecognized_commands_disconnects() {
    let s = TestServer::start_with_chain("count_unrecognized_commands 3\nrcpt_ok", &[]);
    let mut c = s.greeted();
    c.cmd("FOO", 500);
    c.cmd("BAR", 500);
    let r = c.cmd("BAZ", 521);
    assert!(r.text().contains("3 unrecognized commands"), "{r:?}");
    assert!(c.is_closed());
}

#[test]
fn check_earlytalker_with_the_engine_leaving_it_the_decision() {
    // qpsmtpd's defaults, without config/limits: the greeting waits a second, and a client that
    // talked meanwhile gets 550 and is closed; a polite one is greeted.
    let s = TestServer::start_with_chain("check_earlytalker\nrcpt_ok", &[]);
    let mut c = s.connect();
    c.line("EHLO eager.test");
    let r = c.expect(550);
    assert_eq!(r.text(), "Connecting host started transmitting before SMTP greeting");
    assert!(c.is_closed());
    let mut polite = s.greeted();
    polite.cmd("EHLO polite.test", 250);
    polite.cmd("MAIL FROM:<a@remote.test>", 250);
    drop(s);

    // defer-reject: greeted, then refused at each MAIL with 450.
    let s = TestServer::start_with_chain("check_earlytalker wait 1 defer-reject 1\nrcpt_ok", &[]);
    let mut c = s.connect();
    c.line("EHLO eager.test");
    c.expect(220);
    c.expect(250);
    let r = c.cmd("MAIL FROM:<a@remote.test>", 450);
    assert_eq!(r.text(), "4.5.0 Connecting host started transmitting before SMTP greeting");
    c.cmd("MAIL FROM:<b@remote.test>", 450);
    drop(s);

    // reject_type temp: 450 and close; action log (reject 0): noted and logged only.
    let s = TestServer::start_with_chain("check_earlytalker reject_type temp\nrcpt_ok", &[]);
    let mut c = s.connect();
    c.line("EHLO eager.test");
    c.expect(450);
    assert!(c.is_closed());
    let s = TestServer::start_with_chain("check_earlytalker action log\nrcpt_ok", &[]);
    let mut c = s.connect();
    c.line("EHLO eager.test");
    c.expect(220);
    c.expect(250);
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    assert!(s.log().contains("not refused: reject 0"), "{}", s.log());
    drop(s);

    // check-at DATA: no wait and no check at connect; message text before our 354 is refused.
    let s = TestServer::start_with_chain("check_earlytalker check-at DATA\nrcpt_ok", &[]);
    let mut c = s.connect();
    c.line("EHLO eager.test");
    c.expect(220);
    c.expect(250);
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    c.cmd("RCPT TO:<b@example.com>", 250);
    c.line("DATA\r\nSubject: too soon\r\n\r\nx\r\n.");
    assert_eq!(c.expect(554).code, 554);
    assert!(c.is_closed());
}

#[test]
fn hosts_allow_by_network() {
    // qpsmtpd's forkserver answers a refusal before the greeting: DENY 550, DENYSOFT 451, each
    // with the line's text or its own, and closes.
    let refused = |file: &str, code: u16| {
        let s = TestServer::start_with_chain("hosts_allow\nrcpt_ok", &[("hosts_allow", file)]);
        let mut c = s.connect();
        let text = c.expect(code).text();
        assert!(c.is_closed(), "{file}: closed after {code}");
        text
    };
    let text = refused("10.0.0.0/8 ok\n127.0.0.0/8 deny No mail from loopback today\n", 550);
    assert_eq!(text, "No mail from loopback today");
    assert_eq!(refused("127.0.0.1 DENYSOFT\n", 451), "Sorry, try again later");
    assert_eq!(refused("127.0.0.1 denysoft Busy, come back later\n", 451), "Busy, come back later");
    assert_eq!(refused("127.0.0.1 DENY_DISCONNECT\n", 550), "Sorry, service not available for you");
    assert_eq!(refused("  127.0.0.0/8 DENYSOFT_DISCONNECT Not now\n", 451), "Not now");
    // The first matching line decides; DECLINED stops looking.
    let s = TestServer::start_with_chain(
        "hosts_allow\nrcpt_ok",
        &[("hosts_allow", "127.0.0.1 DECLINED\n127.0.0.0/8 DENY\n")],
    );
    s.greeted();
    let s = TestServer::start_with_chain("hosts_allow\nrcpt_ok", &[("hosts_allow", "192.0.2.0/24 deny\n::1 deny\n")]);
    s.greeted();
}

#[test]
fn hosts_allow_limits_connections_per_address() {
    // qpsmtpd-forkserver's --max-from-ip, as the plugin's argument: the third connection from
    // one address gets 451 and is closed; once one closes, there is room again.
    let s = TestServer::start_with_chain("hosts_allow max_from_ip 2\nrcpt_ok", &[]);
    let first = s.greeted();
    let _second = s.greeted();
    let mut third = s.connect();
    let r = third.expect(451);
    assert_eq!(r.text(), "too many connections from 127.0.0.1, try again later");
    assert!(third.is_closed());
    drop(first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut c = s.connect();
        match c.read_reply().map(|r| r.code) {
            Some(220) => break,
            code => assert!(std::time::Instant::now() < deadline, "still refused once a connection closed: {code:?}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(s.log().contains("too many connections from 127.0.0.1 (3 > 2)"), "{}", s.log());
}

#[test]
fn headers_requires_from_and_a_plausible_date() {
    let send = |s: &TestServer, body: &str| {
        let mut c = s.greeted();
        c.envelope("a@remote.test", &["b@example.com"]);
        let r = c.data(body.as_bytes());
        (r.code, r.text())
    };
    let now = std::process::Command::new("date").arg("-R").output().unwrap();
    let now = String::from_utf8(now.stdout).unwrap().trim().to_string();
    let old = "Mon, 1 Jan 2001 00:00:00 +0000";
    let future = "Fri, 1 Jan 2100 00:00:00 +0000";
    // qpsmtpd's defaults: only From required, the Date's range unchecked, a Date that does not
    // parse let through; a field RFC 5322 allows once, repeated, refused.
    let s = TestServer::start_with_chain("rcpt_ok\nheaders", &[]);
    let no_from = send(&s, &format!("Subject: no from\r\nDate: {now}\r\n\r\nx"));
    assert_eq!(no_from, (552, "5.6.0 We require a valid From header".into()));
    assert_eq!(send(&s, "From: a@remote.test\r\n\r\nno Date").0, 250);
    assert_eq!(send(&s, &format!("From: a@remote.test\r\nDate: {old}\r\n\r\nx")).0, 250);
    assert_eq!(send(&s, "From: a@remote.test\r\nDate: the other day\r\n\r\nx").0, 250);
    let twice = send(&s, "From: a@remote.test\r\nSubject: one\r\nsubject: two\r\n\r\nx");
    assert_eq!(twice, (552, "5.6.0 Only one Subject header allowed. See RFC 5322, Section 3.6".into()));
    let twice = send(&s, "From: a@remote.test\r\nFrom: b@remote.test\r\n\r\nx");
    assert_eq!(twice.1, "5.6.0 Only one From header allowed. See RFC 5322, Section 3.6");
    // require, past and future as given.
    let s = TestServer::start_with_chain("rcpt_ok\nheaders require From,Date past 15 future 2", &[]);
    assert_eq!(send(&s, "From: a@remote.test\r\n\r\nx").1, "5.6.0 We require a valid Date header");
    assert_eq!(
        send(&s, "From: a@remote.test\r\nDate: the other day\r\n\r\nx").1,
        "5.6.0 We require a valid Date header"
    );
    let r = send(&s, &format!("From: a@remote.test\r\nDate: {old}\r\n\r\nx"));
    assert_eq!(r, (552, "5.6.0 The Date header is too far in the past".into()));
    let r = send(&s, &format!("From: a@remote.test\r\nDate: {future}\r\n\r\nx"));
    assert_eq!(r, (552, "5.6.0 The Date header is too far in the future".into()));
    assert_eq!(send(&s, &format!("From: a@remote.test\r\nDate: {now}\r\n\r\nx")).0, 250);
    // reject_type temp: 452; reject 0: logged only.
    let s = TestServer::start_with_chain("rcpt_ok\nheaders reject_type temp", &[]);
    assert_eq!(send(&s, "Subject: x\r\n\r\nx"), (452, "4.6.0 We require a valid From header".into()));
    let s = TestServer::start_with_chain("rcpt_ok\nheaders reject 0", &[]);
    assert_eq!(send(&s, "Subject: x\r\n\r\nx").0, 250);
    assert!(s.log().contains("fail, We require a valid From header"), "{}", s.log());
}

#[test]
fn queue_discard_accepts_and_keeps_nothing() {
    let s = TestServer::start_delivering(&[("plugins", "rcpt_ok\nqueue/discard\n")]);
    let mut c = s.greeted();
    c.envelope("a@remote.test", &["b@example.com"]);
    assert_eq!(c.data(b"Subject: gone\r\n\r\nx").text(), "2.0.0 Queued (discarded)");
    assert!(s.delivered().is_empty());
}

#[test]
fn dont_require_anglebrackets() {
    // Without the plugin: 501.
    let s = TestServer::start_delivering(&[]);
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM: a@remote.test", 501);
    // With it: the brackets are added, and the address is still checked strictly.
    let s = TestServer::start_with_chain("dont_require_anglebrackets\nrcpt_ok", &[]);
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    assert_eq!(c.cmd("MAIL FROM: a@remote.test SIZE=100", 250).text(), "2.1.0 <a@remote.test>, sender OK");
    c.cmd("RCPT TO:b@example.com", 250);
    c.cmd("RCPT TO:not..valid@example.com", 501);
    assert_eq!(c.data(b"Subject: sloppy client\r\n\r\nx").code, 250);
}

#[test]
fn bogus_bounce_refuses_a_bounce_to_several_recipients_or_with_a_return_path() {
    const BOUNCE: &[u8] = b"From: MAILER-DAEMON@remote.test\r\nSubject: failure notice\r\n\r\nx";
    // qpsmtpd's default action is `log`: the bounce passes, the log says so.
    let s = TestServer::start_with_chain("rcpt_ok\nbogus_bounce", &[]);
    let mut c = s.greeted();
    c.envelope("", &["b@example.com", "c@example.com"]);
    assert_eq!(c.data(BOUNCE).code, 250);
    assert!(s.log().contains("fail, bogus bounce to: b@example.com,c@example.com"), "{}", s.log());
    // `deny`: 552; `denysoft`: 452. One recipient, no Return-Path: a good bounce.
    let s = TestServer::start_with_chain("rcpt_ok\nbogus_bounce deny", &[]);
    let mut c = s.greeted();
    c.envelope("", &["b@example.com", "c@example.com"]);
    let r = c.data(BOUNCE);
    assert_eq!((r.code, r.text().as_str()), (552, "5.7.1 fail, this bounce message does not have 1 recipient"));
    c.envelope("", &["b@example.com"]);
    let r = c.data(b"Return-Path: <someone@remote.test>\r\nFrom: MAILER-DAEMON@remote.test\r\n\r\nx");
    assert_eq!((r.code, r.text().as_str()), (552, "5.7.1 a bounce return path must be empty (RFC 3834)"));
    c.envelope("", &["b@example.com"]);
    assert_eq!(c.data(BOUNCE).code, 250);
    c.envelope("a@remote.test", &["b@example.com", "c@example.com"]);
    assert_eq!(c.data(BOUNCE).code, 250, "not a bounce");
    let s = TestServer::start_with_chain("rcpt_ok\nbogus_bounce denysoft", &[]);
    let mut c = s.greeted();
    c.envelope("", &["b@example.com", "c@example.com"]);
    assert_eq!(c.data(BOUNCE).code, 452);
}

#[test]
fn noop_counter_disconnects_after_consecutive_noops() {
    let s = TestServer::start_with_chain("noop_counter\nrcpt_ok", &[]);
    let mut c = s.greeted();
    c.cmd("NOOP", 250);
    c.cmd("NOOP", 250);
    // Another command starts the count again.
    c.cmd("EHLO client.test", 250);
    c.cmd("NOOP", 250);
    c.cmd("NOOP", 250);
    let r = c.cmd("NOOP", 500);
    assert!(r.text().ends_with("Stop wasting my time, too many consecutive NOOPs"), "{}", r.text());
    assert!(c.is_closed());
    let s = TestServer::start_with_chain("noop_counter 5\nrcpt_ok", &[]);
    let mut c = s.greeted();
    for _ in 0..4 {
        c.cmd("NOOP", 250);
    }
    c.cmd("NOOP", 500);
}

#[test]
fn random_error_fails_as_often_as_configured() {
    // 100%: every connection fails at its first hook, with a temporary refusal.
    let s = TestServer::start_with_chain("random_error 100\nrcpt_ok", &[]);
    for _ in 0..3 {
        let mut c = s.connect();
        let r = c.expect(450);
        assert_eq!(r.text(), "random failure");
    }
    // A negative percentage: never.
    let s = TestServer::start_with_chain("random_error -1\nrcpt_ok", &[]);
    let mut c = s.greeted();
    c.envelope("a@remote.test", &["b@example.com"]);
    assert_eq!(c.data(b"Subject: x\r\n\r\nx").code, 250);
}

#[test]
fn loadcheck_refuses_while_the_load_is_above_max_load() {
    // The load the server reads from the kernel is never below 0, nor this high.
    let s = TestServer::start_with_chain("loadcheck max_load -1\nrcpt_ok", &[]);
    let mut c = s.connect();
    let r = c.expect(450);
    assert_eq!(r.text(), "Server load too high, please try again later.");
    assert!(c.is_closed());
    assert!(s.log().contains("local load too high"), "{}", s.log());
    let s = TestServer::start_with_chain("loadcheck max_load 100000\nrcpt_ok", &[]);
    s.greeted();
}
