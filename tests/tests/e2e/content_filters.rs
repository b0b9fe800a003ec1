//! The content filters through named upstreams (`wit/upstream.wit`, `config/upstreams`) end
//! to end: the real server, the standard plugins `clamd` (and the others as they come), and
//! the real scanners from Debian's packages, each a private instance with signatures or rules
//! of the test's own (`tests/src/clamd.rs`); for the faults no scanner makes on purpose
//! (a listener that never answers, one that answers garbage or without end), loopback
//! listeners of the test's own.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use wasmtpd_tests::clamd::{Clamd, TEST_VIRUS, TEST_VIRUS_NAME};
use wasmtpd_tests::{Reply, TestServer};

/// A server whose chain is `clamd ARGS` (then rcpt_ok and the maildir), with `upstreams` and
/// the sandbox lines `sandbox`.
fn with_clamd(args: &str, upstreams: &str, sandbox: &str) -> TestServer {
    let chain = format!("clamd {args}\nrcpt_ok");
    let sandbox = format!("queue/maildir grant-dir maildir /maildir rw\n{sandbox}");
    TestServer::start_with_chain(&chain, &[("sandbox", &sandbox), ("upstreams", upstreams)])
}

fn message(text: &str) -> String {
    format!("From: a@remote.test\r\nTo: b@example.com\r\nSubject: test\r\n\r\n{text}\r\n")
}

/// One message from a new connection; the reply to its final dot.
fn send(server: &TestServer, body: &str) -> Reply {
    let mut c = server.greeted();
    c.envelope("a@remote.test", &["b@example.com"]);
    let r = c.data(body.as_bytes());
    c.cmd("QUIT", 221);
    r
}

/// A loopback listener whose connections are each handed to `serve`; its port.
fn listener(serve: fn(std::net::TcpStream)) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || serve(s));
        }
    });
    port
}

/// Reads what the client sends until it pauses for 300 ms (or closes), so that an answer
/// written after it is read, not lost to a reset.
fn drain(s: &mut std::net::TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
    let mut b = [0; 65536];
    while s.read(&mut b).is_ok_and(|n| n > 0) {}
}

#[test]
fn clamd_refuses_an_infected_message_naming_the_virus_and_delivers_a_clean_one_unchanged() {
    let clamd = Clamd::start();
    let server = with_clamd("", &clamd.upstream_line("clamd", ""), "clamd upstream clamd\n");
    let infected = message(&format!("see the attachment\r\n{TEST_VIRUS}\r\nbye"));
    let r = send(&server, &infected);
    assert_eq!(r.code, 552, "{r:?}");
    assert_eq!(r.text(), format!("5.7.1 Virus found: {TEST_VIRUS_NAME}"));
    assert!(server.delivered().is_empty());
    assert!(server.log().contains(&format!("fail, virus found: {TEST_VIRUS_NAME}")), "{}", server.log());

    let clean = message("nothing to see here");
    let r = send(&server, &clean);
    assert_eq!(r.code, 250, "{r:?}");
    let delivered = server.delivered();
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0].ends_with(format!("{clean}\r\n").as_bytes()), "unchanged but for the server's Received");
    assert!(!String::from_utf8_lossy(&delivered[0]).contains("X-Virus"));

    // A large message is streamed whole (spooled to a file, sent from the host in chunks): a
    // virus at its very end is found.
    let filler = "all work and no play makes a large message\r\n".repeat(80_000);
    let r = send(&server, &message(&format!("{filler}{TEST_VIRUS}")));
    assert_eq!(r.code, 552, "{r:?}");
    assert!(clamd.log().contains(TEST_VIRUS_NAME), "{}", clamd.log());
}

#[test]
fn clamd_down_gets_the_fail_policy() {
    let mut clamd = Clamd::start();
    let upstreams = clamd.upstream_line("clamd", "connect-timeout 500ms");
    let strict = with_clamd("", &upstreams, "clamd upstream clamd\n");
    let open = with_clamd("fail_policy declined", &upstreams, "clamd upstream clamd\n");
    clamd.stop();
    let started = Instant::now();
    let r = send(&strict, &message("hello"));
    assert_eq!((r.code, r.text().as_str()), (452, "4.7.1 Unable to scan the message for now, please try again later"));
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(strict.log().contains("scan failed, refusing for now"), "{}", strict.log());
    let r = send(&open, &message("hello"));
    assert_eq!(r.code, 250, "fail open: {r:?}");
    assert_eq!(open.delivered().len(), 1);
    assert!(open.log().contains("passing the message unscanned"), "{}", open.log());
}

#[test]
fn a_scanner_that_never_answers_is_cut_off_by_the_hooks_deadline() {
    let port = listener(|mut s| {
        // Reads everything and never says a word.
        let mut b = [0; 65536];
        while s.read(&mut b).is_ok_and(|n| n > 0) {}
        std::thread::sleep(Duration::from_secs(30));
    });
    let upstreams = format!("clamd tcp 127.0.0.1:{port} timeout 60s\n");
    let server = with_clamd("", &upstreams, "clamd upstream clamd\nclamd timeout 1500ms\n");
    let started = Instant::now();
    let r = send(&server, &message("hello"));
    let took = started.elapsed();
    assert_eq!(r.code, 452, "{r:?}");
    assert!(took >= Duration::from_millis(1000) && took < Duration::from_millis(2500), "{took:?}");
    assert!(server.log().contains("timed out"), "{}", server.log());
    assert!(!server.log().contains("fault"), "the plugin answered in time: {}", server.log());
}

#[test]
fn a_garbage_or_endless_answer_is_bounded_and_gets_the_fail_policy() {
    let garbage = listener(|mut s| {
        drain(&mut s);
        let _ = s.write_all(b"220 this is not clamd\r\n");
    });
    let endless = listener(|mut s| {
        let _ = s.set_nonblocking(false);
        let chunk = [b'A'; 65536];
        while s.write_all(&chunk).is_ok() {}
    });
    for (port, expected) in [(garbage, "not a clamd stream answer"), (endless, "too large")] {
        let upstreams = format!("clamd tcp 127.0.0.1:{port}\n");
        let server = with_clamd("", &upstreams, "clamd upstream clamd\n");
        let started = Instant::now();
        let r = send(&server, &message("hello"));
        assert_eq!(r.code, 452, "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(server.log().contains(expected), "{expected}: {}", server.log());
    }
}

#[test]
fn a_message_over_max_size_is_not_scanned_and_that_is_noted() {
    let clamd = Clamd::start();
    let server = with_clamd("max_size 1k", &clamd.upstream_line("clamd", ""), "clamd upstream clamd\n");
    let big = message(&format!("{}{TEST_VIRUS}", "xx\r\n".repeat(500)));
    let r = send(&server, &big);
    assert_eq!(r.code, 250, "not scanned, so not refused: {r:?}");
    assert!(server.log().contains("skip: the message of"), "{}", server.log());
    assert!(server.log().contains("is over max_size 1024"), "{}", server.log());
    // Below the limit, the same virus is found.
    let r = send(&server, &message(TEST_VIRUS));
    assert_eq!(r.code, 552, "{r:?}");
}

#[test]
fn a_plugin_that_asks_for_an_upstream_it_was_not_granted_is_refused_and_logged() {
    let clamd = Clamd::start();
    // The upstream exists, but this plugin was not granted it.
    let upstreams = format!("{}other unix /nonexistent\n", clamd.upstream_line("clamd", ""));
    let server = with_clamd("", &upstreams, "clamd upstream other\n");
    let r = send(&server, &message(TEST_VIRUS));
    assert_eq!(r.code, 452, "the fail policy, not a scan: {r:?}");
    let log = server.log();
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("upstream call refused")).collect();
    assert!(!refused.is_empty(), "{log}");
    assert!(refused.iter().all(|l| l.contains("clamd") && l.contains("the upstream `clamd`")), "{log}");
    assert!(!clamd.log().contains("FOUND"), "clamd never saw the message: {}", clamd.log());
}

/// A server whose chain is `PLUGIN ARGS` (then rcpt_ok and the maildir), the plugin granted
/// the upstream `name` of `upstreams`.
fn with_filter(plugin: &str, args: &str, upstreams: &str, name: &str) -> TestServer {
    let chain = format!("{plugin} {args}\nrcpt_ok");
    let sandbox = format!("queue/maildir grant-dir maildir /maildir rw\n{plugin} upstream {name}\n");
    TestServer::start_with_chain(&chain, &[("sandbox", &sandbox), ("upstreams", upstreams)])
}

fn header<'a>(message: &'a str, name: &str) -> Vec<&'a str> {
    let head = message.split("\r\n\r\n").next().unwrap_or_default();
    head.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

#[test]
fn spamassassin_rejects_above_the_threshold_and_tags_below_it() {
    use wasmtpd_tests::spamd::{Spamd, TEST_RULE, TEST_SPAM};
    let spamd = Spamd::start();
    let upstreams = spamd.upstream_line("spamd", "");
    let strict = with_filter("spamassassin", "reject_threshold 15", &upstreams, "spamd");
    let r = send(&strict, &message(&format!("buy now {TEST_SPAM}")));
    assert_eq!((r.code, r.text().as_str()), (552, "5.7.1 Spam score exceeded threshold"), "{}", strict.log());
    assert!(strict.delivered().is_empty());

    // Tagging only: spam is delivered with the flag and a munged subject; the flag the client
    // forged is renamed; a clean message gets only its status.
    let tagging = with_filter("spamassassin", "munge_subject_threshold 5", &upstreams, "spamd");
    let forged = format!(
        "From: a@remote.test\r\nTo: b@example.com\r\nSubject: offer\r\nX-Spam-Flag: NO\r\n\r\nbuy now {TEST_SPAM}\r\n"
    );
    assert_eq!(send(&tagging, &forged).code, 250, "{}", tagging.log());
    let clean = message("nothing to see here");
    assert_eq!(send(&tagging, &clean).code, 250);
    let delivered = tagging.delivered();
    let spam = String::from_utf8_lossy(&delivered[0]).into_owned();
    assert_eq!(header(&spam, "X-Spam-Flag"), ["YES"], "{spam}");
    assert_eq!(header(&spam, "X-Old-Spam-Flag"), ["NO"], "the client's own is kept apart: {spam}");
    let status = header(&spam, "X-Spam-Status");
    assert!(status.len() == 1 && status[0].starts_with("Yes, score=20.0 required=5.0"), "{spam}");
    assert!(status[0].contains(TEST_RULE), "{spam}");
    assert_eq!(header(&spam, "Subject"), ["*** SPAM *** offer"], "{spam}");
    let ham = String::from_utf8_lossy(&delivered[1]).into_owned();
    assert!(header(&ham, "X-Spam-Status")[0].starts_with("No, score=0.0"), "{ham}");
    assert!(header(&ham, "X-Spam-Flag").is_empty(), "{ham}");
    assert!(delivered[1].ends_with(format!("{clean}\r\n").as_bytes()), "the message itself unchanged: {ham}");

    // SYMBOLS mode makes the same status from the rule names.
    let symbols = with_filter("spamassassin", "mode symbols", &upstreams, "spamd");
    assert_eq!(send(&symbols, &message(TEST_SPAM)).code, 250);
    let m = String::from_utf8_lossy(&symbols.delivered()[0]).into_owned();
    assert_eq!(header(&m, "X-Spam-Status"), [format!("Yes, score=20.0 required=5.0 tests={TEST_RULE}").as_str()]);
}

#[test]
fn spamassassin_down_or_silent_gets_the_fail_policy() {
    use wasmtpd_tests::spamd::Spamd;
    let mut spamd = Spamd::start();
    let upstreams = spamd.upstream_line("spamd", "connect-timeout 500ms");
    let strict = with_filter("spamassassin", "", &upstreams, "spamd");
    let open = with_filter("spamassassin", "fail_policy declined", &upstreams, "spamd");
    spamd.stop();
    assert_eq!(send(&strict, &message("hello")).code, 452);
    assert_eq!(send(&open, &message("hello")).code, 250);
    let silent = listener(|mut s| {
        let mut b = [0; 65536];
        while s.read(&mut b).is_ok_and(|n| n > 0) {}
    });
    let server = TestServer::start_with_chain(
        "spamassassin\nrcpt_ok",
        &[
            (
                "sandbox",
                "queue/maildir grant-dir maildir /maildir rw\nspamassassin upstream spamd\nspamassassin timeout 1s\n",
            ),
            ("upstreams", &format!("spamd tcp 127.0.0.1:{silent}\n")),
        ],
    );
    let started = Instant::now();
    assert_eq!(send(&server, &message("hello")).code, 452);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[test]
fn rspamd_actions_are_applied() {
    use wasmtpd_tests::rspamd::{Rspamd, TEST_GREY, TEST_SPAM, TEST_SUBJECT, TEST_TAG};
    let rspamd = Rspamd::start();
    let server = with_filter("rspamd", "score_header 1", &rspamd.upstream_line("rspamd", ""), "rspamd");
    let r = send(&server, &message(TEST_SPAM));
    assert_eq!((r.code, r.text().as_str()), (552, "5.7.1 Spam message rejected"), "{}", server.log());
    let r = send(&server, &message(TEST_GREY));
    assert_eq!((r.code, r.text().as_str()), (452, "4.7.1 Greylisted, please try again later"));
    assert!(server.delivered().is_empty());
    let tagged =
        format!("From: a@remote.test\r\nTo: b@example.com\r\nSubject: s\r\nX-Remove-Me: 1\r\n\r\n{TEST_TAG}\r\n");
    assert_eq!(send(&server, &tagged).code, 250);
    assert_eq!(send(&server, &message(TEST_SUBJECT)).code, 250);
    let clean = message("nothing to see here");
    assert_eq!(send(&server, &clean).code, 250);
    let delivered = server.delivered();
    assert_eq!(delivered.len(), 3);
    let tagged = String::from_utf8_lossy(&delivered[0]).into_owned();
    assert_eq!(header(&tagged, "X-Spam"), ["Yes"], "{tagged}");
    assert_eq!(header(&tagged, "X-Wasmtpd-Milter"), ["added"], "{tagged}");
    assert!(header(&tagged, "X-Remove-Me").is_empty(), "removed as the milter block says: {tagged}");
    assert!(header(&tagged, "X-Rspamd-Score")[0].starts_with("7.00 / "), "{tagged}");
    assert_eq!(header(&tagged, "X-Rspamd-Symbols"), ["WASMTPD_TEST_HEADER"], "{tagged}");
    let subject = String::from_utf8_lossy(&delivered[1]).into_owned();
    assert_eq!(header(&subject, "Subject"), ["*** SPAM *** test"], "{subject}");
    let ham = String::from_utf8_lossy(&delivered[2]).into_owned();
    assert!(header(&ham, "X-Spam").is_empty(), "{ham}");
    assert!(delivered[2].ends_with(format!("{clean}\r\n").as_bytes()), "unchanged but for the headers added: {ham}");
    // The envelope went as rspamd's headers: its log names the sender and the client.
    assert!(server.log().contains("action=add header"), "{}", server.log());
}

#[test]
fn rspamd_down_or_answering_garbage_gets_the_fail_policy() {
    let mut rspamd = wasmtpd_tests::rspamd::Rspamd::start();
    let upstreams = rspamd.upstream_line("rspamd", "connect-timeout 500ms");
    let strict = with_filter("rspamd", "", &upstreams, "rspamd");
    let open = with_filter("rspamd", "fail_policy declined", &upstreams, "rspamd");
    rspamd.stop();
    assert_eq!(send(&strict, &message("hello")).code, 452);
    assert_eq!(send(&open, &message("hello")).code, 250);
    let garbage = listener(|mut s| {
        drain(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nnot json!");
    });
    let server = with_filter("rspamd", "", &format!("rspamd tcp 127.0.0.1:{garbage}\n"), "rspamd");
    assert_eq!(send(&server, &message("hello")).code, 452);
    assert!(server.log().contains("not JSON"), "{}", server.log());
}
