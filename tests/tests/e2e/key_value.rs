//! The key-value capability (`wit/key-value.wit`) end to end: the real server, its stores of
//! `config/stores` (embedded under the state directory, or a private redis-server), and
//! `testing/kv_probe`, which makes the store calls its arguments say at RCPT and answers 550
//! with one line per answer, so each test reads exactly what a plugin gets.

use std::time::{Duration, Instant};

use wasmtpd_tests::redis::RedisServer;
use wasmtpd_tests::{Client, TestServer};

/// A server whose chain is `testing/kv_probe ARGS` then `rcpt_ok`, with these `config/stores`
/// and `config/sandbox` lines.
fn probe(args: &str, stores: &str, sandbox: &str) -> TestServer {
    let chain = format!("testing/kv_probe {args}\nrcpt_ok");
    let sandbox = format!("queue/maildir grant-dir maildir /maildir rw\n{sandbox}");
    TestServer::start_with_chain(&chain, &[("sandbox", &sandbox), ("stores", stores)])
}

/// The probe's answer lines at `RCPT TO:<to>` in a transaction of its own on a new connection.
#[track_caller]
fn ask(server: &TestServer, to: &str) -> Vec<String> {
    let mut c = server.greeted();
    ask_on(&mut c, to)
}

#[track_caller]
fn ask_on(c: &mut Client, to: &str) -> Vec<String> {
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    let r = c.cmd(&format!("RCPT TO:<{to}>"), 550);
    c.cmd("RSET", 250);
    r.lines.iter().map(|l| l.strip_prefix("5.7.1 ").unwrap_or(l).to_string()).collect()
}

/// The version in an answer `... version=N ...`.
fn version(line: &str) -> u64 {
    let v = line.split("version=").nth(1).unwrap_or_else(|| panic!("no version in {line}"));
    v.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn a_store_the_plugin_was_not_granted_is_refused_and_the_log_names_it() {
    // Granted `aux`, it asks `main`. (A plugin granted no store at all is refused at start-up:
    // `vetting.rs`.)
    let stores = "main embedded\naux embedded\n";
    let server = probe("get:main:k set:main:k:v incr:main:n:1", stores, "testing/kv_probe store aux\n");
    let lines = ask(&server, "x@example.com");
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines {
        assert!(
            line.contains("-> not-granted: not granted: the operator has not granted this plugin the store `main`"),
            "{line}"
        );
    }
    let log = server.log();
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("store call refused")).collect();
    assert!(!refused.is_empty() && refused.iter().all(|l| l.contains("testing/kv_probe")), "{log}");
    // A store granted to another plugin is still not this one's; nor is a store not defined.
    let server = probe("get:main:k get:other:k", stores, "rcpt_ok store main\ntesting/kv_probe store aux\n");
    let lines = ask(&server, "x@example.com");
    assert!(lines.iter().all(|l| l.contains("not-granted")), "{lines:?}");
    assert!(!server.dir.0.join("state/stores/other.redb").exists());
}

/// The embedded store's promise (`docs/scaling.md`): a write is on the disk at most
/// `sync-every` after its answer. With `sync-every 0`, a `kill -9` right after the answer
/// loses nothing; with `sync-every 200ms`, nothing answered 200 ms before the kill is lost.
#[test]
fn a_value_survives_a_restart_and_kill_9() {
    for (stores, wait) in [
        ("main embedded sync-every 0\n", Duration::ZERO),
        ("main embedded sync-every 200ms\n", Duration::from_millis(600)),
    ] {
        let grant = "testing/kv_probe store main\n";
        let mut server = probe(
            "first=set:main:white:192.0.2.1:ttl=3600000 first=incr:main:count:5 again=get:main:white again=get:main:count",
            stores,
            grant,
        );
        let set = ask(&server, "first@example.com");
        assert!(set[0].starts_with("set:main:white:192.0.2.1:ttl=3600000 -> ok version="), "{set:?}");
        assert_eq!(set[1], "incr:main:count:5 -> ok 5");
        assert!(server.dir.0.join("state/stores/main.redb").is_file());
        std::thread::sleep(wait);
        server.crash_and_restart();
        let got = ask(&server, "again@example.com");
        let expected = format!("get:main:white -> ok \"192.0.2.1\" version={} expires-in=", version(&set[0]));
        assert!(got[0].starts_with(&expected), "{stores}: {got:?}, expected {expected}");
        let left: u64 = got[0].rsplit('=').next().unwrap().parse().unwrap();
        assert!(left > 3_500_000 && left <= 3_600_000, "{left}");
        assert!(got[1].starts_with("get:main:count -> ok \"5\" version="), "{stores}: {got:?}");
    }
}

#[test]
fn each_plugin_has_its_own_namespace_unless_shared_on_purpose() {
    let chain = "testing/kv_probe a=set:own:k:from-a a=set:common:k:from-a\n\
                 testing/kv_probe:2 b=get:own:k b=get:common:k\nrcpt_ok";
    let sandbox = "queue/maildir grant-dir maildir /maildir rw\n\
                   testing/kv_probe store own\ntesting/kv_probe store common shared team\n\
                   testing/kv_probe:2 store own\ntesting/kv_probe:2 store common shared team\n";
    let server =
        TestServer::start_with_chain(chain, &[("sandbox", sandbox), ("stores", "own embedded\ncommon embedded\n")]);
    let set = ask(&server, "a@example.com");
    assert!(set.iter().all(|l| l.contains("-> ok version=")), "{set:?}");
    let got = ask(&server, "b@example.com");
    assert_eq!(got[0], "get:own:k -> none", "another plugin's key: not there for this one");
    assert!(got[1].starts_with("get:common:k -> ok \"from-a\""), "a shared namespace: {got:?}");
}

#[test]
fn sizes_quotas_and_the_budget_are_errors_the_plugin_sees() {
    let args = "get:main:@513 set:main:k:@65537 set:main:k:v:ttl=0 3*get:main:k \
                set:tiny:a:v set:tiny:b:v set:tiny:c:v";
    let sandbox = "testing/kv_probe store main\ntesting/kv_probe store tiny\ntesting/kv_probe store-operations 6\n";
    let server = probe(args, "main embedded\ntiny embedded max-entries 2\n", sandbox);
    let mut c = server.greeted();
    let lines = ask_on(&mut c, "x@example.com");
    assert!(lines[0].starts_with("get:main:@513 -> too-large: a key of 513 octets (at most 512)"), "{lines:?}");
    assert!(lines[1].starts_with("set:main:k:@65537 -> too-large: a value of 65537 octets"), "{lines:?}");
    assert!(lines[2].starts_with("set:main:k:v:ttl=0 -> invalid:"), "{lines:?}");
    assert!(lines[3].starts_with("3*get:main:k -> 3 ok, first failure: none"), "{lines:?}");
    // Six calls made: the seventh is over the budget, and so are the rest.
    assert!(
        lines[4].starts_with("set:tiny:a:v -> over-budget: over budget: this plugin may make 6 store calls"),
        "{lines:?}"
    );
    // A transaction has a budget of its own.
    let server =
        probe("set:tiny:a:v set:tiny:b:v set:tiny:c:v", "main embedded\ntiny embedded max-entries 2\n", sandbox);
    let lines = ask(&server, "x@example.com");
    assert!(lines[1].ends_with("-> ok version=2"), "{lines:?}");
    assert!(lines[2].starts_with("set:tiny:c:v -> quota: the namespace holds 2 entries"), "{lines:?}");
    assert!(server.log().contains("store call refused: the namespace holds 2 entries"), "{}", server.log());
    let again = ask(&server, "x@example.com");
    assert!(again[0].ends_with("-> ok version=3") && again[2].contains("quota"), "{again:?}");
}

#[test]
fn two_servers_share_state_through_redis_and_survive_its_outage() {
    let mut redis = RedisServer::start();
    let stores = format!("shared redis {} timeout 500ms\n", redis.url());
    let grant = "testing/kv_probe store shared\n";
    let args =
        "set=set:shared:triplet:seen set=incr:shared:hits:1:ttl=60000 get=get:shared:triplet get=incr:shared:hits:1";
    let a = probe(args, &stores, grant);
    let b = probe(args, &stores, grant);
    let set = ask(&a, "set@example.com");
    assert!(set[0].contains("-> ok version=") && set[1].ends_with("-> ok 1"), "{set:?}");
    let got = ask(&b, "get@example.com");
    assert_eq!(got[0], format!("get:shared:triplet -> ok \"seen\" version={} expires-in=never", version(&set[0])));
    assert_eq!(got[1], "incr:shared:hits:1 -> ok 2", "one counter for both servers");
    // Redis down: each server's calls fail at once with backend-unavailable, and it logs so.
    redis.stop();
    for server in [&a, &b] {
        let started = Instant::now();
        let lines = ask(server, "get@example.com");
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        assert!(lines.iter().all(|l| l.contains("-> backend-unavailable: Redis at")), "{lines:?}");
        assert!(server.log().contains("key-value store down"), "{}", server.log());
    }
    // Back: both use it again (it kept nothing: no persistence in the test's Redis).
    redis.restart();
    for server in [&a, &b] {
        let started = Instant::now();
        let lines = loop {
            let lines = ask(server, "get@example.com");
            if !lines[0].contains("backend-unavailable") || started.elapsed() > Duration::from_secs(5) {
                break lines;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(lines[0], "get:shared:triplet -> none", "{lines:?}");
        assert!(server.log().contains("key-value store back"), "{}", server.log());
    }
}

#[test]
fn a_store_that_stops_answering_times_out_within_the_hooks_time() {
    let redis = RedisServer::start();
    // The store would wait 10 s; the plugin's hook may take 600 ms.
    let stores = format!("slow redis {} timeout 10s\n", redis.url());
    let server = probe("get:slow:k", &stores, "testing/kv_probe store slow\ntesting/kv_probe timeout 600ms\n");
    assert_eq!(ask(&server, "x@example.com"), ["get:slow:k -> none"]);
    redis.signal("STOP");
    let started = Instant::now();
    let lines = ask(&server, "x@example.com");
    let took = started.elapsed();
    redis.signal("CONT");
    // The call ends with a tenth of the hook's time left to act: the plugin answers, no fault.
    assert_eq!(lines, ["get:slow:k -> timeout"]);
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(1), "{took:?}");
    assert!(!server.log().contains("fault"), "{}", server.log());
}
