//! Start-up with a bad configuration stops with the file, the line and what is wrong.

use wasmtpd_tests::{TempDir, server_command};

fn start_with(files: &[(&str, &str)]) -> (bool, String) {
    let dir = TempDir::new("badconfig");
    for (name, text) in files {
        let p = dir.0.join("config").join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let mut out = server_command(&dir.0)
        .arg("--config")
        .arg(dir.0.join("config"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A config that loads would run forever: give it ten seconds to fail.
    let start = std::time::Instant::now();
    while out.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(10) {
            let _ = out.kill();
            panic!("the server started with a bad configuration: {files:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = out.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn bad_config_names_file_and_line() {
    let (ok, err) = start_with(&[("limits", "# limits\nmax_recipients 10\nmax_mesage_size 5M\n")]);
    assert!(!ok);
    assert!(err.contains("config/limits:3: unknown limit `max_mesage_size`"), "{err}");

    let (ok, err) = start_with(&[("plugins", "rcpt_ok\nspamfilter\n")]);
    assert!(!ok);
    assert!(err.contains("config/plugins:2: no component for plugin `spamfilter`"), "{err}");

    let (ok, err) =
        start_with(&[("plugins", "rcpt_ok\n$include plugins.d\n"), ("plugins.d/10_queue", "\nqueue/../maildir\n")]);
    assert!(!ok);
    assert!(err.contains("plugins.d/10_queue:2: `queue/../maildir` is not a plugin name"), "{err}");

    let (ok, err) = start_with(&[("limits", "command_timeout forever\n")]);
    assert!(!ok);
    assert!(err.contains("config/limits:1: `forever` is not a duration"), "{err}");
}

#[test]
fn listen_address_in_use_stops_startup() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let dir = TempDir::new("inuse");
    let out = server_command(&dir.0).args(["--listen", &addr]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("cannot listen on {addr}")));
}

#[test]
fn grants_that_reach_the_servers_own_files_are_refused() {
    let chain = ("plugins", "rcpt_ok\nqueue/maildir /maildir\n");
    let cache = wasmtpd_tests::plugin_cache();
    let cache_grant = format!("queue/maildir grant-dir {} /cache ro\n", cache.display());
    for (sandbox, what) in [
        ("queue/maildir grant-dir ../../etc /etc ro\n", "sandbox:1: grant-dir paths may not contain `..`"),
        ("# the spool\nqueue/maildir grant-dir spool /maildir rw\n", "sandbox:2: grant-dir"),
        ("queue/maildir grant-dir . /maildir rw\n", "overlaps the plugins' temporary directories"),
        ("queue/maildir grant-dir spool/plugins/x /maildir rw\n", "overlaps the plugins' temporary directories"),
        (&cache_grant, "overlaps the plugin cache"),
    ] {
        let (ok, err) = start_with(&[chain, ("sandbox", sandbox)]);
        assert!(!ok, "{sandbox}");
        assert!(err.contains(what), "{sandbox}: {err}");
        assert!(err.contains("config/sandbox:"), "names the sandbox line: {err}");
    }
}

#[test]
fn a_connection_limit_the_plugin_pool_cannot_back_is_a_configuration_error() {
    let (ok, err) = start_with(&[
        ("plugins", "rcpt_ok\nqueue/maildir /maildir\n"),
        ("sandbox", "queue/maildir grant-dir maildir /maildir rw\n"),
        ("limits", "max_connections 1000\nmax_connections 1000000\n"),
    ]);
    assert!(!ok);
    assert!(err.contains("config/limits:2: max_connections 1000000 cannot be served"), "{err}");
    assert!(err.contains("connections fit"), "says what would fit: {err}");
}

#[test]
fn an_option_a_plugin_does_not_know_stops_start_up_with_the_file_line_and_option() {
    for (chain, says) in [
        ("rcpt_ok\nheaders requre From\n", "config/plugins:2: plugin `headers` has no option `requre`"),
        ("hosts_allow max-from-ip 5\nrcpt_ok\n", "config/plugins:1: plugin `hosts_allow` has no option `max-from-ip`"),
        ("rcpt_ok\nnoop_counter 3 4\n", "config/plugins:2: plugin `noop_counter` takes at most 1 argument(s)"),
        ("rcpt_ok\ndnsbl reject\n", "config/plugins:2: plugin `dnsbl`: option `reject` has no value"),
        ("rcpt_ok\ncheck_earlytalker check-at HELO\n", "config/plugins:2: plugin `check_earlytalker`: check-at `HELO`"),
    ] {
        let (ok, err) = start_with(&[("plugins", chain)]);
        assert!(!ok && err.contains(says), "{chain:?}: {err}");
    }
}
