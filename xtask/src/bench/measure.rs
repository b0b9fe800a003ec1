//! What a run measures: messages per second (from smtp-source's wall time), the server's CPU
//! time per message (its whole process tree, children that exited included), and its peak
//! memory (the sum of the tree's PSS, sampled every 50 ms, so shared pages count once).

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// One workload: smtp-source's shape of traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    pub name: &'static str,
    pub what: &'static str,
    pub sessions: u32,
    pub size: u64,
    /// Many messages per connection (`smtp-source -d`).
    pub reuse: bool,
    /// Messages of the first (calibration) run.
    pub calibration: u64,
}

pub const WORKLOADS: [Workload; 3] = [
    Workload {
        name: "W1",
        what: "20 sessions, one 4 KiB message per connection",
        sessions: 20,
        size: 4096,
        reuse: false,
        calibration: 300,
    },
    Workload {
        name: "W2",
        what: "10 sessions, many 4 KiB messages per connection",
        sessions: 10,
        size: 4096,
        reuse: true,
        calibration: 600,
    },
    Workload {
        name: "W3",
        what: "10 sessions, one 1 MiB message per connection",
        sessions: 10,
        size: 1 << 20,
        reuse: false,
        calibration: 30,
    },
];

/// The result of one run.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub messages: u64,
    pub seconds: f64,
    /// Server CPU time (user + system) for the run.
    pub cpu_seconds: f64,
    /// Largest sum of PSS over the server's processes during the run.
    pub peak_kib: u64,
}

impl Sample {
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.seconds
    }
    pub fn cpu_us_per_message(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.messages as f64
    }
}

/// Sends `messages` messages with smtp-source to `port` and measures the server (`root` and
/// its descendants) meanwhile, after waiting up to `settle` for the machine to go quiet. Any
/// error reply or lost connection fails the run.
pub fn run(w: &Workload, port: u16, root: u32, messages: u64, settle: Duration) -> Result<Sample> {
    let peak = Arc::new(AtomicU64::new(pss_kib(&tree(root))));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(pss_kib(&tree(root)), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    machine_idle(settle);
    let cpu_before = cpu_seconds(&tree(root));
    let started = Instant::now();
    let mut cmd = Command::new("smtp-source");
    cmd.args(["-s", &w.sessions.to_string(), "-m", &messages.to_string(), "-l", &w.size.to_string()]);
    if w.reuse {
        cmd.arg("-d");
    }
    cmd.args(["-f", "bench@remote.test", "-t", "user@example.com", "-M", "bench.client.test"]);
    cmd.arg(format!("127.0.0.1:{port}"));
    let out = cmd.output().context("running smtp-source (installed with postfix)")?;
    let seconds = started.elapsed().as_secs_f64();
    // Work the server does after the last reply (Postfix's queue manager delivering) is part of
    // handling these messages: count it, and keep it out of the next server's run.
    let cpu_after = quiet_cpu_seconds(root);
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || stderr.contains("fatal") || stderr.contains("warning") {
        bail!("smtp-source failed against port {port}: {}", stderr.trim());
    }
    Ok(Sample { messages, seconds, cpu_seconds: cpu_after - cpu_before, peak_kib: peak.load(Ordering::Relaxed) })
}

/// The tree's CPU time once it has stopped using any (two 100 ms windows without a tick), or
/// after 10 s.
fn quiet_cpu_seconds(root: u32) -> f64 {
    let started = Instant::now();
    let mut last = cpu_seconds(&tree(root));
    let mut quiet = 0;
    while quiet < 2 && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        let now = cpu_seconds(&tree(root));
        quiet = if now > last { 0 } else { quiet + 1 };
        last = now;
    }
    last
}

/// Waits (up to `max`) until the machine is nearly idle: under 10% of the CPUs busy over 200 ms.
fn machine_idle(max: Duration) {
    let busy = || -> Option<(u64, u64)> {
        let s = std::fs::read_to_string("/proc/stat").ok()?;
        let v: Vec<u64> = s.lines().next()?.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        let idle = v.get(3)? + v.get(4).unwrap_or(&0);
        Some((v.iter().sum::<u64>() - idle, v.iter().sum()))
    };
    let started = Instant::now();
    while started.elapsed() < max {
        let Some((b0, t0)) = busy() else { return };
        std::thread::sleep(Duration::from_millis(200));
        let Some((b1, t1)) = busy() else { return };
        if t1 > t0 && (b1 - b0) * 10 < (t1 - t0) {
            return;
        }
    }
}

/// `root` and all its descendants.
pub fn tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1).and_then(|p| p.parse::<u32>().ok())) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(c);
        }
        i += 1;
    }
    out
}

/// The fields of `/proc/PID/stat` after the command name (state is the first).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// User + system CPU of these processes and of their children already reaped.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    let tick = clock_ticks();
    pids.iter()
        .filter_map(|p| stat_fields(*p))
        .map(|f| (11..=14).filter_map(|i| f.get(i).and_then(|v| v.parse::<u64>().ok())).sum::<u64>())
        .sum::<u64>() as f64
        / tick
}

fn clock_ticks() -> f64 {
    static TICK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The sum of PSS (proportional set size) of these processes, in KiB.
pub fn pss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum()
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
