//! Measures what a plugin costs per transaction and per hook call, through the real chain:
//!
//! ```text
//! cargo xtask build-plugins
//! cargo run --release -p wasmtpd-host --example hook_cost [COMPONENT.wasm [ITERATIONS]]
//! ```
//!
//! - "new transaction": the transaction id changes every call, so each call drops the previous
//!   instance and instantiates a fresh one (what every transaction pays per plugin);
//! - "warm call": the same transaction, so the instance is reused (one more hook call).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtpd_host::PluginHost;
use wasmtpd_host::plugin::PluginSpec;
use wasmtpd_host::sandbox::{Right, SandboxSettings};
use wasmtpd_smtp::{Address, Connection, HookArgs, HookContext, HookRunner, Transaction};

struct Files;
impl wasmtpd_host::ConfigFiles for Files {
    fn lines(&self, name: &str) -> Option<Vec<String>> {
        (name == "rcpthosts").then(|| vec!["example.com".to_string()])
    }
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let wasm = std::env::args().nth(1).map(Into::into).unwrap_or_else(|| root.join("target/plugins/rcpt_ok.wasm"));
    let dir = std::env::temp_dir().join(format!("wasmtpd-hook-cost-{}", std::process::id()));
    let size = std::fs::metadata(&wasm)?.len();
    // What the server gives rcpt_ok: its file, and the right to accept recipients.
    let mut settings = SandboxSettings { config_files: vec!["rcpthosts".to_string()], ..Default::default() };
    settings.rights.grant(Right::AcceptRecipient);
    let spec = PluginSpec { name: "measured".into(), args: vec![], path: wasm.clone(), pin: None, settings };
    let started = Instant::now();
    drop(PluginHost::load(
        std::slice::from_ref(&spec),
        Arc::new(Files),
        &Default::default(),
        &dir.join("spool"),
        &dir.join("cache"),
        1000,
    )?);
    let first = started.elapsed();
    let started = Instant::now();
    let host =
        PluginHost::load(&[spec], Arc::new(Files), &Default::default(), &dir.join("spool"), &dir.join("cache"), 1000)?;
    println!(
        "{}: {} KiB; first start (compile) {:?}; second start (precompiled, cached) {:?}",
        wasm.display(),
        size / 1024,
        first,
        started.elapsed()
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let to = Address::new("someone", "example.com").unwrap();
    let n: usize = std::env::args().nth(2).and_then(|v| v.parse().ok()).unwrap_or(3000);
    rt.block_on(async {
        let mut scope = host.open_scope();
        let mut conn = Connection::new("bench".into(), "127.0.0.1:1".parse().unwrap(), "127.0.0.1:25".parse().unwrap());
        let mut fresh = Vec::with_capacity(n);
        let mut warm = Vec::with_capacity(n);
        for i in 0..n {
            let mut txn = Transaction { id: format!("t{i}"), ..Default::default() };
            let args = HookArgs::Rcpt { to: &to, params: &[] };
            let t = Instant::now();
            let r = host
                .run(
                    &mut scope,
                    wasmtpd_smtp::Hook::Rcpt,
                    args,
                    HookContext { connection: &mut conn, transaction: Some(&mut txn) },
                )
                .await;
            fresh.push(t.elapsed());
            assert!(!r.fault, "the plugin faulted");
            let t = Instant::now();
            let args = HookArgs::Rcpt { to: &to, params: &[] };
            host.run(
                &mut scope,
                wasmtpd_smtp::Hook::Rcpt,
                args,
                HookContext { connection: &mut conn, transaction: Some(&mut txn) },
            )
            .await;
            warm.push(t.elapsed());
        }
        for (name, v) in [("new transaction (drop + instantiate + call)", fresh), ("warm call (instance reused)", warm)]
        {
            println!(
                "{name}: p50 {:?}  p90 {:?}  p99 {:?}",
                percentile(v.clone(), 0.5),
                percentile(v.clone(), 0.9),
                percentile(v, 0.99)
            );
        }
    });
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
