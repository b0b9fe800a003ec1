//! The same plugin in Rust, Python, JavaScript and C (`plugins-wasm/examples/<lang>/rcpt_blocklist`),
//! in a real chain, behaving identically; and the same limits for every language.

use std::time::{Duration, Instant};

use wasmtpd_tests::TestServer;

fn blocklist_in(lang: &str) {
    let chain =
        format!("examples/{lang}/rcpt_blocklist alice bob jürgen\ntesting/notes_temp rcpt_blocklist.checked\nrcpt_ok");
    let s = TestServer::start_with_chain(&chain, &[]);
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    assert_eq!(
        c.cmd("RCPT TO:<alice@example.com>", 550).text(),
        format!("5.7.1 alice is blocked by the {lang} plugin")
    );
    assert_eq!(c.cmd("RCPT TO:<bob@example.com>", 550).text(), format!("5.7.1 bob is blocked by the {lang} plugin"));
    // Not listed: DECLINED, and rcpt_ok decides.
    c.cmd("RCPT TO:<carol@example.com>", 250);
    assert_eq!(c.data(b"Subject: hello\r\n\r\nx").code, 250);
    let m = String::from_utf8(s.delivered()[0].clone()).unwrap();
    // The note the plugin left (after its temp-file round trip) was read by a later plugin.
    assert!(m.contains("X-Notes-Temp-Seen: carol@example.com\r\n"), "{lang}: {m}");
    // SMTPUTF8 (RFC 6531): a UTF-8 address needs the client to ask for it, and then reaches the
    // plugin as a UTF-8 string, whatever its language.
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    assert_eq!(
        c.cmd("RCPT TO:<jürgen@example.com>", 553).text(),
        "5.6.7 Non-ASCII address requires the SMTPUTF8 extension"
    );
    c.cmd("RSET", 250);
    c.cmd("MAIL FROM:<andré@remote.test> SMTPUTF8", 250);
    assert_eq!(
        c.cmd("RCPT TO:<jürgen@example.com>", 550).text(),
        format!("5.7.1 jürgen is blocked by the {lang} plugin")
    );
    c.cmd("RCPT TO:<zoë@example.com>", 250);
    assert_eq!(c.data("Subject: grüße\r\n\r\nx".as_bytes()).code, 250);
    let m = String::from_utf8(s.delivered()[1].clone()).unwrap();
    assert!(m.contains("X-Notes-Temp-Seen: zoë@example.com\r\n"), "{lang}: {m}");
    assert!(m.contains("with UTF8SMTP id") && m.contains("for <zoë@example.com>"), "{lang}: {m}");
}

#[test]
fn rcpt_blocklist_in_rust() {
    blocklist_in("rust");
}

#[test]
fn rcpt_blocklist_in_python() {
    blocklist_in("python");
}

#[test]
fn rcpt_blocklist_in_javascript() {
    blocklist_in("js");
}

#[test]
fn rcpt_blocklist_in_c() {
    blocklist_in("c");
}

fn endless_loop_is_stopped(fixture: &str) {
    let s = TestServer::start_with_chain(
        &format!("testing/{fixture}\nrcpt_ok"),
        &[("sandbox", &format!("testing/{fixture} timeout 2s\nqueue/maildir grant-dir maildir /maildir rw\n"))],
    );
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    let started = Instant::now();
    c.cmd("RCPT TO:<b@example.com>", 451);
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(8), "{fixture}: stopped after {took:?}");
    assert!(s.log().contains("ran past its time limit of 2s"), "{}", s.log());
    // The server is fine: another client is served at once.
    let mut other = s.greeted();
    other.cmd("EHLO other.test", 250);
}

#[test]
fn a_python_plugin_that_loops_forever_is_stopped() {
    endless_loop_is_stopped("python_loop");
}

#[test]
fn a_javascript_plugin_that_loops_forever_is_stopped() {
    endless_loop_is_stopped("js_loop");
}

#[test]
fn a_c_plugin_that_loops_forever_is_stopped() {
    endless_loop_is_stopped("c_loop");
}
