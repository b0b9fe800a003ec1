//! AUTH exchanges: PLAIN with an initial response, LOGIN's challenges, cancelling, wrong
//! credentials counted per address, and the lines of a refused exchange never run as commands.

use wasmtpd_smtp::{Hook, HookContext, HookResult, Verdict};

use super::verdicts::PLAIN_USER_SECRET;
use super::{Scripted, Setup, code_of};

fn checking(verdict: Verdict) -> Scripted {
    Scripted::default().answer(Hook::AuthPlain, verdict).answer(Hook::AuthLogin, verdict)
}

#[tokio::test(start_paused = true)]
async fn auth_is_offered_only_when_a_plugin_checks_credentials() {
    let mut c = Setup::new(Scripted::default()).connect().await;
    c.reply().await;
    let ehlo = c.expect("EHLO client.test", 250).await;
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    c.expect(&format!("AUTH PLAIN {PLAIN_USER_SECRET}"), 502).await;
    let mut c = Setup::new(checking(Verdict::Ok)).connect().await;
    c.reply().await;
    let ehlo = c.expect("EHLO client.test", 250).await;
    assert!(ehlo.lines().any(|l| l[4..] == *"AUTH PLAIN LOGIN"), "{ehlo}");
}

#[tokio::test(start_paused = true)]
async fn plain_with_an_initial_response_authenticates() {
    let mut c = Setup::new(checking(Verdict::Ok)).connect().await;
    c.ehlo().await;
    assert_eq!(c.cmd(&format!("AUTH PLAIN {PLAIN_USER_SECRET}")).await, "235 2.7.0 Authentication successful\r\n");
    let call = &c.calls_of(Hook::AuthPlain)[0];
    assert!(call.args.contains("user: \"user\""), "{}", call.args);
    assert!(!call.args.contains("secret"), "the password is never printed: {}", call.args);
    c.expect("MAIL FROM:<a@b.test>", 250).await;
    assert_eq!(c.calls_of(Hook::Mail)[0].authenticated.as_deref(), Some("user"));
    c.expect(&format!("AUTH PLAIN {PLAIN_USER_SECRET}"), 503).await;
}

#[tokio::test(start_paused = true)]
async fn login_asks_for_the_user_then_the_password() {
    let mut c = Setup::new(checking(Verdict::Ok)).connect().await;
    c.ehlo().await;
    assert_eq!(c.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6\r\n");
    assert_eq!(c.cmd("dXNlcg==").await, "334 UGFzc3dvcmQ6\r\n");
    assert_eq!(code_of(&c.cmd("c2VjcmV0").await), 235);
    // The generic hook runs only when the mechanism's own hook declined.
    assert!(c.calls_of(Hook::Auth).is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_generic_auth_hook_runs_when_the_mechanisms_own_declines() {
    let runner = Scripted::default().implementing(Hook::AuthPlain).answer(Hook::Auth, Verdict::Ok);
    let mut c = Setup::new(runner).connect().await;
    c.ehlo().await;
    c.expect(&format!("AUTH PLAIN {PLAIN_USER_SECRET}"), 235).await;
    assert_eq!(c.hooks()[2..], [Hook::AuthPlain, Hook::Auth]);
}

#[tokio::test(start_paused = true)]
async fn a_client_may_cancel() {
    let mut c = Setup::new(checking(Verdict::Ok)).connect().await;
    c.ehlo().await;
    c.expect("AUTH LOGIN", 334).await;
    assert_eq!(c.cmd("*").await, "501 5.7.0 Authentication cancelled\r\n");
    assert!(c.calls_of(Hook::AuthLogin).is_empty());
    assert!(c.still_open().await);
}

#[tokio::test(start_paused = true)]
async fn wrong_credentials_are_counted_and_the_address_is_refused_past_the_limit() {
    let mut c = Setup::new(checking(Verdict::Deny)).config(|c| c.auth.max_failures = 2).connect().await;
    c.ehlo().await;
    for _ in 0..2 {
        c.expect(&format!("AUTH PLAIN {PLAIN_USER_SECRET}"), 535).await;
    }
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {PLAIN_USER_SECRET}")).await,
        "454 4.7.0 Too many failed authentication attempts, try again later\r\n"
    );
    assert_eq!(c.calls_of(Hook::AuthPlain).len(), 2, "the hooks are not asked past the limit");
}

#[tokio::test(start_paused = true)]
async fn a_temporary_failure_is_not_counted() {
    let mut c = Setup::new(checking(Verdict::DenySoft)).config(|c| c.auth.max_failures = 1).connect().await;
    c.ehlo().await;
    for _ in 0..3 {
        c.expect(&format!("AUTH PLAIN {PLAIN_USER_SECRET}"), 454).await;
    }
    assert_eq!(c.calls_of(Hook::AuthPlain).len(), 3);
}

#[tokio::test(start_paused = true)]
async fn responses_sent_for_a_refused_auth_are_never_run_as_commands() {
    let runner = checking(Verdict::Ok).implementing(Hook::UnrecognizedCommand);
    let mut c = Setup::new(runner).connect().await;
    c.reply().await;
    // Before EHLO, AUTH is refused; a client that does not wait sends its responses anyway.
    c.send(b"AUTH LOGIN\r\ndXNlcg==\r\nc2VjcmV0\r\n").await;
    assert_eq!(code_of(&c.reply().await), 503);
    assert_eq!(c.reply().await, "503 5.5.1 AUTH was refused: authentication response ignored\r\n");
    assert_eq!(c.reply().await, "503 5.5.1 AUTH was refused: authentication response ignored\r\n");
    assert!(c.calls_of(Hook::UnrecognizedCommand).is_empty(), "{:?}", c.hooks());
    // A client that waited for the refusal sends a command, and it runs.
    c.send(b"AUTH PLAIN\r\nEHLO client.test\r\n").await;
    assert_eq!(code_of(&c.reply().await), 503);
    assert_eq!(code_of(&c.reply().await), 250);
}

#[tokio::test(start_paused = true)]
async fn a_relay_flag_set_before_auth_stays_with_the_connection() {
    fn relay(ctx: &mut HookContext<'_>) {
        ctx.connection.relay_client = true;
    }
    let runner = checking(Verdict::Ok).effect(Hook::AuthPlain, relay).result(Hook::Mail, HookResult::declined());
    let mut c = Setup::new(runner).connect().await;
    c.ehlo().await;
    c.expect(&format!("AUTH PLAIN {PLAIN_USER_SECRET}"), 235).await;
    c.expect("MAIL FROM:<a@b.test>", 250).await;
    assert!(c.calls_of(Hook::Mail)[0].relay_client);
}
