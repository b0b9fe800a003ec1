//! `wasmtpd`: the command line. Parses options, loads the config (errors name file and line),
//! binds, and serves until SIGTERM or SIGINT; SIGHUP reloads the TLS certificates.
//! `wasmtpd add-user` adds a user for the `auth_flat_file` plugin; `wasmtpd plugin inspect`
//! says what a component asks for (`inspect.rs`); `wasmtpd plugin test` runs one against a
//! recorded session (`plugin_test.rs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use wasmtpd::authentication::Authenticator;
use wasmtpd::config::{Config, ConfigSource};
use wasmtpd::spool::Spool;
use wasmtpd::tls::Tls;

// mimalloc: the server allocates and frees small objects at a high rate (replies, plugin
// stores); against glibc's malloc it gave about a quarter more messages per second (one
// message per connection, six plugins; interleaved runs on the same machine).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An SMTP server whose plugins are sandboxed WebAssembly components.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Configuration directory (qpsmtpd layout). Without it, the embedded default config is used.
    #[arg(long, value_name = "DIR", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on (STARTTLS offered if a certificate is configured); may be repeated.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:2525")]
    listen: Vec<SocketAddr>,
    /// Address to listen on with implicit TLS (RFC 8314, like port 465); may be repeated.
    #[arg(long, value_name = "ADDR:PORT")]
    listen_tls: Vec<SocketAddr>,
    /// Address to listen on behind a load balancer: each connection starts with a PROXY
    /// protocol header (v1 or v2) from a peer listed in config/frontends; may be repeated.
    #[arg(long, value_name = "ADDR:PORT")]
    listen_proxy: Vec<SocketAddr>,
    /// Where plugin components are: `<name>.wasm` for each plugin named in config/plugins.
    #[arg(long, value_name = "DIR", default_value = "/usr/lib/wasmtpd/plugins")]
    plugin_dir: PathBuf,
    /// Where compiled plugins are cached (default: STATE_DIR/plugin-cache).
    #[arg(long, value_name = "DIR")]
    plugin_cache: Option<PathBuf>,
    /// Where the server keeps its state: the spool, and paths the config names relative to it.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/wasmtpd")]
    state_dir: PathBuf,
    /// Write the embedded default configuration into DIR (existing files are kept) and exit.
    #[arg(long, value_name = "DIR")]
    init_config: Option<PathBuf>,
    /// Worker threads, each serving its share of the connections (default: one per CPU).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Log filter (tracing syntax, e.g. `info` or `wasmtpd=debug`); RUST_LOG also works.
    #[arg(long, default_value = "info")]
    log: String,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Adds USER to CONFIG/auth_users (the auth_flat_file plugin's users), or changes its
    /// password. The password is asked for on the terminal, or read as the first line of stdin.
    AddUser {
        /// The user name clients give in AUTH (e.g. alice@example.com).
        user: String,
    },
    /// Commands for vetting a plugin before it is deployed.
    #[command(subcommand)]
    Plugin(PluginCmd),
}

#[derive(Subcommand, Debug)]
enum PluginCmd {
    /// Prints what a component is and asks for: size, sha256 (for a pin in config/plugins),
    /// contract version, hooks, every import (granted or not under --config), producers.
    /// Exits 1 if the plugin would be refused under --config.
    Inspect {
        /// The component file.
        file: PathBuf,
        /// Its instance name in config/plugins (default: the file's name without `.wasm`).
        #[arg(long)]
        name: Option<String>,
    },
    /// Runs a plugin (or a chain, --plugins) against a recorded session, with no network and
    /// no server: prints each hook's verdict, message, enhanced code, notes and time, and the
    /// conversation. Exits 1 if an `expect` line of the session failed.
    Test {
        /// The component, then its arguments (as on its config/plugins line).
        #[arg(num_args = 0..)]
        plugin: Vec<String>,
        /// A config/plugins file to run instead of one plugin (components from --plugin-dir).
        #[arg(long, value_name = "FILE")]
        plugins: Option<PathBuf>,
        /// The session file: client facts, commands, expectations (see the README).
        #[arg(long, value_name = "FILE")]
        session: PathBuf,
        /// The message DATA sends (instead of the session's `message` line).
        #[arg(long, value_name = "FILE")]
        message: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&args.log));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasmtpd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Cmd::AddUser { user }) = &args.command {
        let Some(dir) = &args.config else {
            anyhow::bail!("add-user needs --config DIR: the users file is DIR/{}", wasmtpd::users::USERS_FILE);
        };
        return add_user(dir, user);
    }
    if let Some(Cmd::Plugin(PluginCmd::Inspect { file, name })) = &args.command {
        return match wasmtpd::inspect::run(file, name.as_deref(), args.config.as_deref())? {
            true => Ok(()),
            false => Err(anyhow::anyhow!("{}: would be refused at start-up (see its imports)", file.display())),
        };
    }
    if let Some(Cmd::Plugin(PluginCmd::Test { plugin, plugins, session, message })) = &args.command {
        return plugin_test(&args, plugin, plugins.as_deref(), session, message.as_deref());
    }
    if let Some(dir) = &args.init_config {
        ConfigSource::write_embedded(dir)?;
        println!("wrote the default configuration to {}", dir.display());
        return Ok(());
    }
    let source = match &args.config {
        Some(dir) if !dir.is_dir() => anyhow::bail!("{}: not a directory", dir.display()),
        Some(dir) => ConfigSource::Dir(dir.clone()),
        None => ConfigSource::Embedded,
    };
    let config = Config::load(source).map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    std::fs::create_dir_all(&args.state_dir)
        .map_err(|e| anyhow::anyhow!("state directory {}: {e}", args.state_dir.display()))?;
    let spool = Spool::open(args.state_dir.join("spool"))
        .map_err(|e| anyhow::anyhow!("spool directory {}: {e}", args.state_dir.join("spool").display()))?;
    let cache_dir = args.plugin_cache.clone().unwrap_or_else(|| args.state_dir.join("plugin-cache"));
    let dirs = wasmtpd::plugins::Dirs {
        plugin_dir: &args.plugin_dir,
        state_dir: &args.state_dir,
        spool_dir: spool.dir(),
        cache_dir: &cache_dir,
    };
    let services = wasmtpd::plugins::services(&config, &args.state_dir)?;
    let resolver = services.resolver.clone();
    let runner = wasmtpd::plugins::load(&config, &dirs, &services)?;
    let authenticator = match (&resolver, config.checks.any()) {
        (Some(r), true) => Some(Authenticator::new(config.checks, r, &config.me)),
        _ => None,
    };
    let base = config.base_dir(&args.state_dir).to_path_buf();
    let mut certificates = config.tls.clone();
    if matches!(config.source, ConfigSource::Embedded) {
        // The embedded config is for trying wasmtpd out: its certificate (which `cargo xtask
        // serve` makes) may be missing, and then STARTTLS is simply not offered. In a config
        // directory a missing certificate is an error.
        certificates.retain(|c| {
            let present = base.join(&c.chain).is_file() && base.join(&c.key).is_file();
            if !present {
                tracing::warn!(
                    certificate = %base.join(&c.chain).display(),
                    "no certificate: STARTTLS is not offered (`cargo xtask serve` makes a self-signed one)"
                );
            }
            present
        });
    }
    let tls = Arc::new(Tls::load(&certificates, &base).map_err(|e| anyhow::anyhow!("configuration error: {e}"))?);
    if !args.listen_tls.is_empty() && !tls.has_certificates() {
        anyhow::bail!(
            "configuration error: {}: --listen-tls needs a certificate (`certificate CHAIN.pem KEY.pem`)",
            config.source.display("tls")
        );
    }

    if !args.listen_proxy.is_empty() && config.frontends.proxy.is_empty() {
        anyhow::bail!(
            "configuration error: {}: --listen-proxy needs the load balancers' addresses (`proxy ADDR[/PREFIX]`)",
            config.source.display("frontends")
        );
    }
    // One descriptor per client: allow as many as the hard limit lets us.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if (n as usize) < config.server.max_connections + 64 => tracing::warn!(
            limit = n,
            max_connections = config.server.max_connections,
            "the open-files limit is below max_connections; accepts will fail before the limit"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the open-files limit"),
    }
    // This thread is the first worker; `serve` starts the others.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let kind = |implicit_tls, proxy| wasmtpd::ListenerKind { implicit_tls, proxy };
    let addrs: Vec<(SocketAddr, wasmtpd::ListenerKind)> = args
        .listen
        .iter()
        .map(|a| (*a, kind(false, false)))
        .chain(args.listen_tls.iter().map(|a| (*a, kind(true, false))))
        .chain(args.listen_proxy.iter().map(|a| (*a, kind(false, true))))
        .collect();
    let listeners = wasmtpd::bind(&addrs, workers)?;
    for l in &listeners[0] {
        // Tests and scripts read these lines to learn the port of `--listen 127.0.0.1:0`.
        let tls = match (l.kind.implicit_tls, l.kind.proxy) {
            (true, _) => " (TLS)",
            (false, true) => " (PROXY)",
            (false, false) => "",
        };
        println!("wasmtpd listening on {}{tls}", l.tcp.local_addr()?);
    }
    runtime.block_on(async {
        tracing::info!(
            config = %config.source.display(""),
            me = %config.me,
            plugins = config.plugins.len(),
            certificates = config.tls.len(),
            "ready"
        );
        tokio::spawn(reload_on_sighup(tls.clone(), config.source.clone(), base));
        wasmtpd::serve(listeners, config, runner, spool, tls, authenticator, shutdown_signal()).await;
        Ok::<_, anyhow::Error>(())
    })?;
    // Connections still open after the grace period are dropped with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}

/// SIGHUP: reads `config/tls` and the certificates again; new handshakes use them, sessions
/// already encrypted keep theirs. A broken file is logged and the old certificates stay.
async fn reload_on_sighup(tls: Arc<Tls>, source: ConfigSource, base: PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("no SIGHUP handler: certificates cannot be reloaded");
        return;
    };
    while hup.recv().await.is_some() {
        let files = match wasmtpd::config::load_tls(&source) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("SIGHUP: certificates not reloaded: {e}");
                continue;
            }
        };
        match tls.reload(&files, &base) {
            Ok(n) => tracing::info!(certificates = n, "SIGHUP: certificates reloaded"),
            Err(e) => tracing::error!("SIGHUP: certificates not reloaded, the old ones stay: {e}"),
        }
    }
}

/// `wasmtpd plugin test`: one component with its arguments, or a chain file.
fn plugin_test(
    args: &Args,
    plugin: &[String],
    plugins: Option<&Path>,
    session: &Path,
    message: Option<&Path>,
) -> anyhow::Result<()> {
    let chain = match (plugin.split_first(), plugins) {
        (Some((file, plugin_args)), None) => {
            let file = Path::new(file);
            let name = file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
            let dir = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let mut line = name;
            for a in plugin_args {
                line.push(' ');
                line.push_str(a);
            }
            wasmtpd::plugin_test::Chain { plugins: format!("{line}\n"), plugin_dir: dir.to_path_buf() }
        }
        (None, Some(file)) => wasmtpd::plugin_test::Chain {
            plugins: std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?,
            plugin_dir: args.plugin_dir.clone(),
        },
        _ => anyhow::bail!("plugin test needs a component (PLUGIN.wasm [ARGS...]) or --plugins FILE, not both"),
    };
    // Compiled components are kept between runs, in a cache of this user's own.
    let uid = wasmtpd_host::plugin::cache::current_uid();
    let cache =
        args.plugin_cache.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("wasmtpd-plugin-cache-{uid}")));
    match wasmtpd::plugin_test::run(&chain, session, message, args.config.as_deref(), &cache)? {
        true => Ok(()),
        false => Err(anyhow::anyhow!("{}: an expectation failed", session.display())),
    }
}

fn add_user(config_dir: &Path, user: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("password for {user}: "))?;
        let again = rpassword::prompt_password("again: ")?;
        if first != again {
            anyhow::bail!("the passwords differ");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    let replaced = wasmtpd::users::add_user(config_dir, user, &password)?;
    let file = config_dir.join(wasmtpd::users::USERS_FILE);
    println!("{} {user} in {}", if replaced { "changed the password of" } else { "added" }, file.display());
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}
