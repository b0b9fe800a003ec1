//! What one key-value store operation costs (p50 and p99 of get, set and increment), on the
//! embedded store and on a local redis-server: `crates/host/examples/store_latency.rs`, run
//! in release mode, its lines kept for the report.

use wasmtpd_tests::redis::RedisServer;

use crate::cargo;

/// The example's lines (`embedded get        p50     12.3 µs  p99 ...`), or why there are none.
pub fn latency() -> Result<Vec<String>, String> {
    let redis = std::panic::catch_unwind(RedisServer::start).map_err(|_| "redis-server did not start".to_string())?;
    let out = cargo()
        .args(["run", "--quiet", "--release", "--package", "wasmtpd-host", "--example", "store_latency", "--"])
        .arg(redis.url())
        .current_dir(crate::project_root())
        .output()
        .map_err(|e| format!("running the store_latency example: {e}"))?;
    if !out.status.success() {
        return Err(format!("store_latency failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect())
}

/// The p50 in µs of `backend`'s `operation` (`embedded`, `get`) in the example's lines.
pub fn p50(lines: &[String], backend: &str, operation: &str) -> Option<f64> {
    lines.iter().find_map(|l| {
        let mut words = l.split_whitespace();
        if words.next()? != backend || words.next()? != operation {
            return None;
        }
        let rest: Vec<&str> = words.collect();
        let i = rest.iter().position(|w| *w == "p50")?;
        rest.get(i + 1)?.parse().ok()
    })
}
