//! The Redis (or Valkey: the same protocol) store, which several servers can share.
//!
//! Keys: `PREFIX{NAMESPACE}:KEY` for an entry, a hash of its value (`v`) and version (`n`)
//! with Redis's own expiry; `PREFIX{NAMESPACE}#v` for the namespace's version counter. The
//! namespace in braces is the hash tag: every key of a namespace is in one Redis Cluster slot,
//! so each operation, which touches an entry and its namespace's counter, stays in one. A
//! namespace has no braces (`store::check_namespace`), nor has the prefix, so the first `}`
//! ends the namespace and keys of different namespaces never meet.
//!
//! Operations: each is one Lua script (`EVALSHA`, loaded on first use), which Redis runs
//! atomically: a condition and its write, or an increment, its version and its expiry, are one
//! step, whoever else writes. (Redis 7.0 or later, or Valkey.)
//!
//! Connections: `pool` multiplexed connections (each carries many operations at once), made
//! lazily and made again after a failure by the client's connection manager; their tasks run
//! on a runtime of the store's own, so they do not depend on any worker. Every operation is
//! bounded by its deadline. When Redis fails to answer (refused, dropped, timed out), the
//! store is down: the log says so once, calls fail at once with `Unavailable` (never waiting
//! on a dead connection), and a probe pings Redis every [`PROBE_EVERY`] until it answers
//! again; then the log says it is back and calls go through again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};
use tokio::time::Instant;

use super::{Condition, Entry, Store, StoreError};

/// How often a store that is down pings Redis.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);

/// A Redis store of `config/stores`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://HOST:PORT[/DB]` (or `rediss://` for TLS; a password as `redis://:PASSWORD@HOST`).
    pub url: String,
    /// Connections to keep open (each carries many operations at once). Default 2.
    pub pool: usize,
    /// Put before every key. Default `wasmtpd:`.
    pub prefix: String,
}

impl RedisSettings {
    /// The settings of a store at `url`, with the default pool and prefix.
    pub fn new(url: &str) -> RedisSettings {
        RedisSettings { url: url.to_string(), pool: 2, prefix: "wasmtpd:".into() }
    }
}

/// Whether `url` is a Redis URL the client can use (`redis://HOST:PORT[/DB]`, `rediss://`).
pub fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(format!("`{}` is not a Redis URL (redis://HOST:PORT[/DB])", shown_url(url)));
    }
    redis::Client::open(url).map(|_| ()).map_err(|e| format!("`{}` is not a Redis URL: {e}", shown_url(url)))
}

/// Whether `prefix` may go before keys: at most 64 visible ASCII characters, no `{` or `}`
/// (the namespace after it is the key's hash tag).
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    match prefix.len() <= 64 && prefix.bytes().all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}') {
        true => Ok(()),
        false => Err(format!("prefix `{prefix}`: at most 64 visible ASCII characters, without `{{` or `}}`")),
    }
}

/// A URL as it may be logged: without a password.
fn shown_url(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://{host}"),
        _ => url.to_string(),
    }
}

/// A Redis store. Dropping it closes its connections.
pub struct Redis {
    link: Arc<Link>,
    /// The store's own runtime, which runs its connections and probe.
    runtime: Option<tokio::runtime::Runtime>,
    timeout: Duration,
}

/// What the operations share: the connections, the scripts, whether Redis is down.
struct Link {
    name: String,
    url: String,
    prefix: String,
    pool: Vec<ConnectionManager>,
    next: AtomicUsize,
    scripts: Scripts,
    down: AtomicBool,
    /// When it went down (for the log line that says it is back).
    down_since: std::sync::Mutex<Option<std::time::Instant>>,
    runtime: tokio::runtime::Handle,
}

struct Scripts {
    get: Script,
    set: Script,
    delete: Script,
    increment: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            // KEYS: the entry. An array of the value, the version and the milliseconds left
            // (-1: no expiry), or nil.
            get: Script::new(
                r"
                local r = redis.call('HMGET', KEYS[1], 'v', 'n')
                if not r[1] then return false end
                return {r[1], r[2], redis.call('PTTL', KEYS[1])}
                ",
            ),
            // KEYS: the entry, the counter. ARGV: the value, the TTL in ms (0: none), the
            // condition (always, absent, version) and the version. The new version, or 0 if
            // the condition did not hold. (Numbers stay strings: Lua's are doubles.)
            set: Script::new(
                r"
                if ARGV[3] == 'absent' then
                    if redis.call('EXISTS', KEYS[1]) == 1 then return '0' end
                elseif ARGV[3] == 'version' then
                    if redis.call('HGET', KEYS[1], 'n') ~= ARGV[4] then return '0' end
                end
                redis.call('INCR', KEYS[2])
                local n = redis.call('GET', KEYS[2])
                redis.call('DEL', KEYS[1])
                redis.call('HSET', KEYS[1], 'v', ARGV[1], 'n', n)
                if ARGV[2] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
                return n
                ",
            ),
            // KEYS: the entry. ARGV: the version, or ''. 1 deleted, 0 none, -1 conflict.
            delete: Script::new(
                r"
                if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'n') ~= ARGV[1] then return -1 end
                return redis.call('DEL', KEYS[1])
                ",
            ),
            // KEYS: the entry, the counter. ARGV: the delta, the TTL in ms (0: none) for a new
            // entry. The sum (a string), or nil when the value is not an integer or the sum
            // overflows (HINCRBY refuses both, writing nothing).
            increment: Script::new(
                r"
                local created = redis.call('EXISTS', KEYS[1]) == 0
                local r = redis.pcall('HINCRBY', KEYS[1], 'v', ARGV[1])
                if type(r) == 'table' and r.err then return false end
                redis.call('INCR', KEYS[2])
                redis.call('HSET', KEYS[1], 'n', redis.call('GET', KEYS[2]))
                if created and ARGV[2] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
                return redis.call('HGET', KEYS[1], 'v')
                ",
            ),
        }
    }
}

impl Redis {
    /// A store on the Redis at `settings.url`. Nothing is connected yet: a first ping checks
    /// Redis in the background (and logs if it is down), and the server starts either way.
    pub fn open(name: &str, settings: &RedisSettings, timeout: Duration) -> Result<Redis, String> {
        check_url(&settings.url)?;
        check_prefix(&settings.prefix)?;
        let client = redis::Client::open(settings.url.as_str()).map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("wasmtpd-store-{name}"))
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start its runtime: {e}"))?;
        // The connection manager's tasks go to the store's runtime.
        let pool = {
            let _in_runtime = runtime.enter();
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(0);
            (0..settings.pool.max(1))
                .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), config.clone()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?
        };
        let link = Arc::new(Link {
            name: name.to_string(),
            url: shown_url(&settings.url),
            prefix: settings.prefix.clone(),
            pool,
            next: AtomicUsize::new(0),
            scripts: Scripts::new(),
            down: AtomicBool::new(false),
            down_since: Default::default(),
            runtime: runtime.handle().clone(),
        });
        let first = link.clone();
        runtime.spawn(async move {
            if let Err(e) = first.ping().await {
                first.went_down(&e);
            }
        });
        Ok(Redis { link, runtime: Some(runtime), timeout })
    }

    /// Runs `op` on a connection of the store's runtime, by `deadline`. While Redis is known to
    /// be down, fails at once. The operation goes on past a missed deadline (bounded by the
    /// connection's own timeout), so that a Redis that stopped answering is seen to be down.
    async fn run<T, F, Fut>(&self, deadline: Instant, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Link>, ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>> + Send + 'static,
    {
        if self.link.down.load(Ordering::Relaxed) {
            return Err(self.link.unavailable());
        }
        let link = self.link.clone();
        let op = op(link.clone(), link.connection());
        let task = self.link.runtime.spawn(async move { op.await.map_err(|e| link.failure(e)) });
        match tokio::time::timeout_at(deadline, task).await {
            Err(_) => Err(StoreError::Timeout),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!("the operation failed: {e}"))),
            Ok(Ok(r)) => r,
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Link {
    fn connection(&self) -> ConnectionManager {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        self.pool[n].clone()
    }

    fn entry_key(&self, namespace: &str, key: &str) -> Vec<u8> {
        format!("{}{{{namespace}}}:{key}", self.prefix).into_bytes()
    }

    fn counter_key(&self, namespace: &str) -> Vec<u8> {
        format!("{}{{{namespace}}}#v", self.prefix).into_bytes()
    }

    fn unavailable(&self) -> StoreError {
        let since = self.down_since.lock().unwrap_or_else(|e| e.into_inner()).map(|t| t.elapsed());
        let since = since.map_or(String::new(), |d| format!(" for {} s", d.as_secs()));
        StoreError::Unavailable(format!("Redis at {} is down{since}", self.url))
    }

    /// A failed operation's error; a connection failure takes the store down.
    fn failure(self: &Arc<Self>, e: RedisError) -> StoreError {
        if e.code() == Some("OOM") || e.detail().is_some_and(|d| d.contains("OOM")) {
            return StoreError::Quota(format!("Redis at {} is out of memory (maxmemory)", self.url));
        }
        if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_timeout() {
            self.went_down(&e);
            return StoreError::Unavailable(format!("Redis at {}: {e}", self.url));
        }
        StoreError::Unavailable(format!("Redis at {} failed: {e}", self.url))
    }

    /// Marks the store down (logged once) and starts the probe that brings it back.
    fn went_down(self: &Arc<Self>, e: &RedisError) {
        if self.down.swap(true, Ordering::AcqRel) {
            return;
        }
        *self.down_since.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
        tracing::warn!(
            store = %self.name,
            redis = %self.url,
            error = %e,
            "key-value store down: Redis does not answer; its calls fail with backend-unavailable until it is back"
        );
        let link = self.clone();
        self.runtime.spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                if link.ping().await.is_ok() {
                    break;
                }
            }
            let since = link.down_since.lock().unwrap_or_else(|e| e.into_inner()).take();
            link.down.store(false, Ordering::Release);
            tracing::info!(
                store = %link.name,
                redis = %link.url,
                down_ms = since.map_or(0, |t| t.elapsed().as_millis() as u64),
                "key-value store back: Redis answers again"
            );
        });
    }

    /// Pings Redis on every connection of the pool.
    async fn ping(&self) -> Result<(), RedisError> {
        for conn in &self.pool {
            let mut conn = conn.clone();
            redis::cmd("PING").query_async::<()>(&mut conn).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for Redis {
    fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn get(&self, namespace: &str, key: &str, deadline: Instant) -> Result<Option<Entry>, StoreError> {
        let namespace = namespace.to_string();
        let key = key.to_string();
        let got: Option<(Vec<u8>, u64, i64)> = self
            .run(deadline, |link: Arc<Link>, mut conn: ConnectionManager| async move {
                link.scripts.get.key(link.entry_key(&namespace, &key)).invoke_async(&mut conn).await
            })
            .await?;
        Ok(got.map(|(value, version, left)| Entry {
            value,
            version,
            expires_in: u64::try_from(left).ok().map(Duration::from_millis),
        }))
    }

    async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        condition: Condition,
        deadline: Instant,
    ) -> Result<u64, StoreError> {
        let (namespace, key) = (namespace.to_string(), key.to_string());
        let (condition, version) = match condition {
            Condition::Always => ("always", String::new()),
            Condition::IfAbsent => ("absent", String::new()),
            Condition::IfVersion(v) => ("version", v.to_string()),
        };
        let ttl = ttl.map_or(0, |t| t.as_millis() as u64);
        let version: u64 = self
            .run(deadline, |link: Arc<Link>, mut conn: ConnectionManager| async move {
                link.scripts
                    .set
                    .key(link.entry_key(&namespace, &key))
                    .key(link.counter_key(&namespace))
                    .arg(value)
                    .arg(ttl)
                    .arg(condition)
                    .arg(version)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        match version {
            0 => Err(StoreError::Conflict),
            v => Ok(v),
        }
    }

    async fn delete(
        &self,
        namespace: &str,
        key: &str,
        if_version: Option<u64>,
        deadline: Instant,
    ) -> Result<bool, StoreError> {
        let (namespace, key) = (namespace.to_string(), key.to_string());
        let version = if_version.map_or(String::new(), |v| v.to_string());
        let deleted: i64 = self
            .run(deadline, |link: Arc<Link>, mut conn: ConnectionManager| async move {
                link.scripts.delete.key(link.entry_key(&namespace, &key)).arg(version).invoke_async(&mut conn).await
            })
            .await?;
        match deleted {
            -1 => Err(StoreError::Conflict),
            n => Ok(n > 0),
        }
    }

    async fn increment(
        &self,
        namespace: &str,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
        deadline: Instant,
    ) -> Result<i64, StoreError> {
        let (namespace, key) = (namespace.to_string(), key.to_string());
        let ttl = ttl.map_or(0, |t| t.as_millis() as u64);
        let sum: Option<i64> = self
            .run(deadline, |link: Arc<Link>, mut conn: ConnectionManager| async move {
                link.scripts
                    .increment
                    .key(link.entry_key(&namespace, &key))
                    .key(link.counter_key(&namespace))
                    .arg(delta)
                    .arg(ttl)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        sum.ok_or(StoreError::NotAnInteger)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_prefixes() {
        assert!(check_url("redis://127.0.0.1:6379").is_ok());
        assert!(check_url("redis://127.0.0.1:6379/3").is_ok());
        assert!(check_url("http://127.0.0.1").is_err());
        assert!(check_url("127.0.0.1:6379").is_err());
        assert_eq!(shown_url("redis://:secret@127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
        assert!(check_url("redis://:secret@").is_err_and(|e| !e.contains("secret")));
        assert!(check_prefix("wasmtpd:").is_ok() && check_prefix("").is_ok());
        for bad in ["a{", "}", "a b", &"p".repeat(65)] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn keys_of_a_namespace_share_its_hash_tag() {
        let store = Redis::open("t", &RedisSettings::new("redis://127.0.0.1:1"), Duration::from_millis(100)).unwrap();
        let entry = store.link.entry_key("plugin:greylisting", "192.0.2.1/a@b/c@d");
        assert_eq!(entry, b"wasmtpd:{plugin:greylisting}:192.0.2.1/a@b/c@d");
        assert_eq!(store.link.counter_key("plugin:greylisting"), b"wasmtpd:{plugin:greylisting}#v");
        // A key that looks like the end of a namespace would reach another one, if namespaces
        // could hold a brace: they cannot.
        assert_eq!(store.link.entry_key("plugin:a", "}:x"), store.link.entry_key("plugin:a}:", "x"));
        assert!(super::super::check_namespace("plugin:a}:").is_err());
    }
}
