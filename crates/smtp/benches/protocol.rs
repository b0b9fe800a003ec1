//! The protocol engine's hot paths: parsing a command line, and the DATA reader's throughput
//! against a plain memchr scan of the same bytes (the floor: finding every line end and
//! nothing else).
//!
//! `cargo bench -p wasmtpd-smtp` (or `cargo xtask bench`, which reports the medians).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wasmtpd_smtp::{Command, DataReader};

fn parse_command(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_command");
    for (name, line) in [
        ("mail_from", &b"MAIL FROM:<sender.name@example.org> SIZE=123456 BODY=8BITMIME"[..]),
        ("rcpt_to", &b"RCPT TO:<recipient@example.com>"[..]),
        ("ehlo", &b"EHLO client.example.net"[..]),
    ] {
        g.bench_function(name, |b| b.iter(|| Command::parse(black_box(line))));
    }
    g.finish();
}

/// A 1 MiB message of 76-octet lines, with some leading dots to unstuff, ending in CRLF.CRLF.
fn message() -> Vec<u8> {
    let mut m = Vec::with_capacity(1 << 20);
    let mut i = 0u32;
    while m.len() < (1 << 20) - 100 {
        if i.is_multiple_of(50) {
            m.extend_from_slice(b"..a line that starts with a stuffed dot\r\n");
        } else {
            m.extend_from_slice(b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod t\r\n");
        }
        i += 1;
    }
    m.extend_from_slice(b".\r\n");
    m
}

fn data_reader(c: &mut Criterion) {
    let input = message();
    let mut g = c.benchmark_group("data");
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.bench_function("reader", |b| {
        let mut out = Vec::with_capacity(64 * 1024);
        b.iter(|| {
            let mut reader = DataReader::new(0, 1000);
            let mut rest = &input[..];
            // 64 KiB reads, as the server does.
            loop {
                let chunk = &rest[..rest.len().min(64 * 1024)];
                let (n, end) = reader.feed(chunk, &mut out);
                out.clear();
                rest = &rest[n..];
                if end.is_some() {
                    break;
                }
            }
            black_box(reader.size())
        })
    });
    g.bench_function("memchr_scan", |b| b.iter(|| memchr::memchr_iter(b'\n', black_box(&input)).count()));
    g.finish();
}

criterion_group!(benches, parse_command, data_reader);
criterion_main!(benches);
