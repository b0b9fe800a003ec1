//! What one key-value store operation costs, as a plugin's call waits for it (the host's
//! checks aside): p50 and p99 of get, set and increment on the embedded store, and on Redis
//! when a URL is given.
//!
//! `cargo run --release -p wasmtpd-host --example store_latency [redis://127.0.0.1:PORT]`
//!
//! Run on a worker-like runtime (one thread). The embedded store runs twice: with its default
//! `sync-every 1s` (a write is answered once committed, fsynced within a second) and with
//! `sync-every 0` (each write waits for its own fsync: one at a time here; under load, writes
//! queued together share one), so the two are compared in one run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtpd_host::store::embedded::{Embedded, EmbeddedSettings};
use wasmtpd_host::store::redis::{Redis, RedisSettings};
use wasmtpd_host::store::{Condition, Store};

const ROUNDS: usize = 2000;

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    format!("p50 {:>8.1} µs  p99 {:>8.1} µs", at(0.5).as_secs_f64() * 1e6, at(0.99).as_secs_f64() * 1e6)
}

async fn measure(name: &str, store: Arc<dyn Store>) {
    let deadline = || tokio::time::Instant::now() + Duration::from_secs(5);
    let ns = "plugin:bench";
    for i in 0..100 {
        store.set(ns, &format!("k{i}"), b"192.0.2.1".to_vec(), None, Condition::Always, deadline()).await.unwrap();
    }
    let mut gets = Vec::new();
    for i in 0..ROUNDS {
        let t = Instant::now();
        store.get(ns, &format!("k{}", i % 100), deadline()).await.unwrap();
        gets.push(t.elapsed());
    }
    // The same read by way of tokio's blocking pool, as the embedded store read before: what
    // the hop costs (the read itself is the same).
    let mut pooled = Vec::new();
    for i in 0..ROUNDS {
        let t = Instant::now();
        let key = format!("k{}", i % 100);
        let hop = tokio::task::spawn_blocking(|| ()).await;
        store.get(ns, &key, deadline()).await.unwrap();
        hop.unwrap();
        pooled.push(t.elapsed());
    }
    let mut sets = Vec::new();
    for i in 0..ROUNDS / 4 {
        let t = Instant::now();
        let ttl = Some(Duration::from_secs(3600));
        store.set(ns, &format!("s{i}"), b"white".to_vec(), ttl, Condition::Always, deadline()).await.unwrap();
        sets.push(t.elapsed());
    }
    let mut incrs = Vec::new();
    for _ in 0..ROUNDS / 4 {
        let t = Instant::now();
        store.increment(ns, "count", 1, Some(Duration::from_secs(60)), deadline()).await.unwrap();
        incrs.push(t.elapsed());
    }
    // 64 increments at once: what a busy server's writes cost when they share commits.
    let t = Instant::now();
    let many: Vec<_> = (0..ROUNDS / 4)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.increment(ns, &format!("c{}", i % 64), 1, None, deadline()).await })
        })
        .collect();
    for m in many {
        m.await.unwrap().unwrap();
    }
    let concurrent = t.elapsed() / (ROUNDS as u32 / 4);
    println!("{name:>8} get        {}", percentiles(gets));
    println!("{name:>8} get+pool   {}", percentiles(pooled));
    println!("{name:>8} set        {}", percentiles(sets));
    println!("{name:>8} increment  {}", percentiles(incrs));
    println!("{name:>8} increment, {} at once: {:.1} µs each", ROUNDS / 4, concurrent.as_secs_f64() * 1e6);
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = std::env::temp_dir().join(format!("wasmtpd-store-latency-{}", std::process::id()));
    runtime.block_on(async {
        let embedded =
            Embedded::open("bench", &dir.join("bench.redb"), &EmbeddedSettings::default(), Duration::from_secs(5));
        measure("embedded", Arc::new(embedded.unwrap())).await;
        let synced = EmbeddedSettings { sync_every: Duration::ZERO, ..EmbeddedSettings::default() };
        let embedded = Embedded::open("bench", &dir.join("synced.redb"), &synced, Duration::from_secs(5));
        measure("embedded-sync0", Arc::new(embedded.unwrap())).await;
        if let Some(url) = std::env::args().nth(1) {
            let redis = Redis::open("bench", &RedisSettings::new(&url), Duration::from_secs(5)).unwrap();
            measure("redis", Arc::new(redis)).await;
        }
    });
    let _ = std::fs::remove_dir_all(dir);
}
