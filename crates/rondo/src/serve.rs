//! `rondo serve`: load the configuration, start the proxy, run until SIGTERM or SIGINT, then
//! shut down gracefully.

use std::path::Path;

use anyhow::Context as _;

use crate::config;
use crate::proxy;

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global `tracing` subscriber: `RUST_LOG` filters (default `info`), lines go
/// to stderr.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Runs the balancer with the configuration at `path` until a termination signal.
pub fn run(path: &Path) -> anyhow::Result<()> {
    let config = config::load(path)?;
    let running = proxy::start(&config).context("starting the proxy")?;
    for (name, addr) in running.addrs() {
        tracing::info!(listener = name.as_str(), %addr, workers = config.workers.get(), "listening");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signal = rt.block_on(wait_for_signal())?;
    tracing::info!(signal, grace = ?config.shutdown_grace, "shutting down: finishing in-flight requests");
    running.shutdown(config.shutdown_grace);
    tracing::info!("stopped");
    Ok(())
}

/// Waits for SIGTERM or SIGINT and names it.
async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
