//! The DATA framing: a message ends at CRLF.CRLF and nowhere else, is dot-unstuffed, and
//! reaches the queue hook the same however the client's writes split it.

use wasmtpd_smtp::Hook;

use super::{MESSAGE, MESSAGE_SPOOLED, Scripted, Setup, code_of, without_received};

/// Sends a transaction whose message goes in the pieces `split` cuts it into; returns the
/// message the queue hook saw (after the Received header).
async fn queued(pieces: &[&[u8]]) -> Vec<u8> {
    let mut c = Setup::new(Scripted::accepting()).connect().await;
    c.start_message().await;
    for piece in pieces {
        c.send(piece).await;
        tokio::task::yield_now().await;
    }
    let reply = c.reply().await;
    assert_eq!(code_of(&reply), 250, "{reply}");
    let queue = c.calls_of(Hook::Queue);
    without_received(queue[0].message.as_deref().expect("the queue hook sees the message")).to_vec()
}

#[tokio::test(start_paused = true)]
async fn the_message_is_the_same_at_every_split_of_the_stream() {
    for at in 0..=MESSAGE.len() {
        let (a, b) = MESSAGE.split_at(at);
        assert_eq!(queued(&[a, b]).await, MESSAGE_SPOOLED, "split at {at}");
    }
    let bytes: Vec<&[u8]> = MESSAGE.chunks(1).collect();
    assert_eq!(queued(&bytes).await, MESSAGE_SPOOLED, "one octet at a time");
}

#[tokio::test(start_paused = true)]
async fn a_dot_that_is_not_alone_on_its_line_does_not_end_the_message() {
    let message: &[u8] = b"a\r\n.x\r\n.\r\nstill\r\n\r\n.\r\n";
    let mut c = Setup::new(Scripted::accepting()).connect().await;
    c.start_message().await;
    // `.\r\n` after CRLF ends it: the text after is the next command (`still` is unrecognized).
    c.send(message).await;
    assert_eq!(code_of(&c.reply().await), 250);
    assert_eq!(code_of(&c.reply().await), 500, "`still` is read as a command");
    let seen = c.calls_of(Hook::Queue)[0].message.clone().unwrap();
    assert_eq!(without_received(&seen), b"a\r\nx\r\n");
}

#[tokio::test(start_paused = true)]
async fn bare_newlines_and_long_lines_are_refused_and_the_transaction_ends() {
    for (message, code) in [(&b"a\nb\r\n.\r\n"[..], 550), (&b"a\rb\r\n.\r\n"[..], 550)] {
        let mut c = Setup::new(Scripted::accepting()).connect().await;
        c.start_message().await;
        c.send(message).await;
        assert_eq!(code_of(&c.reply().await), code, "{message:?}");
        c.expect("RCPT TO:<c@d.test>", 503).await;
        assert!(!c.hooks().contains(&Hook::Queue));
    }
    let mut c = Setup::new(Scripted::accepting()).config(|c| c.limits.max_text_line = 100).connect().await;
    c.start_message().await;
    c.send(&[b"x".repeat(200).as_slice(), b"\r\n.\r\n"].concat()).await;
    assert_eq!(c.reply().await, "550 5.6.0 Message has a line longer than 100 octets\r\n");
}

#[tokio::test(start_paused = true)]
async fn a_message_over_the_size_limit_is_refused_whole() {
    let mut c = Setup::new(Scripted::accepting()).config(|c| c.limits.max_message_size = 1000).connect().await;
    c.start_message().await;
    for _ in 0..20 {
        c.send(&[b"y".repeat(98).as_slice(), b"\r\n"].concat()).await;
    }
    c.send(b".\r\n").await;
    assert_eq!(code_of(&c.reply().await), 552);
    assert!(c.still_open().await);
    assert!(!c.hooks().contains(&Hook::Queue));
}

#[tokio::test(start_paused = true)]
async fn a_message_over_the_spool_threshold_goes_to_a_file_and_reaches_the_queue_hook() {
    let mut c = Setup::new(Scripted::accepting()).config(|c| c.limits.spool_threshold = 10).connect().await;
    c.start_message().await;
    c.send(MESSAGE).await;
    assert_eq!(code_of(&c.reply().await), 250);
    let seen = c.calls_of(Hook::Queue)[0].message.clone().unwrap();
    assert_eq!(without_received(&seen), MESSAGE_SPOOLED);
}

#[tokio::test(start_paused = true)]
async fn bdat_without_a_transaction_is_skipped_whole_then_refused() {
    let mut c = Setup::new(Scripted::accepting()).connect().await;
    c.ehlo().await;
    // The chunk holds what looks like commands: none of them may run.
    c.send(b"BDAT 23 LAST\r\nRSET\r\nQUIT\r\nVRFY root\r\n").await;
    assert_eq!(c.reply().await, "503 5.5.1 MAIL first\r\n");
    assert!(c.still_open().await);
    assert!(!c.hooks().contains(&Hook::Quit) && !c.hooks().contains(&Hook::Vrfy), "{:?}", c.hooks());
    c.send(b"BDAT x\r\n").await;
    assert_eq!(code_of(&c.reply().await), 501);
    assert!(c.closed().await, "the framing is unknown after a bad BDAT");
}
