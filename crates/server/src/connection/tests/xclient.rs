//! XCLIENT: only from a trusted front end; Postfix's replies; the session starts over as the
//! named client, which the `connect` hook, the Received header and later hooks see.

use wasmtpd_smtp::{Hook, HookResult, Verdict};

use super::{MESSAGE, Scripted, Setup, code_of};
use crate::frontends::Prefix;

fn trusting(runner: Scripted) -> Setup {
    Setup::new(runner)
        .from("127.0.0.2:40000")
        .config(|c| c.frontends.xclient = vec![Prefix::parse("127.0.0.2").unwrap()])
}

#[tokio::test(start_paused = true)]
async fn xclient_from_a_trusted_front_end_replaces_the_client_facts() {
    let mut c = trusting(Scripted::accepting()).connect().await;
    c.reply().await;
    let ehlo = c.expect("EHLO proxy.test", 250).await;
    assert!(ehlo.contains("XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT\r\n"), "{ehlo}");
    let greeting = c.cmd("XCLIENT ADDR=203.0.113.5 PORT=4711 NAME=client.example HELO=orig.example PROTO=ESMTP").await;
    assert_eq!(greeting, "220 mx.test ESMTP wasmtpd ready\r\n", "Postfix greets again");
    assert_eq!(c.scopes(), 2, "plugin instances start over");
    let connects = c.calls_of(Hook::Connect);
    assert_eq!(connects.len(), 2, "the connect hook decides on the new client");
    assert_eq!(connects[1].remote, "203.0.113.5:4711".parse().unwrap());
    assert_eq!(connects[1].hello.as_deref(), Some("orig.example"));
    // The client's own EHLO follows; the transaction is the named client's.
    c.expect("EHLO orig.example", 250).await;
    c.expect("MAIL FROM:<a@b.test>", 250).await;
    c.expect("RCPT TO:<c@d.test>", 250).await;
    c.expect("DATA", 354).await;
    c.send(MESSAGE).await;
    assert_eq!(code_of(&c.reply().await), 250);
    let queued = c.calls_of(Hook::Queue)[0].clone();
    assert_eq!(queued.remote, "203.0.113.5:4711".parse().unwrap());
    let message = String::from_utf8(queued.message.unwrap()).unwrap();
    assert!(message.starts_with("Received: from orig.example (client.example [203.0.113.5])\r\n"), "{message}");
    assert!(!message.contains("127.0.0.2"), "the front end's address is not the client's: {message}");
}

#[tokio::test(start_paused = true)]
async fn xclient_login_authenticates_and_unavailable_keeps_the_address() {
    let mut c = trusting(Scripted::accepting()).connect().await;
    c.reply().await;
    assert_eq!(code_of(&c.cmd("XCLIENT LOGIN=alice+40example.org ADDR=[UNAVAILABLE]").await), 220);
    c.expect("EHLO x.example", 250).await;
    c.expect("MAIL FROM:<a@b.test>", 250).await;
    let mail = c.calls_of(Hook::Mail)[0].clone();
    assert_eq!(mail.authenticated.as_deref(), Some("alice@example.org"));
    assert!(mail.relay_client, "authenticated at the front end: may relay, as after AUTH");
    assert_eq!(mail.remote, "127.0.0.2:40000".parse().unwrap());
    c.expect("XCLIENT ADDR=192.0.2.1", 503).await;
    c.expect("RSET", 250).await;
    assert_eq!(code_of(&c.cmd("XCLIENT ADDR=IPV6:2001:db8::5").await), 220, "again: the trust is the peer's");
    assert_eq!(
        c.calls_of(Hook::Connect).last().unwrap().remote.ip(),
        "2001:db8::5".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(c.calls_of(Hook::Connect).last().unwrap().authenticated, None, "a new client is not logged in");
}

#[tokio::test(start_paused = true)]
async fn xclient_from_an_untrusted_client_is_refused_550() {
    let mut c = trusting(Scripted::accepting()).from("127.0.0.3:40000").connect().await;
    c.reply().await;
    let ehlo = c.expect("EHLO client.test", 250).await;
    assert!(!ehlo.contains("XCLIENT"), "not advertised: {ehlo}");
    assert_eq!(c.cmd("XCLIENT ADDR=203.0.113.5").await, "550 5.7.0 Error: insufficient authorization\r\n");
    assert_eq!(c.cmd("XCLIENT FOO=bar").await, "550 5.7.0 Error: insufficient authorization\r\n", "malformed too");
    c.expect("XCLIENT", 550).await;
    assert_eq!(c.calls_of(Hook::Connect).len(), 1);
    c.expect("MAIL FROM:<a@b.test>", 250).await;
    assert_eq!(c.calls_of(Hook::Mail)[0].remote, "127.0.0.3:40000".parse().unwrap(), "unchanged");
}

#[tokio::test(start_paused = true)]
async fn malformed_xclient_is_501_and_changes_nothing() {
    let mut c = trusting(Scripted::accepting()).connect().await;
    c.reply().await;
    for line in [
        "XCLIENT",
        "XCLIENT FOO=bar",
        "XCLIENT ADDR",
        "XCLIENT ADDR=300.1.1.1",
        "XCLIENT ADDR=2001:db8::1",
        "XCLIENT PORT=70000",
        "XCLIENT PROTO=LMTP",
        "XCLIENT HELO=a+0D+0AMAIL",
        "XCLIENT NAME=a+2",
        "XCLIENT ADDR=192.0.2.1 ADDR=192.0.2.2",
    ] {
        let reply = c.cmd(line).await;
        assert!(reply.starts_with("501 5.5.4 "), "{line} -> {reply}");
    }
    assert_eq!(c.calls_of(Hook::Connect).len(), 1, "no XCLIENT took effect");
    c.expect("EHLO client.test", 250).await;
    c.expect("MAIL FROM:<a@b.test>", 250).await;
    assert_eq!(c.calls_of(Hook::Mail)[0].remote, "127.0.0.2:40000".parse().unwrap());
}

#[tokio::test(start_paused = true)]
async fn the_connect_hook_may_refuse_the_client_xclient_names() {
    // As hosts_allow would: the front end is fine, the client it names is not.
    let runner = Scripted::accepting()
        .queue(Hook::Connect, [HookResult::declined(), HookResult::new(Verdict::Deny).from_plugin("hosts_allow")]);
    let mut c = trusting(runner).connect().await;
    c.reply().await;
    assert_eq!(code_of(&c.cmd("XCLIENT ADDR=203.0.113.66").await), 550);
    assert!(c.closed().await, "a refused connection closes");
}
