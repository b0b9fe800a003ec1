//! The filters that remember (greylisting, limit, karma), each against both store backends:
//! the embedded store under the server's state directory, and a real redis-server shared by
//! two servers, as several MX hosts would share it.

use std::time::{Duration, Instant};

use wasmtpd_tests::redis::RedisServer;
use wasmtpd_tests::{Client, TestServer};

/// A backend: the `config/stores` line of the store `state`, and the Redis it needs.
enum Backend {
    Embedded,
    Redis(RedisServer),
}

impl Backend {
    fn both() -> Vec<Backend> {
        vec![Backend::Embedded, Backend::Redis(RedisServer::start())]
    }
    fn stores(&self) -> String {
        match self {
            Backend::Embedded => "state embedded\n".into(),
            Backend::Redis(r) => format!("state redis {} timeout 500ms\n", r.url()),
        }
    }
    fn name(&self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Redis(_) => "redis",
        }
    }
}

/// `plugin ARGS` before rcpt_ok and queue/maildir, granted the store `state`. (Rate limits in
/// these tests use day-long windows: `limit`'s windows are fixed, and a test that crossed a
/// window's end would start counting again.)
fn start(backend: &Backend, plugin: &str, extra: &[(&str, &str)]) -> TestServer {
    // The last line is the plugin under test (earlier ones feed it).
    let name = plugin.lines().last().unwrap().split_whitespace().next().unwrap();
    let sandbox = format!("queue/maildir grant-dir maildir /maildir rw\n{name} store state\n");
    let stores = backend.stores();
    let mut files: Vec<(&str, &str)> = vec![("sandbox", &sandbox), ("stores", &stores)];
    files.extend_from_slice(extra);
    TestServer::start_with_chain(&format!("{plugin} store state\nrcpt_ok"), &files)
}

fn mail(s: &TestServer) -> (Client, u16) {
    let mut c = s.greeted();
    c.cmd("EHLO client.test", 250);
    c.line("MAIL FROM:<a@remote.test>");
    let code = c.read_reply().unwrap().code;
    (c, code)
}

#[test]
fn greylisting_defers_a_new_triplet_until_it_retries_after_black_timeout() {
    for backend in Backend::both() {
        let s = start(&backend, "greylisting black_timeout 2", &[]);
        let (mut c, code) = mail(&s);
        assert_eq!(code, 450, "{}", backend.name());
        c.cmd("QUIT", 221);
        // A retry within black_timeout: still deferred.
        let mut c = s.greeted();
        c.cmd("EHLO client.test", 250);
        let r = c.cmd("MAIL FROM:<a@remote.test>", 450);
        assert_eq!(r.text(), "4.7.1 This mail is temporarily denied");
        std::thread::sleep(Duration::from_millis(2200));
        // After it: accepted, and white from then on.
        let mut c = s.greeted();
        c.envelope("a@remote.test", &["b@example.com"]);
        assert_eq!(c.data(b"Subject: hi\r\n\r\nhi\r\n").code, 250);
        let (_, code) = mail(&s);
        assert_eq!(code, 250, "{}: white", backend.name());
    }
}

#[test]
fn greylisting_white_triplets_survive_kill_9_on_the_embedded_store() {
    let mut s = start(&Backend::Embedded, "greylisting black_timeout 1", &[]);
    assert_eq!(mail(&s).1, 450);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(mail(&s).1, 250);
    // On the disk at most `sync-every` (default 1 s) after it was answered (docs/scaling.md).
    std::thread::sleep(Duration::from_millis(1500));
    s.crash_and_restart();
    assert_eq!(mail(&s).1, 250, "still white after kill -9");
}

#[test]
fn greylisting_per_recipient_testonly_and_deny_late() {
    for backend in Backend::both() {
        let s = start(&backend, "greylisting recipient 1 black_timeout 60", &[]);
        let mut c = s.greeted();
        c.cmd("EHLO client.test", 250);
        c.cmd("MAIL FROM:<a@remote.test>", 250);
        c.cmd("RCPT TO:<b@example.com>", 450);
        c.cmd("RCPT TO:<c@example.com>", 450);
        drop(s);

        let s = start(&backend, "greylisting mode testonly", &[]);
        assert_eq!(mail(&s).1, 250, "testonly records, never defers");
        drop(s);

        let s = start(&backend, "greylisting deny_late 1 sender 1", &[]);
        let mut c = s.greeted();
        c.envelope("z@remote.test", &["b@example.com", "c@example.com"]);
        let r = c.cmd("DATA", 451);
        assert!(r.text().contains("This mail is temporarily denied"), "{r:?}");
    }
}

#[test]
fn two_servers_share_greylisting_and_limits_through_redis_and_survive_its_outage() {
    let mut redis = RedisServer::start();
    let stores = format!("state redis {} timeout 500ms\n", redis.url());
    let files: Vec<(&str, &str)> = vec![
        ("sandbox", "queue/maildir grant-dir maildir /maildir rw\ngreylisting store state\nlimit store state\n"),
        ("stores", &stores),
    ];
    let chain = "greylisting black_timeout 1 store state\nlimit connections 2/86400 store state\nrcpt_ok";
    let a = TestServer::start_with_chain(chain, &files);
    let b = TestServer::start_with_chain(chain, &files);
    // Deferred on A, retried on B after the black-out: accepted.
    assert_eq!(mail(&a).1, 450);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(mail(&b).1, 250);
    // Two connections in the window, one on each, counted together: the third, on A, is refused.
    let mut c = a.connect();
    let r = c.read_reply().unwrap();
    assert_eq!(r.code, 450, "{r:?}");
    assert!(r.text().contains("Too many connections from 127.0.0.1"), "{r:?}");
    // Redis gone: both fail open at once (no hang), and say so.
    redis.stop();
    for s in [&a, &b] {
        let started = Instant::now();
        let mut c = s.greeted();
        c.cmd("EHLO client.test", 250);
        c.cmd("MAIL FROM:<new@remote.test>", 250);
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }
    // Back: greylisting works again on a new (empty) Redis.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, code) = mail(&a);
        if code == 450 {
            break;
        }
        assert!(Instant::now() < deadline, "greylisting did not come back with Redis");
        std::thread::sleep(Duration::from_millis(300));
    }
    let log = a.log();
    assert!(log.contains("the store cannot be used"), "{log}");
}

#[test]
fn limit_counts_connections_concurrency_and_recipients() {
    for backend in Backend::both() {
        let s = start(&backend, "limit connections 2/86400", &[]);
        s.greeted();
        s.greeted();
        let mut c = s.connect();
        assert_eq!(c.read_reply().unwrap().code, 450, "{}", backend.name());
        drop(s);

        let s = start(&backend, "limit concurrency 1", &[]);
        let mut first = s.greeted();
        let mut second = s.connect();
        assert_eq!(second.read_reply().unwrap().code, 450, "{}: one at a time", backend.name());
        first.cmd("QUIT", 221);
        drop(first);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut c = s.connect();
            if c.read_reply().unwrap().code == 220 {
                break;
            }
            assert!(Instant::now() < deadline, "the count did not go down at disconnect");
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(s);

        let s = start(&backend, "limit recipients_per_client 2/86400", &[]);
        let mut c = s.greeted();
        c.envelope("a@remote.test", &["b@example.com", "c@example.com"]);
        let r = c.cmd("RCPT TO:<d@example.com>", 450);
        assert_eq!(r.text(), "4.7.0 Rate limit exceeded for 127.0.0.1, try again later");
    }
}

#[test]
fn karma_puts_a_naughty_client_in_the_penalty_box() {
    for backend in Backend::both() {
        let s = start(
            &backend,
            "check_badrcptto\nkarma strikes 2 negative 1 penalty_days 0.5",
            &[("badrcptto", "nobody@example.com\n")],
        );
        let mut c = s.greeted();
        c.cmd("EHLO client.test", 250);
        c.cmd("MAIL FROM:<a@remote.test>", 250);
        c.cmd("RCPT TO:<nobody@example.com>", 550);
        c.cmd("RCPT TO:<nobody@example.com>", 550);
        c.cmd("QUIT", 221);
        drop(c);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut c = s.connect();
            let r = c.read_reply().unwrap();
            if r.code == 550 {
                assert!(r.text().starts_with("You were naughty. You cannot connect for 0.5"), "{r:?}");
                break;
            }
            assert!(Instant::now() < deadline, "{}: not in the penalty box", backend.name());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
