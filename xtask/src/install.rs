//! Installs what the tests need on a fresh machine, from the system's package registry:
//! - `swaks` (Debian package `swaks`): a real SMTP client for interoperability tests, with
//!   `libio-socket-ssl-perl` and `libnet-ssleay-perl` for its `--tls`;
//! - `python3` (Debian package `python3`), whose standard `smtplib` is the second real client;
//! - `openssl` (Debian package `openssl`), whose `s_client -starttls smtp` checks the handshake;
//! - `nsd` (Debian package `nsd`), the authoritative name server the DNS tests start privately
//!   on a loopback port with zones of their own (`tests/src/dns.rs`). It is installed without
//!   starting: a `/usr/sbin/policy-rc.d` that exits 101 is in place during the install (and
//!   removed after, unless it was there before), a system nsd that started all the same is
//!   stopped by the PID in its pidfile, and the service the package enables at boot is
//!   disabled (`update-rc.d PACKAGE disable`, which removes its systemd unit's links too);
//! - `redis-server` (Debian package `redis-server`), which the key-value store tests start
//!   privately on loopback ports (`tests/src/redis.rs`), installed the same way;
//! - `postfix` and `dovecot-lmtpd` (Debian packages `postfix`, `dovecot-lmtpd`), the downstreams
//!   the delivery tests forward to, each a private instance on a loopback port
//!   (`tests/src/postfix.rs`, `tests/src/dovecot.rs`), installed the same way; postfix is
//!   preseeded "No configuration" first, so it does not become the machine's MTA.
//!
//! A tool that is already there is left alone. Installing needs root (or sudo).

use std::process::Command;

use anyhow::{Result, bail};

use crate::run;

/// (shell check that succeeds when it is there, Debian package that provides it)
const TEST_TOOLS: &[(&str, &str)] = &[
    ("command -v swaks", "swaks"),
    ("perl -MIO::Socket::SSL -e1", "libio-socket-ssl-perl"),
    ("perl -MNet::SSLeay -e1", "libnet-ssleay-perl"),
    ("command -v python3", "python3"),
    ("command -v openssl", "openssl"),
];

/// Daemons the tests start privately; installing one must not start the system's own.
/// (shell check, Debian package, the pidfile its system service would write)
const TEST_DAEMONS: &[(&str, &str, &str)] = &[
    ("test -x /usr/sbin/nsd || command -v nsd", "nsd", "/run/nsd/nsd.pid"),
    ("command -v redis-server", "redis-server", "/run/redis/redis-server.pid"),
    ("test -x /usr/sbin/postfix", "postfix", "/var/spool/postfix/pid/master.pid"),
    ("test -x /usr/lib/dovecot/lmtp", "dovecot-lmtpd", "/run/dovecot/master.pid"),
    // The content filters' scanners (issue 16); the tests run private instances with
    // signatures and rules of their own, so freshclam (a dependency) never runs either.
    ("test -x /usr/sbin/clamd", "clamav-daemon", "/run/clamav/clamd.pid"),
    ("test -x /usr/sbin/clamd", "clamav-freshclam", "/run/clamav/freshclam.pid"),
    ("test -x /usr/sbin/spamd", "spamd", "/run/spamd.pid"),
    ("test -x /usr/bin/rspamd", "rspamd", "/run/rspamd/rspamd.pid"),
];

/// Where Debian's `invoke-rc.d` asks whether a package may start its service (exit 101: no).
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

pub fn test_tools() -> Result<()> {
    let missing: Vec<&str> = TEST_TOOLS.iter().filter(|(check, _)| !succeeds(check)).map(|(_, pkg)| *pkg).collect();
    let daemons: Vec<&(&str, &str, &str)> = TEST_DAEMONS.iter().filter(|(check, _, _)| !succeeds(check)).collect();
    if missing.is_empty() && daemons.is_empty() {
        let names: Vec<&str> =
            TEST_TOOLS.iter().map(|(_, pkg)| *pkg).chain(TEST_DAEMONS.iter().map(|(_, pkg, _)| *pkg)).collect();
        eprintln!("xtask: test tools present: {}", names.join(", "));
        return Ok(());
    }
    if !missing.is_empty() {
        eprintln!("xtask: installing Debian packages for the tests: {}", missing.join(", "));
        apt_install(&missing)?;
    }
    if !daemons.is_empty() {
        let packages: Vec<&str> = daemons.iter().map(|(_, pkg, _)| *pkg).collect();
        if packages.contains(&"postfix") {
            preseed_postfix();
        }
        eprintln!("xtask: installing Debian packages for the tests, not started: {}", packages.join(", "));
        apt_install_not_started(&packages)?;
        for (_, pkg, pidfile) in daemons {
            stop_system_service(pkg, pidfile)?;
            disable_at_boot(pkg);
        }
    }
    Ok(())
}

/// Installs `packages` with a `policy-rc.d` in place that forbids starting services; the
/// file is removed after, unless it was there before (Docker images have one of their own).
fn apt_install_not_started(packages: &[&str]) -> Result<()> {
    let ours = !std::path::Path::new(POLICY_RC_D).exists();
    if ours {
        let script = format!("printf '#!/bin/sh\\nexit 101\\n' > {POLICY_RC_D} && chmod 755 {POLICY_RC_D}");
        run(&mut as_root(&["sh", "-c", &script]))?;
    }
    let installed = apt_install(packages);
    if ours {
        run(&mut as_root(&["rm", "-f", POLICY_RC_D]))?;
    }
    installed
}

/// Disables the system service `package` enabled at boot (its SysV links, and through
/// systemctl its systemd unit's), so that the machine does not start one when it next boots.
/// A failure is only a warning: the tests do not need it.
fn disable_at_boot(package: &str) {
    if !std::path::Path::new("/usr/sbin/update-rc.d").exists() {
        return;
    }
    if let Err(e) = run(&mut as_root(&["update-rc.d", package, "disable"])) {
        eprintln!("xtask: warning: could not disable the system's {package} at boot: {e:#}");
    }
}

/// Stops `package`'s system service if it started after all (a system without invoke-rc.d's
/// policy, say): by the PID in its pidfile, then waits (bounded) for it to go.
fn stop_system_service(package: &str, pidfile: &str) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(pidfile) else { return Ok(()) };
    let Ok(pid) = text.trim().parse::<u32>() else { return Ok(()) };
    let alive = || std::path::Path::new(&format!("/proc/{pid}")).exists();
    if !alive() {
        return Ok(());
    }
    eprintln!("xtask: the install started the system's {package} (PID {pid}); stopping it");
    run(&mut as_root(&["kill", "-TERM", &pid.to_string()]))?;
    for _ in 0..100 {
        if !alive() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    bail!("the system's {package} (PID {pid}) did not stop within 5 s of SIGTERM; stop it by hand")
}

pub fn on_path(cmd: &str) -> bool {
    succeeds(&format!("command -v {cmd}"))
}

/// Whether a shell command succeeds (its output is thrown away).
fn succeeds(check: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("{check} >/dev/null 2>&1")).status().is_ok_and(|s| s.success())
}

pub fn apt_install(packages: &[&str]) -> Result<()> {
    if !on_path("apt-get") {
        bail!("cannot install {}: no apt-get on this machine; install them by hand", packages.join(", "));
    }
    run(&mut as_root(&["apt-get", "update", "-qq"]))?;
    let mut install = as_root(&["apt-get", "install", "-y", "-qq"]);
    install.args(packages);
    run(&mut install)
}

/// `args` as a command run as root: directly when we are root, else through sudo.
fn as_root(args: &[&str]) -> Command {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let mut c = if root { Command::new(args[0]) } else { Command::new("sudo") };
    if root {
        c.args(&args[1..]);
    } else {
        c.args(args);
    }
    c.env("DEBIAN_FRONTEND", "noninteractive");
    c
}

/// What `cargo xtask bench` runs: Postfix (smtpd, smtp-sink, smtp-source) and qpsmtpd from
/// Debian's packages, Haraka from npm (under `target/bench/haraka`).
pub fn bench_tools(haraka_dir: &std::path::Path) -> Result<()> {
    let mut missing = Vec::new();
    if !succeeds("command -v smtp-source && command -v smtp-sink && command -v postfix") {
        preseed_postfix();
        missing.push("postfix");
    }
    if !succeeds("command -v qpsmtpd-forkserver") {
        missing.push("qpsmtpd");
    }
    if !succeeds("command -v npm") {
        missing.push("npm");
    }
    if !missing.is_empty() {
        eprintln!("xtask: installing Debian packages for the benchmark: {}", missing.join(", "));
        apt_install(&missing)?;
    }
    if !haraka_dir.join("node_modules/.bin/haraka").is_file() {
        eprintln!("xtask: installing {HARAKA} from npm into {}", haraka_dir.display());
        std::fs::create_dir_all(haraka_dir)?;
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel", "error", "--prefix"])
            .arg(haraka_dir)
            .arg(HARAKA))?;
    }
    Ok(())
}

/// Has Postfix installed without a system configuration of its own (the tests and the benchmark
/// run private instances); otherwise debconf asks, or sets up a system MTA on port 25.
fn preseed_postfix() {
    let mut preseed = as_root(&["debconf-set-selections"]);
    preseed.stdin(std::process::Stdio::piped());
    if let Ok(mut child) = preseed.spawn() {
        use std::io::Write;
        let _ = child.stdin.take().unwrap().write_all(b"postfix postfix/main_mailer_type select No configuration\n");
        let _ = child.wait();
    }
}

/// The Haraka release benchmarked.
pub const HARAKA: &str = "Haraka@3.3.4";
