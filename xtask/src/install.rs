//! Installs what the tests need on a fresh machine, from the system's package registry:
//! - `swaks` (Debian package `swaks`): a real SMTP client for interoperability tests, with
//!   `libio-socket-ssl-perl` and `libnet-ssleay-perl` for its `--tls`;
//! - `python3` (Debian package `python3`), whose standard `smtplib` is the second real client;
//! - `openssl` (Debian package `openssl`), whose `s_client -starttls smtp` checks the handshake.
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

pub fn test_tools() -> Result<()> {
    let missing: Vec<&str> = TEST_TOOLS.iter().filter(|(check, _)| !succeeds(check)).map(|(_, pkg)| *pkg).collect();
    if missing.is_empty() {
        let names: Vec<&str> = TEST_TOOLS.iter().map(|(_, pkg)| *pkg).collect();
        eprintln!("xtask: test tools present: {}", names.join(", "));
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages for the tests: {}", missing.join(", "));
    apt_install(&missing)
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
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let sudo = |args: &[&str]| {
        let mut c = if root { Command::new(args[0]) } else { Command::new("sudo") };
        if root {
            c.args(&args[1..]);
        } else {
            c.args(args);
        }
        c.env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    run(&mut sudo(&["apt-get", "update", "-qq"]))?;
    let mut install = sudo(&["apt-get", "install", "-y", "-qq"]);
    install.args(packages);
    run(&mut install)
}

/// What `cargo xtask bench` runs: Postfix (smtpd, smtp-sink, smtp-source) and qpsmtpd from
/// Debian's packages, Haraka from npm (under `target/bench/haraka`).
pub fn bench_tools(haraka_dir: &std::path::Path) -> Result<()> {
    let mut missing = Vec::new();
    if !succeeds("command -v smtp-source && command -v smtp-sink && command -v postfix") {
        // Install Postfix without a system configuration of its own (the benchmark runs a
        // private instance); otherwise debconf asks, or sets up a system MTA on port 25.
        let mut preseed = Command::new("debconf-set-selections");
        preseed.stdin(std::process::Stdio::piped());
        if let Ok(mut child) = preseed.spawn() {
            use std::io::Write;
            let _ =
                child.stdin.take().unwrap().write_all(b"postfix postfix/main_mailer_type select No configuration\n");
            let _ = child.wait();
        }
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

/// The Haraka release benchmarked.
pub const HARAKA: &str = "Haraka@3.3.4";
