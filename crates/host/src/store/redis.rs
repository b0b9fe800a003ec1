//! The Redis (or Valkey) store (work in progress).

use std::time::Duration;

use tokio::time::Instant;

use super::{Condition, Entry, Store, StoreError};

/// A Redis store of `config/stores`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://HOST:PORT[/DB]`.
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
        return Err(format!("`{url}` is not a Redis URL (redis://HOST:PORT[/DB])"));
    }
    ::redis::Client::open(url).map(|_| ()).map_err(|e| format!("`{url}` is not a Redis URL: {e}"))
}

/// Whether `prefix` may go before keys: at most 64 visible ASCII characters, no `{` or `}`
/// (the namespace after it is the key's hash tag).
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    match prefix.len() <= 64 && prefix.bytes().all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}') {
        true => Ok(()),
        false => Err(format!("prefix `{prefix}`: at most 64 visible ASCII characters, without `{{` or `}}`")),
    }
}

pub struct Redis;

impl Redis {
    pub fn open(_name: &str, _settings: &RedisSettings, _timeout: Duration) -> Result<Redis, String> {
        Err("the Redis backend is not there yet".into())
    }
}

#[async_trait::async_trait]
impl Store for Redis {
    fn timeout(&self) -> Duration {
        Duration::ZERO
    }
    async fn get(&self, _: &str, _: &str, _: Instant) -> Result<Option<Entry>, StoreError> {
        Err(StoreError::Unavailable("no".into()))
    }
    async fn set(
        &self,
        _: &str,
        _: &str,
        _: Vec<u8>,
        _: Option<Duration>,
        _: Condition,
        _: Instant,
    ) -> Result<u64, StoreError> {
        Err(StoreError::Unavailable("no".into()))
    }
    async fn delete(&self, _: &str, _: &str, _: Option<u64>, _: Instant) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable("no".into()))
    }
    async fn increment(&self, _: &str, _: &str, _: i64, _: Option<Duration>, _: Instant) -> Result<i64, StoreError> {
        Err(StoreError::Unavailable("no".into()))
    }
}
