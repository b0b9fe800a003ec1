//! STARTTLS: plaintext sent behind it is never run, and the session starts over: the EHLO
//! name, the relay flag, connection notes and the plugins' scope are forgotten.

use wasmtpd_smtp::{Hook, HookContext, Verdict};

use super::{Scripted, Setup, code_of};

fn relay(ctx: &mut HookContext<'_>) {
    ctx.connection.relay_client = true;
}

#[tokio::test(start_paused = true)]
async fn starttls_is_offered_with_a_certificate_and_not_over_tls() {
    let mut c = Setup::new(Scripted::default()).starttls().connect().await;
    c.reply().await;
    assert!(c.expect("EHLO client.test", 250).await.lines().any(|l| l[4..] == *"STARTTLS"));
    c.expect("STARTTLS", 220).await;
    c.start_tls().await;
    assert!(!c.expect("EHLO client.test", 250).await.contains("STARTTLS"));
    c.expect("STARTTLS", 503).await;
    let mut c = Setup::new(Scripted::default()).connect().await;
    c.ehlo().await;
    c.expect("STARTTLS", 502).await;
}

#[tokio::test(start_paused = true)]
async fn plaintext_sent_after_starttls_is_thrown_away() {
    let mut c = Setup::new(Scripted::default().answer(Hook::Vrfy, Verdict::Ok)).starttls().connect().await;
    c.ehlo().await;
    c.send(b"STARTTLS\r\nVRFY root\r\n").await;
    assert_eq!(code_of(&c.reply().await), 220);
    c.start_tls().await;
    c.expect("EHLO client.test", 250).await;
    c.expect("NOOP", 250).await;
    assert!(c.calls_of(Hook::Vrfy).is_empty(), "{:?}", c.hooks());
}

#[tokio::test(start_paused = true)]
async fn the_session_starts_over_after_the_handshake() {
    let runner = Scripted::accepting().effect(Hook::Ehlo, relay);
    let mut c = Setup::new(runner).starttls().connect().await;
    c.ehlo().await;
    c.expect("STARTTLS", 220).await;
    c.start_tls().await;
    c.expect("MAIL FROM:<a@b.test>", 503).await;
    assert_eq!(c.scopes(), 2, "the plugins' scope starts over");
    c.expect("EHLO client.test", 250).await;
    let ehlo = c.calls_of(Hook::Ehlo);
    assert!(!ehlo[0].tls && ehlo[1].tls);
    assert!(!ehlo[1].relay_client, "the relay flag learnt in plaintext is forgotten");
    assert_eq!(ehlo[1].hello, None, "the EHLO name learnt in plaintext is forgotten");
}

#[tokio::test(start_paused = true)]
async fn starttls_needs_ehlo_and_no_transaction() {
    let mut c = Setup::new(Scripted::accepting()).starttls().connect().await;
    c.reply().await;
    c.expect("STARTTLS", 503).await;
    c.expect("EHLO client.test", 250).await;
    c.expect("MAIL FROM:<a@b.test>", 250).await;
    c.expect("STARTTLS", 503).await;
    c.expect("RSET", 250).await;
    c.expect("STARTTLS", 220).await;
}

#[tokio::test(start_paused = true)]
async fn implicit_tls_shakes_hands_before_the_greeting() {
    let mut setup = Setup::new(Scripted::default());
    setup.implicit_tls = true;
    let mut c = setup.connect().await;
    c.start_tls().await;
    assert_eq!(code_of(&c.reply().await), 220);
    c.expect("EHLO client.test", 250).await;
    assert!(c.calls_of(Hook::Ehlo)[0].tls);
}
