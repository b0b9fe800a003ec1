//! The host side of `wit/upstream.wit`: a plugin's connections to the upstreams it was granted
//! (`upstream NAME` in `config/sandbox`), each call admitted by the grant and the budget
//! (`upstream-calls` per transaction), made by a deadline within the hook's time, and its
//! answer bounded (`max-answer`). A refusal is an error the plugin sees, and a log line naming
//! it (a few per instance; a flood is not logged).
//!
//! The connections are the instance's ([`UpstreamUse`]): at most [`MAX_OPEN`] at once, closed
//! by `close`, after a failure, and when the instance is dropped (with its scope). The message
//! goes to an upstream from here, read from where it is (memory or its spool file) in 64 KiB
//! chunks and written as it is read: it never passes through the plugin's memory, and the host
//! holds one chunk of it at a time.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::bindings::upstream::{self, Framing, HttpBody, HttpRequest, HttpResponse, UpstreamError};
use crate::imports::message::MessageView;
use crate::sandbox::UpstreamGrant;
use crate::state::PluginState;
use crate::upstream::{self as up, Connection, Upstream, Upstreams, http};

/// Refusals logged per instance; past that, one line says the rest are not.
const MAX_REFUSALS_LOGGED: u32 = 4;
/// The most of its remaining hook time a call leaves the plugin.
const TIME_TO_ACT: Duration = Duration::from_millis(500);
/// Connections one instance may hold at once.
pub const MAX_OPEN: usize = 4;
/// The most one `write` (or an HTTP body of bytes) may carry.
pub const MAX_WRITE: usize = 1 << 20;
/// The most one `read` returns.
pub const MAX_READ: u32 = 64 << 10;
/// The chunk the message is sent in (and, with `length-prefixed`, framed in).
const CHUNK: u32 = 64 << 10;

/// The upstreams `grants` give a plugin, from those the server runs; a grant of one not
/// defined is an error naming where it was granted.
pub fn granted_upstreams(grants: &[UpstreamGrant], upstreams: &Upstreams) -> anyhow::Result<Vec<Arc<Upstream>>> {
    grants
        .iter()
        .map(|g| {
            upstreams.get(&g.upstream).cloned().ok_or_else(|| {
                anyhow::anyhow!("{}: upstream `{}` is not defined in config/upstreams", g.origin, g.upstream)
            })
        })
        .collect()
}

/// One instance's connections, and the calls it made in the current transaction.
#[derive(Default)]
pub struct UpstreamUse {
    /// The transaction they were made in (`None`: the connection phase).
    transaction: Option<String>,
    made: u32,
    refusals_logged: u32,
    next_handle: u32,
    open: Vec<(u32, Connection)>,
}

impl std::fmt::Debug for UpstreamUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamUse").field("made", &self.made).field("open", &self.open.len()).finish()
    }
}

impl PluginState {
    /// Counts a call against the budget; `Err` once it is spent.
    fn admit_upstream_call(&mut self) -> Result<(), UpstreamError> {
        let transaction = self.call.transaction.as_ref().map(|t| t.id.as_str());
        let u = &mut self.upstream_use;
        if u.transaction.as_deref() != transaction {
            u.transaction = transaction.map(str::to_string);
            u.made = 0;
        }
        if u.made >= self.meta.upstream_calls {
            let refusal = UpstreamError::OverBudget(format!(
                "over budget: this plugin may make {} upstream calls per transaction (`upstream-calls` in config/sandbox)",
                self.meta.upstream_calls
            ));
            self.log_upstream_refusal(&refusal);
            return Err(refusal);
        }
        u.made += 1;
        Ok(())
    }

    /// The granted upstream `name`, the call counted.
    fn granted_upstream(&mut self, name: &str) -> Result<Arc<Upstream>, UpstreamError> {
        let Some(upstream) = self.meta.upstreams.iter().find(|u| u.settings.name == name).cloned() else {
            let refusal = UpstreamError::NotGranted(format!(
                "not granted: the operator has not granted this plugin the upstream `{}` (`upstream` in config/sandbox)",
                shown(name)
            ));
            self.log_upstream_refusal(&refusal);
            return Err(refusal);
        };
        self.admit_upstream_call()?;
        Ok(upstream)
    }

    fn log_upstream_refusal(&mut self, refusal: &UpstreamError) {
        let plugin = self.meta.name.as_str();
        let conn = self.call.connection.id.as_str();
        let reason = match refusal {
            UpstreamError::NotGranted(s) | UpstreamError::OverBudget(s) => s.as_str(),
            _ => return,
        };
        match self.upstream_use.refusals_logged {
            n if n < MAX_REFUSALS_LOGGED => tracing::warn!(plugin, conn, "upstream call refused: {reason}"),
            MAX_REFUSALS_LOGGED => tracing::warn!(plugin, conn, "more upstream calls refused; no longer logged"),
            _ => {}
        }
        self.upstream_use.refusals_logged = self.upstream_use.refusals_logged.saturating_add(1);
    }

    /// When a call must be done: `timeout`, or what is left of the hook's time less time to
    /// act, whichever comes first.
    fn upstream_deadline(&self, timeout: Duration) -> Instant {
        let now = Instant::now();
        let own = now + timeout;
        match self.limits.deadline {
            Some(d) => {
                let left = Instant::from_std(d).saturating_duration_since(now);
                own.min(now + left - (left / 10).min(TIME_TO_ACT))
            }
            None => own,
        }
    }

    /// The open connection `handle` (the call counted) and its deadline.
    fn open_connection(&mut self, handle: u32) -> Result<(usize, Instant), UpstreamError> {
        let Some(i) = self.upstream_use.open.iter().position(|(h, _)| *h == handle) else {
            return Err(UpstreamError::Invalid(format!("no open upstream connection {handle}")));
        };
        self.admit_upstream_call()?;
        let deadline = self.upstream_deadline(self.upstream_use.open[i].1.timeout());
        Ok((i, deadline))
    }

    /// What a call on connection `i` tells the plugin: a failure closes the connection, and is
    /// logged naming the plugin and the upstream.
    fn on_connection<T>(&mut self, i: usize, r: Result<T, up::UpstreamError>) -> Result<T, UpstreamError> {
        r.map_err(|e| {
            let (_, conn) = self.upstream_use.open.swap_remove(i);
            self.log_failure(&conn.upstream().settings.name, &e);
            error(e)
        })
    }

    fn log_failure(&self, upstream: &str, e: &up::UpstreamError) {
        tracing::info!(
            plugin = self.meta.name.as_str(),
            conn = self.call.connection.id.as_str(),
            upstream,
            "upstream call failed: {e}"
        );
    }

    /// Sends the current message from `offset`, `len` octets or to its end, on connection `i`.
    async fn send_message(
        &mut self,
        i: usize,
        offset: u64,
        len: Option<u64>,
        framing: Framing,
        deadline: Instant,
    ) -> Result<u64, UpstreamError> {
        self.message().map_err(|_| UpstreamError::NoMessage)?;
        let view = self.call.message.as_mut().expect("opened just above");
        let size = view.size();
        let end = match len {
            None => size,
            Some(n) => offset.checked_add(n).filter(|e| *e <= size).ok_or_else(|| {
                UpstreamError::Invalid(format!("octets {offset} to {offset}+{n} are outside the message of {size}"))
            })?,
        };
        if offset > size {
            return Err(UpstreamError::Invalid(format!("offset {offset} is past the message's {size} octets")));
        }
        let conn = &mut self.upstream_use.open[i].1;
        let r = stream_message(view, conn, offset, end, framing, deadline).await;
        self.on_connection(i, r)
    }

    async fn http(&mut self, upstream: Arc<Upstream>, request: HttpRequest) -> Result<HttpResponse, UpstreamError> {
        let deadline = self.upstream_deadline(upstream.settings.timeout);
        let body_len = match &request.body {
            HttpBody::None => 0,
            HttpBody::Bytes(b) if b.len() > MAX_WRITE => {
                return Err(UpstreamError::Invalid(format!("a body of {} octets (at most {MAX_WRITE})", b.len())));
            }
            HttpBody::Bytes(b) => b.len() as u64,
            HttpBody::Message => self.message().map_err(|_| UpstreamError::NoMessage)?.size(),
        };
        let host = match &upstream.settings.address {
            up::Address::Tcp { host, port } => format!("{host}:{port}"),
            up::Address::Unix(_) => "localhost".to_string(),
        };
        let head =
            http::request_head(&request.method, &request.path, &request.headers, &host, body_len).map_err(error)?;
        let max_body = (request.max_body as u64).min(upstream.settings.max_answer) as usize;
        // A kept connection may have been closed by the upstream meanwhile: then a new one.
        let mut reused = upstream.take_idle();
        loop {
            let was_reused = reused.is_some();
            let conn = match reused.take() {
                Some(c) => c,
                None => match upstream.connect(deadline).await {
                    Ok(c) => c,
                    Err(e) => {
                        self.log_failure(&upstream.settings.name, &e);
                        return Err(error(e));
                    }
                },
            };
            self.upstream_use.open.push((0, conn));
            let i = self.upstream_use.open.len() - 1;
            let conn = &mut self.upstream_use.open[i].1;
            let mut sent = conn.write_all(&head, deadline).await;
            if sent.is_ok()
                && let HttpBody::Bytes(b) = &request.body
            {
                sent = conn.write_all(b, deadline).await;
            }
            let sent = match (sent, &request.body) {
                (Ok(()), HttpBody::Message) => {
                    // `send_message` closes the connection if it fails.
                    match self.send_message(i, 0, None, Framing::None, deadline).await {
                        Ok(_) => Ok(()),
                        Err(_) if was_reused => continue,
                        Err(e) => return Err(e),
                    }
                }
                (r, _) => r,
            };
            let (_, mut conn) = self.upstream_use.open.swap_remove(i);
            let answer = match sent {
                Ok(()) => http::read_response(&mut conn, max_body, deadline).await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(r) => {
                    if r.reusable {
                        conn.keep();
                    }
                    return Ok(HttpResponse { status: r.status, reason: r.reason, headers: r.headers, body: r.body });
                }
                Err(up::UpstreamError::Unavailable(_)) if was_reused => continue,
                Err(e) => {
                    self.log_failure(&upstream.settings.name, &e);
                    return Err(error(e));
                }
            }
        }
    }
}

/// Writes octets `offset..end` of the message `view` to `conn`, in chunks of [`CHUNK`] read
/// as they are written (framed as `framing` says); the octets of the message written.
pub(crate) async fn stream_message(
    view: &mut MessageView,
    conn: &mut Connection,
    offset: u64,
    end: u64,
    framing: Framing,
    deadline: Instant,
) -> Result<u64, up::UpstreamError> {
    let mut pos = offset;
    let mut framed = Vec::with_capacity(CHUNK as usize + 4);
    while pos < end {
        let want = (end - pos).min(CHUNK as u64) as u32;
        let chunk = match view.read(pos, want) {
            Ok(c) if !c.is_empty() => c,
            Ok(_) => break,
            Err(e) => return Err(up::UpstreamError::Unavailable(format!("reading the message: {e}"))),
        };
        pos += chunk.len() as u64;
        match framing {
            Framing::None => conn.write_all(&chunk, deadline).await?,
            Framing::LengthPrefixed => {
                framed.clear();
                framed.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
                framed.extend_from_slice(&chunk);
                conn.write_all(&framed, deadline).await?
            }
        }
    }
    conn.flush(deadline).await?;
    Ok(pos - offset)
}

impl upstream::Host for PluginState {
    async fn connect(&mut self, upstream: String) -> Result<u32, UpstreamError> {
        let u = self.granted_upstream(&upstream)?;
        if self.upstream_use.open.len() >= MAX_OPEN {
            return Err(UpstreamError::OverBudget(format!(
                "this plugin holds {MAX_OPEN} upstream connections already: close one first"
            )));
        }
        let deadline = self.upstream_deadline(u.settings.connect_timeout);
        match u.connect(deadline).await {
            Ok(conn) => {
                let u = &mut self.upstream_use;
                u.next_handle = u.next_handle.wrapping_add(1).max(1);
                u.open.push((u.next_handle, conn));
                Ok(u.next_handle)
            }
            Err(e) => {
                self.log_failure(&upstream, &e);
                Err(error(e))
            }
        }
    }

    async fn write(&mut self, connection: u32, data: Vec<u8>) -> Result<(), UpstreamError> {
        if data.len() > MAX_WRITE {
            return Err(UpstreamError::Invalid(format!("a write of {} octets (at most {MAX_WRITE})", data.len())));
        }
        let (i, deadline) = self.open_connection(connection)?;
        let conn = &mut self.upstream_use.open[i].1;
        let mut r = conn.write_all(&data, deadline).await;
        if r.is_ok() {
            r = conn.flush(deadline).await;
        }
        self.on_connection(i, r)
    }

    async fn write_message(
        &mut self,
        connection: u32,
        offset: u64,
        len: Option<u64>,
        framing: Framing,
    ) -> Result<u64, UpstreamError> {
        let (i, deadline) = self.open_connection(connection)?;
        self.send_message(i, offset, len, framing, deadline).await
    }

    async fn read(&mut self, connection: u32, max: u32) -> Result<Vec<u8>, UpstreamError> {
        let (i, deadline) = self.open_connection(connection)?;
        let r = self.upstream_use.open[i].1.read(max.clamp(1, MAX_READ) as usize, deadline).await;
        self.on_connection(i, r)
    }

    async fn read_to_end(&mut self, connection: u32, max: u32) -> Result<Vec<u8>, UpstreamError> {
        let (i, deadline) = self.open_connection(connection)?;
        let r = self.upstream_use.open[i].1.read_to_end(max as usize, deadline).await;
        self.on_connection(i, r)
    }

    async fn close(&mut self, connection: u32) -> Result<(), UpstreamError> {
        let Some(i) = self.upstream_use.open.iter().position(|(h, _)| *h == connection) else {
            return Err(UpstreamError::Invalid(format!("no open upstream connection {connection}")));
        };
        drop(self.upstream_use.open.swap_remove(i));
        Ok(())
    }

    async fn http_call(&mut self, upstream: String, request: HttpRequest) -> Result<HttpResponse, UpstreamError> {
        let u = self.granted_upstream(&upstream)?;
        self.http(u, request).await
    }
}

/// A name as it may be shown in a message: escaped, and cut.
fn shown(name: &str) -> String {
    let mut s: String = name.escape_debug().take(64).collect();
    if s.len() < name.escape_debug().count() {
        s.push('…');
    }
    s
}

fn error(e: up::UpstreamError) -> UpstreamError {
    match e {
        up::UpstreamError::Unavailable(s) => UpstreamError::Unavailable(s),
        up::UpstreamError::Timeout => UpstreamError::Timeout,
        up::UpstreamError::TooLarge(s) => UpstreamError::TooLarge(s),
        up::UpstreamError::Invalid(s) => UpstreamError::Invalid(s),
        up::UpstreamError::Protocol(s) => UpstreamError::Protocol(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use wasmtpd_smtp::{Content, Message};

    /// The speed figure of issue 16: the host-side write of a 1 MiB message (read from the
    /// message view in chunks, as `write-message` does) against a plain socket write of the
    /// same bytes, to the same loopback sink, in the same run. Not run by default (a
    /// measurement, not a check): `cargo test -p wasmtpd-host --release --lib --
    /// --ignored --nocapture write_message_throughput`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn write_message_throughput() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const ROUNDS: usize = 200;
        let bytes: Vec<u8> = (0..1u32 << 20).map(|i| b"abcdefghijklmnopqrstuvwxyz\r\n"[(i % 28) as usize]).collect();
        let mut head = b"Subject: bench\r\n\r\n".to_vec();
        head.extend_from_slice(&bytes[head.len()..]);
        let bytes = head;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut b = vec![0; 256 << 10];
                    while s.read(&mut b).await.is_ok_and(|n| n > 0) {}
                });
            }
        });
        let file = std::env::temp_dir().join(format!("wasmtpd-bench-{}", std::process::id()));
        std::fs::write(&file, &bytes).unwrap();
        let settings = crate::upstream::UpstreamSettings::new(
            "sink",
            crate::upstream::Address::Tcp { host: "127.0.0.1".into(), port },
            crate::sandbox::Origin { file: "bench".into(), line: 1 },
        );
        let upstream = Arc::new(Upstream::new(settings, std::path::Path::new("/")).unwrap());
        let deadline = || Instant::now() + Duration::from_secs(60);
        let mut results = Vec::new();
        for round in 0..2 {
            let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            plain.set_nodelay(true).unwrap();
            let started = std::time::Instant::now();
            for _ in 0..ROUNDS {
                plain.write_all(&bytes).await.unwrap();
            }
            plain.flush().await.unwrap();
            let plain_time = started.elapsed();
            let mut host = Vec::new();
            for content in [Content::Memory(Arc::from(bytes.as_slice())), Content::File(file.clone())] {
                let message = Message { content, size: bytes.len() as u64, authentication_results: None };
                let mut view = MessageView::open(&message).unwrap();
                let mut conn = upstream.connect(deadline()).await.unwrap();
                let started = std::time::Instant::now();
                for _ in 0..ROUNDS {
                    let size = view.size();
                    let n = stream_message(&mut view, &mut conn, 0, size, Framing::None, deadline()).await;
                    assert_eq!(n, Ok(bytes.len() as u64));
                }
                host.push(started.elapsed());
            }
            if round == 1 {
                results = vec![plain_time, host[0], host[1]];
            }
        }
        let mib_s = |d: Duration| ROUNDS as f64 / d.as_secs_f64();
        let (plain, memory, file_backed) = (results[0], results[1], results[2]);
        println!(
            "1 MiB x {ROUNDS}: plain socket write {:.0} MiB/s; host-side write-message from memory {:.0} MiB/s (ratio {:.2}), from the spool file {:.0} MiB/s (ratio {:.2})",
            mib_s(plain),
            mib_s(memory),
            plain.as_secs_f64() / memory.as_secs_f64(),
            mib_s(file_backed),
            plain.as_secs_f64() / file_backed.as_secs_f64()
        );
        let _ = std::fs::remove_file(&file);
    }
}
