//! The named upstreams (`wasmtpd_host::upstream`) without the server or a plugin: connecting
//! by a deadline, the connection limit, bounded reads, and HTTP/1.1 answers (framed, pooled,
//! too large, not HTTP), against peers on loopback sockets that behave as the test says (a
//! listener that never answers, one that never stops, one that closes).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use wasmtpd_host::sandbox::Origin;
use wasmtpd_host::upstream::{Address, Upstream, UpstreamError, UpstreamSettings, http};

fn settings(address: Address) -> UpstreamSettings {
    UpstreamSettings::new("scanner", address, Origin { file: "upstreams".into(), line: 1 })
}

fn tcp(port: u16) -> Address {
    Address::Tcp { host: "127.0.0.1".into(), port }
}

fn upstream(s: UpstreamSettings) -> Arc<Upstream> {
    Arc::new(Upstream::new(s, std::path::Path::new("/")).unwrap())
}

/// A listener whose every connection is handed to `serve` on a thread of its own.
fn peer(serve: impl Fn(std::net::TcpStream) + Send + Sync + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let serve = Arc::new(serve);
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let serve = serve.clone();
            std::thread::spawn(move || serve(s));
        }
    });
    port
}

fn soon(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

#[tokio::test]
async fn a_peer_that_accepts_and_never_answers_times_out_by_the_deadline() {
    let port = peer(|s| {
        std::thread::sleep(Duration::from_secs(5));
        drop(s);
    });
    let u = upstream(settings(tcp(port)));
    let mut conn = u.connect(soon(1000)).await.unwrap();
    conn.write_all(b"zINSTREAM\0", soon(1000)).await.unwrap();
    let started = Instant::now();
    assert_eq!(conn.read(4096, soon(300)).await, Err(UpstreamError::Timeout));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(290) && took < Duration::from_millis(800), "{took:?}");
}

#[tokio::test]
async fn an_endless_answer_stops_at_max_answer() {
    let port = peer(|mut s| {
        let chunk = [b'x'; 8192];
        while s.write_all(&chunk).is_ok() {}
    });
    let mut s = settings(tcp(port));
    s.max_answer = 100_000;
    let u = upstream(s);
    let mut conn = u.connect(soon(1000)).await.unwrap();
    let started = Instant::now();
    match conn.read_to_end(1 << 20, soon(5000)).await {
        Err(UpstreamError::TooLarge(why)) => assert!(why.contains("max-answer of 100000"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(conn.read <= 100_001, "read {} octets", conn.read);
    assert!(started.elapsed() < Duration::from_secs(2));
    // The caller's own bound is smaller still.
    let mut conn = u.connect(soon(1000)).await.unwrap();
    assert!(matches!(conn.read_to_end(1000, soon(5000)).await, Err(UpstreamError::TooLarge(_))));
}

#[tokio::test]
async fn a_stopped_upstream_is_unavailable_at_once() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let u = upstream(settings(tcp(port)));
    let started = Instant::now();
    match u.connect(soon(5000)).await {
        Err(UpstreamError::Unavailable(why)) => assert!(why.contains("upstream `scanner`"), "{why}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    let gone = upstream(settings(Address::Unix("/nonexistent/clamd.ctl".into())));
    assert!(matches!(gone.connect(soon(1000)).await, Err(UpstreamError::Unavailable(_))));
}

#[tokio::test]
async fn max_connections_holds_across_callers_and_a_slot_frees_on_drop() {
    let port = peer(|mut s| {
        let mut b = [0; 16];
        let _ = s.read(&mut b);
    });
    let mut s = settings(tcp(port));
    s.max_connections = 1;
    let u = upstream(s);
    let first = u.connect(soon(1000)).await.unwrap();
    let started = Instant::now();
    match u.connect(soon(200)).await {
        Err(UpstreamError::Unavailable(why)) => assert!(why.contains("all 1 connections"), "{why}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert!(started.elapsed() >= Duration::from_millis(190));
    drop(first);
    u.connect(soon(1000)).await.expect("the slot is free again");
}

#[tokio::test]
async fn a_unix_socket_upstream_carries_bytes_both_ways() {
    let dir = std::env::temp_dir().join(format!("wasmtpd-upstream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.sock");
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut b = [0; 5];
        s.read_exact(&mut b).unwrap();
        s.write_all(b"PONG\n").unwrap();
    });
    let u = upstream(settings(Address::Unix(path)));
    let mut conn = u.connect(soon(1000)).await.unwrap();
    conn.write_all(b"PING\n", soon(1000)).await.unwrap();
    assert_eq!(conn.read_to_end(100, soon(1000)).await.unwrap(), b"PONG\n");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A peer that answers every request on a connection with `answer` (read once per request:
/// up to the end of the head and `Content-Length` octets), counting connections.
fn http_peer(answer: &'static [u8], connections: Arc<std::sync::atomic::AtomicU32>) -> u16 {
    peer(move |mut s| {
        connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        loop {
            let mut got = Vec::new();
            let mut b = [0; 4096];
            let head_end = loop {
                if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                match s.read(&mut b) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&b[..n]),
                }
            };
            let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
            let len: usize =
                head.lines().find_map(|l| l.strip_prefix("content-length: ")).map_or(0, |v| v.trim().parse().unwrap());
            while got.len() < head_end + len {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&b[..n]),
                }
            }
            // An answer that says it closes the connection does.
            if s.write_all(answer).is_err() || answer.windows(17).any(|w| w == b"Connection: close") {
                return;
            }
        }
    })
}

async fn ask(u: &Arc<Upstream>, max_body: usize) -> Result<http::Response, UpstreamError> {
    let mut conn = match u.take_idle() {
        Some(c) => c,
        None => u.connect(soon(1000)).await?,
    };
    let head = http::request_head("POST", "/checkv2", &[], "scanner", 4)?;
    conn.write_all(&head, soon(1000)).await?;
    conn.write_all(b"body", soon(1000)).await?;
    let r = http::read_response(&mut conn, max_body, soon(1000)).await?;
    if r.reusable {
        conn.keep();
    }
    Ok(r)
}

#[tokio::test]
async fn http_answers_are_framed_pooled_and_bounded() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let count = Arc::new(AtomicU32::new(0));
    let port = http_peer(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"score\":1.5}", count.clone());
    let u = upstream(settings(tcp(port)));
    for _ in 0..3 {
        let r = ask(&u, 1000).await.unwrap();
        assert_eq!((r.status, r.body.as_slice(), r.reusable), (200, &b"{\"score\":1.5}"[..], true));
    }
    assert_eq!(count.load(Ordering::SeqCst), 1, "one connection, kept between requests");
    assert_eq!(u.idle_connections(), 1);

    let chunked = http_peer(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
        Arc::default(),
    );
    let r = ask(&upstream(settings(tcp(chunked))), 1000).await.unwrap();
    assert_eq!(r.body, b"hello world");

    let closes = http_peer(b"HTTP/1.1 503 Busy\r\nConnection: close\r\n\r\nlater", Arc::default());
    let u = upstream(settings(tcp(closes)));
    let r = ask(&u, 1000).await.unwrap();
    assert_eq!((r.status, r.reason.as_str(), r.body.as_slice(), r.reusable), (503, "Busy", &b"later"[..], false));
    assert_eq!(u.idle_connections(), 0);

    let big = http_peer(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n", Arc::default());
    assert!(matches!(ask(&upstream(settings(tcp(big))), 1000).await, Err(UpstreamError::TooLarge(_))));

    let garbage = http_peer(b"220 clamd here\r\n\r\n", Arc::default());
    assert!(matches!(ask(&upstream(settings(tcp(garbage))), 1000).await, Err(UpstreamError::Protocol(_))));

    // A head that never ends is cut at its bound, not read forever.
    let endless = peer(|mut s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\n");
        while s.write_all(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n").is_ok() {}
    });
    assert!(matches!(ask(&upstream(settings(tcp(endless))), 1000).await, Err(UpstreamError::TooLarge(_))));
}
