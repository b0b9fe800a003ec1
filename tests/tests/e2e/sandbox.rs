//! Hostile plugins: each fault becomes a temporary failure for that transaction only, logged
//! with the plugin's name and the fault, while another connection on the same server completes
//! a transaction normally.

use std::time::{Duration, Instant};

use wasmtpd_tests::TestServer;

/// Starts a server whose chain has `testing/hostile HOOK BEHAVIOUR` before rcpt_ok.
fn hostile(hook: &str, behaviour: &str, sandbox: &str) -> TestServer {
    let chain = format!("testing/hostile {hook} {behaviour}\nrcpt_ok");
    let sandbox = format!("queue/maildir grant-dir maildir /maildir rw\n{sandbox}");
    TestServer::start_with_chain(&chain, &[("sandbox", &sandbox)])
}

/// A well-behaved client's whole transaction on the same server.
fn bystander_delivers(s: &TestServer) {
    let mut c = s.greeted();
    c.envelope("friend@remote.test", &["b@example.com"]);
    assert_eq!(c.data(b"Subject: unaffected\r\n\r\nx").code, 250);
}

/// Runs the attack at RCPT; returns the reply the attacker got.
fn attack_at_rcpt(s: &TestServer) -> wasmtpd_tests::Reply {
    let mut c = s.greeted();
    c.cmd("EHLO attacker.test", 250);
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    c.line("RCPT TO:<b@example.com>");
    let r = c.read_reply().unwrap();
    // The session itself carries on.
    c.cmd("RSET", 250);
    c.cmd("QUIT", 221);
    r
}

fn assert_fault_logged(s: &TestServer, what: &str) {
    let log = s.log();
    let line = log.lines().find(|l| l.contains("plugin fault")).unwrap_or_else(|| panic!("no fault logged:\n{log}"));
    assert!(line.contains("testing/hostile"), "the log names the plugin: {line}");
    assert!(line.contains(what), "the log says {what:?}: {line}");
}

#[test]
fn a_trapping_plugin_gives_451() {
    let s = hostile("rcpt", "trap", "");
    let r = attack_at_rcpt(&s);
    assert_eq!((r.code, r.text().as_str()), (451, "4.3.0 Temporary failure in plugin processing, try again later"));
    assert_fault_logged(&s, "trapped");
    assert!(s.log().contains("hostile plugin panics on purpose"), "the panic message reaches the log");
    bystander_delivers(&s);
}

#[test]
fn a_looping_plugin_is_stopped_at_its_time_limit_without_stalling_others() {
    let s = hostile("rcpt", "loop", "testing/hostile timeout 1500ms\n");
    let attacker = std::thread::spawn({
        let addr = s.addr;
        move || {
            let started = Instant::now();
            let mut c = wasmtpd_tests::Client::connect(addr);
            c.expect(220);
            c.cmd("EHLO attacker.test", 250);
            c.cmd("MAIL FROM:<a@remote.test>", 250);
            let r = c.cmd("RCPT TO:<b@example.com>", 451);
            (r, started.elapsed())
        }
    });
    // While the loop burns its 1.5 s, a bystander's whole transaction goes through.
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    bystander_delivers(&s);
    assert!(started.elapsed() < Duration::from_millis(1200), "bystander took {:?}", started.elapsed());
    let (_, took) = attacker.join().unwrap();
    assert!(took >= Duration::from_millis(1400) && took < Duration::from_secs(5), "stopped after {took:?}");
    assert_fault_logged(&s, "ran past its time limit of 1.5s");
}

#[test]
fn a_plugin_blocked_in_a_host_call_is_stopped_too() {
    // Epoch interruption cannot stop a plugin that sleeps inside WASI; the call is dropped.
    let s = hostile("rcpt", "sleep", "testing/hostile timeout 1s\n");
    let started = Instant::now();
    assert_eq!(attack_at_rcpt(&s).code, 451);
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
    assert_fault_logged(&s, "blocked outside wasm");
    bystander_delivers(&s);
}

#[test]
fn a_plugin_that_allocates_without_bound_hits_its_memory_limit() {
    let s = hostile("rcpt", "alloc", "testing/hostile memory 16M\n");
    assert_eq!(attack_at_rcpt(&s).code, 451);
    assert_fault_logged(&s, "out of memory (limit 16 MiB)");
    bystander_delivers(&s);
}

#[test]
fn a_runaway_recursion_is_a_stack_overflow() {
    let s = hostile("rcpt", "stack", "");
    assert_eq!(attack_at_rcpt(&s).code, 451);
    assert_fault_logged(&s, "stack overflow");
    bystander_delivers(&s);
}

#[test]
fn no_host_files_no_escape_no_network_no_environment() {
    for (behaviour, expected) in [
        ("passwd", "passwd: denied"),
        ("escape", "escape: denied"),
        ("tcp", "tcp: denied"),
        ("env", "env: 0 variables"),
    ] {
        let s = hostile("rcpt", behaviour, "");
        let r = attack_at_rcpt(&s);
        assert_eq!(r.code, 450, "{behaviour}: {r:?}");
        assert!(r.text().contains(expected), "{behaviour}: {r:?}");
    }
    assert!(!std::path::Path::new("/wasmtpd-escaped").exists());
    assert!(!std::env::temp_dir().join("wasmtpd-escaped").exists());
}

#[test]
fn reply_injection_is_impossible() {
    let s = hostile("rcpt", "crlf", "");
    let r = attack_at_rcpt(&s);
    assert_eq!(r.code, 550);
    // One reply (every line 550): the "250" and the "MAIL FROM" are text inside it.
    assert_eq!(r.lines, ["5.7.1 first line", "5.7.1 250 2.0.0 injected", "5.7.1 MAIL FROM:<x@y>"]);
}

#[test]
fn a_fault_in_the_connection_phase_is_421() {
    let s = hostile("connect", "trap", "");
    let mut c = s.connect();
    let r = c.expect(421);
    assert!(r.text().contains("Temporary failure"), "{r:?}");
    assert!(c.is_closed());
}

#[test]
fn fail_open_policy_treats_a_fault_as_declined() {
    let s = hostile("rcpt", "trap", "testing/hostile on-fault declined\n");
    let r = attack_at_rcpt(&s);
    assert_eq!(r.code, 250, "rcpt_ok decided after the faulty plugin: {r:?}");
    assert_fault_logged(&s, "trapped");
}

#[test]
fn floods_are_capped() {
    // Each plugin is stopped by a cap, says so, and the server carries on.
    for (behaviour, expected) in [
        ("noteflood", "notes are full"),
        ("tempfill", "over their quota of 1048576 octets"),
        ("wasi-escape", "wasi-escape: denied"),
    ] {
        let s = hostile("rcpt", behaviour, "testing/hostile temp-quota 1M\ntesting/hostile wasi-temp yes\n");
        let r = attack_at_rcpt(&s);
        assert_eq!(r.code, 450, "{behaviour}: {r:?}");
        assert!(r.text().contains(expected), "{behaviour}: {r:?}");
        bystander_delivers(&s);
    }
    assert!(!std::env::temp_dir().join("wasmtpd-escaped").exists());
}

#[test]
fn a_log_flood_is_muted() {
    let s = hostile("rcpt", "logflood", "");
    let r = attack_at_rcpt(&s);
    assert_eq!((r.code, r.text().as_str()), (450, "4.7.1 logflood: done"));
    let log = s.log();
    assert!(log.contains("plugin logged more than 1000 lines; muted"), "the log says so");
    let lines = log.lines().filter(|l| l.contains("flood line")).count();
    assert!(lines <= 1000, "{lines} flood lines reached the log");
}

#[test]
fn a_header_flood_is_capped() {
    let chain = "testing/hostile data_post headerflood\nrcpt_ok";
    let s = TestServer::start_with_chain(chain, &[]);
    let mut c = s.greeted();
    c.envelope("a@remote.test", &["b@example.com"]);
    c.cmd("RSET", 250);
    c.cmd("EHLO attacker.test", 250);
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    c.cmd("RCPT TO:<b@example.com>", 250);
    let r = c.data(b"Subject: x\r\n\r\ny");
    assert_eq!(r.code, 452, "{r:?}");
    assert!(r.text().contains("the header would exceed 1048576 octets"), "{r:?}");
    bystander_delivers(&s);
}

#[test]
fn a_huge_reply_is_cut_to_size() {
    let s = hostile("rcpt", "bigmessage", "");
    let r = attack_at_rcpt(&s);
    assert_eq!(r.code, 550);
    assert_eq!(r.lines.len(), 1);
    assert!(r.lines[0].len() <= 512, "{} octets", r.lines[0].len());
}

#[test]
fn a_plugin_that_keeps_faulting_is_disabled_for_a_cooldown() {
    let s = hostile("rcpt", "trap", "testing/hostile breaker 3 1m 1s\ntesting/hostile on-fault declined\n");
    let mut c = s.greeted();
    c.cmd("EHLO attacker.test", 250);
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    // Three faults (fail open: rcpt_ok decides), then the breaker trips.
    for _ in 0..3 {
        c.cmd("RCPT TO:<b@example.com>", 250);
    }
    let faults = |s: &TestServer| s.log().lines().filter(|l| l.contains("plugin fault")).count();
    assert_eq!(faults(&s), 3);
    assert!(s.log().contains("plugin disabled for 1s after 3 faults within 60s"), "{}", s.log());
    // Disabled: not run at all, so no new fault.
    c.cmd("RCPT TO:<c@example.com>", 250);
    assert_eq!(faults(&s), 3);
    // After the cool-down it is tried again (and faults again).
    std::thread::sleep(Duration::from_millis(1100));
    c.cmd("RCPT TO:<d@example.com>", 250);
    assert_eq!(faults(&s), 4);
}

#[test]
fn a_disabled_plugin_with_tempfail_policy_fails_its_hook() {
    let s = hostile("rcpt", "trap", "testing/hostile breaker 2 1m 30s\n");
    let mut c = s.greeted();
    c.cmd("EHLO attacker.test", 250);
    c.cmd("MAIL FROM:<a@remote.test>", 250);
    c.cmd("RCPT TO:<b@example.com>", 451);
    c.cmd("RCPT TO:<b@example.com>", 451);
    // Tripped: the plugin is not run, and every hook it implements meets its tempfail policy
    // (it implements connect too, so a new client is turned away with 421 for the cool-down).
    let mut friend = s.connect();
    assert_eq!(friend.expect(421).text(), "4.3.0 Temporary failure in plugin processing, try again later");
    assert_eq!(s.log().lines().filter(|l| l.contains("plugin fault")).count(), 2, "not run while disabled");
}

#[test]
fn no_links_can_be_made_in_a_grant() {
    // A symlink out of a read-write grant would be followed by whatever reads the directory
    // later (an MDA, an IMAP server, a backup); a hard link would alias files across grants.
    for (behaviour, expected) in [("symlink", "symlink: denied"), ("hardlink", "hardlink: denied")] {
        let s = hostile("rcpt", behaviour, "testing/hostile grant-dir planted /grant rw\n");
        let r = attack_at_rcpt(&s);
        assert_eq!(r.code, 450, "{behaviour}: {r:?}");
        assert!(r.text().contains(expected), "{behaviour}: {r:?}");
        let grant = s.dir.0.join("state/planted");
        assert!(std::fs::symlink_metadata(grant.join("rel")).is_err(), "no symlink was planted");
        assert!(std::fs::symlink_metadata(grant.join("link")).is_err(), "no hard link was made");
        bystander_delivers(&s);
    }
}

#[test]
fn temp_directories_and_sparse_files_count_against_the_quota() {
    for (behaviour, expected) in [
        ("tempdirs", "tempdirs: refused after 1000 directories: temporary files are over their limit of 1000"),
        ("tempsparse", "tempsparse: denied: temporary files are over their quota of 1048576 octets"),
    ] {
        let s = hostile("rcpt", behaviour, "testing/hostile temp-quota 1M\n");
        let r = attack_at_rcpt(&s);
        assert_eq!(r.code, 450, "{behaviour}: {r:?}");
        assert!(r.text().contains(expected), "{behaviour}: {r:?}");
        bystander_delivers(&s);
    }
}

#[test]
fn what_a_plugin_writes_through_wasi_is_measured_after_each_call() {
    // WASI writes are not intercepted; the walk after the call finds them and makes it a fault.
    for (behaviour, expected) in [
        ("wasi-tempsparse", "over its temp quota: "),
        ("wasi-tempdirs", "over its temp quota: more than 1000 files and directories"),
    ] {
        let s = hostile("rcpt", behaviour, "testing/hostile temp-quota 1M\ntesting/hostile wasi-temp yes\n");
        let r = attack_at_rcpt(&s);
        assert_eq!(r.code, 451, "{behaviour}: {r:?}");
        assert_fault_logged(&s, expected);
        bystander_delivers(&s);
    }
}

#[test]
fn removing_a_big_temp_directory_does_not_stall_the_worker() {
    // One worker: the attacker and the bystander share its event loop. The attacker's 10,000
    // directories (removing them takes most of a second) go when its instance is dropped; that
    // must not hold up the loop.
    let dir = wasmtpd_tests::TempDir::new("stall");
    let sandbox =
        "queue/maildir grant-dir maildir /maildir rw\ntesting/hostile wasi-temp yes\ntesting/hostile timeout 30s\n";
    let files = [
        ("me", "mx.test"),
        ("rcpthosts", "example.com\n"),
        ("plugins", "testing/hostile rcpt wasi-tempdirs 10000\nrcpt_ok\nqueue/maildir /maildir\n"),
        ("sandbox", sandbox),
    ];
    let s = TestServer::start_with_args(dir, &files, &["--workers", "1"]);
    let mut bystander = s.greeted();
    bystander.cmd("EHLO client.test", 250);
    let attacker = std::thread::spawn({
        let addr = s.addr;
        move || {
            let mut c = wasmtpd_tests::Client::connect(addr);
            c.expect(220);
            c.cmd("EHLO attacker.test", 250);
            c.cmd("MAIL FROM:<a@remote.test>", 250);
            c.cmd("RCPT TO:<b@example.com>", 451);
            c.cmd("QUIT", 221);
        }
    });
    // NOOPs while the attack runs and for two seconds after: none may wait long.
    let mut slowest = Duration::ZERO;
    let mut done_at = None;
    let started = Instant::now();
    while done_at.is_none_or(|t: Instant| t.elapsed() < Duration::from_secs(2)) {
        assert!(started.elapsed() < Duration::from_secs(60), "the attack did not end");
        let sent = Instant::now();
        bystander.cmd("NOOP", 250);
        slowest = slowest.max(sent.elapsed());
        if done_at.is_none() && attacker.is_finished() {
            done_at = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    attacker.join().unwrap();
    assert!(slowest < Duration::from_millis(300), "a NOOP waited {slowest:?}");
    assert_fault_logged(&s, "over its temp quota");
    bystander.cmd("MAIL FROM:<friend@remote.test>", 250);
    bystander.cmd("RCPT TO:<b@example.com>", 250);
    assert_eq!(bystander.data(b"Subject: unaffected\r\n\r\nx").code, 250);
}

#[test]
fn a_log_flood_is_bounded_per_connection_and_per_second() {
    // MAIL/RSET cycles make a new instance each time: the budget is the connection's.
    let s = hostile("mail", "logflood", "");
    let mut c = s.greeted();
    c.cmd("EHLO attacker.test", 250);
    for _ in 0..20 {
        c.cmd("MAIL FROM:<a@remote.test>", 450);
        c.cmd("RSET", 250);
    }
    c.cmd("QUIT", 221);
    let log = s.log();
    let lines = log.lines().filter(|l| l.contains("flood line")).count();
    assert_eq!(lines, 1000, "20 cycles, one connection's budget");
    assert_eq!(log.matches("muted for the rest of this connection").count(), 1);
    drop(s);

    // Many connections: the plugin's server-wide rate (256 KiB/s, 4 MiB saved up) holds.
    let s = hostile("mail", "logflood-long", "");
    let before = s.log().len();
    let started = Instant::now();
    for _ in 0..10 {
        let mut c = s.greeted();
        c.cmd("EHLO attacker.test", 250);
        c.cmd("MAIL FROM:<a@remote.test>", 450);
        c.cmd("QUIT", 221);
    }
    let grown = s.log().len() - before;
    let allowed = (4 << 20) + (256 << 10) * (started.elapsed().as_secs() as usize + 1) + (512 << 10);
    assert!(grown < allowed, "the log grew by {grown} octets (10 connections could write 40 MiB)");
    assert!(s.log().contains("plugin logs more than 256 KiB a second; muted"), "the muting is logged");
    bystander_delivers(&s);
}
