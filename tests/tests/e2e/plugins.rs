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
    let s = TestServer::start_with_chain(
        "check_earlytalker defer\nrcpt_ok",
        &[("limits", "greeting_delay 300ms\nreject_early_talkers no\n")],
    );
    let mut c = s.connect();
    c.line("EHLO eager.test");
    c.expect(220);
    c.expect(250);
    assert!(c.cmd("MAIL FROM:<a@remote.test>", 550).text().contains("before SMTP greeting"));
    let mut polite = s.greeted();
    polite.cmd("EHLO polite.test", 250);
    polite.cmd("MAIL FROM:<a@remote.test>", 250);
}

#[test]
fn hosts_allow_by_network() {
    let s = TestServer::start_with_chain(
        "hosts_allow\nrcpt_ok",
        &[("hosts_allow", "10.0.0.0/8 ok\n127.0.0.0/8 deny No mail from loopback today\n")],
    );
    let mut c = s.connect();
    let r = c.expect(550);
    assert_eq!(r.text(), "No mail from loopback today");
    assert!(c.is_closed());
    let s = TestServer::start_with_chain("hosts_allow\nrcpt_ok", &[("hosts_allow", "127.0.0.1 denysoft\n")]);
    s.connect().expect(450);
    let s = TestServer::start_with_chain("hosts_allow\nrcpt_ok", &[("hosts_allow", "192.0.2.0/24 deny\n::1 deny\n")]);
    s.greeted();
}

#[test]
fn headers_requires_from_and_a_plausible_date() {
    let s = TestServer::start_with_chain("rcpt_ok\nheaders", &[]);
    let mut c = s.greeted();
    c.envelope("a@remote.test", &["b@example.com"]);
    let r = c.data(b"Subject: no from\r\nDate: Wed, 25 Nov 2026 17:17:54 +0000\r\n\r\nx");
    assert_eq!((r.code, r.text().as_str()), (552, "5.6.0 We require a valid From header"));
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    c.cmd("RCPT TO:<b@example.com>", 250);
    let r = c.data(b"From: a@remote.test\r\nDate: Mon, 1 Jan 2001 00:00:00 +0000\r\n\r\nx");
    assert!(r.code == 552 && r.text().contains("too far in the past"), "{r:?}");
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    c.cmd("RCPT TO:<b@example.com>", 250);
    let now = std::process::Command::new("date").arg("-R").output().unwrap();
    let date = String::from_utf8(now.stdout).unwrap();
    let body = format!("From: a@remote.test\r\nDate: {}\r\n\r\nx", date.trim());
    assert_eq!(c.data(body.as_bytes()).code, 250);
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
