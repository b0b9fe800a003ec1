//! Limits and deadlines, on tokio's paused clock: every wait on the client ends, with the
//! reply RFC 5321 asks for, and the connection closes; early talkers and shutdown too.

use std::time::Duration;

use wasmtpd_smtp::Hook;

use super::{Scripted, Setup, code_of};

#[tokio::test(start_paused = true)]
async fn an_idle_client_hears_421_at_the_command_timeout() {
    let mut c =
        Setup::new(Scripted::default()).config(|c| c.server.command_timeout = Duration::from_secs(300)).connect().await;
    c.ehlo().await;
    let waited = tokio::time::Instant::now();
    assert_eq!(c.reply().await, "421 4.4.2 Timeout waiting for a command, closing connection\r\n");
    assert_eq!(waited.elapsed().as_secs(), 300);
    assert!(c.closed().await);
    assert_eq!(c.hooks().last(), Some(&Hook::Disconnect));
}

#[tokio::test(start_paused = true)]
async fn a_command_dripped_slower_than_its_deadline_is_cut_off() {
    let mut c = Setup::new(Scripted::default())
        .config(|c| {
            c.server.command_timeout = Duration::from_secs(30);
            c.server.command_deadline = Duration::from_secs(60);
        })
        .connect()
        .await;
    c.ehlo().await;
    let started = tokio::time::Instant::now();
    // Each octet comes well within the idle timeout; the line as a whole takes too long.
    for &octet in b"NOOP" {
        c.send(&[octet]).await;
        tokio::time::sleep(Duration::from_secs(20)).await;
    }
    assert_eq!(c.reply().await, "421 4.4.2 Command took too long, closing connection\r\n");
    assert!(started.elapsed() <= Duration::from_secs(80), "{:?}", started.elapsed());
    assert!(c.closed().await);
    assert!(c.calls_of(Hook::Noop).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_during_data_hears_421_at_the_data_timeout() {
    let mut c =
        Setup::new(Scripted::accepting()).config(|c| c.server.data_timeout = Duration::from_secs(180)).connect().await;
    c.start_message().await;
    c.send(b"Subject: half\r\n").await;
    assert_eq!(c.reply().await, "421 4.4.2 Timeout waiting for message data, closing connection\r\n");
    assert!(c.closed().await);
    assert!(!c.hooks().contains(&Hook::Queue));
}

#[tokio::test(start_paused = true)]
async fn a_message_dripped_slower_than_the_data_deadline_is_cut_off() {
    let mut c = Setup::new(Scripted::accepting())
        .config(|c| {
            c.server.data_timeout = Duration::from_secs(60);
            c.server.data_deadline = Duration::from_secs(300);
        })
        .connect()
        .await;
    c.start_message().await;
    // A line every 50 s, within the idle timeout; the transfer as a whole passes 300 s.
    let started = tokio::time::Instant::now();
    for _ in 0..6 {
        c.send(b"x\r\n").await;
        tokio::time::sleep(Duration::from_secs(50)).await;
    }
    assert_eq!(c.reply().await, "421 4.4.2 Message took too long to send, closing connection\r\n");
    assert_eq!(started.elapsed().as_secs(), 300);
    assert!(c.closed().await);
}

#[tokio::test(start_paused = true)]
async fn an_overlong_command_line_is_refused_and_the_session_goes_on() {
    let mut c = Setup::new(Scripted::default()).connect().await;
    c.ehlo().await;
    let long = format!("NOOP {}", "x".repeat(600));
    assert_eq!(code_of(&c.cmd(&long).await), 500);
    assert!(c.calls_of(Hook::Noop).is_empty());
    assert!(c.still_open().await);
    assert_eq!(c.cmd("NOOP\nNOOP").await, "500 5.5.2 Syntax error: command lines must end with CRLF\r\n");
}

#[tokio::test(start_paused = true)]
async fn too_many_errors_close_the_connection() {
    let mut c = Setup::new(Scripted::default()).config(|c| c.limits.max_errors = 3).connect().await;
    c.ehlo().await;
    c.expect("RCPT TO:<c@d.test>", 503).await;
    c.expect("RCPT TO:<c@d.test>", 503).await;
    c.expect("RCPT TO:<c@d.test>", 503).await;
    assert_eq!(c.reply().await, "421 4.7.0 Too many errors, closing connection\r\n");
    assert!(c.closed().await);
}

#[tokio::test(start_paused = true)]
async fn an_early_talker_is_refused() {
    let mut c = Setup::new(Scripted::default()).connect().await;
    // Sent before the server task has even looked: talking before the greeting.
    c.send(b"EHLO client.test\r\n").await;
    assert_eq!(c.reply().await, "554 5.5.0 Protocol violation: talking before the greeting\r\n");
    assert!(c.closed().await);
    assert!(c.calls_of(Hook::Ehlo).is_empty());
    assert_eq!(c.hooks().first(), Some(&Hook::Connect), "the connect hook saw the early talker first");
}

#[tokio::test(start_paused = true)]
async fn an_early_talker_is_caught_during_the_greeting_delay() {
    let mut c =
        Setup::new(Scripted::default()).config(|c| c.server.greeting_delay = Duration::from_secs(5)).connect().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.send(b"EHLO client.test\r\n").await;
    assert_eq!(code_of(&c.reply().await), 554);
    // A patient client is greeted after the delay.
    let mut c =
        Setup::new(Scripted::default()).config(|c| c.server.greeting_delay = Duration::from_secs(5)).connect().await;
    let started = tokio::time::Instant::now();
    assert_eq!(code_of(&c.reply().await), 220);
    assert_eq!(started.elapsed().as_secs(), 5);
}

#[tokio::test(start_paused = true)]
async fn at_shutdown_a_waiting_client_hears_421() {
    let mut c = Setup::new(Scripted::default()).connect().await;
    c.ehlo().await;
    c.shut_down();
    assert_eq!(c.reply().await, "421 4.3.2 Service shutting down, try again later\r\n");
    assert!(c.closed().await);
}

#[tokio::test(start_paused = true)]
async fn a_message_in_flight_at_shutdown_finishes() {
    let mut c = Setup::new(Scripted::accepting()).connect().await;
    c.start_message().await;
    c.send(b"Subject: late\r\n").await;
    tokio::task::yield_now().await;
    c.shut_down();
    c.send(b"\r\nbody\r\n.\r\n").await;
    assert_eq!(code_of(&c.reply().await), 250, "the message is queued");
    assert_eq!(code_of(&c.cmd("NOOP").await), 421);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_does_not_read_is_dropped_at_the_write_timeout() {
    let mut c =
        Setup::new(Scripted::default()).config(|c| c.server.write_timeout = Duration::from_secs(60)).connect().await;
    c.ehlo().await;
    // About 170 KiB of HELP replies, more than the pipe holds, and the client reads none.
    c.send(&b"HELP\r\n".repeat(1000)).await;
    let started = tokio::time::Instant::now();
    assert!(c.task_ends().await, "the session ends without the client reading");
    assert_eq!(started.elapsed().as_secs(), 60);
    assert_eq!(c.hooks().last(), Some(&Hook::Disconnect));
}
