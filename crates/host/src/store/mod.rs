//! The key-value stores plugins use (`wit/key-value.wit`): one trait, [`Store`], and two
//! backends behind it, chosen per store in `config/stores`:
//!
//! - `embedded.rs`: a redb database under the state directory, ACID (every write is durable
//!   when it returns, and survives a restart or `kill -9`), with expiry, per-namespace quotas,
//!   and its blocking work on a thread of its own;
//! - `redis.rs`: Redis or Valkey, shared by several servers, with the atomic operations as Lua
//!   scripts and each namespace in one hash slot.
//!
//! A backend knows nothing of plugins: it is given a namespace (whose keys are the plugin's,
//! or a shared namespace's, see `sandbox::StoreGrant`), a key, and a deadline; the checks of a
//! call's arguments are here ([`check_key`], [`check_value`], [`check_ttl`]), made by the
//! host module (`imports/key_value.rs`) before a backend is asked.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub mod embedded;
pub mod redis;

/// Longest key, in octets.
pub const MAX_KEY: usize = 512;
/// Largest value, in octets.
pub const MAX_VALUE: usize = 64 << 10;
/// Longest time to live.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Longest namespace name (a plugin's instance name, or a shared namespace's name).
pub const MAX_NAMESPACE: usize = 128;

/// Why an operation was not done (the WIT's `store-error`, without the host's own refusals).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("over quota: {0}")]
    Quota(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("the condition did not hold")]
    Conflict,
    #[error("not an integer")]
    NotAnInteger,
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    #[error("timeout")]
    Timeout,
}

/// An entry as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub version: u64,
    /// Time left before it expires; `None`: it does not.
    pub expires_in: Option<Duration>,
}

/// When a write may be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Always,
    IfAbsent,
    IfVersion(u64),
}

/// A key-value store. Every operation is atomic, answers by `deadline` (else
/// [`StoreError::Timeout`]), and works within one namespace: keys of different namespaces
/// never meet.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The store's own time limit per operation (`timeout` in `config/stores`); the caller's
    /// deadline is at most this far away.
    fn timeout(&self) -> Duration;

    async fn get(&self, namespace: &str, key: &str, deadline: Instant) -> Result<Option<Entry>, StoreError>;

    /// Writes the entry whole if `condition` holds; its new version.
    async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        condition: Condition,
        deadline: Instant,
    ) -> Result<u64, StoreError>;

    /// Whether there was an entry; with `if_version`, [`StoreError::Conflict`] unless it was at it.
    async fn delete(
        &self,
        namespace: &str,
        key: &str,
        if_version: Option<u64>,
        deadline: Instant,
    ) -> Result<bool, StoreError>;

    /// Adds `delta` to the integer in the entry (made with the value `delta` and expiring after
    /// `ttl` if absent); the sum.
    async fn increment(
        &self,
        namespace: &str,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
        deadline: Instant,
    ) -> Result<i64, StoreError>;
}

/// The stores the server runs, by name (those of `config/stores` granted to some plugin).
pub type Stores = BTreeMap<String, Arc<dyn Store>>;

/// A store of `config/stores`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Its name, which `store NAME` in `config/sandbox` grants.
    pub name: String,
    pub backend: Backend,
    /// Its time limit per operation. Default 1 s.
    pub timeout: Duration,
    /// Where it was defined, for error messages.
    pub origin: crate::sandbox::Origin,
}

/// Where a store keeps its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Embedded(embedded::EmbeddedSettings),
    Redis(redis::RedisSettings),
}

/// The default time limit of a store's operation: far more than a disk write or a round trip
/// to a Redis nearby take, and short against a hook's time.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// The range of `timeout` in `config/stores`.
pub const TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> = Duration::from_millis(1)..=Duration::from_secs(60);

/// Whether `name` may name a store: 1 to 64 of `a-z`, `0-9`, `_`, `-`, starting with a letter.
pub fn check_store_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    match ok {
        true => Ok(()),
        false => Err(format!("`{name}` is not a store name (1 to 64 of a-z, 0-9, `_`, `-`, starting with a letter)")),
    }
}

/// Whether `name` may name a namespace: 1 to [`MAX_NAMESPACE`] of letters, digits and
/// `_ - . : / =` (never `{`, `}` or a NUL, which separate it from keys in the backends).
pub fn check_namespace(name: &str) -> Result<(), String> {
    let ok = (1..=MAX_NAMESPACE).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:/=".contains(&b));
    match ok {
        true => Ok(()),
        false => Err(format!(
            "`{}` cannot name a namespace (1 to {MAX_NAMESPACE} of letters, digits, `_ - . : / =`)",
            name.escape_debug()
        )),
    }
}

pub fn check_key(key: &str) -> Result<(), StoreError> {
    match key.len() {
        0 => Err(StoreError::Invalid("an empty key".into())),
        n if n > MAX_KEY => Err(StoreError::TooLarge(format!("a key of {n} octets (at most {MAX_KEY})"))),
        _ => Ok(()),
    }
}

pub fn check_value(value: &[u8]) -> Result<(), StoreError> {
    match value.len() {
        n if n > MAX_VALUE => Err(StoreError::TooLarge(format!("a value of {n} octets (at most {MAX_VALUE})"))),
        _ => Ok(()),
    }
}

/// A time to live in milliseconds, as the WIT gives it.
pub fn check_ttl(ttl_ms: Option<u64>) -> Result<Option<Duration>, StoreError> {
    match ttl_ms.map(Duration::from_millis) {
        Some(Duration::ZERO) => Err(StoreError::Invalid("a ttl-ms of 0 (delete the key instead)".into())),
        Some(t) if t > MAX_TTL => {
            Err(StoreError::Invalid(format!("a ttl-ms of {} (at most {})", t.as_millis(), MAX_TTL.as_millis())))
        }
        ttl => Ok(ttl),
    }
}

/// The integer a value holds, as `increment` reads it: decimal ASCII, an optional `-`.
pub fn parse_integer(value: &[u8]) -> Option<i64> {
    let digits = value.strip_prefix(b"-").unwrap_or(value);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Opens the stores `settings` define (embedded ones under `state_dir/stores/`). An error
/// names the store.
pub fn open(settings: &[StoreSettings], state_dir: &Path) -> Result<Stores, String> {
    let mut stores = Stores::new();
    for s in settings {
        let store: Arc<dyn Store> = match &s.backend {
            Backend::Embedded(e) => {
                let path = state_dir.join("stores").join(format!("{}.redb", s.name));
                Arc::new(
                    embedded::Embedded::open(&s.name, &path, e, s.timeout)
                        .map_err(|e| format!("store `{}`: {e}", s.name))?,
                )
            }
            Backend::Redis(r) => {
                Arc::new(redis::Redis::open(&s.name, r, s.timeout).map_err(|e| format!("store `{}`: {e}", s.name))?)
            }
        };
        stores.insert(s.name.clone(), store);
    }
    Ok(stores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_bounded() {
        assert!(check_key("k").is_ok());
        assert!(matches!(check_key(""), Err(StoreError::Invalid(_))));
        assert!(matches!(check_key(&"k".repeat(MAX_KEY + 1)), Err(StoreError::TooLarge(_))));
        assert!(check_value(&vec![0; MAX_VALUE]).is_ok());
        assert!(matches!(check_value(&vec![0; MAX_VALUE + 1]), Err(StoreError::TooLarge(_))));
        assert_eq!(check_ttl(None), Ok(None));
        assert_eq!(check_ttl(Some(1500)), Ok(Some(Duration::from_millis(1500))));
        assert!(matches!(check_ttl(Some(0)), Err(StoreError::Invalid(_))));
        assert!(matches!(check_ttl(Some(MAX_TTL.as_millis() as u64 + 1)), Err(StoreError::Invalid(_))));
        for good in ["plugin:greylisting", "plugin:rcpt_ok:2", "shared:reputation", "plugin:queue/maildir"] {
            assert!(check_namespace(good).is_ok(), "{good}");
        }
        for bad in ["", "a{b}", "a}b", "a\0b", "a b", &"n".repeat(MAX_NAMESPACE + 1)] {
            assert!(check_namespace(bad).is_err(), "{bad:?}");
        }
        assert!(check_store_name("main").is_ok() && check_store_name("grey-list_2").is_ok());
        for bad in ["", "Main", "2nd", "a.b", &"s".repeat(65)] {
            assert!(check_store_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn integers_as_increment_reads_them() {
        assert_eq!(parse_integer(b"42"), Some(42));
        assert_eq!(parse_integer(b"-7"), Some(-7));
        assert_eq!(parse_integer(b"9223372036854775807"), Some(i64::MAX));
        for bad in [&b""[..], b"-", b"+1", b" 1", b"1.5", b"9223372036854775808", b"x"] {
            assert_eq!(parse_integer(bad), None, "{bad:?}");
        }
    }
}
