//! 2,000 idle connections: each one connects and reads the greeting, then stays open while
//! the server's memory (PSS of its process) is read.

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result};

use super::measure;

pub struct Idle {
    pub connections: usize,
    pub before_kib: u64,
    pub with_kib: u64,
}

impl Idle {
    pub fn per_connection_kib(&self) -> f64 {
        (self.with_kib.saturating_sub(self.before_kib)) as f64 / self.connections as f64
    }
}

pub fn measure(port: u16, root: u32, connections: usize) -> Result<Idle> {
    rlimit::increase_nofile_limit(u64::MAX).context("raising the open-files limit")?;
    let before_kib = measure::pss_kib(&measure::tree(root));
    let mut open = Vec::with_capacity(connections);
    for i in 0..connections {
        let mut s = TcpStream::connect(("127.0.0.1", port)).with_context(|| format!("connection {i}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut greeting = [0u8; 3];
        s.read_exact(&mut greeting).with_context(|| format!("greeting of connection {i}"))?;
        anyhow::ensure!(&greeting == b"220", "connection {i} was not greeted with 220");
        open.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let with_kib = measure::pss_kib(&measure::tree(root));
    drop(open);
    Ok(Idle { connections, before_kib, with_kib })
}
