//! `cargo xtask bench [--quick]`: wasmtpd against the servers an operator would pick instead,
//! side by side in one run, plus the micro-benchmarks and 2,000 idle connections.
//!
//! 1. Installs what it needs (Postfix and qpsmtpd from Debian, Haraka from npm) and builds the
//!    release server and the plugins.
//! 2. Runs the criterion micro-benchmarks (`crates/smtp/benches`, `crates/host/benches`).
//! 3. Starts every server (see `peers.rs`), then for each server and workload sends a short
//!    calibration run to size the measured runs (about `run_seconds` each).
//! 4. Rounds: in every round, each workload against each server in turn (A B C A B C ...), so
//!    a machine that slows down mid-run slows everyone alike. Medians are reported, with each
//!    server's rate as a ratio to smtp-sink's in the same rounds.
//!    `wasmtpd (discard, DNS)` runs the same chain with dnsbl and SPF/DKIM/DMARC against a
//!    local nsd (`peers.rs`).
//!    `wasmtpd (store)` and `wasmtpd (Redis)` add greylisting (the triplet already white) and
//!    limit to the six plugins, on the embedded store and on a local redis-server. The store
//!    operations' own latency comes from `crates/host/examples/store_latency.rs` (`store.rs`).
//!    `wasmtpd (smtp-forward)` runs the six plugins with `queue/smtp-forward` to a private
//!    smtp-sink in place of `queue/discard`, against `haraka (smtp_forward)` to one of its own;
//!    the report says how many downstream connections wasmtpd opened in all its runs.
//! 5. 2,000 idle connections to a fresh wasmtpd (a six-plugin chain's instance pool fits about
//!    2,500 connections in its address space budget: `max_connections` is 2,000 here).
//! 6. Writes the tables to stdout and `bench/results/<date>-<quick|full>.md`.
//!
//! `--quick` (for a development loop): 3 rounds of about 3 s per run, short micro-benchmarks,
//! at most 2 s of waiting for a quiet machine before each run. The full mode (for the record):
//! 5 rounds of about 10 s per run, up to 10 s of waiting.
//!
//! `--only SERVERS` (comma-separated slugs: `wasmtpd-discard,wasmtpd-store,wasmtpd-redis`) and
//! `--workloads W1,W2`: a targeted run of those servers and workloads alone, in the same
//! interleaved rounds, without the micro-benchmarks and the idle connections; printed, not
//! written to `bench/results/` (it is not the record).

mod idle;
mod measure;
mod peers;
mod report;
mod store;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::{cargo, project_root, run};
use measure::WORKLOADS;
use peers::{ALL, Kind};
use report::Results;

struct Mode {
    rounds: usize,
    run_seconds: f64,
    idle_connections: usize,
    /// How long each run may wait for the machine to go quiet first (on a shared machine the
    /// full wait can dominate a quick run).
    settle: Duration,
}

/// Idle connections held open for the memory measurement; at most the `max_connections` of
/// the wasmtpd config (`peers.rs`).
const IDLE_CONNECTIONS: usize = 2_000;

pub fn bench(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let mode = if quick {
        Mode { rounds: 3, run_seconds: 3.0, idle_connections: IDLE_CONNECTIONS, settle: Duration::from_secs(2) }
    } else {
        Mode { rounds: 5, run_seconds: 10.0, idle_connections: IDLE_CONNECTIONS, settle: Duration::from_secs(10) }
    };
    let only = list_arg(args, "--only");
    let workloads = list_arg(args, "--workloads");
    let targeted = only.is_some() || workloads.is_some();
    let wanted_kind = |k: Kind| only.as_ref().is_none_or(|o| o.iter().any(|s| s == k.dir_name()));
    let wanted_workload = |w: &str| workloads.as_ref().is_none_or(|o| o.iter().any(|s| s == w));
    crate::install::test_tools()?; // nsd, for the DNS variant
    crate::install::bench_tools(&peers::bench_dir().join("haraka"))?;
    if targeted {
        crate::build_plugins::build_rust_plugins()?; // the benchmark runs no other-language plugin
    } else {
        crate::build_plugins::build_plugins()?;
    }
    run(cargo().args(["build", "--release", "--package", "wasmtpd"]))?;
    let started = chrono_like_now();
    let load_before = measure::load_average();

    let micro = if targeted { Vec::new() } else { micro_benchmarks(quick)? };
    let store_latency = store::latency();

    let mut results = Results {
        quick,
        rounds: mode.rounds,
        samples: BTreeMap::new(),
        failures: Vec::new(),
        micro,
        store_latency,
        idle: None,
        load_before,
        load_after: String::new(),
        started,
        downstream_connections: None,
    };
    let mut servers = Vec::new();
    for kind in ALL {
        if !wanted_kind(kind) {
            servers.push(None);
            continue;
        }
        eprintln!("xtask: starting {}", kind.name());
        match peers::start(kind) {
            Ok(r) => servers.push(Some(r)),
            Err(e) => {
                results.failures.push(format!("{}: {e:#}", kind.name()));
                servers.push(None);
            }
        }
    }
    // Calibration: how many messages make a run of about `run_seconds` for each server.
    let mut counts: BTreeMap<(usize, &str), u64> = BTreeMap::new();
    for w in WORKLOADS.iter().filter(|w| wanted_workload(w.name)) {
        for (i, server) in servers.iter().enumerate() {
            let Some(s) = server else { continue };
            match measure::run(w, s.port, s.root, w.calibration, mode.settle) {
                Ok(sample) => {
                    let n = (sample.rate() * mode.run_seconds) as u64;
                    counts.insert((i, w.name), n.clamp(w.calibration, w.calibration * 200));
                }
                Err(e) => results.failures.push(format!("{} {} (calibration): {e:#}", s.kind.name(), w.name)),
            }
        }
    }
    let mut sent_to_maildir = 0u64;
    for round in 1..=mode.rounds {
        for w in WORKLOADS.iter().filter(|w| wanted_workload(w.name)) {
            for (i, server) in servers.iter().enumerate() {
                let (Some(s), Some(&n)) = (server, counts.get(&(i, w.name))) else { continue };
                eprintln!("xtask: round {round}/{}: {} against {} ({n} messages)", mode.rounds, w.name, s.kind.name());
                match measure::run(w, s.port, s.root, n, mode.settle) {
                    Ok(sample) => {
                        eprintln!(
                            "xtask:   {:.0} msgs/s, {:.0} µs CPU/msg, {:.1} MiB",
                            sample.rate(),
                            sample.cpu_us_per_message(),
                            sample.peak_kib as f64 / 1024.0
                        );
                        if s.kind == Kind::WasmtpdMaildir {
                            sent_to_maildir += n;
                        }
                        results.samples.entry((i, w.name)).or_default().push(sample);
                    }
                    Err(e) => results.failures.push(format!("{} {} round {round}: {e:#}", s.kind.name(), w.name)),
                }
            }
        }
    }
    // Every message a maildir run was told 250 for is in the maildir.
    for s in servers.iter().flatten() {
        if let Some(delivered) = s.delivered() {
            let expected = sent_to_maildir
                + WORKLOADS.iter().filter(|w| wanted_workload(w.name)).map(|w| w.calibration).sum::<u64>();
            if delivered as u64 != expected {
                results
                    .failures
                    .push(format!("{}: {delivered} messages in the maildir, {expected} acknowledged", s.kind.name()));
            }
        }
    }
    for s in servers.into_iter().flatten() {
        if s.kind == Kind::WasmtpdForward {
            results.downstream_connections = s.downstream_connections();
        }
        s.stop();
    }
    if targeted {
        results.load_after = measure::load_average();
        println!("{}", results.to_markdown());
        return Ok(());
    }
    results.idle = match peers::start(Kind::WasmtpdDiscard).and_then(|s| {
        let r = idle::measure(s.port, s.root, mode.idle_connections);
        s.stop();
        r
    }) {
        Ok(i) => Some(i),
        Err(e) => {
            results.failures.push(format!("idle connections: {e:#}"));
            None
        }
    };
    results.load_after = measure::load_average();
    let text = results.to_markdown();
    println!("{text}");
    let dir = project_root().join("bench/results");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!("{}-{}.md", &results.started[..10], if quick { "quick" } else { "full" }));
    std::fs::write(&file, &text).with_context(|| format!("writing {}", file.display()))?;
    eprintln!("xtask: results written to {}", file.display());
    Ok(())
}

/// The comma-separated values after `flag` (`--only a,b`), if it is given.
fn list_arg(args: &[String], flag: &str) -> Option<Vec<String>> {
    let i = args.iter().position(|a| a == flag)?;
    Some(args.get(i + 1).map(|v| v.split(',').map(str::to_string).collect()).unwrap_or_default())
}

/// `YYYY-MM-DD HH:MM UTC`, from `date` (xtask has no date crate).
fn chrono_like_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs the criterion benchmarks and reads their medians back from `target/criterion`.
fn micro_benchmarks(quick: bool) -> Result<Vec<(String, f64, Option<f64>)>> {
    let times: &[&str] = if quick { &["--warm-up-time", "1", "--measurement-time", "2"] } else { &[] };
    for (package, bench) in [("wasmtpd-smtp", "protocol"), ("wasmtpd-host", "plugins")] {
        run(cargo().args(["bench", "--package", package, "--bench", bench, "--"]).args(times))?;
    }
    let root = project_root().join("target/criterion");
    let mut out = Vec::new();
    for group in [
        "parse_command/mail_from",
        "parse_command/rcpt_to",
        "data/reader",
        "data/memchr_scan",
        "hook_call/bare",
        "hook_call/rcpt_ok",
        "new_instance/rcpt_ok",
        "transaction/six_plugins",
        "dns/cached_check_lists",
    ] {
        let dir = root.join(group).join("new");
        let Ok(estimates) = std::fs::read_to_string(dir.join("estimates.json")) else { continue };
        let estimates: serde_json::Value = serde_json::from_str(&estimates)?;
        let Some(ns) = estimates["median"]["point_estimate"].as_f64() else { continue };
        let bytes = std::fs::read_to_string(dir.join("benchmark.json"))
            .ok()
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|b| b["throughput"]["Bytes"].as_f64());
        out.push((group.to_string(), ns, bytes.map(|b| b / (ns * 1e-9))));
    }
    Ok(out)
}
