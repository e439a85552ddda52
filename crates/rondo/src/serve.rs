//! `rondo serve`: load the configuration, start the proxy, run until SIGTERM or SIGINT, then
//! shut down gracefully. SIGHUP (and, with `--watch`, a change of the file) reloads the
//! configuration: a file that does not validate is logged with its `FILE:LINE:COL` and the
//! running configuration keeps serving; a good one is applied without dropping a request
//! (see [`runtime::Running::reload`]).

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;

use crate::admin::reloads::ReloadResult;
use crate::clean_pages;
use crate::config;
use crate::runtime;

/// Where `rondo serve`, `check` and `reload` look for the configuration when `--config` is
/// not given: the place a package or `dist/rondo.service` puts it, as nginx and HAProxy do.
pub const DEFAULT_CONFIG: &str = "/etc/rondo/rondo.toml";

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global `tracing` subscriber: `RUST_LOG` filters (default `info`), lines go
/// to stderr, in colour only when stderr is a terminal and `NO_COLOR` is not set (a file or
/// journald gets plain text).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Whether to colour output for a `terminal` given the value of `NO_COLOR`, which turns
/// colour off when set to anything but the empty string (<https://no-color.org>).
pub fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
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
    // Stamped before the file is read: a change made while the proxy starts is one the
    // running configuration may not have, so `--watch` must see it.
    let stamped = options.watch.then(|| stamp(path));
    let config = config::load(path)?;
    let running = runtime::start(&config).context("starting the proxy")?;
    for (name, addr) in running.addrs() {
        tracing::info!(listener = name.as_str(), %addr, workers = config.workers.get(), "listening");
    }
    if running.admin_enabled() {
        tracing::info!(admin = %running.admin_addr(), "admin API, dashboard and metrics listening");
    } else {
        tracing::info!("admin API off ([admin] enabled = false)");
    }
    // The main thread waits on the control thread's runtime (which delivers the signals): no
    // runtime of its own.
    let signal = running.block_on(async {
        // The handlers first: until SIGHUP is handled, it would end the process, so the pid
        // file that `rondo reload` reads is written only once it is.
        let signals = Signals::install()?;
        if let Some(pid_file) = &options.pid_file {
            std::fs::write(pid_file, format!("{}\n", std::process::id()))
                .with_context(|| format!("writing the pid file {}", pid_file.display()))?;
        }
        give_back_start_up_pages("start");
        anyhow::Ok(wait_for_signal(signals, path, &running, stamped).await)
    })?;
    if let Some(pid_file) = &options.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    let signal = signal?;
    tracing::info!(signal, grace = ?config.shutdown_grace, "shutting down: finishing in-flight requests");
    running.shutdown(config.shutdown_grace);
    tracing::info!("stopped");
    Ok(())
}

/// Loads the file again and applies it, logging the outcome (one line per problem: a log
/// line never holds a line break) and recording it for `GET /api/v1/reload`.
fn reload(path: &Path, running: &runtime::Running, trigger: &'static str) {
    match config::load(path) {
        Err(e) => {
            let problems: Vec<String> = match e.diagnostics() {
                [] => vec![e.to_string()],
                found => found.iter().map(config::Diagnostic::headline).collect(),
            };
            for error in &problems {
                tracing::error!(
                    trigger,
                    error = error.as_str(),
                    problems = problems.len(),
                    "configuration not reloaded: the running one keeps serving"
                );
            }
            running
                .reloads()
                .record(trigger, ReloadResult::Failed, problems);
        }
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
            let result = match done.refused.is_empty() {
                true => ReloadResult::Applied,
                false => ReloadResult::Partial,
            };
            running.reloads().record(trigger, result, done.refused);
        }
    }
    give_back_start_up_pages("reload");
}

/// Unmaps the pages of code and constants that start-up or a reload used and serving does
/// not ([`clean_pages`]): about 2 MB of a fresh process's resident memory.
fn give_back_start_up_pages(after: &'static str) {
    match clean_pages::release() {
        Ok(released) => tracing::debug!(
            after,
            mappings = released.mappings,
            kib = released.kib,
            "clean read-only pages unmapped"
        ),
        Err(e) => {
            tracing::debug!(after, error = %e, "clean read-only pages kept: cannot read /proc/self/smaps")
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

/// Waits for SIGTERM or SIGINT and names it; reloads on SIGHUP and, with `--watch` (`watched`
/// holds the files' stamp from before the configuration was read), when the files change.
async fn wait_for_signal(
    signals: Signals,
    path: &Path,
    running: &runtime::Running,
    watched: Option<Vec<Option<(SystemTime, u64)>>>,
) -> anyhow::Result<&'static str> {
    let watch = watched.is_some();
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = signals;
    let mut poll = tokio::time::interval(WATCH_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seen = watched.unwrap_or_default();
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

/// Sends SIGHUP to a running `rondo serve`, which reloads its configuration file.
pub fn send_reload(pid: u32) -> anyhow::Result<()> {
    let target = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .with_context(|| format!("{pid} is not a process id"))?;
    rustix::process::kill_process(target, rustix::process::Signal::HUP)
        .map_err(std::io::Error::from)
        .with_context(|| format!("cannot signal process {pid}"))
}

/// The process id written by `rondo serve --pid-file`.
pub fn read_pid_file(path: &Path) -> anyhow::Result<u32> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the pid file {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{}: not a process id: {:?}", path.display(), text.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        let set = Some(std::ffi::OsStr::new("1"));
        let empty = Some(std::ffi::OsStr::new(""));
        assert!(colour(true, None));
        assert!(colour(true, empty), "an empty NO_COLOR does not count");
        assert!(!colour(true, set));
        assert!(!colour(false, None));
    }
}
