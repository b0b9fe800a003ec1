//! The configuration directory, in qpsmtpd's layout: one file per setting.
//!
//! | file          | what it holds |
//! |---------------|---------------|
//! | `me`          | our host name (default: the machine's host name) |
//! | `smtpgreeting`| the text of the 220 greeting (default: `<me> ESMTP wasmtpd ready`) |
//! | `plugins`     | the plugin chain: one plugin per line with its arguments; `$include DIR` |
//! | `limits`      | protocol limits and timeouts, `name value` per line |
//! | `sandbox`     | per-plugin limits and grants, `plugin setting value...` per line |
//! | `tls`         | certificates for STARTTLS and implicit TLS: `certificate CHAIN.pem KEY.pem` per line |
//! | `auth`        | the server's AUTH rules (plaintext policy, failure limit), `name value` per line |
//! | `resolver`    | the DNS resolver: `nameserver ADDR[:PORT]` (repeatable; default: `/etc/resolv.conf`), `timeout`, `attempts`, `cache-size` |
//! | `authentication` | the email authentication checks the server makes: `iprev`, `spf`, `dkim`, `dmarc`, one per line (default: none) |
//! | `stores`      | the key-value stores plugins may be granted: `NAME embedded [max-entries N] [max-bytes SIZE] [sync-every D] [timeout D]` or `NAME redis redis://HOST:PORT[/DB] [timeout D] [pool N] [prefix P]` per line (default: none) |
//! | `upstreams`   | the services plugins may be granted: `NAME tcp HOST:PORT` or `NAME unix PATH`, then `connect-timeout D`, `timeout D`, `max-connections N`, `max-answer SIZE`, `tls CA.pem`, `server-name NAME` (default: none) |
//! | `frontends`   | the front ends trusted with XCLIENT and the PROXY protocol: `xclient ADDR[/PREFIX]...`, `proxy ADDR[/PREFIX]...`, `proxy_timeout D` (default: none; see `frontends.rs`) |
//! | `downstreams` | the servers plugins may deliver onward to: `NAME HOST:PORT\|unix PATH smtp\|lmtp [SETTING VALUE]...` per line (see `load_downstreams`; default: none) |
//! | anything else | read by plugins by name (`rcpthosts`, `badmailfrom`, ...): each plugin only the files it was given (`plugin_files.rs`) |
//!
//! Lines are trimmed; empty lines and lines starting with `#` are ignored. Every error stops
//! start-up with the file, the line and what is wrong ([`ConfigError`]).
//!
//! Without `--config`, the server runs on the default configuration embedded in the binary
//! (`crates/server/default-config/`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wasmtpd_host::downstream::{self, Address, DownstreamSettings, Protocol, StartTls};
use wasmtpd_host::resolver::ResolverSettings;
use wasmtpd_host::sandbox::{
    DirGrant, DnsGrant, DownstreamGrant, FaultPolicy, InstanceScope, MEMORY_RANGE, Right, Rights, STACK_RANGE,
    SandboxSettings, StoreGrant, TIMEOUT_RANGE, UpstreamGrant,
};
use wasmtpd_host::state::MAX_CONFIG_NAME;
use wasmtpd_host::store::{self, Backend, StoreSettings};
use wasmtpd_host::upstream::{self, UpstreamSettings};
use wasmtpd_smtp::Limits;

use crate::auth::{AuthSettings, PlaintextAuth};
use crate::authentication::Checks;
use crate::tls::CertificateFiles;

/// The server's own files: never readable by a plugin, whatever `config/sandbox` says.
pub const SERVER_FILES: &[&str] = &[
    "plugins",
    "sandbox",
    "limits",
    "tls",
    "auth",
    "me",
    "smtpgreeting",
    "resolver",
    "authentication",
    "stores",
    "frontends",
    "downstreams",
    "upstreams",
];

/// Where a setting was written (file and line), carried to the errors found after parsing.
pub use wasmtpd_host::sandbox::Origin;

/// A configuration error: which file, which line, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub path: String,
    pub line: Option<usize>,
    pub what: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.path, l, self.what),
            None => write!(f, "{}: {}", self.path, self.what),
        }
    }
}

/// Where configuration files come from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    Dir(PathBuf),
    Embedded,
}

const EMBEDDED: &[(&str, &str)] = &[
    ("me", include_str!("../default-config/me")),
    ("rcpthosts", include_str!("../default-config/rcpthosts")),
    ("plugins", include_str!("../default-config/plugins")),
    ("limits", include_str!("../default-config/limits")),
    ("sandbox", include_str!("../default-config/sandbox")),
    ("tls", include_str!("../default-config/tls")),
    ("auth", include_str!("../default-config/auth")),
    ("stores", include_str!("../default-config/stores")),
];

impl ConfigSource {
    /// A name for a file, as it appears in error messages.
    pub fn display(&self, name: &str) -> String {
        match self {
            ConfigSource::Dir(d) => d.join(name).display().to_string(),
            ConfigSource::Embedded => format!("<embedded default config>/{name}"),
        }
    }

    /// The raw text of a config file, or `None` if it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<String>, ConfigError> {
        if name.is_empty() || name.contains("..") || name.starts_with('/') {
            return Err(ConfigError { path: name.to_string(), line: None, what: "not a config file name".into() });
        }
        match self {
            ConfigSource::Embedded => Ok(EMBEDDED.iter().find(|(n, _)| *n == name).map(|(_, t)| t.to_string())),
            ConfigSource::Dir(d) => match std::fs::read_to_string(d.join(name)) {
                Ok(s) => Ok(Some(s)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(ConfigError { path: self.display(name), line: None, what: e.to_string() }),
            },
        }
    }

    /// The meaningful lines of a config file with their line numbers (trimmed, no comments).
    pub fn lines(&self, name: &str) -> Result<Option<Vec<(usize, String)>>, ConfigError> {
        Ok(self.read(name)?.map(|t| meaningful_lines(&t)))
    }

    /// Writes the embedded default configuration into `dir` (for `wasmtpd --init-config`).
    pub fn write_embedded(dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (name, text) in EMBEDDED {
            let path = dir.join(name);
            if !path.exists() {
                std::fs::write(path, text)?;
            }
        }
        Ok(())
    }
}

fn meaningful_lines(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| (i, l.to_string()))
        .collect()
}

/// Timeouts and connection limits enforced by the server (the protocol limits are
/// [`wasmtpd_smtp::Limits`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Most simultaneous connections; past it a client gets 421 and is closed.
    pub max_connections: usize,
    /// Most simultaneous connections from one IP address.
    pub max_connections_per_ip: usize,
    /// How long we wait for a client that sends nothing at all while we expect a command.
    pub command_timeout: Duration,
    /// How long one command line may take from its first byte to its CRLF (slow-drip clients).
    pub command_deadline: Duration,
    /// How long we wait for a client that sends nothing during DATA.
    pub data_timeout: Duration,
    /// How long the whole DATA transfer may take.
    pub data_deadline: Duration,
    /// How long one write to the client may take (its replies, a TLS close): a client that
    /// does not read what we send must not hold its connection slot forever.
    pub write_timeout: Duration,
    /// How long we wait before the greeting, watching for early talkers.
    pub greeting_delay: Duration,
    /// Whether a client that talks before the greeting is refused (554 and close).
    pub reject_early_talkers: bool,
    /// On SIGTERM: how long transactions in flight may take to finish.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 1000,
            max_connections_per_ip: 20,
            command_timeout: Duration::from_secs(300),
            command_deadline: Duration::from_secs(60),
            data_timeout: Duration::from_secs(180),
            data_deadline: Duration::from_secs(1200),
            // A write is at most the replies to one read of pipelined commands (tens of KiB):
            // a client that takes a minute to read that is not reading. Long enough for any
            // real link, short against a slot held by a client that never reads.
            write_timeout: Duration::from_secs(60),
            greeting_delay: Duration::ZERO,
            reject_early_talkers: true,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// One line of `config/plugins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLine {
    /// The plugin's name (`queue/maildir`), without any `:N` instance suffix.
    pub name: String,
    /// The instance name as written (`rcpt_ok:2`), unique within the chain.
    pub instance: String,
    pub args: Vec<String>,
    /// The content hash the line pins the component to (`sha256:` and 64 lower-case hex
    /// digits, the word after the name), if it does.
    pub pin: Option<String>,
    /// Where the line is, for error messages.
    pub origin: Origin,
    /// Its sandbox, from `config/sandbox` (grant paths still relative to the state directory).
    pub sandbox: SandboxSettings,
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: ConfigSource,
    pub me: String,
    pub greeting: Option<String>,
    pub limits: Limits,
    pub server: ServerLimits,
    pub plugins: Vec<PluginLine>,
    /// Certificates, in order (the first is the default); paths as written in `config/tls`.
    pub tls: Vec<CertificateFiles>,
    pub auth: AuthSettings,
    pub resolver: ResolverSettings,
    /// The email authentication checks the server makes (`authentication`).
    pub checks: Checks,
    /// The key-value stores (`stores`), in order.
    pub stores: Vec<StoreSettings>,
    /// The front ends trusted with XCLIENT and PROXY headers (`frontends`).
    pub frontends: crate::frontends::Frontends,
    /// The downstreams (`downstreams`), in order.
    pub downstreams: Vec<DownstreamSettings>,
    /// The named upstreams (`upstreams`), in order.
    pub upstreams: Vec<UpstreamSettings>,
}

impl Config {
    pub fn load(source: ConfigSource) -> Result<Config, ConfigError> {
        let me = match source.lines("me")? {
            Some(lines) => match lines.as_slice() {
                [(_, name)] => name.clone(),
                [] => {
                    return Err(ConfigError { path: source.display("me"), line: None, what: "file is empty".into() });
                }
                [_, (n, _), ..] => {
                    return Err(ConfigError {
                        path: source.display("me"),
                        line: Some(*n),
                        what: "only one host name is allowed".into(),
                    });
                }
            },
            None => system_hostname(),
        };
        let greeting = source.lines("smtpgreeting")?.and_then(|l| l.into_iter().next()).map(|(_, g)| g);
        let mut limits = Limits::default();
        let mut server = ServerLimits::default();
        if let Some(lines) = source.lines("limits")? {
            for (n, line) in lines {
                let err = |what: String| ConfigError { path: source.display("limits"), line: Some(n), what };
                let mut words = line.split_whitespace();
                let (Some(key), Some(value), None) = (words.next(), words.next(), words.next()) else {
                    return Err(err(format!("expected `name value`, found `{line}`")));
                };
                set_limit(&mut limits, &mut server, key, value).map_err(err)?;
            }
        }
        let mut plugins = load_plugins(&source)?;
        for p in &plugins {
            crate::plugin_arguments::check(p).map_err(|what| ConfigError::at(&p.origin, what))?;
        }
        check_earlytalker_settings(&plugins, &mut server)?;
        load_sandbox(&source, &mut plugins)?;
        let tls = load_tls(&source)?;
        refuse_keys_to_plugins(&tls, &plugins)?;
        let auth = load_auth(&source)?;
        let resolver = load_resolver(&source)?;
        let checks = load_checks(&source)?;
        let stores = load_stores(&source)?;
        check_store_grants(&plugins, &stores)?;
        let frontends = crate::frontends::load(&source)?;
        let downstreams = load_downstreams(&source)?;
        check_downstream_grants(&plugins, &downstreams)?;
        let upstreams = load_upstreams(&source)?;
        check_upstream_grants(&plugins, &upstreams)?;
        Ok(Config {
            source,
            me,
            greeting,
            limits,
            server,
            plugins,
            tls,
            auth,
            resolver,
            checks,
            stores,
            frontends,
            downstreams,
            upstreams,
        })
    }

    /// The directory relative paths in the config (certificates) are taken from: the config
    /// directory, or for the embedded configuration, which has none, the state directory.
    pub fn base_dir<'a>(&'a self, state_dir: &'a Path) -> &'a Path {
        match &self.source {
            ConfigSource::Dir(d) => d,
            ConfigSource::Embedded => state_dir,
        }
    }
}

/// `check_earlytalker`'s `wait` and `check-at` (qpsmtpd's arguments) are carried out by the
/// server, which alone watches the client's socket: with the plugin in the chain, checking at
/// CONNECT (its default), the greeting waits `wait` seconds (default 1, 0 to 60) watching for
/// input, whatever `greeting_delay` says; and the server leaves the refusal of an early talker
/// to the plugin (its `reject`, `reject_type` and `defer-reject`). Message text sent before
/// our 354 (`check-at DATA`) the server always refuses with 554.
fn check_earlytalker_settings(plugins: &[PluginLine], server: &mut ServerLimits) -> Result<(), ConfigError> {
    let Some(p) = plugins.iter().find(|p| p.name == "check_earlytalker") else { return Ok(()) };
    let err = |what: String| ConfigError::at(&p.origin, format!("plugin `check_earlytalker`: {what}"));
    fn values<'a>(p: &'a PluginLine, key: &str) -> Vec<&'a str> {
        p.args.chunks(2).filter(|c| c.len() == 2 && c[0] == key).map(|c| c[1].as_str()).collect()
    }
    let mut at_connect = values(p, "check-at").is_empty();
    for at in values(p, "check-at") {
        match at.to_ascii_uppercase().as_str() {
            "CONNECT" => at_connect = true,
            "DATA" => {}
            _ => return Err(err(format!("check-at `{at}` (CONNECT or DATA)"))),
        }
    }
    let wait = match values(p, "wait").last() {
        None => Duration::from_secs(1),
        Some(w) => match w.parse::<u64>() {
            Ok(s) if s <= 60 => Duration::from_secs(s),
            _ => return Err(err(format!("wait `{w}` (seconds, 0 to 60)"))),
        },
    };
    if at_connect {
        server.greeting_delay = wait;
    }
    server.reject_early_talkers = false;
    Ok(())
}

/// Reads `tls`: `certificate CHAIN.pem KEY.pem` per line. The files are read by
/// [`crate::tls::Tls::load`], whose errors name the line too.
pub fn load_tls(source: &ConfigSource) -> Result<Vec<CertificateFiles>, ConfigError> {
    let mut out = Vec::new();
    for (n, line) in source.lines("tls")?.unwrap_or_default() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let ["certificate", chain, key] = words.as_slice() else {
            return Err(ConfigError {
                path: source.display("tls"),
                line: Some(n),
                what: format!("expected `certificate CHAIN.pem KEY.pem`, found `{line}`"),
            });
        };
        out.push(CertificateFiles {
            chain: PathBuf::from(chain),
            key: PathBuf::from(key),
            origin: Origin { file: source.display("tls"), line: n },
        });
    }
    Ok(out)
}

/// A certificate or key file named in `tls` may not be granted to a plugin with `config-file`
/// (the keys stay in the server).
fn refuse_keys_to_plugins(tls: &[CertificateFiles], plugins: &[PluginLine]) -> Result<(), ConfigError> {
    for cert in tls {
        for file in [&cert.chain, &cert.key] {
            let Some(p) = plugins.iter().find(|p| p.sandbox.config_files.iter().any(|f| Path::new(f) == file)) else {
                continue;
            };
            return Err(ConfigError::at(
                &cert.origin,
                format!(
                    "{} is granted to plugin `{}` with config-file in config/sandbox; certificates and keys never go to plugins",
                    file.display(),
                    p.instance
                ),
            ));
        }
    }
    Ok(())
}

/// Reads `auth`: `name value` per line.
///
/// | name | value | default |
/// |---|---|---|
/// | `plaintext` | where AUTH works without TLS: `never`, `loopback` or `always` | `loopback` |
/// | `max_failures` | failed attempts per client address within `failure_window` before AUTH is refused with 454; `0` = no limit | `5` |
/// | `failure_window` | | `1m` |
/// | `failure_delay` | how late a failed attempt is answered | `1s` |
fn load_auth(source: &ConfigSource) -> Result<AuthSettings, ConfigError> {
    let mut auth = AuthSettings::default();
    for (n, line) in source.lines("auth")?.unwrap_or_default() {
        let err = |what: String| ConfigError { path: source.display("auth"), line: Some(n), what };
        let mut words = line.split_whitespace();
        let (Some(key), Some(value), None) = (words.next(), words.next(), words.next()) else {
            return Err(err(format!("expected `name value`, found `{line}`")));
        };
        match key {
            "plaintext" => {
                auth.plaintext = match value {
                    "never" => PlaintextAuth::Never,
                    "loopback" => PlaintextAuth::Loopback,
                    "always" => PlaintextAuth::Always,
                    v => return Err(err(format!("plaintext is `never`, `loopback` or `always`, not `{v}`"))),
                }
            }
            "max_failures" => auth.max_failures = parse_u32(value).map_err(err)?,
            "failure_window" => auth.failure_window = parse_duration(value).map_err(err)?,
            "failure_delay" => auth.failure_delay = parse_duration(value).map_err(err)?,
            _ => return Err(err(format!("unknown auth setting `{key}`"))),
        }
    }
    Ok(auth)
}

/// Reads `resolver`: `nameserver ADDR[:PORT]` lines (port 53 by default), `timeout DURATION`,
/// `attempts N`, `cache-size N`.
fn load_resolver(source: &ConfigSource) -> Result<ResolverSettings, ConfigError> {
    let mut settings = ResolverSettings::default();
    for (n, line) in source.lines("resolver")?.unwrap_or_default() {
        let err = |what: String| ConfigError { path: source.display("resolver"), line: Some(n), what };
        let mut words = line.split_whitespace();
        let (Some(key), Some(value), None) = (words.next(), words.next(), words.next()) else {
            return Err(err(format!("expected `name value`, found `{line}`")));
        };
        match key {
            "nameserver" => {
                let addr = value
                    .parse::<std::net::SocketAddr>()
                    .or_else(|_| value.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53)))
                    .map_err(|_| err(format!("nameserver `{value}` is not an IP address, or ADDR:PORT")))?;
                settings.name_servers.push(addr);
            }
            "timeout" => {
                settings.timeout = parse_nonzero_duration(value).map_err(err)?;
                if settings.timeout > Duration::from_secs(60) {
                    return Err(err(format!("timeout `{value}` is out of range: it must be from 1ms to 60s")));
                }
            }
            "attempts" => {
                settings.attempts = parse_count(value, 1).map_err(err)?;
                if settings.attempts > 10 {
                    return Err(err(format!("attempts `{value}` is out of range: it must be from 1 to 10")));
                }
            }
            "cache-size" => settings.cache_size = parse_count(value, 0).map_err(err)? as u64,
            _ => {
                return Err(err(format!(
                    "unknown resolver setting `{key}` (nameserver, timeout, attempts, cache-size)"
                )));
            }
        }
    }
    Ok(settings)
}

/// Reads `stores`: `NAME BACKEND [SETTING VALUE]...` per line, each name once.
///
/// | backend | settings |
/// |---|---|
/// | `embedded` | `max-entries N` (per namespace; default 1000000), `max-bytes SIZE` (keys and values, per namespace; default `256M`), `sync-every D` (the longest a write waits for its fsync after it is answered, `0` to `60s`; `0`: durable when answered; default `1s`), `timeout D` |
/// | `redis URL` | `redis://HOST:PORT[/DB]` (or `rediss://`); `pool N` connections (1 to 64, default 2), `prefix P` before every key (default `wasmtpd:`), `timeout D` |
///
/// `timeout` is each operation's time limit, from `1ms` to `60s` (default `1s`).
fn load_stores(source: &ConfigSource) -> Result<Vec<StoreSettings>, ConfigError> {
    let mut stores: Vec<StoreSettings> = Vec::new();
    for (n, line) in source.lines("stores")?.unwrap_or_default() {
        let err = |what: String| ConfigError { path: source.display("stores"), line: Some(n), what };
        let words: Vec<&str> = line.split_whitespace().collect();
        let origin = Origin { file: source.display("stores"), line: n };
        let (name, backend, settings) = match words.as_slice() {
            [name, "embedded", rest @ ..] => (*name, Backend::Embedded(Default::default()), rest),
            [name, "redis", url, rest @ ..] => {
                store::redis::check_url(url).map_err(err)?;
                (*name, Backend::Redis(store::redis::RedisSettings::new(url)), rest)
            }
            [_, "redis"] => return Err(err("a redis store needs its URL: `NAME redis redis://HOST:PORT`".into())),
            [_, backend, ..] => return Err(err(format!("unknown store backend `{backend}` (embedded, redis)"))),
            _ => return Err(err(format!("expected `NAME embedded` or `NAME redis URL`, found `{line}`"))),
        };
        store::check_store_name(name).map_err(err)?;
        if let Some(first) = stores.iter().find(|s| s.name == name) {
            return Err(err(format!("store `{name}` is already defined at {}", first.origin)));
        }
        let mut s = StoreSettings { name: name.to_string(), backend, timeout: store::DEFAULT_TIMEOUT, origin };
        if settings.len() % 2 != 0 {
            return Err(err(format!(
                "expected `setting value` pairs after the backend, found `{}`",
                settings.join(" ")
            )));
        }
        for pair in settings.chunks(2) {
            set_store(&mut s, pair[0], pair[1]).map_err(err)?;
        }
        stores.push(s);
    }
    Ok(stores)
}

fn set_store(s: &mut StoreSettings, setting: &str, value: &str) -> Result<(), String> {
    match (&mut s.backend, setting) {
        (_, "timeout") => {
            s.timeout = parse_duration(value)?;
            if !store::TIMEOUT_RANGE.contains(&s.timeout) {
                return Err(format!("timeout `{value}` is out of range: it must be from 1ms to 60s"));
            }
        }
        (Backend::Embedded(e), "max-entries") => e.max_entries = parse_count(value, 1)? as u64,
        (Backend::Embedded(e), "max-bytes") => e.max_bytes = in_range("max-bytes", value, 1..=u64::MAX)?,
        (Backend::Embedded(e), "sync-every") => {
            e.sync_every = parse_duration(value)?;
            if !store::embedded::SYNC_EVERY_RANGE.contains(&e.sync_every) {
                return Err(format!("sync-every `{value}` is out of range: it must be from 0 to 60s"));
            }
        }
        (Backend::Redis(r), "pool") => {
            r.pool = parse_count(value, 1)?;
            if r.pool > 64 {
                return Err(format!("pool `{value}` is out of range: it must be from 1 to 64"));
            }
        }
        (Backend::Redis(r), "prefix") => {
            store::redis::check_prefix(value)?;
            r.prefix = value.to_string();
        }
        (Backend::Embedded(_), _) => {
            return Err(format!(
                "unknown setting `{setting}` of an embedded store (max-entries, max-bytes, sync-every, timeout)"
            ));
        }
        (Backend::Redis(_), _) => {
            return Err(format!("unknown setting `{setting}` of a redis store (timeout, pool, prefix)"));
        }
    }
    Ok(())
}

/// Every store granted in `sandbox` is defined in `stores`, and each plugin's own namespace can
/// be named after its instance name.
fn check_store_grants(plugins: &[PluginLine], stores: &[StoreSettings]) -> Result<(), ConfigError> {
    for p in plugins {
        for grant in &p.sandbox.stores {
            if !stores.iter().any(|s| s.name == grant.store) {
                return Err(ConfigError::at(
                    &grant.origin,
                    format!("no store `{}` in config/stores (granted to plugin `{}`)", grant.store, p.instance),
                ));
            }
            store::check_namespace(&grant.namespace(&p.instance)).map_err(|e| {
                ConfigError::at(
                    &grant.origin,
                    format!("plugin `{}` cannot have a namespace of its own: {e}", p.instance),
                )
            })?;
        }
    }
    Ok(())
}

/// Reads `downstreams`: `NAME ADDRESS PROTOCOL [SETTING VALUE]...` per line, each name once.
/// The file is the server's own: no plugin can read it (its AUTH passwords among it).
///
/// | part | value | default |
/// |---|---|---|
/// | `ADDRESS` | `HOST:PORT` (`[IPV6]:PORT`), or `unix PATH` | |
/// | `PROTOCOL` | `smtp` or `lmtp` | |
/// | `starttls` | `required` (certificate checked), `opportunistic` (when offered, not checked) or `off` | `opportunistic` |
/// | `ca` | a PEM file of the certificates to trust for `starttls required` | the system's |
/// | `tls-name` | the name the certificate must carry | the host |
/// | `auth` | `USER PASSWORD`: AUTH PLAIN, only over TLS or to loopback or a Unix socket | none |
/// | `xclient` | `on`: pass our client's address, HELO and login with XCLIENT when offered | `off` |
/// | `connect-timeout`, `io-timeout` | from `10ms` to `10m` | `5s`, `30s` |
/// | `max-connections` | connections open at once, 1 to 1024 | `16` |
/// | `idle-time` | how long an unused connection is kept | `30s` |
/// | `max-messages` | messages per connection, at least 1 | `100` |
fn load_downstreams(source: &ConfigSource) -> Result<Vec<DownstreamSettings>, ConfigError> {
    let mut out: Vec<DownstreamSettings> = Vec::new();
    for (n, line) in source.lines("downstreams")?.unwrap_or_default() {
        let err = |what: String| ConfigError { path: source.display("downstreams"), line: Some(n), what };
        let words: Vec<&str> = line.split_whitespace().collect();
        let origin = Origin { file: source.display("downstreams"), line: n };
        let (name, address, rest) = match words.as_slice() {
            [name, "unix", path, rest @ ..] => {
                if !path.starts_with('/') {
                    return Err(err(format!("the socket path `{path}` must be absolute")));
                }
                (*name, Address::Unix(PathBuf::from(path)), rest)
            }
            [name, hostport, rest @ ..] => (*name, parse_host_port(hostport).map_err(err)?, rest),
            _ => {
                return Err(err(format!(
                    "expected `NAME HOST:PORT smtp|lmtp` or `NAME unix PATH smtp|lmtp`, found `{line}`"
                )));
            }
        };
        downstream::check_name(name).map_err(err)?;
        let (protocol, mut settings) = match rest {
            ["smtp", s @ ..] => (Protocol::Smtp, s.iter()),
            ["lmtp", s @ ..] => (Protocol::Lmtp, s.iter()),
            [p, ..] => return Err(err(format!("unknown protocol `{p}` (smtp, lmtp)"))),
            [] => return Err(err("the protocol is missing: smtp or lmtp".into())),
        };
        if let Some(first) = out.iter().find(|d| d.name == name) {
            return Err(err(format!("downstream `{name}` is already defined at {}", first.origin)));
        }
        let mut d = DownstreamSettings::new(name, address, protocol, origin);
        while let Some(setting) = settings.next() {
            let mut value = || settings.next().copied().ok_or_else(|| err(format!("`{setting}` needs a value")));
            let timeout = |v: &str| -> Result<Duration, String> {
                let t = parse_duration(v)?;
                if !DownstreamSettings::TIMEOUT_RANGE.contains(&t) {
                    return Err(format!("`{setting}` `{v}` is out of range: it must be from 10ms to 10m"));
                }
                Ok(t)
            };
            match *setting {
                "starttls" => {
                    d.starttls = match value()? {
                        "required" => StartTls::Required,
                        "opportunistic" => StartTls::Opportunistic,
                        "off" => StartTls::Off,
                        v => return Err(err(format!("starttls is required, opportunistic or off, not `{v}`"))),
                    }
                }
                "ca" => d.ca = Some(PathBuf::from(value()?)),
                "tls-name" => d.tls_name = Some(value()?.to_string()),
                "auth" => {
                    let user = value()?.to_string();
                    let password = value().map_err(|_| err("auth takes USER PASSWORD".into()))?.to_string();
                    d.auth = Some((user, password));
                }
                "xclient" => d.xclient = parse_bool(value()?).map_err(err)?,
                "connect-timeout" => d.connect_timeout = timeout(value()?).map_err(err)?,
                "io-timeout" => d.io_timeout = timeout(value()?).map_err(err)?,
                "idle-time" => d.idle_time = parse_duration(value()?).map_err(err)?,
                "max-connections" => {
                    d.max_connections = parse_count(value()?, 1).map_err(err)?;
                    if d.max_connections > 1024 {
                        return Err(err("max-connections is out of range: it must be from 1 to 1024".into()));
                    }
                }
                "max-messages" => d.max_messages = parse_u32(value()?).map_err(err)?.max(1),
                s => {
                    return Err(err(format!(
                        "unknown downstream setting `{s}` (starttls, ca, tls-name, auth, xclient, connect-timeout, io-timeout, max-connections, idle-time, max-messages)"
                    )));
                }
            }
        }
        if d.starttls == StartTls::Required && matches!(d.address, Address::Unix(_)) {
            return Err(err("starttls required over a Unix socket: TLS is for TCP".into()));
        }
        out.push(d);
    }
    Ok(out)
}

/// `HOST:PORT`, `[IPV6]:PORT`.
fn parse_host_port(v: &str) -> Result<Address, String> {
    let bad = || format!("`{v}` is not HOST:PORT (or `unix PATH`)");
    let (host, port) = v.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if port == 0
        || host.is_empty()
        || (bare.parse::<std::net::IpAddr>().is_err() && !wasmtpd_smtp::address::is_domain(bare))
    {
        return Err(bad());
    }
    Ok(Address::Tcp { host: host.to_string(), port })
}

/// Every downstream granted in `sandbox` is defined in `downstreams`.
fn check_downstream_grants(plugins: &[PluginLine], downstreams: &[DownstreamSettings]) -> Result<(), ConfigError> {
    for p in plugins {
        for grant in &p.sandbox.downstreams {
            if !downstreams.iter().any(|d| d.name == grant.downstream) {
                return Err(ConfigError::at(
                    &grant.origin,
                    format!(
                        "no downstream `{}` in config/downstreams (granted to plugin `{}`)",
                        grant.downstream, p.instance
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Reads `upstreams`: `NAME tcp HOST:PORT` or `NAME unix PATH`, then `setting value` pairs,
/// each name once.
///
/// | setting | what | default |
/// |---|---|---|
/// | `connect-timeout D` | time to connect (and the TLS handshake), `1ms` to `300s` | `2s` |
/// | `timeout D` | time per call after that (a write, a read, an HTTP request), `1ms` to `300s` | `30s` |
/// | `max-connections N` | connections to it at once, server-wide, 1 to 4096 | `32` |
/// | `max-answer SIZE` | octets read back from one connection or HTTP answer, at most `64M` | `1M` |
/// | `tls CA.pem` | TCP only: TLS, trusting the CA certificates of this PEM file (relative to the config directory) | none |
/// | `server-name NAME` | the name its certificate must carry | the host |
///
/// Every call is also bounded by what is left of the plugin's hook time.
fn load_upstreams(source: &ConfigSource) -> Result<Vec<UpstreamSettings>, ConfigError> {
    let mut upstreams: Vec<UpstreamSettings> = Vec::new();
    for (n, line) in source.lines("upstreams")?.unwrap_or_default() {
        let err = |what: String| ConfigError { path: source.display("upstreams"), line: Some(n), what };
        let words: Vec<&str> = line.split_whitespace().collect();
        let origin = Origin { file: source.display("upstreams"), line: n };
        let (name, address, settings) = match words.as_slice() {
            [name, "tcp", address, rest @ ..] => (*name, upstream::parse_tcp_address(address).map_err(err)?, rest),
            [name, "unix", path, rest @ ..] => {
                if !path.starts_with('/') {
                    return Err(err(format!("the socket path `{path}` must be absolute")));
                }
                (*name, upstream::Address::Unix(PathBuf::from(path)), rest)
            }
            [_, kind @ ("tcp" | "unix")] => {
                return Err(err(format!(
                    "a {kind} upstream needs its address: `NAME tcp HOST:PORT` or `NAME unix PATH`"
                )));
            }
            [_, kind, ..] => return Err(err(format!("unknown upstream kind `{kind}` (tcp, unix)"))),
            _ => return Err(err(format!("expected `NAME tcp HOST:PORT` or `NAME unix PATH`, found `{line}`"))),
        };
        upstream::check_upstream_name(name).map_err(err)?;
        if let Some(first) = upstreams.iter().find(|u| u.name == name) {
            return Err(err(format!("upstream `{name}` is already defined at {}", first.origin)));
        }
        if settings.len() % 2 != 0 {
            return Err(err(format!(
                "expected `setting value` pairs after the address, found `{}`",
                settings.join(" ")
            )));
        }
        let mut u = UpstreamSettings::new(name, address, origin);
        for pair in settings.chunks(2) {
            set_upstream(&mut u, pair[0], pair[1]).map_err(err)?;
        }
        if u.tls.is_some() && matches!(u.address, upstream::Address::Unix(_)) {
            return Err(err("`tls` is for tcp upstreams: a Unix socket is local".into()));
        }
        upstreams.push(u);
    }
    Ok(upstreams)
}

fn set_upstream(u: &mut UpstreamSettings, setting: &str, value: &str) -> Result<(), String> {
    let timeout = |v: &str| {
        let d = parse_duration(v)?;
        match upstream::TIMEOUT_RANGE.contains(&d) {
            true => Ok(d),
            false => Err(format!("{setting} `{v}` is out of range: it must be from 1ms to 300s")),
        }
    };
    match setting {
        "connect-timeout" => u.connect_timeout = timeout(value)?,
        "timeout" => u.timeout = timeout(value)?,
        "max-connections" => {
            u.max_connections = parse_count(value, 1)?;
            if u.max_connections > upstream::MAX_CONNECTIONS {
                return Err(format!(
                    "max-connections `{value}` is out of range: it must be from 1 to {}",
                    upstream::MAX_CONNECTIONS
                ));
            }
        }
        "max-answer" => u.max_answer = in_range("max-answer", value, upstream::MAX_ANSWER_RANGE)?,
        "tls" => {
            let tls = u.tls.get_or_insert(upstream::TlsSettings { ca: PathBuf::new(), server_name: None });
            tls.ca = PathBuf::from(value);
        }
        "server-name" => match &mut u.tls {
            Some(tls) => tls.server_name = Some(value.to_string()),
            None => return Err("`server-name` comes after `tls CA.pem`".into()),
        },
        _ => {
            return Err(format!(
                "unknown upstream setting `{setting}` (connect-timeout, timeout, max-connections, max-answer, tls, server-name)"
            ));
        }
    }
    Ok(())
}

/// Every upstream granted in `sandbox` is defined in `upstreams`.
fn check_upstream_grants(plugins: &[PluginLine], upstreams: &[UpstreamSettings]) -> Result<(), ConfigError> {
    for p in plugins {
        for grant in &p.sandbox.upstreams {
            if !upstreams.iter().any(|u| u.name == grant.upstream) {
                return Err(ConfigError::at(
                    &grant.origin,
                    format!(
                        "no upstream `{}` in config/upstreams (granted to plugin `{}`)",
                        grant.upstream, p.instance
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Reads `authentication`: the names of the checks to make, one or more per line.
fn load_checks(source: &ConfigSource) -> Result<Checks, ConfigError> {
    let mut checks = Checks::default();
    for (n, line) in source.lines("authentication")?.unwrap_or_default() {
        for word in line.split_whitespace() {
            checks.enable(word).map_err(|what| ConfigError {
                path: source.display("authentication"),
                line: Some(n),
                what,
            })?;
        }
    }
    Ok(checks)
}

fn set_limit(limits: &mut Limits, server: &mut ServerLimits, key: &str, value: &str) -> Result<(), String> {
    match key {
        "max_message_size" => limits.max_message_size = parse_size(value)?,
        "max_recipients" => limits.max_recipients = parse_count(value, 1)?,
        "max_command_line" => limits.max_command_line = parse_count(value, 512)?,
        "max_text_line" => limits.max_text_line = parse_count(value, 0)?,
        "max_errors" => limits.max_errors = parse_u32(value)?,
        "spool_threshold" => limits.spool_threshold = parse_size(value)?,
        "nul_in_data" => {
            limits.refuse_nul = match value {
                "refuse" => true,
                "keep" => false,
                v => return Err(format!("nul_in_data is `refuse` or `keep`, not `{v}`")),
            }
        }
        "max_connections" => server.max_connections = parse_count(value, 1)?,
        "max_connections_per_ip" => server.max_connections_per_ip = parse_count(value, 1)?,
        "command_timeout" => server.command_timeout = parse_duration(value)?,
        "command_deadline" => server.command_deadline = parse_duration(value)?,
        "data_timeout" => server.data_timeout = parse_duration(value)?,
        "data_deadline" => server.data_deadline = parse_duration(value)?,
        "write_timeout" => server.write_timeout = parse_nonzero_duration(value)?,
        "greeting_delay" => server.greeting_delay = parse_duration(value)?,
        "reject_early_talkers" => server.reject_early_talkers = parse_bool(value)?,
        "shutdown_grace" => server.shutdown_grace = parse_duration(value)?,
        _ => return Err(format!("unknown limit `{key}`")),
    }
    Ok(())
}

fn parse_count(v: &str, min: usize) -> Result<usize, String> {
    let n: usize = v.parse().map_err(|_| format!("`{v}` is not a whole number"))?;
    if n < min {
        return Err(format!("`{v}` is below the minimum of {min}"));
    }
    Ok(n)
}

/// A count that must fit 32 bits (larger is an error, never cut short).
fn parse_u32(v: &str) -> Result<u32, String> {
    let n = parse_count(v, 0)?;
    u32::try_from(n).map_err(|_| format!("`{v}` is above the maximum of {}", u32::MAX))
}

/// A size (see [`parse_size`]) within `range`: out of it is an error that says the range, never
/// a value quietly raised or lowered into it.
fn in_range(setting: &str, v: &str, range: std::ops::RangeInclusive<u64>) -> Result<u64, String> {
    let n = parse_size(v)?;
    if !range.contains(&n) {
        let (min, max) = (show_size(*range.start()), show_size(*range.end()));
        return Err(format!("{setting} `{v}` is out of range: it must be from {min} to {max}"));
    }
    Ok(n)
}

/// A size as it would be written in the config (`64k`, `4G`), for messages.
fn show_size(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{}G", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}M", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}k", n >> 10),
        n => n.to_string(),
    }
}

/// `1000`, `64k`, `50M`, `1G` (powers of 1024).
fn parse_size(v: &str) -> Result<u64, String> {
    let (num, mult) = match v.char_indices().last() {
        Some((i, 'k' | 'K')) => (&v[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&v[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&v[..i], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("`{v}` is not a size (a number, optionally followed by k, M or G)"))
}

/// `30` (seconds), `30s`, `500ms`, `5m`.
fn parse_duration(v: &str) -> Result<Duration, String> {
    let bad = || format!("`{v}` is not a duration (a number followed by ms, s or m)");
    let (num, unit) = v.find(|c: char| !c.is_ascii_digit()).map_or((v, ""), |i| v.split_at(i));
    let n: u64 = num.parse().map_err(|_| bad())?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs).ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// A duration that may not be zero (a zero write timeout would fail every write that has to wait).
pub(crate) fn parse_nonzero_duration(v: &str) -> Result<Duration, String> {
    match parse_duration(v)? {
        d if d.is_zero() => Err(format!("`{v}` must be more than zero")),
        d => Ok(d),
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "yes" | "true" | "1" | "on" => Ok(true),
        "no" | "false" | "0" | "off" => Ok(false),
        _ => Err(format!("`{v}` is not yes or no")),
    }
}

/// Reads `plugins`, following `$include` (a directory's files in name order, or one file).
fn load_plugins(source: &ConfigSource) -> Result<Vec<PluginLine>, ConfigError> {
    let mut out = Vec::new();
    let Some(text) = source.read("plugins")? else {
        return Ok(out);
    };
    parse_plugins(source, &source.display("plugins"), &text, 0, &mut out)?;
    let mut seen = BTreeMap::new();
    for p in &out {
        if let Some(first) = seen.insert(p.instance.clone(), p.origin.clone()) {
            return Err(ConfigError::at(
                &p.origin,
                format!(
                    "plugin `{}` is already listed at {first}; give a second instance a name such as `{}:2`",
                    p.instance, p.name
                ),
            ));
        }
    }
    Ok(out)
}

impl ConfigError {
    /// An error at `origin` (as kept in [`PluginLine::origin`]).
    pub fn at(origin: &Origin, what: String) -> ConfigError {
        ConfigError { path: origin.file.clone(), line: Some(origin.line), what }
    }
}

fn parse_plugins(
    source: &ConfigSource,
    path: &str,
    text: &str,
    depth: usize,
    out: &mut Vec<PluginLine>,
) -> Result<(), ConfigError> {
    for (n, line) in meaningful_lines(text) {
        let err = |what: String| ConfigError { path: path.to_string(), line: Some(n), what };
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if first.eq_ignore_ascii_case("$include") {
            let target = words.next().ok_or_else(|| err("$include needs a file or directory".into()))?;
            if depth > 8 {
                return Err(err("$include nested too deeply (a loop?)".into()));
            }
            let ConfigSource::Dir(dir) = source else {
                return Err(err("$include is not available in the embedded config".into()));
            };
            let target = dir.join(target);
            let mut files = Vec::new();
            if target.is_dir() {
                let entries = std::fs::read_dir(&target).map_err(|e| err(format!("{}: {e}", target.display())))?;
                for entry in entries {
                    let entry = entry.map_err(|e| err(e.to_string()))?;
                    let name = entry.file_name().to_string_lossy().to_string();
                    // Editor backups and hidden files are not part of the chain.
                    if name.starts_with('.') || name.ends_with('~') || !entry.path().is_file() {
                        continue;
                    }
                    files.push(entry.path());
                }
                files.sort();
            } else if target.is_file() {
                files.push(target);
            } else {
                return Err(err(format!("$include {}: no such file or directory", target.display())));
            }
            for f in files {
                let text = std::fs::read_to_string(&f).map_err(|e| err(format!("{}: {e}", f.display())))?;
                parse_plugins(source, &f.display().to_string(), &text, depth + 1, out)?;
            }
            continue;
        }
        let name = first.split(':').next().unwrap_or_default();
        if name.is_empty()
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-/".contains(&b))
            || name.starts_with('/')
            || name.contains("..")
        {
            return Err(err(format!("`{first}` is not a plugin name")));
        }
        let mut words = words.peekable();
        let pin = match words.next_if(|w| w.starts_with("sha256:")) {
            Some(pin) => Some(parse_pin(pin).map_err(err)?),
            None => None,
        };
        out.push(PluginLine {
            name: name.to_string(),
            instance: first.to_string(),
            pin,
            args: words.map(str::to_string).collect(),
            origin: Origin { file: path.to_string(), line: n },
            sandbox: SandboxSettings::default(),
        });
    }
    Ok(())
}

/// A pin on a `config/plugins` line: `sha256:` and the component's SHA-256 in 64 hex digits
/// (as `sha256sum` prints it), kept in lower case.
fn parse_pin(word: &str) -> Result<String, String> {
    let hex = &word["sha256:".len()..];
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "`{word}` is not a pin: a pin is `sha256:` and the component's 64 hexadecimal digits (`sha256sum FILE.wasm`, or `wasmtpd plugin inspect FILE.wasm`)"
        ));
    }
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// Reads `sandbox`: `<plugin|*> <setting> <value...>` per line, applied in order (so a line
/// for one plugin after a `*` line overrides it for that plugin).
///
/// | setting | value | default |
/// |---|---|---|
/// | `memory` | size of the plugin's linear memory, from `1M` to `4G` (`sandbox::MEMORY_RANGE`) | `64M` |
/// | `timeout` | wall time per hook call, from `1ms` to `60m` (`sandbox::TIMEOUT_RANGE`) | `10s` |
/// | `stack` | wasm stack size, from `64k` to `64M` (`sandbox::STACK_RANGE`) | `512k` |
/// | `temp-quota` | bytes its temporary files may take | `16M` |
/// | `scope` | `transaction` (a fresh instance per transaction) or `connection` | `transaction` |
/// | `on-fault` | `tempfail` (451/421) or `declined` (fail open) | `tempfail` |
/// | `wasi-temp` | `yes`: its temp directory is also WASI's `/tmp` | `no` |
/// | `grant-dir` | `HOST-DIR GUEST-PATH ro\|rw`: a host directory (relative to the state directory; no `..`, and not overlapping the spool, the plugin cache, the plugins or the config, see `plugins.rs`); no links can be made in it | none |
/// | `breaker` | `FAULTS WINDOW COOLDOWN`: that many faults within the window disable the plugin | `20 1m 30s` |
/// | `config-file` | `NAME...`: config files it may read beyond its own (never the server's, nothing with `/`) | none |
/// | `rights` | `RIGHT...` of `relay-client`, `authenticate`, `accept-recipient`, `queue` (`none` withdraws them) | none |
/// | `dns` | `any`, `none`, or `ZONE...`: the names it may look up | none |
/// | `dns-queries` | DNS questions per transaction | `64` |
/// | `store` | `NAME` (a store of `config/stores`, the keys in the plugin's own namespace), `NAME shared NAMESPACE` (a namespace shared with the other plugins granted it), or `none`; one line per store | none |
/// | `store-operations` | store calls per transaction | `256` |
/// | `downstream` | `NAME...` of `config/downstreams` it may deliver to, or `none` | none |
/// | `upstream` | `NAME...` (upstreams of `config/upstreams` it may connect to), or `none` | none |
/// | `upstream-calls` | upstream calls per transaction | `256` |
fn load_sandbox(source: &ConfigSource, plugins: &mut [PluginLine]) -> Result<(), ConfigError> {
    let Some(lines) = source.lines("sandbox")? else {
        return Ok(());
    };
    for (n, line) in lines {
        let err = |what: String| ConfigError { path: source.display("sandbox"), line: Some(n), what };
        let words: Vec<&str> = line.split_whitespace().collect();
        let [target, setting, values @ ..] = words.as_slice() else {
            return Err(err(format!("expected `plugin setting value`, found `{line}`")));
        };
        let matching: Vec<usize> = plugins
            .iter()
            .enumerate()
            .filter(|(_, p)| *target == "*" || p.instance == *target)
            .map(|(i, _)| i)
            .collect();
        if matching.is_empty() && *target != "*" {
            return Err(err(format!("no plugin `{target}` in config/plugins")));
        }
        let origin = Origin { file: source.display("sandbox"), line: n };
        for i in matching {
            set_sandbox(&mut plugins[i].sandbox, setting, values, &origin).map_err(err)?;
        }
    }
    Ok(())
}

/// Applies one setting of `config/sandbox`, written at `origin`.
fn set_sandbox(s: &mut SandboxSettings, setting: &str, values: &[&str], origin: &Origin) -> Result<(), String> {
    let one = || match values {
        [v] => Ok(*v),
        _ => Err(format!("`{setting}` takes one value")),
    };
    match setting {
        "memory" => s.memory = in_range("memory", one()?, MEMORY_RANGE)?,
        "timeout" => {
            let v = one()?;
            s.timeout = parse_duration(v)?;
            if !TIMEOUT_RANGE.contains(&s.timeout) {
                return Err(format!("timeout `{v}` is out of range: it must be from 1ms to 60m"));
            }
        }
        "stack" => {
            let range = *STACK_RANGE.start() as u64..=*STACK_RANGE.end() as u64;
            s.stack = in_range("stack", one()?, range)? as usize // at most 64 MiB
        }
        "temp-quota" => s.temp_quota = parse_size(one()?)?,
        "scope" => {
            s.scope = match one()? {
                "transaction" => InstanceScope::Transaction,
                "connection" => InstanceScope::Connection,
                v => return Err(format!("scope is `transaction` or `connection`, not `{v}`")),
            }
        }
        "on-fault" => {
            s.on_fault = match one()? {
                "tempfail" => FaultPolicy::TempFail,
                "declined" => FaultPolicy::Declined,
                v => return Err(format!("on-fault is `tempfail` or `declined`, not `{v}`")),
            }
        }
        "wasi-temp" => s.wasi_temp = parse_bool(one()?)?,
        "breaker" => {
            let [faults, window, cooldown] = values else {
                return Err("breaker takes FAULTS WINDOW COOLDOWN (e.g. `5 1m 30s`; 0 faults = never)".into());
            };
            s.breaker.faults = parse_u32(faults)?;
            s.breaker.window = parse_duration(window)?;
            s.breaker.cooldown = parse_duration(cooldown)?;
        }
        "grant-dir" => {
            let [host, guest, mode] = values else {
                return Err("grant-dir takes HOST-DIR GUEST-PATH ro|rw".into());
            };
            let writable = match *mode {
                "rw" => true,
                "ro" => false,
                m => return Err(format!("grant-dir mode is `ro` or `rw`, not `{m}`")),
            };
            if !guest.starts_with('/') {
                return Err(format!("the guest path `{guest}` must be absolute"));
            }
            // A grant names the directory it grants: no climbing out of the state directory,
            // or anywhere else, behind the operator's back.
            for path in [host, guest] {
                if Path::new(path).components().any(|c| c == std::path::Component::ParentDir) {
                    return Err(format!("grant-dir paths may not contain `..`: `{path}`"));
                }
            }
            let origin = origin.clone();
            s.grants.push(DirGrant { host: PathBuf::from(host), guest: guest.to_string(), writable, origin });
        }
        "config-file" => {
            if values.is_empty() {
                return Err("config-file takes one or more config file names".into());
            }
            for name in values {
                check_plugin_file(name)?;
                s.config_files.push(name.to_string());
            }
        }
        "upstream" => match UpstreamGrant::parse(values, origin)? {
            None => s.upstreams.clear(),
            Some(grants) => {
                for grant in grants {
                    s.upstreams.retain(|g| g.upstream != grant.upstream);
                    s.upstreams.push(grant);
                }
            }
        },
        "upstream-calls" => s.upstream_calls = parse_u32(one()?)?,
        "rights" => {
            if values.is_empty() {
                return Err(format!("rights takes one or more of {} (or none)", right_names()));
            }
            for name in values {
                match (*name, Right::parse(name)) {
                    ("none", _) => s.rights = Rights::default(),
                    (_, Some(right)) => s.rights.grant(right),
                    (_, None) => return Err(format!("unknown right `{name}`; the rights are {}", right_names())),
                }
            }
        }
        "dns" => s.dns = DnsGrant::parse(values)?,
        "dns-queries" => s.dns_queries = parse_u32(one()?)?,
        "store" => match StoreGrant::parse(values, origin)? {
            None => s.stores.clear(),
            Some(grant) => {
                // A later line for the same store replaces the earlier (after a `*` line, say).
                s.stores.retain(|g| g.store != grant.store);
                s.stores.push(grant);
            }
        },
        "store-operations" => s.store_operations = parse_u32(one()?)?,
        "downstream" => {
            let grants = DownstreamGrant::parse(values, origin)?;
            if grants.is_empty() {
                s.downstreams.clear();
            }
            for grant in grants {
                s.downstreams.retain(|g| g.downstream != grant.downstream);
                s.downstreams.push(grant);
            }
        }
        _ => return Err(format!("unknown sandbox setting `{setting}`")),
    }
    Ok(())
}

/// A name `config-file` may grant: a file directly in the config directory, not one of the
/// server's own.
fn check_plugin_file(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('/') || name.contains("..") || name.len() > MAX_CONFIG_NAME {
        return Err(format!(
            "config-file `{name}`: a plugin may read only files directly in the config directory (no `/` or `..`, at most {MAX_CONFIG_NAME} octets)"
        ));
    }
    if SERVER_FILES.contains(&name) {
        return Err(format!("config-file `{name}`: the server's own files are never given to plugins"));
    }
    Ok(())
}

fn right_names() -> String {
    Right::ALL.map(|r| format!("`{}`", r.name())).join(", ")
}

/// The machine's host name, for `me` when the file is absent.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(files: &[(&str, &str)]) -> (tempdir::TempDir, ConfigSource) {
        let d = tempdir::TempDir::new();
        for (name, text) in files {
            let p = d.0.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let src = ConfigSource::Dir(d.0.clone());
        (d, src)
    }

    mod tempdir {
        pub struct TempDir(pub std::path::PathBuf);
        impl TempDir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "wasmtpd-config-test-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                TempDir(p)
            }
        }
        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn embedded_default_loads() {
        let c = Config::load(ConfigSource::Embedded).unwrap();
        assert_eq!(c.me, "localhost");
        assert_eq!(c.plugins.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["rcpt_ok", "queue/maildir"]);
        assert_eq!(c.limits.max_message_size, 50 << 20);
        // The standard plugins get the rights to do their job, and nothing more.
        let rights =
            |i: usize| Right::ALL.into_iter().filter(|r| c.plugins[i].sandbox.rights.has(*r)).collect::<Vec<_>>();
        assert_eq!(rights(0), [Right::AcceptRecipient]);
        assert_eq!(rights(1), [Right::Queue]);
        // One embedded store to grant, which no plugin is granted yet.
        assert_eq!(c.stores.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["local"]);
        assert!(matches!(c.stores[0].backend, Backend::Embedded(_)));
        assert!(c.plugins.iter().all(|p| p.sandbox.stores.is_empty()));
    }

    #[test]
    fn config_files_and_rights() {
        let sandbox = [
            "* rights queue",
            "spam/filter config-file spamrules whitelist",
            "spam/filter rights relay-client accept-recipient",
            "rcpt_ok rights none",
            "rcpt_ok rights accept-recipient",
        ];
        let (_d, src) = dir(&[("plugins", "spam/filter\nrcpt_ok\n"), ("sandbox", &sandbox.join("\n"))]);
        let c = Config::load(src).unwrap();
        let s = &c.plugins[0].sandbox;
        assert_eq!(s.config_files, ["spamrules", "whitelist"]);
        assert!(s.rights.has(Right::Queue) && s.rights.has(Right::RelayClient) && s.rights.has(Right::AcceptRecipient));
        assert!(!s.rights.has(Right::Authenticate));
        let r = c.plugins[1].sandbox.rights;
        assert!(r.has(Right::AcceptRecipient) && !r.has(Right::Queue), "`none` withdrew the `*` grant");
        let long = "x".repeat(256);
        for (bad, what) in [
            ("rcpt_ok config-file tls".to_string(), "the server's own files"),
            ("rcpt_ok config-file rcpthosts sandbox".into(), "the server's own files"),
            ("rcpt_ok config-file smtpgreeting".into(), "the server's own files"),
            ("rcpt_ok config-file certs/key.pem".into(), "no `/` or `..`"),
            ("rcpt_ok config-file ../etc".into(), "no `/` or `..`"),
            (format!("rcpt_ok config-file {long}"), "at most 255 octets"),
            ("rcpt_ok config-file".into(), "one or more"),
            ("rcpt_ok rights".into(), "one or more of `relay-client`"),
            ("rcpt_ok rights accept-recipient open-relay".into(), "unknown right `open-relay`"),
        ] {
            let (_d, src) = dir(&[("plugins", "rcpt_ok\n"), ("sandbox", &format!("# c\n{bad}\n"))]);
            let e = Config::load(src).unwrap_err();
            assert_eq!(e.line, Some(2), "{e}");
            assert!(e.what.contains(what), "{bad}: {e}");
        }
        // A certificate's key named in `tls` cannot be granted, even directly in the directory.
        let (_d, src) = dir(&[
            ("plugins", "rcpt_ok\n"),
            ("sandbox", "rcpt_ok config-file mx.key\n"),
            ("tls", "# one\ncertificate mx.pem mx.key\n"),
        ]);
        let e = Config::load(src).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.path.ends_with("tls") && e.what.contains("mx.key is granted to plugin `rcpt_ok`"), "{e}");
    }

    #[test]
    fn include_runs_files_in_name_order() {
        let (_d, src) = dir(&[
            ("plugins", "first\n$include plugin.d\nlast arg1 arg2\n"),
            ("plugin.d/10_b", "b\n"),
            ("plugin.d/00_a", "# comment\na:1 x\n"),
            ("plugin.d/00_a~", "backup\n"),
        ]);
        let c = Config::load(src).unwrap();
        let names: Vec<_> = c.plugins.iter().map(|p| p.instance.as_str()).collect();
        assert_eq!(names, ["first", "a:1", "b", "last"]);
        assert_eq!(c.plugins[1].name, "a");
        assert_eq!(c.plugins[3].args, ["arg1", "arg2"]);
    }

    #[test]
    fn errors_name_file_and_line() {
        let (_d, src) = dir(&[("limits", "max_recipients 10\n\nmax_recipents 5\n")]);
        let e = Config::load(src).unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.to_string().ends_with("limits:3: unknown limit `max_recipents`"), "{e}");

        let (_d, src) = dir(&[("limits", "data_timeout soon\n")]);
        assert!(Config::load(src).unwrap_err().to_string().contains("limits:1: `soon` is not a duration"));

        let (_d, src) = dir(&[("limits", "write_timeout 0\n")]);
        assert!(Config::load(src).unwrap_err().to_string().contains("limits:1: `0` must be more than zero"));
        let (_d, src) = dir(&[("limits", "write_timeout 1500ms\n")]);
        assert_eq!(Config::load(src).unwrap().server.write_timeout, Duration::from_millis(1500));

        let (_d, src) = dir(&[("plugins", "rcpt_ok\n\nrcpt_ok\n")]);
        let e = Config::load(src).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.what.contains("already listed"), "{e}");

        let (_d, src) = dir(&[("plugins", "$include nowhere\n")]);
        assert!(Config::load(src).unwrap_err().to_string().contains("plugins:1: $include"));

        let (_d, src) = dir(&[("plugins", "../evil\n")]);
        assert_eq!(Config::load(src).unwrap_err().line, Some(1));
    }

    #[test]
    fn sandbox_settings() {
        let (_d, src) = dir(&[
            ("plugins", "rcpt_ok\nqueue/maildir maildir\n"),
            (
                "sandbox",
                "* memory 32M\nrcpt_ok timeout 2s\nrcpt_ok on-fault declined\nqueue/maildir grant-dir maildir /maildir rw\n",
            ),
        ]);
        let c = Config::load(src).unwrap();
        assert_eq!(c.plugins[0].sandbox.memory, 32 << 20);
        assert_eq!(c.plugins[0].sandbox.timeout, Duration::from_secs(2));
        assert_eq!(c.plugins[0].sandbox.on_fault, FaultPolicy::Declined);
        assert_eq!(c.plugins[1].sandbox.timeout, SandboxSettings::default().timeout);
        assert_eq!(c.plugins[1].sandbox.grants[0].guest, "/maildir");
        assert!(
            c.plugins[1].sandbox.grants[0].origin.to_string().ends_with("sandbox:4"),
            "{:?}",
            c.plugins[1].sandbox.grants[0]
        );
        for (bad, what) in [
            ("nosuch memory 1M", "no plugin `nosuch`"),
            ("* colour blue", "unknown sandbox setting"),
            ("rcpt_ok grant-dir a b rw", "must be absolute"),
            ("rcpt_ok grant-dir ../../etc /etc ro", "may not contain `..`"),
            ("rcpt_ok grant-dir maildir/../spool /m rw", "may not contain `..`"),
            ("rcpt_ok grant-dir maildir /m/../etc rw", "may not contain `..`"),
            ("rcpt_ok scope forever", "scope is"),
        ] {
            let (_d, src) = dir(&[("plugins", "rcpt_ok\n"), ("sandbox", &format!("# c\n{bad}\n"))]);
            let e = Config::load(src).unwrap_err();
            assert_eq!(e.line, Some(2), "{e}");
            assert!(e.what.contains(what), "{e}");
        }
    }

    #[test]
    fn stores_and_their_grants() {
        let (_d, src) = dir(&[
            ("plugins", "greylisting\nlimit\nkarma\nrcpt_ok\n"),
            (
                "stores",
                "# the state\nmain embedded max-entries 1000 max-bytes 1M sync-every 250ms\nshared redis redis://127.0.0.1:6379/2 timeout 200ms pool 4 prefix mx:\n",
            ),
            (
                "sandbox",
                "* store main\ngreylisting store-operations 300\nkarma store shared shared reputation\nlimit store shared shared reputation\nrcpt_ok store none\n",
            ),
        ]);
        let c = Config::load(src).unwrap();
        assert_eq!(c.stores.len(), 2);
        assert_eq!(c.stores[0].name, "main");
        let Backend::Embedded(e) = &c.stores[0].backend else { panic!("{:?}", c.stores[0]) };
        assert_eq!((e.max_entries, e.max_bytes, e.sync_every), (1000, 1 << 20, Duration::from_millis(250)));
        assert_eq!(c.stores[0].timeout, store::DEFAULT_TIMEOUT);
        let Backend::Redis(r) = &c.stores[1].backend else { panic!("{:?}", c.stores[1]) };
        assert_eq!((r.url.as_str(), r.pool, r.prefix.as_str()), ("redis://127.0.0.1:6379/2", 4, "mx:"));
        assert_eq!((c.stores[1].timeout, c.stores[1].origin.line), (Duration::from_millis(200), 3));
        let grants = |i: usize| {
            let p = &c.plugins[i];
            p.sandbox.stores.iter().map(|g| (g.store.clone(), g.namespace(&p.instance))).collect::<Vec<_>>()
        };
        assert_eq!(grants(0), [("main".to_string(), "plugin:greylisting".to_string())]);
        assert_eq!(c.plugins[0].sandbox.store_operations, 300);
        assert_eq!(c.plugins[1].sandbox.store_operations, SandboxSettings::default().store_operations);
        assert_eq!(grants(2), [("main".into(), "plugin:karma".into()), ("shared".into(), "shared:reputation".into())]);
        assert_eq!(grants(1)[1], ("shared".into(), "shared:reputation".into()), "shared on purpose");
        assert!(grants(3).is_empty(), "`none` withdrew the `*` grant");

        let (_d, src) = dir(&[("plugins", "rcpt_ok\n")]);
        let c = Config::load(src).unwrap();
        assert!(c.stores.is_empty() && c.plugins[0].sandbox.stores.is_empty(), "no store unless defined and granted");

        for (file, text, line, what) in [
            ("stores", "main embedded\nmain embedded\n", 2, "already defined at"),
            ("stores", "Main embedded\n", 1, "not a store name"),
            ("stores", "main memcached\n", 1, "unknown store backend `memcached`"),
            ("stores", "main redis\n", 1, "needs its URL"),
            ("stores", "main redis http://127.0.0.1\n", 1, "not a Redis URL"),
            ("stores", "main embedded max-entries\n", 1, "pairs"),
            ("stores", "main embedded sync-every 2m\n", 1, "sync-every `2m` is out of range"),
            ("stores", "main embedded pool 3\n", 1, "unknown setting `pool` of an embedded store"),
            (
                "stores",
                "main redis redis://127.0.0.1 max-bytes 1M\n",
                1,
                "unknown setting `max-bytes` of a redis store",
            ),
            ("stores", "main embedded timeout 61s\n", 1, "out of range"),
            ("stores", "main redis redis://127.0.0.1 pool 65\n", 1, "out of range"),
            ("stores", "main redis redis://127.0.0.1 prefix a{b}\n", 1, "without `{` or `}`"),
            ("sandbox", "# x\nrcpt_ok store elsewhere\n", 2, "no store `elsewhere` in config/stores"),
            ("sandbox", "rcpt_ok store main shared\n", 1, "store takes NAME"),
            ("sandbox", "rcpt_ok store main shared a}b\n", 1, "cannot name a namespace"),
        ] {
            let mut files = vec![("plugins", "rcpt_ok\n")];
            if file != "stores" {
                files.push(("stores", "main embedded\n"));
            }
            files.push((file, text));
            let (_d, src) = dir(&files);
            let e = Config::load(src).unwrap_err();
            assert!(e.path.ends_with(file) && e.line == Some(line) && e.what.contains(what), "{text}: {e}");
        }
        // An instance name that cannot name a namespace cannot be granted a store of its own.
        let (_d, src) = dir(&[
            ("plugins", "rcpt_ok:{x}\n"),
            ("stores", "main embedded\n"),
            ("sandbox", "rcpt_ok:{x} store main\n"),
        ]);
        let e = Config::load(src).unwrap_err();
        assert!(e.what.contains("cannot have a namespace of its own"), "{e}");
        assert!(check_plugin_file("stores").is_err(), "config/stores is the server's own");
    }

    #[test]
    fn downstreams_and_their_grants() {
        let (_d, src) = dir(&[
            ("plugins", "queue/smtp-forward\n"),
            (
                "downstreams",
                "postfix 127.0.0.1:2525 smtp xclient on io-timeout 2s max-connections 4\n# x\ndovecot unix /run/lmtp lmtp starttls off auth u p\n",
            ),
            ("sandbox", "queue/smtp-forward downstream postfix dovecot\n"),
        ]);
        let c = Config::load(src).unwrap();
        assert_eq!(c.downstreams.len(), 2);
        let p = &c.downstreams[0];
        assert_eq!(p.address, Address::Tcp { host: "127.0.0.1".into(), port: 2525 });
        assert!(p.xclient && p.io_timeout == Duration::from_secs(2) && p.max_connections == 4);
        assert_eq!((c.downstreams[1].protocol, c.downstreams[1].origin.line), (Protocol::Lmtp, 3));
        assert_eq!(c.downstreams[1].auth, Some(("u".into(), "p".into())));
        let granted: Vec<_> = c.plugins[0].sandbox.downstreams.iter().map(|g| g.downstream.as_str()).collect();
        assert_eq!(granted, ["postfix", "dovecot"]);
        for (file, text, line, what) in [
            ("downstreams", "a 127.0.0.1:25 smtp\na 127.0.0.1:26 smtp\n", 2, "already defined at"),
            ("downstreams", "a 127.0.0.1 smtp\n", 1, "not HOST:PORT"),
            ("downstreams", "a 127.0.0.1:25 http\n", 1, "unknown protocol"),
            ("downstreams", "a 127.0.0.1:25\n", 1, "protocol is missing"),
            ("downstreams", "a unix run/x lmtp\n", 1, "must be absolute"),
            ("downstreams", "a 127.0.0.1:25 smtp starttls maybe\n", 1, "required, opportunistic or off"),
            ("downstreams", "a 127.0.0.1:25 smtp io-timeout 11m\n", 1, "out of range"),
            ("downstreams", "a 127.0.0.1:25 smtp auth u\n", 1, "USER PASSWORD"),
            ("downstreams", "a 127.0.0.1:25 smtp color blue\n", 1, "unknown downstream setting"),
            ("downstreams", "A 127.0.0.1:25 smtp\n", 1, "not a downstream name"),
            ("sandbox", "# x\nqueue/smtp-forward downstream elsewhere\n", 2, "no downstream `elsewhere`"),
        ] {
            let mut files = vec![("plugins", "queue/smtp-forward\n"), (file, text)];
            if file != "downstreams" {
                files.push(("downstreams", "postfix 127.0.0.1:25 smtp\n"));
            }
            let (_d, src) = dir(&files);
            let e = Config::load(src).unwrap_err();
            assert_eq!(e.line, Some(line), "{e}");
            assert!(e.path.ends_with(file) && e.what.contains(what), "{e}");
        }
        assert!(check_plugin_file("downstreams").is_err(), "config/downstreams is the server's own");
    }

    #[test]
    fn upstreams_and_their_grants() {
        let (_d, src) = dir(&[
            (
                "plugins",
                "clamd
spamassassin
rcpt_ok
",
            ),
            (
                "upstreams",
                "# scanners
clamd unix /run/clamav/clamd.ctl timeout 20s max-answer 4k
spamd tcp 127.0.0.1:783 connect-timeout 300ms max-connections 8
rspamd tcp [::1]:11333
",
            ),
            (
                "sandbox",
                "clamd upstream clamd
spamassassin upstream spamd rspamd
spamassassin upstream-calls 9
",
            ),
        ]);
        let c = Config::load(src).unwrap();
        assert_eq!(c.upstreams.len(), 3);
        let clamd = &c.upstreams[0];
        assert_eq!(clamd.address, upstream::Address::Unix("/run/clamav/clamd.ctl".into()));
        assert_eq!((clamd.timeout, clamd.max_answer, clamd.origin.line), (Duration::from_secs(20), 4096, 2));
        assert_eq!(clamd.connect_timeout, upstream::DEFAULT_CONNECT_TIMEOUT);
        let spamd = &c.upstreams[1];
        assert_eq!(spamd.address, upstream::Address::Tcp { host: "127.0.0.1".into(), port: 783 });
        assert_eq!((spamd.connect_timeout, spamd.max_connections), (Duration::from_millis(300), 8));
        assert_eq!(c.upstreams[2].address.to_string(), "[::1]:11333");
        let granted = |i: usize| c.plugins[i].sandbox.upstreams.iter().map(|g| g.upstream.clone()).collect::<Vec<_>>();
        assert_eq!(granted(0), ["clamd"]);
        assert_eq!(granted(1), ["spamd", "rspamd"]);
        assert_eq!(c.plugins[1].sandbox.upstream_calls, 9);
        assert!(granted(2).is_empty(), "no upstream unless granted");

        for (file, text, line, what) in [
            (
                "upstreams",
                "a tcp 127.0.0.1:1
a unix /x
",
                2,
                "already defined at",
            ),
            (
                "upstreams",
                "Clamd unix /x
",
                1,
                "not an upstream name",
            ),
            (
                "upstreams",
                "a udp 127.0.0.1:1
",
                1,
                "unknown upstream kind `udp`",
            ),
            (
                "upstreams",
                "a tcp
",
                1,
                "needs its address",
            ),
            (
                "upstreams",
                "a tcp 127.0.0.1
",
                1,
                "not HOST:PORT",
            ),
            (
                "upstreams",
                "a tcp 127.0.0.1:0
",
                1,
                "not HOST:PORT",
            ),
            (
                "upstreams",
                "a unix run/clamd.ctl
",
                1,
                "must be absolute",
            ),
            (
                "upstreams",
                "a unix /x timeout
",
                1,
                "pairs",
            ),
            (
                "upstreams",
                "a unix /x timeout 301s
",
                1,
                "out of range",
            ),
            (
                "upstreams",
                "a unix /x max-connections 0
",
                1,
                "below the minimum of 1",
            ),
            (
                "upstreams",
                "a unix /x max-connections 5000
",
                1,
                "out of range",
            ),
            (
                "upstreams",
                "a unix /x max-answer 65M
",
                1,
                "out of range",
            ),
            (
                "upstreams",
                "a unix /x tls ca.pem
",
                1,
                "`tls` is for tcp upstreams",
            ),
            (
                "upstreams",
                "a tcp h:1 server-name x
",
                1,
                "comes after `tls",
            ),
            (
                "upstreams",
                "a tcp h:1 pool 2
",
                1,
                "unknown upstream setting `pool`",
            ),
            (
                "sandbox",
                "# x
rcpt_ok upstream elsewhere
",
                2,
                "no upstream `elsewhere` in config/upstreams",
            ),
            (
                "sandbox",
                "rcpt_ok upstream 127.0.0.1:3310
",
                1,
                "not an upstream name",
            ),
            (
                "sandbox",
                "rcpt_ok upstream
",
                1,
                "upstream takes",
            ),
        ] {
            let mut files = vec![(
                "plugins", "rcpt_ok
",
            )];
            if file != "upstreams" {
                files.push((
                    "upstreams",
                    "a unix /x
",
                ));
            }
            files.push((file, text));
            let (_d, src) = dir(&files);
            let e = Config::load(src).unwrap_err();
            assert!(e.path.ends_with(file) && e.line == Some(line) && e.what.contains(what), "{text}: {e}");
        }
        assert!(check_plugin_file("upstreams").is_err(), "config/upstreams is the server's own");
    }

    #[test]
    fn plugin_options_and_what_the_server_does_for_check_earlytalker() {
        let (_d, src) = dir(&[("plugins", "check_earlytalker wait 3 check-at CONNECT\nrcpt_ok\n")]);
        let c = Config::load(src).unwrap();
        assert_eq!((c.server.greeting_delay, c.server.reject_early_talkers), (Duration::from_secs(3), false));
        let (_d, src) = dir(&[("plugins", "check_earlytalker\n")]);
        assert_eq!(Config::load(src).unwrap().server.greeting_delay, Duration::from_secs(1), "qpsmtpd's wait 1");
        let (_d, src) = dir(&[("plugins", "check_earlytalker check-at DATA\n")]);
        assert_eq!(Config::load(src).unwrap().server.greeting_delay, Duration::ZERO, "no check at connect");
        for (text, line, what) in [
            ("rcpt_ok\nheaders requre From\n", 2, "plugin `headers` has no option `requre`"),
            ("check_earlytalker wait 61\n", 1, "wait `61`"),
            ("rcpt_ok me\n", 1, "takes no arguments"),
            ("bogus_bounce deny\nnaughty reject\n", 2, "option `reject` has no value"),
        ] {
            let (_d, src) = dir(&[("plugins", text)]);
            let e = Config::load(src).unwrap_err();
            assert!(e.line == Some(line) && e.what.contains(what), "{text}: {e}");
        }
        // Plugins not in the table (the operator's own) keep their arguments to themselves.
        let (_d, src) = dir(&[("plugins", "my/plugin anything at all\n")]);
        assert!(Config::load(src).is_ok());
    }

    #[test]
    fn dns_grants_resolver_and_checks() {
        let (_d, src) = dir(&[
            (
                "plugins",
                "dnsbl
spf
",
            ),
            (
                "sandbox",
                "dnsbl dns zen.example. DBL.example
dnsbl dns-queries 8
spf dns any
",
            ),
            (
                "resolver",
                "nameserver 127.0.0.1:5353
nameserver ::1
timeout 2s
attempts 3
cache-size 100
",
            ),
            (
                "authentication",
                "iprev
dmarc
",
            ),
        ]);
        let c = Config::load(src).unwrap();
        assert_eq!(c.plugins[0].sandbox.dns, DnsGrant::Zones(vec!["zen.example".into(), "dbl.example".into()]));
        assert_eq!(c.plugins[0].sandbox.dns_queries, 8);
        assert_eq!(c.plugins[1].sandbox.dns, DnsGrant::Any);
        assert_eq!(c.plugins[1].sandbox.dns_queries, SandboxSettings::default().dns_queries);
        assert_eq!(
            c.resolver.name_servers,
            vec!["127.0.0.1:5353".parse::<std::net::SocketAddr>().unwrap(), "[::1]:53".parse().unwrap()]
        );
        assert_eq!((c.resolver.timeout, c.resolver.attempts, c.resolver.cache_size), (Duration::from_secs(2), 3, 100));
        assert_eq!(c.checks, Checks { iprev: true, spf: true, dkim: true, dmarc: true });
        let (_d, src) = dir(&[(
            "plugins", "rcpt_ok
",
        )]);
        let c = Config::load(src).unwrap();
        assert_eq!(c.plugins[0].sandbox.dns, DnsGrant::Nothing, "no DNS unless granted");
        assert!(!c.checks.any(), "no checks unless enabled");
        for (file, text, what) in [
            (
                "sandbox",
                "rcpt_ok dns
",
                "dns takes",
            ),
            (
                "sandbox",
                "rcpt_ok dns 10.0.0.1:53
",
                "not a zone name",
            ),
            (
                "resolver",
                "nameserver dns.example
",
                "not an IP address",
            ),
            (
                "resolver",
                "timeout 0
",
                "more than zero",
            ),
            (
                "resolver",
                "timeout 2m
",
                "out of range",
            ),
            (
                "resolver",
                "attempts 0
",
                "below the minimum",
            ),
            (
                "resolver",
                "search example.com
",
                "unknown resolver setting",
            ),
            (
                "authentication",
                "spf arc
",
                "unknown check `arc`",
            ),
        ] {
            let (_d, src) = dir(&[
                (
                    "plugins", "rcpt_ok
",
                ),
                (
                    file,
                    &format!(
                        "# c
{text}"
                    ),
                ),
            ]);
            let e = Config::load(src).unwrap_err();
            assert_eq!((e.line, e.path.ends_with(file)), (Some(2), true), "{e}");
            assert!(e.what.contains(what), "{e}");
        }
    }

    /// A limit out of its range is an error at its line that says the range; at the ends of the
    /// range it is taken as written.
    #[test]
    fn sandbox_limits_out_of_range_are_errors_not_clamped() {
        for (setting, value, range) in [
            ("memory", "512k", "from 1M to 4G"),
            ("memory", "0", "from 1M to 4G"),
            ("memory", "5G", "from 1M to 4G"),
            ("stack", "32k", "from 64k to 64M"),
            ("stack", "1G", "from 64k to 64M"),
            ("timeout", "0", "from 1ms to 60m"),
            ("timeout", "61m", "from 1ms to 60m"),
            ("timeout", "99999999999999m", "from 1ms to 60m"),
        ] {
            let (_d, src) = dir(&[("plugins", "rcpt_ok\n"), ("sandbox", &format!("# c\nrcpt_ok {setting} {value}\n"))]);
            let e = Config::load(src).unwrap_err();
            assert_eq!(e.line, Some(2), "{e}");
            assert!(e.path.ends_with("sandbox"), "{e}");
            assert_eq!(e.what, format!("{setting} `{value}` is out of range: it must be {range}"), "{e}");
            assert!(
                e.to_string().ends_with(&format!("sandbox:2: {setting} `{value}` is out of range: it must be {range}"))
            );
        }
        let (_d, src) =
            dir(&[("plugins", "a\nb\n"), ("sandbox", "a memory 1M\na stack 64k\nb memory 4G\nb stack 64M\n")]);
        let c = Config::load(src).unwrap();
        assert_eq!((c.plugins[0].sandbox.memory, c.plugins[0].sandbox.stack), (1 << 20, 64 << 10));
        assert_eq!((c.plugins[1].sandbox.memory, c.plugins[1].sandbox.stack), (4 << 30, 64 << 20));
    }

    /// Counts kept in 32 bits are refused past them, never cut to their low bits.
    #[test]
    fn counts_past_32_bits_are_errors_not_truncated() {
        let big = "4294967296"; // 2^32, which `as u32` made 0
        for (file, text) in [
            ("limits", format!("max_errors {big}\n")),
            ("auth", format!("max_failures {big}\n")),
            ("sandbox", format!("rcpt_ok breaker {big} 1m 30s\n")),
        ] {
            let (_d, src) = dir(&[("plugins", "rcpt_ok\n"), (file, &text)]);
            let e = Config::load(src).unwrap_err();
            assert_eq!(e.line, Some(1), "{e}");
            assert_eq!(e.what, format!("`{big}` is above the maximum of 4294967295"), "{e}");
        }
        let (_d, src) = dir(&[("limits", "max_errors 4294967295\n")]);
        assert_eq!(Config::load(src).unwrap().limits.max_errors, u32::MAX);
    }

    #[test]
    fn tls_and_auth_files() {
        let (_d, src) = dir(&[
            ("tls", "# default first\ncertificate tls/a.pem tls/a.key\ncertificate /etc/b.pem /etc/b.key\n"),
            ("auth", "plaintext never\nmax_failures 3\nfailure_window 30s\nfailure_delay 0\n"),
        ]);
        let c = Config::load(src).unwrap();
        assert_eq!(c.tls.len(), 2);
        assert_eq!(c.tls[0].chain, PathBuf::from("tls/a.pem"));
        assert!(c.tls[1].origin.to_string().ends_with("tls:3"), "{}", c.tls[1].origin);
        assert_eq!(c.auth.plaintext, PlaintextAuth::Never);
        assert_eq!((c.auth.max_failures, c.auth.failure_delay), (3, Duration::ZERO));
        for (file, text, what) in [
            ("tls", "certificate only-one.pem\n", "expected `certificate CHAIN.pem KEY.pem`"),
            ("auth", "plaintext sometimes\n", "plaintext is"),
            ("auth", "max_failure 3\n", "unknown auth setting `max_failure`"),
        ] {
            let (_d, src) = dir(&[(file, text)]);
            let e = Config::load(src).unwrap_err();
            assert_eq!(e.line, Some(1), "{e}");
            assert!(e.to_string().contains(what), "{e}");
        }
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("99999999999999999999G").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5h").is_err());
    }
}
