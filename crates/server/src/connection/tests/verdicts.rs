//! Every hook with every verdict, as a client hears it: the reply's code, and whether the
//! connection stays open; then what each verdict does to the session besides the reply.

use wasmtpd_smtp::{Hook, HookResult, Verdict};

use super::{Client, MESSAGE, Scripted, Setup, code_of};

const VERDICTS: [Verdict; 7] = [
    Verdict::Ok,
    Verdict::Deny,
    Verdict::DenySoft,
    Verdict::DenyDisconnect,
    Verdict::DenySoftDisconnect,
    Verdict::Declined,
    Verdict::Done,
];

/// `\0user\0secret`, base64.
pub(super) const PLAIN_USER_SECRET: &str = "AHVzZXIAc2VjcmV0";

/// Runs a session up to the command whose hook is `hook`; returns that command's reply.
async fn reach(c: &mut Client, hook: Hook) -> String {
    let greeting = c.reply().await;
    if matches!(hook, Hook::Connect | Hook::PreConnection) {
        return greeting;
    }
    match hook {
        Hook::Helo => return c.cmd("HELO client.test").await,
        Hook::Ehlo => return c.cmd("EHLO client.test").await,
        _ => c.expect("EHLO client.test", 250).await,
    };
    match hook {
        Hook::MailPre => return c.cmd("MAIL FROM: a@b.test").await,
        Hook::Mail => return c.cmd("MAIL FROM:<a@b.test>").await,
        Hook::RcptPre | Hook::Rcpt | Hook::Data | Hook::DataPost | Hook::Queue => {
            c.expect("MAIL FROM:<a@b.test>", 250).await;
        }
        Hook::Vrfy => return c.cmd("VRFY postmaster").await,
        Hook::Noop => return c.cmd("NOOP").await,
        Hook::Help => return c.cmd("HELP").await,
        Hook::Quit => return c.cmd("QUIT").await,
        Hook::UnrecognizedCommand => return c.cmd("FROB nicate").await,
        Hook::AuthPlain | Hook::Auth => return c.cmd(&format!("AUTH PLAIN {PLAIN_USER_SECRET}")).await,
        Hook::AuthLogin => {
            c.expect("AUTH LOGIN", 334).await;
            c.expect("dXNlcg==", 334).await;
            return c.cmd("c2VjcmV0").await;
        }
        other => panic!("{} is not reached by a command", other.name()),
    }
    match hook {
        Hook::RcptPre => return c.cmd("RCPT TO: c@d.test").await,
        Hook::Rcpt => return c.cmd("RCPT TO:<c@d.test>").await,
        _ => c.expect("RCPT TO:<c@d.test>", 250).await,
    };
    if hook == Hook::Data {
        return c.cmd("DATA").await;
    }
    c.expect("DATA", 354).await;
    c.send(MESSAGE).await;
    c.reply().await
}

/// The runner for `hook` answering `verdict`, with whatever the steps before it need.
fn runner(hook: Hook, verdict: Verdict) -> Scripted {
    let mut runner = Scripted::default().implementing(Hook::AuthPlain).implementing(Hook::AuthLogin);
    if hook != Hook::Rcpt {
        runner = runner.answer(Hook::Rcpt, Verdict::Ok);
    }
    runner.answer(hook, verdict)
}

/// (hook, [(code, closes) for Ok, Deny, DenySoft, DenyDisconnect, DenySoftDisconnect,
/// Declined, Done]): qpsmtpd's replies, as the engine carries them out.
const EXPECTED: &[(Hook, [(u16, bool); 7])] = &[
    (Hook::Connect, [(220, false), (550, true), (450, true), (550, true), (450, true), (220, false), (220, false)]),
    (
        Hook::PreConnection,
        [(220, false), (550, true), (451, true), (550, true), (451, true), (220, false), (220, false)],
    ),
    (Hook::Helo, [(250, false), (550, false), (450, false), (550, true), (450, true), (250, false), (250, false)]),
    (Hook::Ehlo, [(250, false), (550, false), (450, false), (550, true), (450, true), (250, false), (250, false)]),
    // Without an address to use instead, nothing a `*_pre` hook says makes the line parse.
    (Hook::MailPre, [(501, false); 7]),
    (Hook::Mail, [(250, false), (550, false), (450, false), (550, true), (421, true), (250, false), (250, false)]),
    (Hook::RcptPre, [(501, false); 7]),
    (Hook::Rcpt, [(250, false), (550, false), (450, false), (550, true), (421, true), (450, false), (250, false)]),
    (Hook::Data, [(354, false), (554, false), (451, false), (554, true), (451, true), (354, false), (354, false)]),
    (Hook::DataPost, [(451, false), (552, false), (452, false), (552, true), (452, true), (451, false), (250, false)]),
    (Hook::Queue, [(250, false), (552, false), (452, false), (451, false), (451, false), (451, false), (250, false)]),
    (Hook::Vrfy, [(250, false), (554, false), (252, false), (252, false), (252, false), (252, false), (250, false)]),
    (Hook::Noop, [(250, false), (500, false), (250, false), (500, true), (250, false), (250, false), (250, false)]),
    (Hook::Help, [(214, false), (500, false), (214, false), (214, false), (214, false), (214, false), (214, false)]),
    (Hook::Quit, [(221, true); 7]),
    (
        Hook::UnrecognizedCommand,
        [(500, false), (500, false), (500, false), (521, true), (500, false), (500, false), (250, false)],
    ),
    (Hook::AuthPlain, [(235, false), (535, false), (454, false), (535, true), (421, true), (535, false), (535, false)]),
    (Hook::AuthLogin, [(235, false), (535, false), (454, false), (535, true), (421, true), (535, false), (535, false)]),
    (Hook::Auth, [(235, false), (535, false), (454, false), (535, true), (421, true), (535, false), (535, false)]),
];

#[tokio::test(start_paused = true)]
async fn every_hook_with_every_verdict() {
    for (hook, row) in EXPECTED {
        for (verdict, (code, closes)) in VERDICTS.into_iter().zip(row) {
            let what = format!("{} {}", hook.name(), verdict.name());
            let mut c = Setup::new(runner(*hook, verdict)).connect().await;
            let reply = reach(&mut c, *hook).await;
            assert_eq!(code_of(&reply), *code, "{what}: {reply}");
            if *closes {
                assert!(c.closed().await, "{what}: the connection should close");
            } else if *code == 354 {
                c.send(MESSAGE).await;
                assert_eq!(code_of(&c.reply().await), 451, "{what}: nobody queued it");
            } else {
                assert!(c.still_open().await, "{what}: the connection should stay open");
            }
            assert!(c.hooks().contains(hook), "{what}: the hook ran");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_fault_is_a_temporary_failure_for_that_command() {
    // (hook, code, closes): the connection phase closes with 421; a command fails with 451.
    let expected = [
        (Hook::PreConnection, 421, true),
        (Hook::Connect, 421, true),
        (Hook::Ehlo, 421, true),
        (Hook::Mail, 451, false),
        (Hook::Rcpt, 451, false),
        (Hook::Data, 451, false),
        (Hook::DataPost, 451, false),
        (Hook::Queue, 451, false),
        (Hook::Vrfy, 451, false),
        (Hook::AuthPlain, 454, false),
        (Hook::Quit, 221, true),
    ];
    for (hook, code, closes) in expected {
        let runner = runner(hook, Verdict::Declined).result(hook, HookResult::fault("broken"));
        let mut c = Setup::new(runner).connect().await;
        let reply = reach(&mut c, hook).await;
        assert_eq!(code_of(&reply), code, "{}: {reply}", hook.name());
        assert_eq!(c.closed().await, closes, "{}", hook.name());
    }
}

#[tokio::test(start_paused = true)]
async fn a_denied_sender_starts_no_transaction() {
    let mut c = Setup::new(Scripted::default().answer(Hook::Mail, Verdict::Deny)).connect().await;
    c.ehlo().await;
    c.expect("MAIL FROM:<a@b.test>", 550).await;
    assert_eq!(c.hooks().last(), Some(&Hook::ResetTransaction), "the transaction begun for the hook ended");
    c.expect("RCPT TO:<c@d.test>", 503).await;
    // DONE: the reply is the success reply, but the engine's own action (the transaction) is skipped.
    let mut c = Setup::new(Scripted::default().answer(Hook::Mail, Verdict::Done)).connect().await;
    c.ehlo().await;
    c.expect("MAIL FROM:<a@b.test>", 250).await;
    c.expect("RCPT TO:<c@d.test>", 503).await;
}

#[tokio::test(start_paused = true)]
async fn only_an_accepted_recipient_joins_the_envelope() {
    let runner = Scripted::default().queue(
        Hook::Rcpt,
        [HookResult::new(Verdict::Done), HookResult::new(Verdict::Deny), HookResult::new(Verdict::Declined)],
    );
    let mut c = Setup::new(runner).connect().await;
    c.ehlo().await;
    c.expect("MAIL FROM:<a@b.test>", 250).await;
    c.expect("RCPT TO:<done@d.test>", 250).await;
    c.expect("RCPT TO:<deny@d.test>", 550).await;
    c.expect("RCPT TO:<declined@d.test>", 450).await;
    c.expect("DATA", 554).await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_hello_is_not_remembered() {
    let mut c = Setup::new(Scripted::default().answer(Hook::Ehlo, Verdict::Deny)).connect().await;
    c.reply().await;
    c.expect("EHLO client.test", 550).await;
    c.expect("MAIL FROM:<a@b.test>", 503).await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_data_ends_the_transaction() {
    let mut c = Setup::new(Scripted::accepting().answer(Hook::Data, Verdict::Deny)).connect().await;
    c.ehlo().await;
    c.expect("MAIL FROM:<a@b.test>", 250).await;
    c.expect("RCPT TO:<c@d.test>", 250).await;
    c.expect("DATA", 554).await;
    c.expect("RCPT TO:<c@d.test>", 503).await;
}

#[tokio::test(start_paused = true)]
async fn data_post_done_answers_250_without_queueing() {
    let mut c = Setup::new(Scripted::accepting().answer(Hook::DataPost, Verdict::Done)).connect().await;
    c.start_message().await;
    c.send(MESSAGE).await;
    assert_eq!(code_of(&c.reply().await), 250);
    assert!(!c.hooks().contains(&Hook::Queue), "{:?}", c.hooks());
    c.expect("RCPT TO:<c@d.test>", 503).await;
}

#[tokio::test(start_paused = true)]
async fn a_deny_runs_the_deny_hook_with_what_was_denied() {
    let runner = Scripted::default().result(Hook::Mail, HookResult::new(Verdict::DenySoft).from_plugin("greylist"));
    let mut c = Setup::new(runner).connect().await;
    c.ehlo().await;
    c.expect("MAIL FROM:<a@b.test>", 450).await;
    let deny = c.calls_of(Hook::Deny);
    assert_eq!(deny.len(), 1);
    assert!(deny[0].args.contains("hook: Mail") && deny[0].args.contains("greylist"), "{}", deny[0].args);
    // An OK, or a hook whose result is ignored, runs no deny hook.
    let runner = Scripted::default().answer(Hook::Mail, Verdict::Ok).answer(Hook::ResetTransaction, Verdict::Deny);
    let mut c = Setup::new(runner).connect().await;
    c.ehlo().await;
    c.expect("MAIL FROM:<a@b.test>", 250).await;
    c.expect("RSET", 250).await;
    assert!(c.calls_of(Hook::Deny).is_empty(), "{:?}", c.hooks());
}

#[tokio::test(start_paused = true)]
async fn a_pre_hook_rewrites_an_unbracketed_address() {
    let runner = Scripted::default()
        .result(Hook::MailPre, HookResult::new(Verdict::Ok).with_message("<a@b.test>"))
        .result(Hook::RcptPre, HookResult::new(Verdict::Ok).with_message("<c@d.test>"))
        .answer(Hook::Rcpt, Verdict::Ok);
    let mut c = Setup::new(runner).connect().await;
    c.ehlo().await;
    assert_eq!(c.expect("MAIL FROM: a@b.test", 250).await, "250 2.1.0 <a@b.test>, sender OK\r\n");
    assert_eq!(c.expect("RCPT TO: c@d.test", 250).await, "250 2.1.5 <c@d.test>, recipient ok\r\n");
    assert!(c.calls_of(Hook::Mail)[0].args.contains("\"b.test\""), "{}", c.calls_of(Hook::Mail)[0].args);
    // A rewrite that does not parse is refused as the client's own line would have been.
    let runner = Scripted::default().result(Hook::MailPre, HookResult::new(Verdict::Ok).with_message("<not valid"));
    let mut c = Setup::new(runner).connect().await;
    c.ehlo().await;
    c.expect("MAIL FROM: a@b.test", 501).await;
    assert!(c.calls_of(Hook::Mail).is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_session_hooks_run_in_qpsmtpd_order() {
    let mut c = Setup::new(Scripted::accepting()).connect().await;
    c.start_message().await;
    c.send(MESSAGE).await;
    assert_eq!(code_of(&c.reply().await), 250);
    c.expect("QUIT", 221).await;
    assert!(c.closed().await);
    use Hook::*;
    assert_eq!(
        c.hooks(),
        [Connect, Ehlo, Mail, Rcpt, Data, DataPost, Queue, ResetTransaction, Quit, Disconnect],
        "the transaction ends when the message is queued; disconnect runs last"
    );
    assert_eq!(c.calls_of(Mail)[0].transaction.as_deref(), Some("t1.1"), "MAIL's hook sees its transaction");
    assert_eq!(c.calls_of(Ehlo)[0].transaction, None);
}
