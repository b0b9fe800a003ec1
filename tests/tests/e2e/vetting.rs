//! Trusting a plugin you did not write: a plugin that imports a capability it was not granted
//! is refused at start-up with the line that would grant it; a pinned plugin whose file
//! changed is refused; a plugin cache others could write is refused, and a damaged entry in it
//! compiled again; `wasmtpd plugin inspect` says what a component asks for; a plugin built
//! against the first published contract (a committed fixture) still loads and works.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtpd_tests::{Client, TempDir, plugin_cache, plugin_dir, repo_root, server_binary};

/// What a start-up did: whether it came to listen (it is stopped again at once), and its
/// stderr.
struct Started {
    listening: bool,
    stderr: String,
}

/// A server started on a plugin directory and cache of the test's own: its process, and its
/// address if it came to listen (a start-up that fails closes stdout first).
struct Spawned {
    child: Child,
    addr: Option<String>,
    stderr_path: PathBuf,
}

/// Starts the server on `files` as its config, `plugins` as its plugin directory and `cache`
/// as its plugin cache, and reads the line that says where it listens.
fn spawn(dir: &TempDir, files: &[(&str, &str)], plugins: &Path, cache: &Path) -> Spawned {
    let config = dir.0.join("config");
    for (name, text) in files {
        let p = config.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    std::fs::create_dir_all(&config).unwrap();
    let stderr_path = dir.0.join("stderr.log");
    let mut child = Command::new(server_binary())
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.0.join("state"))
        .arg("--plugin-dir")
        .arg(plugins)
        .arg("--plugin-cache")
        .arg(cache)
        .args(["--listen", "127.0.0.1:0", "--log", "info,wasmtpd_host=debug"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    let addr = line.trim().strip_prefix("wasmtpd listening on ").map(str::to_string);
    Spawned { child, addr, stderr_path }
}

/// As [`spawn`]; a server that listens is asked to stop (SIGTERM) and waited for.
fn start(dir: &TempDir, files: &[(&str, &str)], plugins: &Path, cache: &Path) -> Started {
    let Spawned { mut child, addr, stderr_path } = spawn(dir, files, plugins, cache);
    let listening = addr.is_some();
    if listening {
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    }
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(20), "the server did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    Started { listening, stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default() }
}

fn sha256(path: &Path) -> String {
    let digest = Sha256::digest(std::fs::read(path).unwrap());
    format!("sha256:{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// A plugin directory of the test's own with copies of these built plugins.
fn plugin_copies(dir: &TempDir, names: &[&str]) -> PathBuf {
    let _ = server_binary(); // builds the plugins
    let out = dir.0.join("plugins");
    for name in names {
        let to = out.join(format!("{name}.wasm"));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(plugin_dir().join(format!("{name}.wasm")), &to).unwrap();
    }
    out
}

#[test]
fn a_plugin_importing_a_capability_it_was_not_granted_is_refused_at_start_up() {
    let _ = server_binary();
    for (chain, sandbox, said) in [
        (
            "dnsbl\nrcpt_ok\n",
            "rcpt_ok rights accept-recipient\n",
            "plugin `dnsbl` imports wasmtpd:plugin/dns@0.1.0, which needs a grant it does not have",
        ),
        (
            "rcpt_ok\ngreylisting:2\n",
            "rcpt_ok rights accept-recipient\n",
            "add `greylisting:2 store local` to config/sandbox",
        ),
    ] {
        let dir = TempDir::new("ungranted");
        let s = start(&dir, &[("plugins", chain), ("sandbox", sandbox)], &plugin_dir(), &plugin_cache());
        assert!(!s.listening, "{chain}");
        assert!(s.stderr.contains(said), "{chain}: {}", s.stderr);
    }
    // The line the message names grants it: the same chain starts.
    let dir = TempDir::new("granted");
    let s = start(
        &dir,
        &[("plugins", "dnsbl\nrcpt_ok\n"), ("sandbox", "rcpt_ok rights accept-recipient\ndnsbl dns any\n")],
        &plugin_dir(),
        &plugin_cache(),
    );
    assert!(s.listening, "{}", s.stderr);
}

#[test]
fn a_pinned_plugin_whose_file_changed_is_refused() {
    let dir = TempDir::new("pinned");
    let plugins = plugin_copies(&dir, &["rcpt_ok", "check_badrcptto"]);
    let vetted = sha256(&plugins.join("rcpt_ok.wasm"));
    let chain = format!("rcpt_ok {vetted}\n");
    let files = [("plugins", chain.as_str()), ("sandbox", "rcpt_ok rights accept-recipient\n")];
    let s = start(&dir, &files, &plugins, &plugin_cache());
    assert!(s.listening, "the vetted file starts: {}", s.stderr);

    // Someone puts another component in its place.
    std::fs::copy(plugins.join("check_badrcptto.wasm"), plugins.join("rcpt_ok.wasm")).unwrap();
    let swapped = sha256(&plugins.join("rcpt_ok.wasm"));
    let s = start(&dir, &files, &plugins, &plugin_cache());
    assert!(!s.listening);
    assert!(s.stderr.contains("is not the component config/plugins pins"), "{}", s.stderr);
    assert!(s.stderr.contains(&vetted) && s.stderr.contains(&swapped), "both hashes: {}", s.stderr);

    // A pin that is not a hash is a configuration error at its line.
    let s = start(&dir, &[("plugins", "# chain\nrcpt_ok sha256:1234\n")], &plugins, &plugin_cache());
    assert!(!s.listening);
    assert!(s.stderr.contains("config/plugins:2: `sha256:1234` is not a pin"), "{}", s.stderr);
}

#[test]
fn a_plugin_cache_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("cachemode");
    let cache = dir.0.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let files = [("plugins", "rcpt_ok\n"), ("sandbox", "rcpt_ok rights accept-recipient\n")];
    let s = start(&dir, &files, &plugin_dir(), &cache);
    assert!(!s.listening);
    assert!(s.stderr.contains("may be written by others (mode 777)"), "{}", s.stderr);
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(start(&dir, &files, &plugin_dir(), &cache).listening);
}

#[test]
fn a_damaged_or_foreign_cache_entry_is_compiled_again() {
    let dir = TempDir::new("cachedamage");
    let cache = dir.0.join("cache");
    let files = [("plugins", "rcpt_ok\n"), ("sandbox", "rcpt_ok rights accept-recipient\n")];
    let s = start(&dir, &files, &plugin_dir(), &cache);
    assert!(s.listening, "{}", s.stderr);
    assert!(s.stderr.contains("compiled plugin"), "compiled on first start: {}", s.stderr);
    let entries: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert!(!entries.is_empty());
    // Bytes changed in place (a bit flip, or someone else's machine code): the hash beside
    // the entry no longer matches, so it is compiled again instead of run.
    for entry in &entries {
        let mut bytes = std::fs::read(entry).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(entry, bytes).unwrap();
    }
    let s = start(&dir, &files, &plugin_dir(), &cache);
    assert!(s.listening, "{}", s.stderr);
    assert!(s.stderr.contains("damaged or foreign"), "{}", s.stderr);
    assert!(s.stderr.contains("compiled plugin"), "{}", s.stderr);
}

/// What a `wasmtpd` command did: (exit status success, stdout, stderr).
fn outcome(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// `wasmtpd plugin inspect ARGS`.
fn inspect(args: &[&str]) -> (bool, String, String) {
    outcome(Command::new(server_binary()).args(["plugin", "inspect"]).args(args))
}

#[test]
fn plugin_inspect_shows_hash_contract_hooks_imports_and_grants() {
    let _ = server_binary();
    let file = plugin_dir().join("dnsbl.wasm");
    let (ok, out, err) = inspect(&[file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("sha256    {}", sha256(&file))), "{out}");
    assert!(out.contains("contract  wasmtpd:plugin@0.1.0"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("hooks") && l.contains("connect")), "{out}");
    assert!(out.contains("wasmtpd:plugin/dns@0.1.0") && out.contains("needs `dnsbl dns any`"), "{out}");
    assert!(out.contains("processed-by   wit-bindgen-rust"), "producers: {out}");

    // Under a config: granted, or not (then it says so and exits 1).
    let dir = TempDir::new("inspect");
    let config = dir.0.join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("plugins"), "dnsbl\n").unwrap();
    let (ok, out, _) = inspect(&[file.to_str().unwrap(), "--config", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("capability, NOT granted: refused at start-up; `dnsbl dns any`"), "{out}");
    std::fs::write(config.join("sandbox"), "dnsbl dns zen.test\n").unwrap();
    let (ok, out, err) = inspect(&[file.to_str().unwrap(), "--config", config.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("capability, granted"), "{out}");

    // Not a component.
    let bogus = dir.0.join("bogus.wasm");
    std::fs::write(&bogus, b"\0asm\x01\0\0\0").unwrap();
    let (ok, _, err) = inspect(&[bogus.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("not a WebAssembly component"), "{err}");
}

#[test]
fn plugin_inspect_shows_each_languages_toolchain() {
    let _ = server_binary();
    // What each toolchain writes into the producers sections it leaves.
    for (lang, trace) in [
        ("rust", "wit-bindgen-rust"),
        ("python", "component-init-transform"),
        ("js", "ComponentizeJS"),
        ("c", "wit-bindgen-c 0.63"),
    ] {
        let file = plugin_dir().join(format!("examples/{lang}/rcpt_blocklist.wasm"));
        let (ok, out, err) = inspect(&[file.to_str().unwrap()]);
        assert!(ok, "{lang}: {err}");
        assert!(out.contains("contract  wasmtpd:plugin@0.1.0"), "{lang}: {out}");
        assert!(out.lines().any(|l| l.starts_with("hooks") && l.contains("rcpt")), "{lang}: {out}");
        assert!(out.contains("wasmtpd:plugin/host@0.1.0"), "{lang}: {out}");
        assert!(out.contains(trace), "{lang}: producers name {trace}: {out}");
    }
}

/// The first published contract: `tests/fixtures/contract-0.1.0/` holds a plugin built
/// against `wasmtpd:plugin@0.1.0` as first released (its source and the command beside it).
/// It must load and behave the same on every later server.
#[test]
fn a_plugin_built_against_the_first_contract_still_loads_and_works() {
    let dir = TempDir::new("contract010");
    let plugins = plugin_copies(&dir, &["rcpt_ok", "queue/discard"]);
    let fixture = repo_root().join("tests/fixtures/contract-0.1.0/rcpt_blocklist.wasm");
    std::fs::copy(&fixture, plugins.join("rcpt_blocklist.wasm")).unwrap();
    let files = [
        ("me", "mx.test"),
        ("rcpthosts", "example.com\n"),
        ("plugins", "rcpt_blocklist mallory\nrcpt_ok\nqueue/discard\n"),
        ("sandbox", "rcpt_ok rights accept-recipient\nqueue/discard rights queue\n"),
    ];
    let Spawned { mut child, addr, stderr_path } = spawn(&dir, &files, &plugins, &plugin_cache());
    let addr = addr.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("did not start: {}", std::fs::read_to_string(&stderr_path).unwrap_or_default())
    });
    let mut c = Client::connect(addr.parse().unwrap());
    c.expect(220);
    c.cmd("EHLO client.test", 250);
    c.cmd("MAIL FROM:<a@client.test>", 250);
    let refused = c.cmd("RCPT TO:<mallory@example.com>", 550);
    assert!(refused.text().contains("mallory is blocked by the rust plugin"), "{}", refused.text());
    c.cmd("RCPT TO:<bob@example.com>", 250);
    let _ = child.kill();
    let _ = child.wait();
}

/// `wasmtpd plugin test ARGS`.
fn plugin_test(args: &[&str]) -> (bool, String, String) {
    outcome(Command::new(server_binary()).args(["plugin", "test"]).args(args))
}

#[test]
fn plugin_test_runs_each_languages_example_against_a_recorded_session() {
    let _ = server_binary();
    let session = repo_root().join("plugins-wasm/examples/rcpt_blocklist.session");
    for lang in ["rust", "python", "js", "c"] {
        let file = plugin_dir().join(format!("examples/{lang}/rcpt_blocklist.wasm"));
        let (ok, out, err) =
            plugin_test(&[file.to_str().unwrap(), "alice", "bob", "--session", session.to_str().unwrap()]);
        assert!(ok, "{lang}: {out}\n{err}");
        assert!(out.contains("C: RCPT TO:<alice@example.com>"), "{lang}: {out}");
        assert!(out.lines().any(|l| l.contains("hook rcpt") && l.contains("DENY by rcpt_blocklist")), "{lang}: {out}");
        assert!(out.contains("S: 550"), "{lang}: {out}");
        assert!(out.contains("note transaction rcpt_blocklist.checked = alice@example.com"), "{lang}: {out}");
        assert!(out.ends_with("ok: every expectation held\n"), "{lang}: {out}");
    }
}

#[test]
fn plugin_test_fails_when_an_expectation_does_not_hold() {
    let _ = server_binary();
    let dir = TempDir::new("plugintest");
    let session = dir.0.join("s.session");
    std::fs::write(
        &session,
        "EHLO c.test\nMAIL FROM:<a@c.test>\nRCPT TO:<bob@example.com>\nexpect 250\nexpect rcpt ok\n",
    )
    .unwrap();
    let file = plugin_dir().join("examples/rust/rcpt_blocklist.wasm");
    let (ok, out, err) = plugin_test(&[file.to_str().unwrap(), "bob", "--session", session.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains("FAILED line 4: expected 250, got 550"), "{out}");
    assert!(out.contains("FAILED line 5: expected rcpt OK, got DENY"), "{out}");
    assert!(err.contains("an expectation failed"), "{err}");

    // A chain file, with the config's grants: rcpt_ok accepts what the blocklist lets by.
    let config = dir.0.join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("rcpthosts"), "example.com\n").unwrap();
    std::fs::write(config.join("sandbox"), "rcpt_ok rights accept-recipient\n").unwrap();
    let chain = dir.0.join("chain");
    std::fs::write(&chain, "examples/rust/rcpt_blocklist bob\nrcpt_ok\n").unwrap();
    std::fs::write(
        &session,
        "EHLO c.test\nMAIL FROM:<a@c.test>\nRCPT TO:<carol@example.com>\nexpect 250\nexpect rcpt ok\n",
    )
    .unwrap();
    let (ok, out, err) = outcome(
        Command::new(server_binary())
            .arg("--plugin-dir")
            .arg(plugin_dir())
            .arg("--config")
            .arg(&config)
            .args(["plugin", "test", "--plugins"])
            .arg(&chain)
            .arg("--session")
            .arg(&session),
    );
    assert!(ok, "{out}\n{err}");
    assert!(out.lines().any(|l| l.contains("hook rcpt") && l.contains("OK by rcpt_ok")), "{out}");
}

/// `cargo xtask new-plugin` copies these templates (`plugins-wasm/templates/LANG`), so each
/// is built by `cargo xtask build-plugins` and must pass its own session.
#[test]
fn every_languages_plugin_template_builds_and_passes_its_session() {
    let _ = server_binary();
    for lang in ["rust", "python", "js", "c"] {
        let file = plugin_dir().join(format!("templates/{lang}.wasm"));
        let session = repo_root().join(format!("plugins-wasm/templates/{lang}/my_plugin.session"));
        let (ok, out, err) =
            plugin_test(&[file.to_str().unwrap(), "blocked.example", "--session", session.to_str().unwrap()]);
        assert!(ok, "{lang}: {out}\n{err}");
        assert!(out.contains("my_plugin does not take mail for blocked.example"), "{lang}: {out}");
    }
}
