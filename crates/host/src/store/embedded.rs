//! The embedded store: a redb database in one file under the state directory
//! (`stores/NAME.redb`).
//!
//! Why redb: pure Rust (no C library to build or audit), ACID with copy-on-write B-trees (a
//! crash or `kill -9` at any point leaves the last durable commit; the file is repaired on the
//! next open), readers that never wait for the writer, one file that a second process cannot
//! open at the same time, and a small, well-kept API. fjall (an LSM tree) would write faster
//! but needs compaction tuning; SQLite would need C.
//!
//! Durability (`sync-every` in `config/stores`, default [`DEFAULT_SYNC_EVERY`]): what the
//! store keeps is counters, greylisting's triplets and their renewals, scores: a write lost
//! in a crash costs a sender one more deferral or a client a count it was not charged, never
//! a message. So a write is answered once it is committed to redb without an `fsync`
//! (`Durability::None`: atomic and seen by every later read, but not yet on the disk), and
//! the writer makes a durable commit (one `fsync` for every write since the last) at most
//! `sync-every` after the first write it has not synced, and when the store closes. A crash
//! of the process or of the machine loses at most the writes of the last `sync-every`; the
//! file is always consistent (the last durable commit). `sync-every 0`: every write is durable
//! when it is answered (an `fsync` per batch).
//!
//! Threads: a read is one redb read transaction on the caller's thread (no hop to another
//! thread: redb serves it from its page cache in microseconds, and readers never wait for the
//! writer). Writes go to one writer thread of the store's own, which takes every write queued
//! while it worked and commits them together in one transaction, then answers each; a write
//! whose caller stopped waiting before its turn is not made. A plugin waiting on the store
//! suspends only itself.
//!
//! Expiry: every entry records when it expires (wall clock, milliseconds since 1970, so it
//! carries over a restart). Reads and conditions treat an expired entry as absent (lazy
//! expiry); the writer thread deletes expired entries every [`SWEEP_EVERY`], at most
//! [`SWEEP_MAX`] per round, oldest first, through an index by expiry time, and also before
//! refusing a write for quota.
//!
//! Quotas: each namespace may hold at most `max-entries` entries and `max-bytes` octets of keys
//! and values (counted in a table as they change, expired entries included until removed).
//! A write that would take a namespace past either is [`StoreError::Quota`]; one that does not
//! grow it (an overwrite no larger) is allowed even over a quota lowered since.
//!
//! Layout (tables):
//! - `entries`: `namespace NUL key` → version (8 octets, big-endian), expiry (8; 0 = never),
//!   value;
//! - `expiry`: expiry (8, big-endian) `namespace NUL key` → ();
//! - `usage`: namespace → (entries, octets);
//! - `meta`: `"version"` → the last version given (one counter for the database, so a version
//!   is never given twice).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Condition, Entry, Store, StoreError};

const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
const EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("expiry");
const USAGE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("usage");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// How often the writer removes expired entries.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Most expired entries removed in one round (a round holds up writes while it runs).
pub const SWEEP_MAX: usize = 1000;
/// Most writes committed together.
const BATCH_MAX: usize = 256;
/// Writes that may wait for the writer; past that a write waits for room (until its deadline).
const QUEUE: usize = 4096;
/// redb's page cache: the hot part of a large greylist fits; the rest is read from the file.
const CACHE: usize = 64 << 20;
/// The longest a write waits for its `fsync` after it was answered, by default.
pub const DEFAULT_SYNC_EVERY: Duration = Duration::from_secs(1);
/// The range of `sync-every` (0: every write durable when answered).
pub const SYNC_EVERY_RANGE: std::ops::RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(60);

/// The limits of an embedded store, per namespace (`config/stores`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedSettings {
    /// Default 1 000 000: a busy greylister's triplets for its white-list time.
    pub max_entries: u64,
    /// Default 256 MiB.
    pub max_bytes: u64,
    /// The longest between a write's answer and its `fsync`; zero: none (durable when
    /// answered). Default [`DEFAULT_SYNC_EVERY`].
    pub sync_every: Duration,
}

impl Default for EmbeddedSettings {
    fn default() -> Self {
        EmbeddedSettings { max_entries: 1_000_000, max_bytes: 256 << 20, sync_every: DEFAULT_SYNC_EVERY }
    }
}

/// An embedded store. Dropping it stops its writer thread and closes the file.
pub struct Embedded {
    db: Arc<Database>,
    writes: Option<mpsc::Sender<Write>>,
    writer: Option<std::thread::JoinHandle<()>>,
    timeout: Duration,
}

/// A write for the writer thread, and where to answer.
struct Write {
    op: Op,
    reply: oneshot::Sender<Result<Done, StoreError>>,
}

enum Op {
    Set { key: Vec<u8>, value: Vec<u8>, ttl: Option<Duration>, condition: Condition },
    Delete { key: Vec<u8>, if_version: Option<u64> },
    Increment { key: Vec<u8>, delta: i64, ttl: Option<Duration> },
    Sweep,
}

enum Done {
    Version(u64),
    Deleted(bool),
    Sum(i64),
    Swept(usize),
}

impl Embedded {
    /// Opens (or creates) the database at `path`, making its directory, and starts its writer.
    pub fn open(name: &str, path: &Path, settings: &EmbeddedSettings, timeout: Duration) -> Result<Embedded, String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let db = Database::builder().set_cache_size(CACHE).create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                format!("{} is open in another process (another server on the same state directory?)", path.display())
            }
            e => format!("{}: {e}", path.display()),
        })?;
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        open_tables(&txn).map_err(|e| format!("{}: {e}", path.display()))?;
        txn.commit().map_err(|e| format!("{}: {e}", path.display()))?;
        let db = Arc::new(db);
        let (writes, queue) = mpsc::channel(QUEUE);
        let writer = Writer { db: db.clone(), settings: settings.clone(), name: name.to_string() };
        let writer = std::thread::Builder::new()
            .name(format!("wasmtpd-store-{name}"))
            .spawn(move || writer.run(queue))
            .map_err(|e| format!("cannot start its writer thread: {e}"))?;
        Ok(Embedded { db, writes: Some(writes), writer: Some(writer), timeout })
    }

    /// Removes expired entries now (at most [`SWEEP_MAX`]); how many.
    pub async fn sweep(&self, deadline: Instant) -> Result<usize, StoreError> {
        match self.write(Op::Sweep, deadline).await? {
            Done::Swept(n) => Ok(n),
            _ => unreachable!("a sweep answers Swept"),
        }
    }

    async fn write(&self, op: Op, deadline: Instant) -> Result<Done, StoreError> {
        if Instant::now() >= deadline {
            return Err(StoreError::Timeout);
        }
        let (reply, answer) = oneshot::channel();
        let writes = self.writes.as_ref().ok_or_else(|| StoreError::Unavailable("the store is closed".into()))?;
        let sent = tokio::time::timeout_at(deadline, writes.send(Write { op, reply })).await;
        match sent {
            Err(_) => return Err(StoreError::Timeout),
            Ok(Err(_)) => return Err(StoreError::Unavailable("the store's writer has stopped".into())),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Err(_) => Err(StoreError::Timeout),
            Ok(Err(_)) => Err(StoreError::Unavailable("the store's writer has stopped".into())),
            Ok(Ok(done)) => done,
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        // The writer ends once its queue is closed and empty; then the file can be opened again.
        self.writes = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

#[async_trait::async_trait]
impl Store for Embedded {
    fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn get(&self, namespace: &str, key: &str, deadline: Instant) -> Result<Option<Entry>, StoreError> {
        if Instant::now() >= deadline {
            return Err(StoreError::Timeout);
        }
        // On this thread: a hop to the blocking pool cost more than the read (see the top).
        read(&self.db, &entry_key(namespace, key), now_ms()).map_err(unavailable)
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
        let op = Op::Set { key: entry_key(namespace, key), value, ttl, condition };
        match self.write(op, deadline).await? {
            Done::Version(v) => Ok(v),
            _ => unreachable!("a set answers Version"),
        }
    }

    async fn delete(
        &self,
        namespace: &str,
        key: &str,
        if_version: Option<u64>,
        deadline: Instant,
    ) -> Result<bool, StoreError> {
        match self.write(Op::Delete { key: entry_key(namespace, key), if_version }, deadline).await? {
            Done::Deleted(d) => Ok(d),
            _ => unreachable!("a delete answers Deleted"),
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
        match self.write(Op::Increment { key: entry_key(namespace, key), delta, ttl }, deadline).await? {
            Done::Sum(n) => Ok(n),
            _ => unreachable!("an increment answers Sum"),
        }
    }
}

fn unavailable(e: redb::Error) -> StoreError {
    StoreError::Unavailable(format!("the database failed: {e}"))
}

/// `namespace NUL key`: a namespace has no NUL (`check_namespace`), so the first NUL ends it.
fn entry_key(namespace: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(namespace.len() + 1 + key.len());
    k.extend_from_slice(namespace.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn namespace_of(entry_key: &[u8]) -> &str {
    let end = entry_key.iter().position(|b| *b == 0).unwrap_or(entry_key.len());
    std::str::from_utf8(&entry_key[..end]).unwrap_or_default()
}

/// Octets an entry counts against its namespace's quota: its key and its value.
fn size_of(entry_key: &[u8], value_len: usize) -> u64 {
    (entry_key.len() - namespace_of(entry_key).len() - 1 + value_len) as u64
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// An entry as stored.
struct Stored {
    version: u64,
    /// Milliseconds since 1970; 0: never.
    expires: u64,
    value: Vec<u8>,
}

impl Stored {
    fn decode(bytes: &[u8]) -> Stored {
        let num = |r: std::ops::Range<usize>| {
            bytes.get(r).map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or_default()))
        };
        Stored { version: num(0..8), expires: num(8..16), value: bytes.get(16..).unwrap_or_default().to_vec() }
    }

    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(16 + self.value.len());
        b.extend_from_slice(&self.version.to_be_bytes());
        b.extend_from_slice(&self.expires.to_be_bytes());
        b.extend_from_slice(&self.value);
        b
    }

    fn live(&self, now: u64) -> bool {
        self.expires == 0 || self.expires > now
    }
}

fn expiry_key(expires: u64, entry_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + entry_key.len());
    k.extend_from_slice(&expires.to_be_bytes());
    k.extend_from_slice(entry_key);
    k
}

fn read(db: &Database, key: &[u8], now: u64) -> Result<Option<Entry>, redb::Error> {
    let txn = db.begin_read()?;
    let entries = txn.open_table(ENTRIES)?;
    let Some(stored) = entries.get(key)?.map(|g| Stored::decode(g.value())) else {
        return Ok(None);
    };
    if !stored.live(now) {
        return Ok(None);
    }
    let expires_in = (stored.expires != 0).then(|| Duration::from_millis(stored.expires - now));
    Ok(Some(Entry { value: stored.value, version: stored.version, expires_in }))
}

fn open_tables(txn: &WriteTransaction) -> Result<Tables<'_>, redb::Error> {
    Ok(Tables {
        entries: txn.open_table(ENTRIES)?,
        expiry: txn.open_table(EXPIRY)?,
        usage: txn.open_table(USAGE)?,
        meta: txn.open_table(META)?,
    })
}

/// The tables of one write transaction.
struct Tables<'t> {
    entries: Table<'t, &'static [u8], &'static [u8]>,
    expiry: Table<'t, &'static [u8], ()>,
    usage: Table<'t, &'static str, (u64, u64)>,
    meta: Table<'t, &'static str, u64>,
}

/// The writer thread's state.
struct Writer {
    db: Arc<Database>,
    settings: EmbeddedSettings,
    name: String,
}

/// What an operation did: its answer (which may be a refusal), or a failure of the database,
/// which undoes the whole batch.
type Applied = Result<Result<Done, StoreError>, redb::Error>;

impl Writer {
    /// Until the queue closes: batches of writes, a durable commit at most `sync_every` after
    /// the first write not yet synced, and a sweep every [`SWEEP_EVERY`]. The thread runs a
    /// runtime of its own, only to wait on its queue and its timers.
    fn run(self, mut queue: mpsc::Receiver<Write>) {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
            Ok(r) => r,
            Err(e) => return tracing::error!(store = %self.name, error = %e, "cannot start the store's writer"),
        };
        runtime.block_on(async {
            let mut sweep = tokio::time::interval(SWEEP_EVERY);
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // When the writes committed without an fsync must be synced.
            let mut sync_by: Option<Instant> = None;
            loop {
                let sync_at = sync_by.unwrap_or_else(|| Instant::now() + SWEEP_EVERY);
                tokio::select! {
                    write = queue.recv() => {
                        let Some(first) = write else { break };
                        let mut batch = vec![first];
                        while batch.len() < BATCH_MAX {
                            match queue.try_recv() {
                                Ok(w) => batch.push(w),
                                Err(_) => break,
                            }
                        }
                        if self.commit(batch) && sync_by.is_none() {
                            sync_by = Some(Instant::now() + self.settings.sync_every);
                        }
                    }
                    _ = tokio::time::sleep_until(sync_at), if sync_by.is_some() => {
                        self.sync();
                        sync_by = None;
                    }
                    _ = sweep.tick() => {
                        let (reply, _) = oneshot::channel();
                        if self.commit(vec![Write { op: Op::Sweep, reply }]) && sync_by.is_none() {
                            sync_by = Some(Instant::now() + self.settings.sync_every);
                        }
                    }
                }
            }
            if sync_by.is_some() {
                self.sync();
            }
        });
    }

    /// A durable commit: every commit before it is on the disk when it returns.
    fn sync(&self) {
        let synced = self.db.begin_write().map_err(redb::Error::from).and_then(|txn| txn.commit().map_err(Into::into));
        if let Err(e) = synced {
            tracing::error!(store = %self.name, error = %e, "store sync failed; the last writes may be lost in a crash");
        }
    }

    /// Applies `batch` in one transaction and commits it; then answers each write. A failure of
    /// the database fails the whole batch (nothing of it is written). Whether it committed
    /// writes that still need a sync.
    fn commit(&self, batch: Vec<Write>) -> bool {
        // A caller that stopped waiting (its deadline passed) gets nothing written.
        let batch: Vec<Write> =
            batch.into_iter().filter(|w| !w.reply.is_closed() || matches!(w.op, Op::Sweep)).collect();
        if batch.is_empty() {
            return false;
        }
        let answers = self.apply(&batch);
        let answers = match answers {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(store = %self.name, error = %e, "store write failed; {} writes not made", batch.len());
                let e = unavailable(e);
                batch.iter().map(|_| Err(e.clone())).collect()
            }
        };
        for (write, answer) in batch.into_iter().zip(answers) {
            if let (Op::Sweep, Ok(Done::Swept(n))) = (&write.op, &answer)
                && *n > 0
            {
                tracing::debug!(store = %self.name, removed = n, "expired entries removed");
            }
            let _ = write.reply.send(answer);
        }
        !self.settings.sync_every.is_zero()
    }

    fn apply(&self, batch: &[Write]) -> Result<Vec<Result<Done, StoreError>>, redb::Error> {
        let mut txn = self.db.begin_write()?;
        if !self.settings.sync_every.is_zero() {
            txn.set_durability(Durability::None)?;
        }
        let mut answers = Vec::with_capacity(batch.len());
        {
            let mut t = open_tables(&txn)?;
            let now = now_ms();
            for w in batch {
                answers.push(self.apply_one(&mut t, &w.op, now)?);
            }
        }
        txn.commit()?;
        Ok(answers)
    }

    fn apply_one(&self, t: &mut Tables<'_>, op: &Op, now: u64) -> Applied {
        match op {
            Op::Set { key, value, ttl, condition } => {
                let old = get(t, key)?;
                let live = old.as_ref().filter(|o| o.live(now));
                let holds = match condition {
                    Condition::Always => true,
                    Condition::IfAbsent => live.is_none(),
                    Condition::IfVersion(v) => live.is_some_and(|o| o.version == *v),
                };
                if !holds {
                    return Ok(Err(StoreError::Conflict));
                }
                let expires = ttl.map_or(0, |ttl| now + ttl.as_millis() as u64);
                let put = self.put(t, key, value.clone(), expires, now)?;
                Ok(put.map(Done::Version))
            }
            Op::Delete { key, if_version } => {
                let old = get(t, key)?;
                let live = old.as_ref().filter(|o| o.live(now)).is_some();
                if let Some(v) = if_version
                    && !old.as_ref().is_some_and(|o| o.live(now) && o.version == *v)
                {
                    return Ok(Err(StoreError::Conflict));
                }
                if let Some(old) = old {
                    remove(t, key, &old)?;
                }
                Ok(Ok(Done::Deleted(live)))
            }
            Op::Increment { key, delta, ttl } => {
                let old = get(t, key)?;
                let (sum, expires) = match old.as_ref().filter(|o| o.live(now)) {
                    Some(o) => match super::parse_integer(&o.value).and_then(|n| n.checked_add(*delta)) {
                        Some(sum) => (sum, o.expires),
                        None => return Ok(Err(StoreError::NotAnInteger)),
                    },
                    None => (*delta, ttl.map_or(0, |ttl| now + ttl.as_millis() as u64)),
                };
                let put = self.put(t, key, sum.to_string().into_bytes(), expires, now)?;
                Ok(put.map(|_| Done::Sum(sum)))
            }
            Op::Sweep => Ok(Ok(Done::Swept(sweep(t, now, SWEEP_MAX)?))),
        }
    }

    /// Writes an entry (over the one there, expired or not) within the namespace's quota; its
    /// version.
    fn put(
        &self,
        t: &mut Tables<'_>,
        key: &[u8],
        value: Vec<u8>,
        expires: u64,
        now: u64,
    ) -> Result<Result<u64, StoreError>, redb::Error> {
        let namespace = namespace_of(key);
        let new_bytes = size_of(key, value.len());
        let over = |usage: (u64, u64), old: Option<&Stored>| {
            let (old_count, old_bytes) = old.map_or((0, 0), |o| (1, size_of(key, o.value.len())));
            let entries = usage.0.saturating_sub(old_count) + 1;
            let bytes = usage.1.saturating_sub(old_bytes) + new_bytes;
            (entries > self.settings.max_entries && entries > usage.0)
                || (bytes > self.settings.max_bytes && bytes > usage.1)
        };
        let mut old = get(t, key)?;
        if over(usage(t, namespace)?, old.as_ref()) {
            // Expired entries count until removed: remove some (perhaps the old entry), then
            // look again.
            sweep(t, now, SWEEP_MAX)?;
            old = get(t, key)?;
            let usage = usage(t, namespace)?;
            if over(usage, old.as_ref()) {
                let (max_entries, max_bytes) = (self.settings.max_entries, self.settings.max_bytes);
                return Ok(Err(StoreError::Quota(format!(
                    "the namespace holds {} entries and {} octets, at most {max_entries} and {max_bytes}",
                    usage.0, usage.1
                ))));
            }
        }
        if let Some(old) = old {
            remove(t, key, &old)?;
        }
        let version = t.meta.get("version")?.map_or(0, |g| g.value()) + 1;
        t.meta.insert("version", version)?;
        let stored = Stored { version, expires, value };
        t.entries.insert(key, stored.encode().as_slice())?;
        if expires != 0 {
            t.expiry.insert(expiry_key(expires, key).as_slice(), ())?;
        }
        let (entries, bytes) = usage(t, namespace)?;
        t.usage.insert(namespace, (entries + 1, bytes + new_bytes))?;
        Ok(Ok(version))
    }
}

fn get(t: &Tables<'_>, key: &[u8]) -> Result<Option<Stored>, redb::Error> {
    Ok(t.entries.get(key)?.map(|g| Stored::decode(g.value())))
}

fn usage(t: &Tables<'_>, namespace: &str) -> Result<(u64, u64), redb::Error> {
    Ok(t.usage.get(namespace)?.map_or((0, 0), |g| g.value()))
}

/// Removes the entry `old` at `key`, its expiry and its share of the namespace's usage.
fn remove(t: &mut Tables<'_>, key: &[u8], old: &Stored) -> Result<(), redb::Error> {
    t.entries.remove(key)?;
    if old.expires != 0 {
        t.expiry.remove(expiry_key(old.expires, key).as_slice())?;
    }
    let namespace = namespace_of(key);
    let (entries, bytes) = usage(t, namespace)?;
    let left = (entries.saturating_sub(1), bytes.saturating_sub(size_of(key, old.value.len())));
    match left {
        (0, _) => t.usage.remove(namespace).map(|_| ())?,
        left => t.usage.insert(namespace, left).map(|_| ())?,
    }
    Ok(())
}

/// Removes up to `max` entries expired by `now`, oldest first; how many.
fn sweep(t: &mut Tables<'_>, now: u64, max: usize) -> Result<usize, redb::Error> {
    let upper = (now + 1).to_be_bytes();
    let expired: Vec<Vec<u8>> = t
        .expiry
        .range::<&[u8]>(..upper.as_slice())?
        .take(max)
        .map(|r| r.map(|(k, _)| k.value().to_vec()))
        .collect::<Result<_, _>>()?;
    let mut removed = 0;
    for index in &expired {
        let key = &index[8..];
        match get(t, key)? {
            // The index and the entry agree (they always should): the entry goes.
            Some(old) if expiry_key(old.expires, key) == *index => {
                remove(t, key, &old)?;
                removed += 1;
            }
            _ => {
                t.expiry.remove(index.as_slice())?;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database file of its own, removed after the test.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new() -> TempFile {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "wasmtpd-store-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            TempFile(dir.join("test.redb"))
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
        }
    }

    fn open(file: &TempFile, settings: EmbeddedSettings) -> Embedded {
        Embedded::open("test", &file.0, &settings, Duration::from_secs(5)).unwrap()
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    const NS: &str = "plugin:test";

    #[tokio::test]
    async fn compare_and_swap() {
        let file = TempFile::new();
        let s = open(&file, EmbeddedSettings::default());
        assert_eq!(s.get(NS, "k", soon()).await, Ok(None));
        let v1 = s.set(NS, "k", b"one".to_vec(), None, Condition::IfAbsent, soon()).await.unwrap();
        assert_eq!(
            s.set(NS, "k", b"again".to_vec(), None, Condition::IfAbsent, soon()).await,
            Err(StoreError::Conflict)
        );
        let e = s.get(NS, "k", soon()).await.unwrap().unwrap();
        assert_eq!((e.value.as_slice(), e.version, e.expires_in), (&b"one"[..], v1, None));
        let v2 = s.set(NS, "k", b"two".to_vec(), None, Condition::IfVersion(v1), soon()).await.unwrap();
        assert!(v2 > v1);
        // A second writer that read v1 loses.
        let stale = s.set(NS, "k", b"lost".to_vec(), None, Condition::IfVersion(v1), soon()).await;
        assert_eq!(stale, Err(StoreError::Conflict));
        assert_eq!(s.get(NS, "k", soon()).await.unwrap().unwrap().value, b"two");
        assert_eq!(s.delete(NS, "k", Some(v1), soon()).await, Err(StoreError::Conflict));
        assert_eq!(s.delete(NS, "k", Some(v2), soon()).await, Ok(true));
        assert_eq!(s.delete(NS, "k", None, soon()).await, Ok(false));
        assert_eq!(s.delete(NS, "k", Some(v2), soon()).await, Err(StoreError::Conflict), "absent is a conflict");
        // Written again after a delete: a new version, never the old one.
        let v3 = s.set(NS, "k", b"three".to_vec(), None, Condition::IfAbsent, soon()).await.unwrap();
        assert!(v3 > v2);
        assert_eq!(
            s.set(NS, "k", b"x".to_vec(), None, Condition::IfVersion(v2), soon()).await,
            Err(StoreError::Conflict)
        );
        // Namespaces do not meet.
        assert_eq!(s.get("plugin:other", "k", soon()).await, Ok(None));
    }

    #[tokio::test]
    async fn entries_expire() {
        let file = TempFile::new();
        let s = open(&file, EmbeddedSettings::default());
        let ttl = Some(Duration::from_millis(150));
        s.set(NS, "short", b"v".to_vec(), ttl, Condition::Always, soon()).await.unwrap();
        s.set(NS, "long", b"v".to_vec(), Some(Duration::from_secs(3600)), Condition::Always, soon()).await.unwrap();
        s.set(NS, "forever", b"v".to_vec(), None, Condition::Always, soon()).await.unwrap();
        let left = s.get(NS, "short", soon()).await.unwrap().unwrap().expires_in.unwrap();
        assert!(left <= Duration::from_millis(150) && left > Duration::ZERO, "{left:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(s.get(NS, "short", soon()).await, Ok(None), "expired: gone for reads");
        assert!(s.get(NS, "long", soon()).await.unwrap().is_some());
        // Expired counts as absent for a condition...
        s.set(NS, "short", b"again".to_vec(), ttl, Condition::IfAbsent, soon()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // ...and a sweep removes it, with its usage.
        assert_eq!(s.sweep(soon()).await, Ok(1));
        assert_eq!(s.sweep(soon()).await, Ok(0));
        assert_eq!(usage_of(&s, NS), (2, "long".len() as u64 + "forever".len() as u64 + 2));
        // A set without a TTL makes an entry that does not expire; one with a TTL replaces it.
        s.set(NS, "forever", b"v".to_vec(), ttl, Condition::Always, soon()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(s.get(NS, "forever", soon()).await, Ok(None));
    }

    fn usage_of(s: &Embedded, namespace: &str) -> (u64, u64) {
        let txn = s.db.begin_read().unwrap();
        txn.open_table(USAGE).unwrap().get(namespace).unwrap().map_or((0, 0), |g| g.value())
    }

    #[tokio::test]
    async fn increment_creates_with_its_ttl_and_keeps_it() {
        let file = TempFile::new();
        let s = open(&file, EmbeddedSettings::default());
        let ttl = Some(Duration::from_millis(300));
        assert_eq!(s.increment(NS, "count", 1, ttl, soon()).await, Ok(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The TTL of a later increment does not extend the window.
        assert_eq!(s.increment(NS, "count", 5, Some(Duration::from_secs(3600)), soon()).await, Ok(6));
        assert_eq!(s.increment(NS, "count", -2, None, soon()).await, Ok(4));
        let e = s.get(NS, "count", soon()).await.unwrap().unwrap();
        assert_eq!(e.value, b"4");
        assert!(e.expires_in.unwrap() <= Duration::from_millis(200), "{:?}", e.expires_in);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(s.increment(NS, "count", 1, ttl, soon()).await, Ok(1), "a new window");
        // Not an integer, or an overflow: nothing written.
        s.set(NS, "word", b"ten".to_vec(), None, Condition::Always, soon()).await.unwrap();
        assert_eq!(s.increment(NS, "word", 1, None, soon()).await, Err(StoreError::NotAnInteger));
        s.set(NS, "big", i64::MAX.to_string().into_bytes(), None, Condition::Always, soon()).await.unwrap();
        assert_eq!(s.increment(NS, "big", 1, None, soon()).await, Err(StoreError::NotAnInteger));
        assert_eq!(s.get(NS, "big", soon()).await.unwrap().unwrap().value, i64::MAX.to_string().as_bytes());
    }

    #[tokio::test]
    async fn concurrent_increments_are_exact() {
        let file = TempFile::new();
        let s = Arc::new(open(&file, EmbeddedSettings::default()));
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.increment(NS, "n", 1, None, soon()).await.unwrap() })
            })
            .collect();
        let mut seen: Vec<i64> = futures::future::join_all(tasks).await.into_iter().map(Result::unwrap).collect();
        seen.sort();
        assert_eq!(seen, (1..=200).collect::<Vec<_>>(), "every increment saw its own sum");
    }

    #[tokio::test]
    async fn quotas_per_namespace() {
        let file = TempFile::new();
        let s = open(&file, EmbeddedSettings { max_entries: 3, max_bytes: 100, ..Default::default() });
        for k in ["a", "b", "c"] {
            s.set(NS, k, b"v".to_vec(), None, Condition::Always, soon()).await.unwrap();
        }
        assert!(matches!(
            s.set(NS, "d", b"v".to_vec(), None, Condition::Always, soon()).await,
            Err(StoreError::Quota(_))
        ));
        assert!(matches!(s.increment(NS, "d", 1, None, soon()).await, Err(StoreError::Quota(_))));
        assert_eq!(s.get(NS, "d", soon()).await, Ok(None), "nothing written");
        // Overwriting does not grow the namespace; another namespace has its own quota.
        s.set(NS, "a", b"w".to_vec(), None, Condition::Always, soon()).await.unwrap();
        s.set("plugin:other", "d", b"v".to_vec(), None, Condition::Always, soon()).await.unwrap();
        // Octets: a key and a value of 100 together are over.
        let big = vec![b'x'; 97];
        assert!(matches!(s.set(NS, "a", big, None, Condition::Always, soon()).await, Err(StoreError::Quota(_))));
        // A delete makes room.
        assert_eq!(s.delete(NS, "c", None, soon()).await, Ok(true));
        s.set(NS, "d", b"v".to_vec(), None, Condition::Always, soon()).await.unwrap();
        // Expired entries are reclaimed before a write is refused.
        let ttl = Some(Duration::from_millis(50));
        s.set(NS, "a", b"v".to_vec(), ttl, Condition::Always, soon()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.set(NS, "e", b"v".to_vec(), None, Condition::Always, soon()).await.unwrap();
        assert_eq!(usage_of(&s, NS), (3, 6));
    }

    #[tokio::test]
    async fn entries_survive_reopening() {
        let file = TempFile::new();
        let version = {
            let s = open(&file, EmbeddedSettings::default());
            s.set(NS, "white", b"192.0.2.1".to_vec(), Some(Duration::from_secs(3600)), Condition::Always, soon())
                .await
                .unwrap()
        };
        let s = open(&file, EmbeddedSettings::default());
        let e = s.get(NS, "white", soon()).await.unwrap().unwrap();
        assert_eq!((e.value.as_slice(), e.version), (&b"192.0.2.1"[..], version));
        assert!(e.expires_in.unwrap() > Duration::from_secs(3500), "the expiry carried over");
        let next = s.set(NS, "other", b"v".to_vec(), None, Condition::Always, soon()).await.unwrap();
        assert!(next > version, "versions carry on after a reopen");
        // One process at a time: a second open of the same file is refused.
        let e = Embedded::open("test", &file.0, &EmbeddedSettings::default(), Duration::from_secs(1));
        assert!(e.is_err_and(|e| e.contains("open in another process")));
    }

    #[tokio::test]
    async fn a_deadline_that_has_passed_is_a_timeout() {
        let file = TempFile::new();
        let s = open(&file, EmbeddedSettings::default());
        let past = Instant::now() - Duration::from_millis(1);
        let r = s.set(NS, "k", b"v".to_vec(), None, Condition::Always, past).await;
        assert_eq!(r, Err(StoreError::Timeout));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(s.get(NS, "k", soon()).await, Ok(None));
    }
}
