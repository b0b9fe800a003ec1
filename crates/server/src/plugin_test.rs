//! `wasmtpd plugin test`: a plugin (or a chain) run against a recorded session, with no
//! network and no server: the real engine (the connection handlers, the verdict table, the
//! spool) and the real plugin host over an in-memory stream, so what a plugin author sees is
//! what the server would do. Each hook's answer is printed as it comes (verdict, plugin,
//! message, enhanced code, the notes it set, its time), and the session file may state what it
//! expects; any expectation that fails makes the exit status non-zero, for the author's CI.
//!
//! A session file, one directive per line (`#` starts a comment):
//!
//! ```text
//! client 192.0.2.1:40000        # the client's address (default 192.0.2.1:40000)
//! message mail.eml              # the message DATA sends (relative to the session file)
//! EHLO client.example           # anything else is a command line, sent as is
//! MAIL FROM:<a@client.example>
//! RCPT TO:<bob@example.com>
//! expect 550 5.7.1              # the last reply's code (and enhanced code)
//! expect rcpt deny              # the last verdict of that hook's chain
//! DATA                          # after 354, the message (dot-stuffed) and the final dot
//! QUIT
//! ```
//!
//! Capabilities come from the config given (`--config`): a plugin granted DNS asks the
//! resolver of that config, a store grant opens that store under a temporary state directory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;
use wasmtpd_host::PluginHost;
use wasmtpd_smtp::session::Connection;
use wasmtpd_smtp::{Hook, HookArgs, HookContext, HookResult, HookRunner, Mechanism, Offer, Session, Verdict};

use crate::Shared;
use crate::admission::Admission;
use crate::auth::AuthFailures;
use crate::config::{Config, ConfigSource};
use crate::spool::Spool;
use crate::tls::Tls;

/// One step of a session file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A command line to send.
    Send(String),
    /// The last reply's code, and optionally its enhanced code.
    ExpectReply { code: u16, enhanced: Option<String>, line: usize },
    /// The last verdict of a hook's chain.
    ExpectVerdict { hook: Hook, verdict: Verdict, line: usize },
}

/// A parsed session file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFile {
    pub client: SocketAddr,
    pub message: Option<PathBuf>,
    pub steps: Vec<Step>,
}

/// Parses a session file; `base` is where relative paths are from. Errors name the line.
pub fn parse_session(text: &str, base: &Path) -> Result<SessionFile> {
    let mut out = SessionFile { client: "192.0.2.1:40000".parse().unwrap(), message: None, steps: Vec::new() };
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.split_once(" #").map_or(raw, |(l, _)| l).trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        match first.to_ascii_lowercase().as_str() {
            "client" => {
                let addr = words.next().unwrap_or_default();
                out.client = addr
                    .parse()
                    .or_else(|_| addr.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 40000)))
                    .map_err(|_| anyhow::anyhow!("line {n}: `{addr}` is not an address (client ADDR[:PORT])"))?;
            }
            "message" => {
                let file = words.next().ok_or_else(|| anyhow::anyhow!("line {n}: message needs a file"))?;
                out.message = Some(base.join(file));
            }
            "expect" => {
                let what: Vec<&str> = words.collect();
                let step = match what.as_slice() {
                    [code] | [code, _] if code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()) => {
                        Step::ExpectReply { code: code.parse()?, enhanced: what.get(1).map(|s| s.to_string()), line: n }
                    }
                    [hook, verdict] => {
                        let hook = Hook::ALL
                            .iter()
                            .copied()
                            .find(|h| h.name().eq_ignore_ascii_case(hook))
                            .ok_or_else(|| anyhow::anyhow!("line {n}: `{hook}` is not a hook"))?;
                        let verdict = parse_verdict(verdict)
                            .ok_or_else(|| anyhow::anyhow!("line {n}: `{verdict}` is not a verdict (ok, deny, denysoft, deny_disconnect, denysoft_disconnect, declined, done)"))?;
                        Step::ExpectVerdict { hook, verdict, line: n }
                    }
                    _ => bail!("line {n}: expect CODE [ENHANCED], or expect HOOK VERDICT"),
                };
                out.steps.push(step);
            }
            _ => out.steps.push(Step::Send(line.to_string())),
        }
    }
    Ok(out)
}

fn parse_verdict(word: &str) -> Option<Verdict> {
    [
        Verdict::Ok,
        Verdict::Deny,
        Verdict::DenySoft,
        Verdict::DenyDisconnect,
        Verdict::DenySoftDisconnect,
        Verdict::Declined,
        Verdict::Done,
    ]
    .into_iter()
    .find(|v| v.name().eq_ignore_ascii_case(word))
}

/// The plugin host, with every hook's answer written down as it comes.
struct Recorder {
    host: PluginHost,
    /// What is printed, in order (hook answers and the conversation).
    out: Arc<Mutex<String>>,
    /// The last result of each hook's chain.
    last: Arc<Mutex<BTreeMap<&'static str, HookResult>>>,
}

impl HookRunner for Recorder {
    type Scope = <PluginHost as HookRunner>::Scope;

    fn open_scope(&self) -> Self::Scope {
        self.host.open_scope()
    }

    fn implements(&self, hook: Hook) -> bool {
        self.host.implements(hook)
    }

    async fn run(
        &self,
        scope: &mut Self::Scope,
        hook: Hook,
        args: HookArgs<'_>,
        mut ctx: HookContext<'_>,
    ) -> HookResult {
        let before = notes(&ctx);
        let started = Instant::now();
        let ctx_again = HookContext { connection: &mut *ctx.connection, transaction: ctx.transaction.as_deref_mut() };
        let result = self.host.run(scope, hook, args, ctx_again).await;
        let took = started.elapsed();
        let after = notes(&ctx);
        if self.host.implements(hook) {
            let mut out = self.out.lock().unwrap();
            let _ = write!(out, "   hook {:<20} {}", hook.name(), result.verdict.name());
            if let Some(p) = &result.plugin {
                let _ = write!(out, " by {p}");
            }
            if let Some(e) = &result.enhanced {
                let _ = write!(out, " {e}");
            }
            if let Some(m) = &result.message {
                let _ = write!(out, " \"{}\"", m.replace('\n', "\\n"));
            }
            if result.fault {
                let _ = write!(out, " (fault: see the log)");
            }
            let _ = writeln!(out, " ({:.2} ms)", took.as_secs_f64() * 1000.0);
            for (key, value) in after.iter().filter(|(k, v)| before.get(*k) != Some(v)) {
                let _ = writeln!(out, "      note {key} = {value}");
            }
            for key in before.keys().filter(|k| !after.contains_key(*k)) {
                let _ = writeln!(out, "      note {key} removed");
            }
        }
        self.last.lock().unwrap().insert(hook.name(), result.clone());
        result
    }
}

/// The notes a hook can see, connection's and transaction's, by `connection KEY` and
/// `transaction KEY`.
fn notes(ctx: &HookContext<'_>) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> =
        ctx.connection.notes.entries.iter().map(|(k, n)| (format!("connection {k}"), n.value.clone())).collect();
    if let Some(t) = &ctx.transaction {
        out.extend(t.notes.entries.iter().map(|(k, n)| (format!("transaction {k}"), n.value.clone())));
    }
    out
}

/// What to run: a chain (`config/plugins` lines) and where its components are.
pub struct Chain {
    /// `config/plugins` text.
    pub plugins: String,
    pub plugin_dir: PathBuf,
}

/// Runs `session` through `chain` under the config in `config` (or none), printing as it
/// goes. `Ok(true)` when every expectation held.
pub fn run(
    chain: &Chain,
    session_path: &Path,
    message: Option<&Path>,
    config: Option<&Path>,
    cache: &Path,
) -> Result<bool> {
    let text = std::fs::read_to_string(session_path).with_context(|| format!("reading {}", session_path.display()))?;
    let mut session = parse_session(&text, session_path.parent().unwrap_or(Path::new(".")))
        .map_err(|e| anyhow::anyhow!("{}: {e:#}", session_path.display()))?;
    if let Some(m) = message {
        session.message = Some(m.to_path_buf());
    }
    let message = match &session.message {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    // A config directory of the run's own: the given one's files, then the chain.
    let work = tempdir()?;
    let config_dir = work.0.join("config");
    std::fs::create_dir_all(&config_dir)?;
    if let Some(dir) = config {
        copy_dir(dir, &config_dir)?;
    } else {
        std::fs::write(config_dir.join("me"), "mx.test\n")?;
    }
    std::fs::write(config_dir.join("plugins"), &chain.plugins)?;
    let config =
        Config::load(ConfigSource::Dir(config_dir.clone())).map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    let state = work.0.join("state");
    let spool = Spool::open(state.join("spool")).context("the run's spool")?;
    let dirs = crate::plugins::Dirs {
        plugin_dir: &chain.plugin_dir,
        state_dir: &state,
        spool_dir: spool.dir(),
        cache_dir: cache,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let services = runtime.block_on(async { crate::plugins::services(&config, &state) })?;
    let host = runtime.block_on(async { crate::plugins::load(&config, &dirs, &services) })?;
    let out = Arc::new(Mutex::new(String::new()));
    let last = Arc::new(Mutex::new(BTreeMap::new()));
    let runner = Recorder { host, out: out.clone(), last: last.clone() };
    let auth_mechanisms: Vec<Mechanism> = Mechanism::ALL
        .into_iter()
        .filter(|m| runner.implements(Hook::for_mechanism(*m)) || runner.implements(Hook::Auth))
        .collect();
    let shutdown = CancellationToken::new();
    let shared = Arc::new(Shared {
        auth_failures: AuthFailures::new(&config.auth),
        spool,
        tls: Arc::new(Tls::load(&[], &state).map_err(anyhow::Error::msg)?),
        auth_mechanisms: auth_mechanisms.clone(),
        authenticator: None,
        shutdown: shutdown.clone(),
        runner,
        config,
    });
    let local: SocketAddr = "192.0.2.25:25".parse().unwrap();
    let offer = Offer { starttls: false, auth_mechanisms, auth_without_tls: true, xclient: false };
    let smtp = Session::new(Connection::new("test".into(), session.client, local), shared.config.limits.clone())
        .with_offer(offer);
    let admission = Admission::new(1, 1);
    let ticket = admission.admit(session.client.ip());
    let ok = runtime.block_on(async move {
        let (client, server) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(crate::connection::serve(
            server,
            crate::ListenerKind { implicit_tls: false, proxy: false },
            shared,
            smtp,
            ticket,
        ));
        let ok = converse(client, &session, message.as_deref(), &out, &last).await;
        shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        print!("{}", std::mem::take(&mut *out.lock().unwrap()));
        ok
    });
    Ok(ok)
}

/// Plays the session's steps; prints the conversation into `out`; whether every expectation held.
async fn converse(
    mut io: DuplexStream,
    session: &SessionFile,
    message: Option<&[u8]>,
    out: &Mutex<String>,
    last: &Mutex<BTreeMap<&'static str, HookResult>>,
) -> bool {
    let mut buf = Vec::new();
    let mut ok = true;
    let mut reply = read_reply(&mut io, &mut buf).await;
    print_reply(out, reply.as_deref());
    for step in &session.steps {
        match step {
            Step::Send(line) => {
                let _ = writeln!(out.lock().unwrap(), "C: {line}");
                if io.write_all(format!("{line}\r\n").as_bytes()).await.is_err() {
                    let _ = writeln!(out.lock().unwrap(), "   (the server closed the connection)");
                    reply = None;
                    continue;
                }
                reply = read_reply(&mut io, &mut buf).await;
                print_reply(out, reply.as_deref());
                if line.eq_ignore_ascii_case("DATA") && reply.as_deref().is_some_and(|r| r.starts_with("354")) {
                    let body = message.unwrap_or(b"Subject: wasmtpd plugin test\r\n\r\nA test message.\r\n");
                    let _ = writeln!(out.lock().unwrap(), "C: (the message, {} octets)\nC: .", body.len());
                    let _ = io.write_all(&dot_stuffed(body)).await;
                    reply = read_reply(&mut io, &mut buf).await;
                    print_reply(out, reply.as_deref());
                }
            }
            Step::ExpectReply { code, enhanced, line } => {
                let got = reply.as_deref().unwrap_or("(no reply)");
                let code_ok = got.starts_with(&code.to_string());
                let enhanced_ok =
                    enhanced.as_ref().is_none_or(|e| got.get(4..).is_some_and(|t| t.starts_with(e.as_str())));
                if !(code_ok && enhanced_ok) {
                    ok = false;
                    let want = format!("{code}{}", enhanced.as_ref().map(|e| format!(" {e}")).unwrap_or_default());
                    let _ =
                        writeln!(out.lock().unwrap(), "FAILED line {line}: expected {want}, got {}", first_line(got));
                }
            }
            Step::ExpectVerdict { hook, verdict, line } => {
                let got = last.lock().unwrap().get(hook.name()).map(|r| r.verdict);
                if got != Some(*verdict) {
                    ok = false;
                    let got = got.map_or("(not run)", |v| v.name());
                    let _ = writeln!(
                        out.lock().unwrap(),
                        "FAILED line {line}: expected {} {}, got {got}",
                        hook.name(),
                        verdict.name()
                    );
                }
            }
        }
    }
    let _ = writeln!(out.lock().unwrap(), "{}", if ok { "ok: every expectation held" } else { "FAILED" });
    ok
}

fn first_line(reply: &str) -> &str {
    reply.lines().next().unwrap_or_default()
}

fn print_reply(out: &Mutex<String>, reply: Option<&str>) {
    let mut out = out.lock().unwrap();
    match reply {
        Some(r) => {
            for l in r.lines() {
                let _ = writeln!(out, "S: {l}");
            }
        }
        None => {
            let _ = writeln!(out, "S: (connection closed)");
        }
    }
}

/// One whole reply (every line up to the one with a space after the code), within 60 s.
async fn read_reply(io: &mut DuplexStream, buf: &mut Vec<u8>) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(end) = reply_end(buf) {
            let reply: Vec<u8> = buf.drain(..end).collect();
            return Some(String::from_utf8_lossy(&reply).replace("\r\n", "\n").trim_end().to_string());
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

/// Where the first complete reply in `buf` ends.
fn reply_end(buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(pos) = buf[start..].windows(2).position(|w| w == b"\r\n") {
        let line = &buf[start..start + pos];
        start += pos + 2;
        if line.len() < 4 || line[3] != b'-' {
            return Some(start);
        }
    }
    None
}

/// The message as DATA carries it: CRLF line ends, leading dots doubled, the final dot.
fn dot_stuffed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    for line in text.split_terminator('\n') {
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> Result<TempDir> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("wasmtpd-plugin-test-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(TempDir(dir))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_file_parses_into_steps_with_their_lines() {
        let text = "# a session\nclient 192.0.2.9\nmessage m.eml\nEHLO c.test\nexpect 250\nRCPT TO:<a@b> # who\nexpect 550 5.7.1\nexpect rcpt DENY\n";
        let s = parse_session(text, Path::new("/s")).unwrap();
        assert_eq!(s.client, "192.0.2.9:40000".parse().unwrap());
        assert_eq!(s.message, Some(PathBuf::from("/s/m.eml")));
        assert_eq!(
            s.steps,
            [
                Step::Send("EHLO c.test".into()),
                Step::ExpectReply { code: 250, enhanced: None, line: 5 },
                Step::Send("RCPT TO:<a@b>".into()),
                Step::ExpectReply { code: 550, enhanced: Some("5.7.1".into()), line: 7 },
                Step::ExpectVerdict { hook: Hook::Rcpt, verdict: Verdict::Deny, line: 8 },
            ]
        );
        assert!(parse_session("expect rcpt maybe\n", Path::new("/")).unwrap_err().to_string().contains("line 1"));
        assert!(parse_session("client nowhere\n", Path::new("/")).is_err());
    }

    #[test]
    fn replies_end_at_their_last_line_and_messages_are_dot_stuffed() {
        assert_eq!(reply_end(b"250-a\r\n250 b\r\nrest"), Some(14));
        assert_eq!(reply_end(b"250-a\r\n"), None);
        assert_eq!(dot_stuffed(b"a\n.b\r\n"), b"a\r\n..b\r\n.\r\n");
    }
}
