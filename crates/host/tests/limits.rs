//! The limits of the sandbox, obeyed and violated, at the host: a `PluginHost` with one plugin
//! (`testing/hostile`, built by `cargo xtask build-plugins`), its `connect` hook run directly,
//! no server and no sockets. Each limit comes in a pair with the same settings: a plugin within
//! it works, one past it faults, and the fault is the one the limit makes (the log says which).
//!
//! The end-to-end tests (`tests/tests/e2e/sandbox.rs`) show the same through the server: the
//! reply the client gets, and that other connections go on.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtpd_host::PluginHost;
use wasmtpd_host::plugin::PluginSpec;
use wasmtpd_host::sandbox::SandboxSettings;
use wasmtpd_smtp::{Connection, Hook, HookArgs, HookContext, HookResult, HookRunner, Verdict};

struct NoFiles;
impl wasmtpd_host::ConfigFiles for NoFiles {
    fn lines(&self, _: &str) -> Option<Vec<String>> {
        None
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `target/plugins/testing/hostile.wasm`, which must exist and be newer than its source (else
/// the test fails saying how to build it: it never passes on a missing fixture).
fn hostile_component() -> PathBuf {
    let path = repo().join("target/plugins/testing/hostile.wasm");
    let source = repo().join("plugins-wasm/testing/hostile/src/lib.rs");
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).unwrap_or_else(|e| {
        panic!("{}: {e}: build the test fixtures with `cargo xtask build-plugins` first", path.display())
    });
    let written = std::fs::metadata(&source).and_then(|m| m.modified()).unwrap();
    assert!(
        built >= written,
        "{} is older than {}: rebuild it with `cargo xtask build-plugins`",
        path.display(),
        source.display()
    );
    path
}

/// A host whose one plugin is `testing/hostile` with `args` at `connect`, in `settings`.
fn hostile(args: &[&str], settings: SandboxSettings) -> PluginHost {
    let spec = PluginSpec {
        name: "testing/hostile".into(),
        args: ["connect"].iter().chain(args).map(|a| a.to_string()).collect(),
        path: hostile_component(),
        pin: None,
        settings,
    };
    let spool = std::env::temp_dir().join(format!("wasmtpd-host-limits-{}", std::process::id()));
    let cache = repo().join("target/host-test-plugin-cache");
    PluginHost::load(&[spec], Arc::new(NoFiles), &Default::default(), &spool, &cache, 1)
        .expect("loading testing/hostile")
}

/// What the plugin answered at `connect`, and what the host logged meanwhile.
fn connect(host: &PluginHost) -> (HookResult, String) {
    let log = Log::default();
    let subscriber = tracing_subscriber::fmt().with_writer(log.clone()).with_ansi(false).finish();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let result = tracing::subscriber::with_default(subscriber, || {
        let mut scope = host.open_scope();
        let mut connection =
            Connection::new("limits".into(), "192.0.2.1:40000".parse().unwrap(), "192.0.2.25:25".parse().unwrap());
        let ctx = HookContext { connection: &mut connection, transaction: None };
        rt.block_on(host.run(&mut scope, Hook::Connect, HookArgs::None, ctx))
    });
    (result, log.text())
}

/// The plugin answered (DENYSOFT, with `message`), and nothing faulted.
fn assert_worked(host: &PluginHost, message: &str) {
    let (result, log) = connect(host);
    assert!(!result.fault, "the plugin faulted: {log}");
    assert_eq!(result.verdict, Verdict::DenySoft, "{result:?}\n{log}");
    assert_eq!(result.message.as_deref(), Some(message), "{log}");
    assert!(!log.contains("plugin fault"), "{log}");
}

/// The plugin faulted, for the reason `why`.
fn assert_faulted(host: &PluginHost, why: &str) {
    let (result, log) = connect(host);
    assert!(result.fault, "no fault: {result:?}\n{log}");
    assert!(log.contains(&format!("plugin fault: {why}")), "the fault is not `{why}`:\n{log}");
}

#[test]
fn memory_within_the_limit_works() {
    let host = hostile(&["alloc", "8"], SandboxSettings { memory: 32 << 20, ..Default::default() });
    assert_worked(&host, "alloc: held 8 MiB");
}

#[test]
fn memory_past_the_limit_faults() {
    let host = hostile(&["alloc", "64"], SandboxSettings { memory: 32 << 20, ..Default::default() });
    assert_faulted(&host, "out of memory (limit 32 MiB)");
}

/// 300 ms of computing is 30 epoch ticks: each one yields, none interrupts.
#[test]
fn time_within_the_limit_works() {
    let host = hostile(&["loop", "300"], SandboxSettings { timeout: Duration::from_secs(2), ..Default::default() });
    assert_worked(&host, "loop: spun 300 ms");
}

#[test]
fn time_past_the_limit_faults() {
    let host = hostile(&["loop", "60000"], SandboxSettings { timeout: Duration::from_secs(2), ..Default::default() });
    assert_faulted(&host, "ran past its time limit of 2s");
}

#[test]
fn deep_recursion_within_the_stack_works() {
    let host = hostile(&["stack", "2000"], SandboxSettings { stack: 512 << 10, ..Default::default() });
    assert_worked(&host, "stack: 2000 deep");
}

#[test]
fn recursion_past_the_stack_faults() {
    let host = hostile(&["stack", "2000000"], SandboxSettings { stack: 512 << 10, ..Default::default() });
    assert_faulted(&host, "stack overflow");
}

/// The log lines written while a hook runs.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Log {
    type Writer = Log;
    fn make_writer(&'a self) -> Log {
        self.clone()
    }
}
