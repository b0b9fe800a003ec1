//! The servers compared, each on a loopback port with a private configuration under
//! `target/bench/run/<name>/`, set up the way a user of that server would run it:
//!
//! - `smtp-sink` (Postfix): accepts and discards with no processing, the protocol's speed limit.
//! - `postfix`: Postfix's smtpd receiving into its own queue (cleanup fsyncs each message), its
//!   queue manager then delivering to the `discard` transport. Default settings otherwise.
//! - `qpsmtpd`: the Debian package, forkserver mode, the chain count_unrecognized_commands,
//!   check_badmailfrom, check_badrcptto, rcpt_ok, headers and a queue plugin that accepts and
//!   discards (written here: qpsmtpd ships none), log level info.
//! - `haraka`: the npm package, one worker per core (`nodes=cpus`), rcpt_to.in_host_list and
//!   queue/discard, default log level.
//! - `wasmtpd`: the release build, six sandboxed plugins (count_unrecognized_commands,
//!   check_badmailfrom, check_badrcptto, rcpt_ok, headers, and queue/discard or queue/maildir,
//!   which fsyncs), default log level (info).
//! - `wasmtpd (discard, DNS)`: the same with what an MX adds on DNS: `dnsbl` on two zones,
//!   the server's SPF, DKIM and DMARC checks (`config/authentication`: `dmarc`) with the
//!   `sender_permitted_from`, `dkim` and `dmarc` plugins, against a local nsd serving the zones
//!   (the one the tests use, `tests/src/dns.rs`), so every lookup is answered on loopback and
//!   then from the resolver's cache, as an MX's are for a sender it hears from often.
//! - `wasmtpd (store)` and `wasmtpd (Redis)`: the six plugins with `greylisting` and `limit`
//!   (connections and messages per client, limits never reached) in front of them, on the
//!   embedded store and on a private redis-server; smtp-source's one triplet is made white
//!   before the runs (deferred once, retried after the one-second black-out), so every message
//!   is a store read (greylisting renews a white triplet at most once an hour) and two counter
//!   increments (limit's connections, at connect, and messages per client, at DATA).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use wasmtpd_tests::dns::DnsServer;
use wasmtpd_tests::redis::RedisServer;

use crate::project_root;

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sink,
    Postfix,
    Qpsmtpd,
    Haraka,
    WasmtpdDiscard,
    WasmtpdMaildir,
    WasmtpdDns,
    WasmtpdStore,
    WasmtpdRedis,
    /// The six plugins with `queue/smtp-forward` to a private smtp-sink.
    WasmtpdForward,
    /// Haraka with `queue/smtp_forward` to a private smtp-sink.
    HarakaForward,
}

pub const ALL: [Kind; 11] = [
    Kind::Sink,
    Kind::WasmtpdDiscard,
    Kind::WasmtpdMaildir,
    Kind::WasmtpdDns,
    Kind::WasmtpdStore,
    Kind::WasmtpdRedis,
    Kind::Postfix,
    Kind::Haraka,
    Kind::Qpsmtpd,
    Kind::WasmtpdForward,
    Kind::HarakaForward,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Sink => "smtp-sink",
            Kind::Postfix => "postfix",
            Kind::Qpsmtpd => "qpsmtpd",
            Kind::Haraka => "haraka",
            Kind::WasmtpdDiscard => "wasmtpd (discard)",
            Kind::WasmtpdMaildir => "wasmtpd (maildir)",
            Kind::WasmtpdDns => "wasmtpd (discard, DNS)",
            Kind::WasmtpdStore => "wasmtpd (store)",
            Kind::WasmtpdRedis => "wasmtpd (Redis)",
            Kind::WasmtpdForward => "wasmtpd (smtp-forward)",
            Kind::HarakaForward => "haraka (smtp_forward)",
        }
    }

    pub fn dir_name(self) -> &'static str {
        match self {
            Kind::Sink => "sink",
            Kind::Postfix => "postfix",
            Kind::Qpsmtpd => "qpsmtpd",
            Kind::Haraka => "haraka",
            Kind::WasmtpdDiscard => "wasmtpd-discard",
            Kind::WasmtpdMaildir => "wasmtpd-maildir",
            Kind::WasmtpdDns => "wasmtpd-dns",
            Kind::WasmtpdStore => "wasmtpd-store",
            Kind::WasmtpdRedis => "wasmtpd-redis",
            Kind::WasmtpdForward => "wasmtpd-forward",
            Kind::HarakaForward => "haraka-forward",
        }
    }
}

/// A running server.
pub struct Running {
    pub kind: Kind,
    pub port: u16,
    /// The root of its process tree (what is measured).
    pub root: u32,
    child: Option<Child>,
    dir: PathBuf,
    /// The name server the DNS variant asks (stopped with it).
    _dns: Option<DnsServer>,
    /// The Redis the Redis variant keeps its state in (stopped with it).
    _redis: Option<RedisServer>,
    /// The smtp-sink the forwarding variants forward to (stopped with it).
    sink: Option<Child>,
}

/// Where the benchmark keeps its files.
pub fn bench_dir() -> PathBuf {
    project_root().join("target").join("bench")
}

/// The Haraka installation (npm), under `target/bench/haraka`.
pub fn haraka_bin() -> PathBuf {
    bench_dir().join("haraka/node_modules/.bin/haraka")
}

/// A free loopback port (bound and released; the servers bind it right after).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap())?;
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
}

fn chown(path: &Path, user: &str) -> Result<()> {
    crate::run(Command::new("chown").args(["-R", user]).arg(path))
}

/// Sets up `kind` in a fresh directory and starts it; waits until it answers.
pub fn start(kind: Kind) -> Result<Running> {
    let dir = bench_dir().join("run").join(kind.dir_name());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let log = std::fs::File::create(dir.join("server.log"))?;
    let spawn = |cmd: &mut Command| -> Result<Child> {
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?)
            .spawn()
            .with_context(|| format!("starting {}", kind.name()))
    };
    let mut dns = None;
    let mut redis = None;
    let mut sink = None;
    let mut sink_port = 0;
    if matches!(kind, Kind::WasmtpdForward | Kind::HarakaForward) {
        sink_port = free_port()?;
        sink =
            Some(spawn(Command::new("smtp-sink").args(["-u", "postfix", &format!("127.0.0.1:{sink_port}"), "1024"]))?);
    }
    let (child, root) = match kind {
        Kind::Sink => {
            let child = spawn(Command::new("smtp-sink").args(["-u", "postfix", &format!("127.0.0.1:{port}"), "1024"]))?;
            let pid = child.id();
            (Some(child), pid)
        }
        Kind::Postfix => (None, start_postfix(&dir, port)?),
        Kind::Qpsmtpd => {
            setup_qpsmtpd(&dir)?;
            let child = spawn(
                Command::new("qpsmtpd-forkserver")
                    .args(["-l", "127.0.0.1", "-p", &port.to_string(), "-c", "200", "-m", "200", "-u", "qpsmtpd"])
                    .env("QPSMTPD_CONFIG", dir.join("config"))
                    .current_dir(&dir),
            )?;
            let pid = child.id();
            (Some(child), pid)
        }
        Kind::Haraka | Kind::HarakaForward => {
            setup_haraka(&dir, port)?;
            if kind == Kind::HarakaForward {
                setup_haraka_forward(&dir, sink_port)?;
            }
            let child = spawn(
                Command::new(haraka_bin()).arg("-c").arg(&dir).env("YES_REALLY_DO_DISCARD", "1").current_dir(&dir),
            )?;
            let pid = child.id();
            (Some(child), pid)
        }
        Kind::WasmtpdDiscard
        | Kind::WasmtpdMaildir
        | Kind::WasmtpdDns
        | Kind::WasmtpdStore
        | Kind::WasmtpdRedis
        | Kind::WasmtpdForward => {
            setup_wasmtpd(&dir, kind == Kind::WasmtpdMaildir)?;
            if kind == Kind::WasmtpdForward {
                setup_forward(&dir, sink_port)?;
            }
            if kind == Kind::WasmtpdDns {
                let server = start_name_server()?;
                setup_dns(&dir, server.addr())?;
                dns = Some(server);
            }
            if kind == Kind::WasmtpdStore {
                setup_store(&dir, "state embedded")?;
            }
            if kind == Kind::WasmtpdRedis {
                let server = std::panic::catch_unwind(RedisServer::start)
                    .map_err(|_| anyhow::anyhow!("the benchmark's redis-server did not start"))?;
                setup_store(&dir, &format!("state redis {} timeout 1s pool 4", server.url()))?;
                redis = Some(server);
            }
            let bin = project_root().join("target/release/wasmtpd");
            let child = spawn(
                Command::new(bin)
                    .arg("--config")
                    .arg(dir.join("config"))
                    .arg("--state-dir")
                    .arg(dir.join("state"))
                    .arg("--plugin-dir")
                    .arg(crate::build_plugins::plugin_dir())
                    .args(["--listen", &format!("127.0.0.1:{port}")]),
            )?;
            let pid = child.id();
            (Some(child), pid)
        }
    };
    let mut running = Running { kind, port, root, child, dir, _dns: dns, _redis: redis, sink };
    running.wait_ready()?;
    if matches!(kind, Kind::WasmtpdStore | Kind::WasmtpdRedis) {
        whitelist(port)?;
    }
    Ok(running)
}

impl Running {
    /// Waits until the server answers with a 220 greeting (Haraka takes seconds to start).
    fn wait_ready(&mut self) -> Result<()> {
        use std::io::Read;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Some(c) = &mut self.child
                && let Some(status) = c.try_wait()?
            {
                bail!("{} exited at start ({status}); see {}", self.kind.name(), self.dir.join("server.log").display());
            }
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 3];
                if s.read_exact(&mut buf).is_ok() && &buf == b"220" {
                    use std::io::Write;
                    let _ = s.write_all(b"QUIT\r\n");
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("{} did not answer on port {} within a minute", self.kind.name(), self.port)
    }

    /// Messages delivered, for the servers that keep them (maildir).
    pub fn delivered(&self) -> Option<usize> {
        match self.kind {
            Kind::WasmtpdMaildir => {
                Some(std::fs::read_dir(self.dir.join("state/maildir/new")).map(|d| d.count()).unwrap_or(0))
            }
            _ => None,
        }
    }

    /// Connections the forwarding variant of wasmtpd opened to its smtp-sink (from its log).
    pub fn downstream_connections(&self) -> Option<u64> {
        let log = std::fs::read_to_string(self.dir.join("server.log")).ok()?;
        Some(log.lines().filter(|l| l.contains("downstream connection opened")).count() as u64)
    }

    pub fn stop(mut self) {
        if let Some(mut sink) = self.sink.take() {
            let _ = sink.kill();
            let _ = sink.wait();
        }
        if self.kind == Kind::Postfix {
            let _ = Command::new("postfix").arg("-c").arg(self.dir.join("etc")).arg("stop").status();
        }
        if let Some(c) = &mut self.child {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Six plugins, the same config as an operator would write.
fn setup_wasmtpd(dir: &Path, maildir: bool) -> Result<()> {
    let c = dir.join("config");
    write(&c, "me", "mx.bench.test\n")?;
    write(&c, "rcpthosts", "example.com\n")?;
    write(&c, "badmailfrom", "spammer@bad.test\n@spam.test\n")?;
    write(&c, "badrcptto", "nobody@example.com\n")?;
    let queue = if maildir { "queue/maildir /maildir" } else { "queue/discard" };
    write(
        &c,
        "plugins",
        &format!(
            "count_unrecognized_commands 4\ncheck_badmailfrom\ncheck_badrcptto\nrcpt_ok\nheaders require From,Date\n{queue}\n"
        ),
    )?;
    let queue_plugin = queue.split(' ').next().unwrap_or(queue);
    let mut sandbox = format!("rcpt_ok rights accept-recipient\n{queue_plugin} rights queue\n");
    if maildir {
        sandbox.push_str("queue/maildir grant-dir maildir /maildir rw\n");
    }
    write(&c, "sandbox", &sandbox)?;
    // All the load comes from one address, and the idle test holds 2,000 connections. The
    // instance pool is sized for max_connections (each connection may hold an instance of all
    // six plugins); about 2,500 fit in its address space budget, so not more.
    write(&c, "limits", "max_connections_per_ip 2100\nmax_connections 2100\n")?;
    Ok(())
}

/// The six plugins with `queue/smtp-forward` (recipients mirrored at RCPT, before `rcpt_ok`)
/// in place of `queue/discard`, forwarding to the smtp-sink on `sink_port`.
fn setup_forward(dir: &Path, sink_port: u16) -> Result<()> {
    let c = dir.join("config");
    write(
        &c,
        "plugins",
        "count_unrecognized_commands 4\ncheck_badmailfrom\ncheck_badrcptto\nqueue/smtp-forward sink\nrcpt_ok\nheaders require From,Date\n",
    )?;
    write(
        &c,
        "sandbox",
        "rcpt_ok rights accept-recipient\nqueue/smtp-forward rights queue\nqueue/smtp-forward downstream sink\nqueue/smtp-forward timeout 30s\n",
    )?;
    write(
        &c,
        "downstreams",
        &format!(
            "sink 127.0.0.1:{sink_port} smtp starttls off max-connections 256 max-messages 100000 idle-time 60s\n"
        ),
    )?;
    // The server logs each downstream connection it opens (`downstream_connections`).
    Ok(())
}

/// Haraka's `queue/smtp_forward` to the smtp-sink on `sink_port`, in place of its discard.
fn setup_haraka_forward(dir: &Path, sink_port: u16) -> Result<()> {
    let c = dir.join("config");
    write(&c, "plugins", "rcpt_to.in_host_list\nqueue/smtp_forward\n")?;
    write(
        &c,
        "smtp_forward.ini",
        &format!("host=127.0.0.1\nport={sink_port}\nenable_tls=false\nenable_outbound=false\n"),
    )?;
    Ok(())
}

fn start_postfix(dir: &Path, port: u16) -> Result<u32> {
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc)?;
    for sub in ["queue", "data"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    chown(&dir.join("data"), "postfix")?;
    let master = std::fs::read_to_string("/etc/postfix/master.cf")
        .or_else(|_| std::fs::read_to_string("/usr/share/postfix/master.cf.dist"))
        .context("Postfix's master.cf")?;
    let master: String = master
        .lines()
        .map(|l| {
            if l.starts_with("smtp      inet") {
                format!("127.0.0.1:{port}      inet  n       -       n       -       -       smtpd")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    write(&etc, "master.cf", &(master + "\n"))?;
    let d = dir.display();
    write(
        &etc,
        "main.cf",
        &format!(
            "compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
myhostname = mx.bench.test
mydestination = example.com
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
local_recipient_maps =
local_transport = discard:
default_transport = discard:
alias_maps =
alias_database =
smtp_dns_support_level = disabled
maillog_file = {d}/server.log
maillog_file_prefixes = /var, /dev/stdout, {d}
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
"
        ),
    )?;
    crate::run(Command::new("postfix").arg("-c").arg(&etc).arg("start"))?;
    let pid_file = dir.join("queue/pid/master.pid");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse().ok()) {
            return Ok(pid);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("Postfix did not write {}", pid_file.display())
}

fn setup_qpsmtpd(dir: &Path) -> Result<()> {
    let c = dir.join("config");
    let d = dir.display();
    write(&c, "me", "mx.bench.test\n")?;
    write(&c, "rcpthosts", "example.com\n")?;
    write(&c, "badmailfrom", "spammer@bad.test\n@spam.test\n")?;
    write(&c, "badrcptto", "nobody@example.com\n")?;
    write(&c, "plugin_dirs", &format!("/usr/share/qpsmtpd/plugins\n{d}/plugins\n"))?;
    write(
        &c,
        "plugins",
        "count_unrecognized_commands 4\ncheck_badmailfrom\ncheck_badrcptto\nrcpt_ok\nheaders\nqueue/discard\n",
    )?;
    write(&c, "spool_dir", &format!("{d}/spool\n"))?;
    write(&c, "loglevel", "6\n")?;
    write(
        &dir.join("plugins"),
        "queue/discard",
        "# Accepts every message and throws it away (qpsmtpd ships no such queue plugin).\n\
         sub hook_queue {\n    my ($self, $transaction) = @_;\n    return (OK, \"Queued\");\n}\n",
    )?;
    let spool = dir.join("spool");
    std::fs::create_dir_all(&spool)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o700))?;
    }
    chown(&spool, "qpsmtpd")
}

fn setup_haraka(dir: &Path, port: u16) -> Result<()> {
    crate::run(Command::new(haraka_bin()).arg("-i").arg(dir).stdout(Stdio::null()))?;
    let c = dir.join("config");
    write(&c, "smtp.ini", &format!("[main]\nlisten=127.0.0.1:{port}\nnodes=cpus\n"))?;
    write(&c, "plugins", "rcpt_to.in_host_list\nqueue/discard\n")?;
    write(&c, "host_list", "example.com\n")?;
    write(&c, "me", "mx.bench.test\n")?;
    Ok(())
}

/// The zones of the DNS variant: two blocklists that do not list 127.0.0.1, and SPF and DMARC
/// records for smtp-source's sender (`bench@remote.test`, HELO `bench.client.test`).
const BENCH_ZONE: &str = r#"
remote.test.        3600 IN MX  10 mx.remote.test.
mx.remote.test.     3600 IN A   192.0.2.10
remote.test.        3600 IN TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc.remote.test. 3600 IN TXT "v=DMARC1; p=reject"
bench.client.test.  3600 IN A   127.0.0.1
bench.client.test.  3600 IN TXT "v=spf1 ip4:127.0.0.1 -all"
; bl1.test and bl2.test list 127.0.0.9 only (127.0.0.1 gets NXDOMAIN, cached by the SOA's minimum).
9.0.0.127.bl1.test. 3600 IN A   127.0.0.2
9.0.0.127.bl2.test. 3600 IN A   127.0.0.2
"#;

/// nsd with [`BENCH_ZONE`] (the harness panics when nsd cannot start; that is a failed setup here).
fn start_name_server() -> Result<DnsServer> {
    std::panic::catch_unwind(|| DnsServer::start(&[("test", BENCH_ZONE)]))
        .map_err(|_| anyhow::anyhow!("the benchmark's name server (nsd) did not start"))
}

/// The DNS additions to the six-plugin chain: dnsbl first, the authentication policies around
/// rcpt_ok and headers, the checks on, the resolver on `name_server`.
fn setup_dns(dir: &Path, name_server: std::net::SocketAddr) -> Result<()> {
    let c = dir.join("config");
    write(
        &c,
        "plugins",
        "count_unrecognized_commands 4\ndnsbl\ncheck_badmailfrom\nsender_permitted_from reject 3\ncheck_badrcptto\n\
         rcpt_ok\nheaders require From,Date\ndkim\ndmarc\nqueue/discard\n",
    )?;
    write(&c, "dnsbl_zones", "bl1.test\nbl2.test\n")?;
    write(&c, "authentication", "dmarc\n")?;
    write(&c, "resolver", &format!("nameserver {name_server}\ntimeout 2s\n"))?;
    let sandbox = std::fs::read_to_string(c.join("sandbox"))?;
    write(&c, "sandbox", &format!("{sandbox}dnsbl dns bl1.test bl2.test\n"))?;
    // Ten plugins per connection: fewer connections fit the instance pool than with six.
    write(&c, "limits", "max_connections_per_ip 1000\nmax_connections 1000\n")
}

/// greylisting and limit in front of the six plugins, on the store `store` (a `config/stores` line).
fn setup_store(dir: &Path, store: &str) -> Result<()> {
    let c = dir.join("config");
    write(
        &c,
        "plugins",
        "count_unrecognized_commands 4\ngreylisting black_timeout 1 store state\n\
         limit connections 100000000/60 messages_per_client 100000000/60 store state\n\
         check_badmailfrom\ncheck_badrcptto\nrcpt_ok\nheaders require From,Date\nqueue/discard\n",
    )?;
    write(&c, "stores", &format!("{store}\n"))?;
    let sandbox = std::fs::read_to_string(c.join("sandbox"))?;
    write(&c, "sandbox", &format!("{sandbox}greylisting store state\nlimit store state\n"))?;
    // Eight plugins per connection: fewer connections fit the instance pool than with six.
    write(&c, "limits", "max_connections_per_ip 1500\nmax_connections 1500\n")
}

/// Makes smtp-source's triplet (127.0.0.1) white: deferred once, then retried after the
/// black-out, as a real sender's MTA would.
fn whitelist(port: u16) -> Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let mail = |expect: &str| -> Result<()> {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut w = stream;
        let mut reply = || -> Result<String> {
            let mut line = String::new();
            loop {
                line.clear();
                reader.read_line(&mut line)?;
                if line.len() < 4 || line.as_bytes()[3] != b'-' {
                    return Ok(line.trim_end().to_string());
                }
            }
        };
        reply()?;
        w.write_all(b"EHLO bench.client.test\r\n")?;
        reply()?;
        w.write_all(b"MAIL FROM:<bench@remote.test>\r\n")?;
        let answer = reply()?;
        let _ = w.write_all(b"QUIT\r\n");
        if !answer.starts_with(expect) {
            bail!("whitelisting smtp-source's triplet: expected {expect} to MAIL, got {answer:?}");
        }
        Ok(())
    };
    mail("450")?;
    std::thread::sleep(Duration::from_millis(1200));
    mail("250")
}
