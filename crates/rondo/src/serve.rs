//! `rondo serve`: load the configuration, start the proxy, run until SIGTERM or SIGINT, then
//! shut down gracefully. SIGHUP (and, with `--watch`, a change of the file) reloads the
//! configuration: a file that does not validate is logged with its `FILE:LINE:COL` and the
//! running configuration keeps serving; a good one is applied without dropping a request
//! (see [`proxy::Running::reload`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

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

/// How `rondo serve` runs besides its configuration file.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Reload when the file changes (its modification time or size, polled every
    /// [`WATCH_POLL`]).
    pub watch: bool,
    /// Write the process id here (removed on exit), for `rondo reload --pid-file`.
    pub pid_file: Option<PathBuf>,
}

/// How often `--watch` looks at the file. A change is applied once two polls in a row see
/// the same new state, so an editor writing the file in several steps triggers one reload
/// of the finished file, within about a second.
pub const WATCH_POLL: Duration = Duration::from_millis(500);

/// Runs the balancer with the configuration at `path` until a termination signal.
pub fn run(path: &Path) -> anyhow::Result<()> {
    run_with(path, &ServeOptions::default())
}

/// [`run`] with reload options.
pub fn run_with(path: &Path, options: &ServeOptions) -> anyhow::Result<()> {
    let config = config::load(path)?;
    let running = proxy::start(&config).context("starting the proxy")?;
    for (name, addr) in running.addrs() {
        tracing::info!(listener = name.as_str(), %addr, workers = config.workers.get(), "listening");
    }
    tracing::info!(admin = %running.admin_addr(), "admin API, dashboard and metrics listening");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The handlers first: until SIGHUP is handled, it would end the process, so the pid
    // file that `rondo reload` reads is written only once it is.
    let signals = {
        let _context = rt.enter();
        Signals::install()?
    };
    if let Some(pid_file) = &options.pid_file {
        std::fs::write(pid_file, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing the pid file {}", pid_file.display()))?;
    }
    let signal = rt.block_on(wait_for_signal(signals, path, &running, options.watch));
    if let Some(pid_file) = &options.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    let signal = signal?;
    tracing::info!(signal, grace = ?config.shutdown_grace, "shutting down: finishing in-flight requests");
    running.shutdown(config.shutdown_grace);
    tracing::info!("stopped");
    Ok(())
}

/// Loads the file again and applies it, logging the outcome.
fn reload(path: &Path, running: &proxy::Running, trigger: &'static str) {
    match config::load(path) {
        Err(e) => tracing::error!(
            trigger,
            error = %e,
            "configuration not reloaded: the running one keeps serving"
        ),
        Ok(config) => {
            let done = running.reload(&config);
            for refused in &done.refused {
                tracing::error!(trigger, "not reloaded: {refused}");
            }
            tracing::info!(
                trigger,
                upstreams = ?done.upstreams,
                refused = done.refused.len(),
                "configuration reloaded"
            );
        }
    }
}

/// The signals `rondo serve` handles.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (inside a runtime context).
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }
}

/// What `--watch` compares: modification time and size of the file and of every
/// certificate, key and CA file it names (`None` for one that is unreadable).
fn stamp(path: &Path) -> Vec<Option<(SystemTime, u64)>> {
    let one = |p: &Path| {
        let meta = std::fs::metadata(p).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    let tls = config::load(path)
        .map(|c| c.tls_files())
        .unwrap_or_default();
    std::iter::once(one(path))
        .chain(tls.iter().map(|p| one(p)))
        .collect()
}

/// Waits for SIGTERM or SIGINT and names it; reloads on SIGHUP and, with `watch`, when the
/// file changes.
async fn wait_for_signal(
    signals: Signals,
    path: &Path,
    running: &proxy::Running,
    watch: bool,
) -> anyhow::Result<&'static str> {
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = signals;
    let mut poll = tokio::time::interval(WATCH_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seen = stamp(path);
    let mut pending = None;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok("SIGTERM"),
            _ = int.recv() => return Ok("SIGINT"),
            _ = hup.recv() => {
                seen = stamp(path);
                pending = None;
                reload(path, running, "SIGHUP");
            }
            _ = poll.tick(), if watch => {
                let now = stamp(path);
                if now == seen {
                    pending = None;
                } else if pending.as_ref() == Some(&now) {
                    // Unchanged since the last poll: the write is finished.
                    seen = now;
                    pending = None;
                    reload(path, running, "file changed");
                } else {
                    pending = Some(now);
                }
            }
        }
    }
}

/// `rondo reload`: sends SIGHUP to a running `rondo serve` (through `kill(1)`, so no
/// dependency is needed for one signal).
pub fn send_reload(pid: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .context("running kill(1)")?;
    anyhow::ensure!(status.success(), "kill -HUP {pid} failed: {status}");
    Ok(())
}

/// The process id written by `rondo serve --pid-file`.
pub fn read_pid_file(path: &Path) -> anyhow::Result<u32> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the pid file {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{}: not a process id: {:?}", path.display(), text.trim()))
}
