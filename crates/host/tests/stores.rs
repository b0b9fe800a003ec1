//! The key-value stores' two backends against the same tests (`behaves_as_a_store`): the
//! embedded store, and a real `redis-server` (Debian's package, which `cargo xtask test`
//! installs). Each Redis test starts a private redis-server on a loopback port of its own, with
//! a config directory of its own and no persistence, and stops it by its PID. Then what only
//! Redis has: a Redis that dies, one that is down from the start, one that stops answering
//! (SIGSTOP), and Redis's view of the keys (namespaces, hash tags).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use wasmtpd_host::store::embedded::{Embedded, EmbeddedSettings};
use wasmtpd_host::store::redis::{PROBE_EVERY, Redis, RedisSettings};
use wasmtpd_host::store::{Condition, Store, StoreError};

fn temp_dir(what: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "wasmtpd-stores-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The tests' private redis-server (shared with the end-to-end tests).
#[path = "../../../tests/src/redis.rs"]
mod redis_server;
use redis_server::{RedisServer, free_port};

/// A plain client, to look at what a store wrote.
fn client(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url()).unwrap().get_connection().unwrap()
}

/// The log lines of every test of this binary (the stores log from threads of their own).
fn log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        struct Writer(Arc<Mutex<Vec<u8>>>);
        impl Write for Writer {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().write(b)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let b = buffer.clone();
        tracing_subscriber::fmt().with_ansi(false).with_writer(move || Writer(b.clone())).init();
        buffer
    })
    .clone()
}

/// The log lines that name store `name`.
fn log_of(name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(&log().lock().unwrap()).to_string();
    text.lines().filter(|l| l.contains(&format!("store={name} "))).map(str::to_string).collect()
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(2)
}

const NS: &str = "plugin:probe";

/// What every backend does the same: versions and conditions, namespaces, expiry, increments,
/// binary values.
async fn behaves_as_a_store(s: &dyn Store) {
    // Compare-and-swap.
    assert_eq!(s.get(NS, "k", soon()).await, Ok(None));
    let v1 = s.set(NS, "k", b"one".to_vec(), None, Condition::IfAbsent, soon()).await.unwrap();
    assert_eq!(s.set(NS, "k", b"x".to_vec(), None, Condition::IfAbsent, soon()).await, Err(StoreError::Conflict));
    let e = s.get(NS, "k", soon()).await.unwrap().unwrap();
    assert_eq!((e.value.as_slice(), e.version, e.expires_in), (&b"one"[..], v1, None));
    let v2 = s.set(NS, "k", b"two".to_vec(), None, Condition::IfVersion(v1), soon()).await.unwrap();
    assert!(v2 > v1, "{v2} > {v1}");
    assert_eq!(s.set(NS, "k", b"x".to_vec(), None, Condition::IfVersion(v1), soon()).await, Err(StoreError::Conflict));
    assert_eq!(
        s.set(NS, "new", b"x".to_vec(), None, Condition::IfVersion(v1), soon()).await,
        Err(StoreError::Conflict)
    );
    assert_eq!(s.get(NS, "k", soon()).await.unwrap().unwrap().value, b"two");
    // Delete, with and without a version; a version is never given again.
    assert_eq!(s.delete(NS, "k", Some(v1), soon()).await, Err(StoreError::Conflict));
    assert_eq!(s.delete(NS, "k", Some(v2), soon()).await, Ok(true));
    assert_eq!(s.delete(NS, "k", None, soon()).await, Ok(false));
    assert_eq!(s.delete(NS, "k", Some(v2), soon()).await, Err(StoreError::Conflict));
    let v3 = s.set(NS, "k", b"three".to_vec(), None, Condition::Always, soon()).await.unwrap();
    assert!(v3 > v2);
    // Namespaces never meet.
    assert_eq!(s.get("plugin:other", "k", soon()).await, Ok(None));
    s.set("shared:reputation", "k", b"shared".to_vec(), None, Condition::Always, soon()).await.unwrap();
    assert_eq!(s.get(NS, "k", soon()).await.unwrap().unwrap().value, b"three");
    // Binary and empty values.
    let binary: Vec<u8> = (0..=255).collect();
    s.set(NS, "bin", binary.clone(), None, Condition::Always, soon()).await.unwrap();
    assert_eq!(s.get(NS, "bin", soon()).await.unwrap().unwrap().value, binary);
    s.set(NS, "empty", Vec::new(), None, Condition::Always, soon()).await.unwrap();
    assert_eq!(s.get(NS, "empty", soon()).await.unwrap().unwrap().value, b"");
    // Expiry, and a set that replaces a TTL with none.
    let short = Some(Duration::from_millis(200));
    s.set(NS, "short", b"v".to_vec(), short, Condition::Always, soon()).await.unwrap();
    s.set(NS, "kept", b"v".to_vec(), short, Condition::Always, soon()).await.unwrap();
    s.set(NS, "kept", b"w".to_vec(), None, Condition::Always, soon()).await.unwrap();
    let left = s.get(NS, "short", soon()).await.unwrap().unwrap().expires_in.expect("a TTL");
    assert!(left > Duration::ZERO && left <= Duration::from_millis(200), "{left:?}");
    // Increments: made with the TTL, which later increments keep.
    assert_eq!(s.increment(NS, "count", 1, short, soon()).await, Ok(1));
    assert_eq!(s.increment(NS, "count", 41, Some(Duration::from_secs(3600)), soon()).await, Ok(42));
    assert_eq!(s.increment(NS, "count", -50, None, soon()).await, Ok(-8));
    let e = s.get(NS, "count", soon()).await.unwrap().unwrap();
    assert_eq!(e.value, b"-8");
    assert!(e.expires_in.is_some_and(|t| t <= Duration::from_millis(200)), "{:?}", e.expires_in);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.get(NS, "short", soon()).await, Ok(None), "expired");
    assert_eq!(s.get(NS, "kept", soon()).await.unwrap().unwrap().value, b"w", "the TTL went with the old value");
    assert_eq!(s.set(NS, "short", b"v".to_vec(), None, Condition::IfAbsent, soon()).await.map(|_| ()), Ok(()));
    assert_eq!(s.increment(NS, "count", 1, short, soon()).await, Ok(1), "a new window");
    // Not integers, and overflows: refused, nothing written.
    s.set(NS, "word", b"ten".to_vec(), None, Condition::Always, soon()).await.unwrap();
    assert_eq!(s.increment(NS, "word", 1, None, soon()).await, Err(StoreError::NotAnInteger));
    s.set(NS, "max", i64::MAX.to_string().into_bytes(), None, Condition::Always, soon()).await.unwrap();
    assert_eq!(s.increment(NS, "max", 1, None, soon()).await, Err(StoreError::NotAnInteger));
    assert_eq!(s.increment(NS, "max", -1, None, soon()).await, Ok(i64::MAX - 1));
    assert_eq!(s.increment(NS, "neg", i64::MIN, None, soon()).await, Ok(i64::MIN));
    assert_eq!(s.increment(NS, "neg", -1, None, soon()).await, Err(StoreError::NotAnInteger));
}

/// 8 tasks × 50 increments of one counter, on a runtime with several threads: every sum is
/// seen once, and the count is exact.
async fn concurrent_increments_are_exact(s: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..50 {
                    seen.push(s.increment(NS, "hits", 1, Some(Duration::from_secs(60)), soon()).await.unwrap());
                }
                seen
            })
        })
        .collect();
    let mut seen: Vec<i64> = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap());
    }
    seen.sort();
    assert_eq!(seen, (1..=400).collect::<Vec<_>>());
    assert_eq!(s.get(NS, "hits", soon()).await.unwrap().unwrap().value, b"400");
}

fn embedded(dir: &Path) -> Embedded {
    Embedded::open("embedded", &dir.join("store.redb"), &EmbeddedSettings::default(), Duration::from_secs(2)).unwrap()
}

#[tokio::test]
async fn the_embedded_store_behaves_as_a_store() {
    let dir = temp_dir("embedded");
    behaves_as_a_store(&embedded(&dir)).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_embedded_store_counts_exactly() {
    let dir = temp_dir("embedded");
    concurrent_increments_are_exact(Arc::new(embedded(&dir))).await;
    let _ = std::fs::remove_dir_all(dir);
}

fn redis_store(name: &str, url: &str, timeout: Duration) -> Redis {
    let _ = log();
    Redis::open(name, &RedisSettings::new(url), timeout).unwrap()
}

#[tokio::test]
async fn the_redis_store_behaves_as_a_store() {
    let server = RedisServer::start();
    behaves_as_a_store(&redis_store("behaves", &server.url(), Duration::from_secs(2))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_redis_store_counts_exactly() {
    let server = RedisServer::start();
    concurrent_increments_are_exact(Arc::new(redis_store("counts", &server.url(), Duration::from_secs(2)))).await;
}

#[tokio::test]
async fn redis_keys_carry_the_prefix_and_the_namespace_as_hash_tag() {
    let server = RedisServer::start();
    let mut settings = RedisSettings::new(&server.url());
    settings.prefix = "mx:".into();
    let s = Redis::open("keys", &settings, Duration::from_secs(2)).unwrap();
    s.set(
        "plugin:greylisting",
        "192.0.2.1/a@b/c@d",
        b"v".to_vec(),
        Some(Duration::from_secs(60)),
        Condition::Always,
        soon(),
    )
    .await
    .unwrap();
    s.increment("shared:reputation", "192.0.2.1", 3, None, soon()).await.unwrap();
    let mut c = client(&server);
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "mx:{plugin:greylisting}#v",
            "mx:{plugin:greylisting}:192.0.2.1/a@b/c@d",
            "mx:{shared:reputation}#v",
            "mx:{shared:reputation}:192.0.2.1"
        ]
    );
    // Redis keeps the expiry itself; a counter without a TTL has none.
    let ttl: i64 = redis::cmd("PTTL").arg("mx:{plugin:greylisting}:192.0.2.1/a@b/c@d").query(&mut c).unwrap();
    assert!(ttl > 50_000 && ttl <= 60_000, "{ttl}");
    let ttl: i64 = redis::cmd("PTTL").arg("mx:{shared:reputation}:192.0.2.1").query(&mut c).unwrap();
    assert_eq!(ttl, -1);
}

#[tokio::test]
async fn every_operation_stays_in_one_cluster_slot() {
    let server = RedisServer::start_cluster();
    let mut c = client(&server);
    // The cluster refuses a script over two slots, as it would our operations without the
    // namespace as hash tag...
    let crossing: Result<(), _> = redis::cmd("EVAL")
        .arg("return redis.call('GET', KEYS[2])")
        .arg(2)
        .arg("wasmtpd:a")
        .arg("wasmtpd:b")
        .query(&mut c);
    assert!(crossing.as_ref().is_err_and(|e| e.to_string().contains("same slot")), "{crossing:?}");
    // ...and takes every one of ours.
    behaves_as_a_store(&redis_store("cluster", &server.url(), Duration::from_secs(2))).await;
    let slot = |k: &str| -> i64 { redis::cmd("CLUSTER").arg("KEYSLOT").arg(k).query(&mut client(&server)).unwrap() };
    assert_eq!(slot("wasmtpd:{plugin:probe}#v"), slot("wasmtpd:{plugin:probe}:count"));
}

/// Waits (bounded) until `s` answers a get again.
async fn until_back(s: &dyn Store, within: Duration) -> Duration {
    let started = std::time::Instant::now();
    loop {
        match s.get(NS, "k", soon()).await {
            Ok(_) => return started.elapsed(),
            Err(StoreError::Unavailable(_)) if started.elapsed() < within => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            r => panic!("not back within {within:?}: {r:?}"),
        }
    }
}

#[tokio::test]
async fn a_redis_that_dies_fails_calls_at_once_and_is_used_again_once_back() {
    let mut server = RedisServer::start();
    let s = redis_store("dies", &server.url(), Duration::from_secs(2));
    s.set(NS, "k", b"v".to_vec(), None, Condition::Always, soon()).await.unwrap();
    server.stop();
    // The first call sees the connection fail; every call after fails at once.
    let started = std::time::Instant::now();
    let first = s.get(NS, "k", soon()).await;
    assert!(matches!(first, Err(StoreError::Unavailable(_))), "{first:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    for _ in 0..100 {
        let started = std::time::Instant::now();
        let r = s.increment(NS, "n", 1, None, soon()).await;
        assert!(matches!(&r, Err(StoreError::Unavailable(e)) if e.contains("is down")), "{r:?}");
        assert!(started.elapsed() < Duration::from_millis(50), "{:?}", started.elapsed());
    }
    assert_eq!(log_of("dies").iter().filter(|l| l.contains("key-value store down")).count(), 1, "{:?}", log_of("dies"));
    server.restart();
    let waited = until_back(&s, Duration::from_secs(5)).await;
    assert!(waited <= PROBE_EVERY * 4, "{waited:?}");
    assert_eq!(s.increment(NS, "n", 1, None, soon()).await, Ok(1), "nothing was written while down");
    let lines = log_of("dies");
    assert!(lines.iter().any(|l| l.contains("key-value store back")), "{lines:?}");
}

#[tokio::test]
async fn a_redis_down_from_the_start_is_used_once_it_is_up() {
    // A port with nothing on it (yet).
    let port = free_port();
    let s = redis_store("late", &format!("redis://127.0.0.1:{port}"), Duration::from_secs(2));
    let started = std::time::Instant::now();
    let r = s.set(NS, "k", b"v".to_vec(), None, Condition::Always, soon()).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    let mut server = RedisServer::stopped(port);
    assert!(server.run(), "redis-server on port {port}");
    until_back(&s, Duration::from_secs(5)).await;
    s.set(NS, "k", b"v".to_vec(), None, Condition::Always, soon()).await.unwrap();
    let lines = log_of("late");
    assert!(lines.iter().any(|l| l.contains("key-value store down")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("key-value store back")), "{lines:?}");
}

#[tokio::test]
async fn a_redis_that_stops_answering_times_out_by_the_deadline() {
    let server = RedisServer::start();
    let s = redis_store("hangs", &server.url(), Duration::from_millis(300));
    s.set(NS, "k", b"v".to_vec(), None, Condition::Always, soon()).await.unwrap();
    server.signal("STOP");
    let started = std::time::Instant::now();
    let r = s.get(NS, "k", Instant::now() + Duration::from_millis(100)).await;
    assert_eq!(r, Err(StoreError::Timeout));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(100) && took < Duration::from_millis(200), "{took:?}");
    // Past the connection's own timeout the store knows it is down, and fails at once.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = s.get(NS, "k", soon()).await;
    assert!(matches!(&r, Err(StoreError::Unavailable(e)) if e.contains("is down")), "{r:?}");
    server.signal("CONT");
    until_back(&s, Duration::from_secs(5)).await;
    assert_eq!(s.get(NS, "k", soon()).await.unwrap().unwrap().value, b"v");
}
