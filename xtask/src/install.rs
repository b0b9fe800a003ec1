//! Installs what the tests need on a fresh machine, from the system's package registry:
//! - `swaks` (Debian package `swaks`): a real SMTP client for interoperability tests;
//! - `python3` (Debian package `python3`), whose standard `smtplib` is the second real client.
//!
//! A tool that is already on the PATH is left alone. Installing needs root (or sudo).

use std::process::Command;

use anyhow::{Result, bail};

use crate::run;

/// (command that must exist, Debian package that provides it)
const TEST_TOOLS: &[(&str, &str)] = &[("swaks", "swaks"), ("python3", "python3")];

pub fn test_tools() -> Result<()> {
    let missing: Vec<&str> = TEST_TOOLS.iter().filter(|(cmd, _)| !on_path(cmd)).map(|(_, pkg)| *pkg).collect();
    if missing.is_empty() {
        eprintln!("xtask: test tools present: {}", TEST_TOOLS.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", "));
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages for the tests: {}", missing.join(", "));
    apt_install(&missing)
}

pub fn on_path(cmd: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {cmd} >/dev/null 2>&1")).status().is_ok_and(|s| s.success())
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
