//! The PROXY protocol on a `--listen-proxy` listener: only from a trusted load balancer; the
//! header's client is the one the hooks and the Received header see; anything else closes.

use std::time::Duration;

use wasmtpd_smtp::Hook;
use wasmtpd_smtp::proxy::V2_SIGNATURE;

use super::{MESSAGE, Scripted, Setup, code_of};
use crate::frontends::Prefix;

fn balanced() -> Setup {
    Setup::new(Scripted::accepting())
        .proxy()
        .from("127.0.0.4:40000")
        .config(|c| c.frontends.proxy = vec![Prefix::parse("127.0.0.4").unwrap()])
}

fn v2_tcp4(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend([0x21, 0x11, 0, 12]);
    h.extend(client);
    h.extend([192, 0, 2, 25]);
    h.extend(port.to_be_bytes());
    h.extend(25u16.to_be_bytes());
    h
}

/// Runs a whole transaction after the header; returns the message the queue hook saw.
async fn transaction_after(header: &[u8]) -> (Vec<std::net::SocketAddr>, String) {
    let mut c = balanced().connect().await;
    c.send(header).await;
    c.start_message().await;
    c.send(MESSAGE).await;
    assert_eq!(code_of(&c.reply().await), 250);
    let remotes = c.calls_of(Hook::Connect).iter().chain(&c.calls_of(Hook::Queue)).map(|c| c.remote).collect();
    let message = String::from_utf8(c.calls_of(Hook::Queue)[0].message.clone().unwrap()).unwrap();
    (remotes, message)
}

#[tokio::test(start_paused = true)]
async fn proxy_v1_from_a_trusted_balancer_names_the_client() {
    // The header and the client's first command may come in one segment.
    let (remotes, message) = transaction_after(b"PROXY TCP4 203.0.113.5 192.0.2.25 4711 25\r\n").await;
    assert_eq!(remotes, vec!["203.0.113.5:4711".parse().unwrap(); 2], "connect and queue see the client");
    assert!(message.starts_with("Received: from client.test ([203.0.113.5])"), "{message}");
    let (remotes, _) = transaction_after(b"PROXY TCP6 2001:db8::5 2001:db8::25 4711 25\r\n").await;
    assert_eq!(remotes[0], "[2001:db8::5]:4711".parse().unwrap());
    let (remotes, _) = transaction_after(b"PROXY UNKNOWN\r\n").await;
    assert_eq!(remotes[0], "127.0.0.4:40000".parse().unwrap(), "UNKNOWN: the connection's own address");
}

#[tokio::test(start_paused = true)]
async fn proxy_v2_from_a_trusted_balancer_names_the_client() {
    let (remotes, message) = transaction_after(&v2_tcp4([203, 0, 113, 9], 999)).await;
    assert_eq!(remotes, vec!["203.0.113.9:999".parse().unwrap(); 2]);
    assert!(message.starts_with("Received: from client.test ([203.0.113.9])"), "{message}");
}

async fn closes_without_a_word(setup: Setup, header: &[u8]) {
    let mut c = setup.connect().await;
    c.send(header).await;
    assert!(c.closed().await, "{:?}", String::from_utf8_lossy(header));
    assert!(c.hooks().is_empty(), "no hook runs for {:?}", String::from_utf8_lossy(header));
}

#[tokio::test(start_paused = true)]
async fn a_proxy_header_from_an_untrusted_peer_closes() {
    let untrusted = balanced().from("127.0.0.5:40000");
    closes_without_a_word(untrusted, b"PROXY TCP4 203.0.113.5 192.0.2.25 4711 25\r\n").await;
    let untrusted = balanced().from("127.0.0.5:40000");
    closes_without_a_word(untrusted, &v2_tcp4([203, 0, 113, 9], 999)).await;
}

#[tokio::test(start_paused = true)]
async fn a_malformed_or_missing_proxy_header_closes() {
    for bad in [
        &b"EHLO client.test\r\n"[..],
        b"PROXY TCP4 203.0.113.5 192.0.2.25 4711\r\n",
        b"PROXY TCP4 203.0.113.5 192.0.2.25 4711 25\n",
        b"PROXY TCP4 2001:db8::5 192.0.2.25 4711 25\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x22\x11\x00\x0c",
    ] {
        closes_without_a_word(balanced(), bad).await;
    }
    let mut huge = v2_tcp4([203, 0, 113, 9], 999);
    huge[14..16].copy_from_slice(&60000u16.to_be_bytes());
    closes_without_a_word(balanced(), &huge).await;
}

#[tokio::test(start_paused = true)]
async fn a_truncated_proxy_header_closes_within_the_bound() {
    let started = tokio::time::Instant::now();
    closes_without_a_word(balanced(), b"PROXY TCP4 203.0.113.5 19").await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(5) && waited < Duration::from_secs(6), "{waited:?}");
    let v2 = v2_tcp4([203, 0, 113, 9], 999);
    closes_without_a_word(balanced(), &v2[..20]).await;
    // Cut by a disconnect.
    let mut c = balanced().connect().await;
    c.send(b"PROXY TCP4 203.0").await;
    c.hang_up().await;
    assert!(c.task_ends().await);
    assert!(c.hooks().is_empty());
}
