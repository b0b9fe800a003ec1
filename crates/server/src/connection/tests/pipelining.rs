//! RFC 2920 pipelining: a group of commands is answered in order, and only once the group has
//! been read (a partial command waits); DATA ends a group, so text behind it is refused.

use wasmtpd_smtp::{Hook, Verdict};

use super::{MESSAGE, Scripted, Setup, code_of};

#[tokio::test(start_paused = true)]
async fn a_pipelined_group_is_answered_in_order() {
    let mut c = Setup::new(Scripted::accepting().answer(Hook::Rcpt, Verdict::Ok)).connect().await;
    c.ehlo().await;
    c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nRCPT TO:<e@f.test>\r\nDATA\r\n").await;
    for code in [250, 250, 250, 354] {
        assert_eq!(code_of(&c.reply().await), code);
    }
    c.send(MESSAGE).await;
    assert_eq!(code_of(&c.reply().await), 250);
}

#[tokio::test(start_paused = true)]
async fn a_partial_command_waits_for_the_rest() {
    let mut c = Setup::new(Scripted::default()).connect().await;
    c.ehlo().await;
    c.send(b"NOOP\r\nNOOP\r\nNO").await;
    assert_eq!(code_of(&c.reply().await), 250);
    assert_eq!(code_of(&c.reply().await), 250);
    assert_eq!(c.calls_of(Hook::Noop).len(), 2, "the third NOOP is not whole yet");
    c.send(b"OP\r\n").await;
    assert_eq!(code_of(&c.reply().await), 250);
    assert_eq!(c.calls_of(Hook::Noop).len(), 3);
}

#[tokio::test(start_paused = true)]
async fn text_sent_behind_data_before_our_354_is_refused_and_closes() {
    let mut c = Setup::new(Scripted::accepting()).connect().await;
    c.ehlo().await;
    c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nSubject: early\r\n\r\n.\r\n").await;
    assert_eq!(code_of(&c.reply().await), 250);
    assert_eq!(code_of(&c.reply().await), 250);
    assert_eq!(c.reply().await, "554 5.5.0 Improper pipelining: message data sent before the 354 reply\r\n");
    assert!(c.closed().await);
    assert!(!c.hooks().contains(&Hook::Queue));
}

#[tokio::test(start_paused = true)]
async fn commands_pipelined_behind_a_refused_command_still_run() {
    let runner = Scripted::accepting().queue(Hook::Rcpt, [wasmtpd_smtp::HookResult::new(Verdict::Deny)]);
    let mut c = Setup::new(runner).connect().await;
    c.ehlo().await;
    c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<no@d.test>\r\nRCPT TO:<yes@d.test>\r\nDATA\r\n").await;
    for code in [250, 550, 250, 354] {
        assert_eq!(code_of(&c.reply().await), code);
    }
}
