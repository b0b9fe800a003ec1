//! `wasmtpd`: the command line. Parses options, loads the config (errors name file and line),
//! binds, and serves until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use wasmtpd::config::{Config, ConfigSource};
use wasmtpd::spool::Spool;

/// An SMTP server whose plugins are sandboxed WebAssembly components.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Configuration directory (qpsmtpd layout). Without it, the embedded default config is used.
    #[arg(long, value_name = "DIR")]
    config: Option<PathBuf>,
    /// Address to listen on; may be given several times.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:2525")]
    listen: Vec<SocketAddr>,
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
    /// Log filter (tracing syntax, e.g. `info` or `wasmtpd=debug`); RUST_LOG also works.
    #[arg(long, default_value = "info")]
    log: String,
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
    let runner = wasmtpd::plugins::load(&config, &dirs)?;

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
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listeners = wasmtpd::bind(&args.listen).await?;
        for l in &listeners {
            // Tests and scripts read this line to learn the port of `--listen 127.0.0.1:0`.
            println!("wasmtpd listening on {}", l.local_addr()?);
        }
        tracing::info!(config = %config.source.display(""), me = %config.me, plugins = config.plugins.len(), "ready");
        wasmtpd::serve(listeners, config, runner, spool, shutdown_signal()).await;
        Ok::<_, anyhow::Error>(())
    })?;
    // Connections still open after the grace period are dropped with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
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
