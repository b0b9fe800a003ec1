//! The result tables: medians over the rounds, each server's throughput as a ratio to
//! smtp-sink measured in the same rounds, CPU per message, peak memory; the micro-benchmarks;
//! the idle connections. Written as markdown to stdout and to `bench/results/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::idle::Idle;
use super::measure::{Sample, WORKLOADS};
use super::peers::{ALL, Kind};

pub struct Results {
    pub quick: bool,
    pub rounds: usize,
    /// (server, workload) -> one sample per round.
    pub samples: BTreeMap<(usize, &'static str), Vec<Sample>>,
    pub failures: Vec<String>,
    /// (benchmark, median in ns, throughput in bytes/s if any).
    pub micro: Vec<(String, f64, Option<f64>)>,
    /// The store_latency example's lines (`store.rs`), or why it did not run.
    pub store_latency: Result<Vec<String>, String>,
    pub idle: Option<Idle>,
    pub load_before: String,
    pub load_after: String,
    pub started: String,
    /// Connections `wasmtpd (smtp-forward)` opened to its smtp-sink over all its runs.
    pub downstream_connections: Option<u64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0)))
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({cpu}), {} GiB, Linux {}", mem >> 20, kernel.trim())
}

impl Results {
    /// The runs of one server in one workload (`None`: none succeeded).
    fn runs(&self, kind: Kind, workload: &'static str) -> Option<&Vec<Sample>> {
        let i = ALL.iter().position(|k| *k == kind)?;
        self.samples.get(&(i, workload)).filter(|v| !v.is_empty())
    }

    /// The median msgs/s of one server in one workload.
    fn rate(&self, kind: Kind, workload: &'static str) -> Option<f64> {
        self.runs(kind, workload).map(|v| median(v.iter().map(Sample::rate).collect()))
    }

    fn micro_ns(&self, name: &str) -> Option<f64> {
        self.micro.iter().find(|(n, _, _)| n == name).map(|(_, ns, _)| *ns)
    }

    /// The targets of the benchmark issue, each with what this run measured and whether it is met.
    fn targets(&self) -> Vec<(String, String, Option<bool>)> {
        let mut rows = Vec::new();
        let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
        let mut row = |target: String, measured: Option<f64>, unit: &str, met: &dyn Fn(f64) -> bool| {
            let shown = measured.map_or("not measured".to_string(), |m| format!("{m:.2}{unit}"));
            rows.push((target, shown, measured.map(met)));
        };
        for w in ["W1", "W2"] {
            let discard = self.rate(Kind::WasmtpdDiscard, w);
            for (peer, factor) in [(Kind::Sink, 0.5), (Kind::Haraka, 2.0), (Kind::Postfix, 2.0), (Kind::Qpsmtpd, 20.0)]
            {
                row(
                    format!("{w}: wasmtpd (discard) ≥ {factor} × {}", peer.name()),
                    ratio(discard, self.rate(peer, w)),
                    "×",
                    &|r| r >= factor,
                );
            }
            row(
                format!("{w}: wasmtpd (maildir, fsync) ahead of postfix"),
                ratio(self.rate(Kind::WasmtpdMaildir, w), self.rate(Kind::Postfix, w)),
                "×",
                &|r| r > 1.0,
            );
        }
        for w in ["W1", "W2"] {
            let forward = self.rate(Kind::WasmtpdForward, w);
            row(
                format!("{w}: wasmtpd (smtp-forward) ≥ 3 × haraka (smtp_forward)"),
                ratio(forward, self.rate(Kind::HarakaForward, w)),
                "×",
                &|r| r >= 3.0,
            );
            row(
                format!("{w}: wasmtpd (smtp-forward) ≥ 0.3 × smtp-sink"),
                ratio(forward, self.rate(Kind::Sink, w)),
                "×",
                &|r| r >= 0.3,
            );
        }
        row(
            "downstream connections wasmtpd (smtp-forward) opened in all its runs (reused: far fewer than messages)"
                .into(),
            self.downstream_connections.map(|n| n as f64),
            "",
            &|_| true,
        );
        row(
            "W3: wasmtpd (discard) ≥ 0.8 × smtp-sink".into(),
            ratio(self.rate(Kind::WasmtpdDiscard, "W3"), self.rate(Kind::Sink, "W3")),
            "×",
            &|r| r >= 0.8,
        );
        row(
            "W1: wasmtpd with dnsbl (2 zones) and SPF, DKIM, DMARC ≥ 0.5 × the same chain without".into(),
            ratio(self.rate(Kind::WasmtpdDns, "W1"), self.rate(Kind::WasmtpdDiscard, "W1")),
            "×",
            &|r| r >= 0.5,
        );
        row(
            "a cached DNS list check from a plugin costs microseconds (dns/cached_check_lists − hook_call/bare, p50)"
                .into(),
            self.micro_ns("dns/cached_check_lists").zip(self.micro_ns("hook_call/bare")).map(|(a, b)| (a - b) / 1000.0),
            " µs",
            &|us| us < 50.0,
        );
        for (kind, w) in [
            (Kind::WasmtpdStore, "W1"),
            (Kind::WasmtpdStore, "W2"),
            (Kind::WasmtpdRedis, "W1"),
            (Kind::WasmtpdRedis, "W2"),
        ] {
            row(
                format!("{w}: {} ≥ 0.7 × the same chain without greylisting and limit", kind.name()),
                ratio(self.rate(kind, w), self.rate(Kind::WasmtpdDiscard, w)),
                "×",
                &|r| r >= 0.7,
            );
        }
        let lines = self.store_latency.as_deref().unwrap_or_default();
        row(
            "a store get on the embedded store < 10 µs p50 (store_latency)".into(),
            super::store::p50(lines, "embedded", "get"),
            " µs",
            &|us| us < 10.0,
        );
        row(
            "one hook call < 2 µs (hook_call/bare)".into(),
            self.micro_ns("hook_call/bare").map(|ns| ns / 1000.0),
            " µs",
            &|us| us < 2.0,
        );
        row(
            "one instantiation per transaction < 25 µs (new_instance/rcpt_ok, with its first call)".into(),
            self.micro_ns("new_instance/rcpt_ok").map(|ns| ns / 1000.0),
            " µs",
            &|us| us < 25.0,
        );
        if let Some(idle) = &self.idle {
            row(
                format!("{} idle connections < 1 GiB in total (PSS)", idle.connections),
                Some(idle.with_kib as f64 / 1024.0),
                " MiB",
                &|mib| mib < 1024.0,
            );
        }
        rows
    }

    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let mode = if self.quick { "quick" } else { "full" };
        let _ = writeln!(s, "# wasmtpd benchmark ({mode}), {}\n", self.started);
        let _ = writeln!(s, "- machine: {}", machine());
        let _ = writeln!(s, "- load average (1, 5, 15 min): before {}, after {}", self.load_before, self.load_after);
        let _ = writeln!(
            s,
            "- {} rounds; in each round every workload runs against every server in turn, so machine drift hits all \
             alike; medians reported. Load: Postfix's smtp-source on the same machine.",
            self.rounds
        );
        let _ = writeln!(
            s,
            "- ratio: the server's msgs/s over smtp-sink's in the same rounds. CPU: the server's whole process tree \
             (user + system) per message. Memory: the peak of the tree's summed PSS during the run.\n"
        );
        for w in WORKLOADS {
            let _ = writeln!(s, "## {}: {}\n", w.name, w.what);
            let _ = writeln!(s, "| server | msgs/s | ratio to smtp-sink | CPU µs/msg | peak memory MiB |");
            let _ = writeln!(s, "|---|---:|---:|---:|---:|");
            let sink_rate = self.rate(Kind::Sink, w.name);
            if !self.samples.keys().any(|(_, name)| *name == w.name) {
                let _ = writeln!(s, "not run\n");
                continue;
            }
            for kind in ALL {
                let (Some(v), Some(rate)) = (self.runs(kind, w.name), self.rate(kind, w.name)) else {
                    let _ = writeln!(s, "| {} | failed | | | |", kind.name());
                    continue;
                };
                let cpu = median(v.iter().map(Sample::cpu_us_per_message).collect());
                let peak = v.iter().map(|x| x.peak_kib).max().unwrap_or(0) as f64 / 1024.0;
                let ratio = sink_rate.map_or(String::new(), |r| format!("{:.2}", rate / r));
                let _ = writeln!(s, "| {} | {rate:.0} | {ratio} | {cpu:.0} | {peak:.1} |", kind.name());
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s, "## Targets\n");
        let _ = writeln!(s, "| target | measured | met |");
        let _ = writeln!(s, "|---|---:|:---:|");
        for (target, measured, met) in self.targets() {
            let mark = match met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "?",
            };
            let _ = writeln!(s, "| {target} | {measured} | {mark} |");
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "## Key-value store operations (crates/host/examples/store_latency.rs)\n");
        match &self.store_latency {
            Ok(lines) => {
                let _ = writeln!(s, "```text");
                for l in lines {
                    let _ = writeln!(s, "{l}");
                }
                let _ = writeln!(s, "```\n");
            }
            Err(e) => {
                let _ = writeln!(s, "not measured: {e}\n");
            }
        }
        if !self.failures.is_empty() {
            let _ = writeln!(s, "## Failed runs\n");
            for f in &self.failures {
                let _ = writeln!(s, "- {f}");
            }
            let _ = writeln!(s);
        }
        if !self.micro.is_empty() {
            let _ = writeln!(s, "## Micro-benchmarks (criterion, median)\n");
            let _ = writeln!(s, "| benchmark | time | throughput |");
            let _ = writeln!(s, "|---|---:|---:|");
            for (name, ns, bps) in &self.micro {
                let time = if *ns >= 1000.0 { format!("{:.2} µs", ns / 1000.0) } else { format!("{ns:.0} ns") };
                let thrpt = bps.map_or(String::new(), |b| format!("{:.2} GiB/s", b / (1u64 << 30) as f64));
                let _ = writeln!(s, "| {name} | {time} | {thrpt} |");
            }
            let _ = writeln!(s);
        }
        if let Some(idle) = &self.idle {
            let _ = writeln!(s, "## Idle connections (wasmtpd)\n");
            let _ = writeln!(
                s,
                "{} connections open and greeted: the server's PSS went from {:.1} MiB to {:.1} MiB ({:.1} KiB per \
                 connection).\n",
                idle.connections,
                idle.before_kib as f64 / 1024.0,
                idle.with_kib as f64 / 1024.0,
                idle.per_connection_kib()
            );
        }
        s
    }
}
