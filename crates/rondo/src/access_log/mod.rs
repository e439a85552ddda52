//! The access log: one line per request, written where `access_log` says.
//!
//! - `access_log = true` (the default): a line on the process log (stderr, text or JSON as
//!   `--log-format` says), target `rondo::access`;
//! - `access_log = { path = "/var/log/rondo/access.log", format = "combined" }`: a file of
//!   its own in nginx's `combined` format, as JSON lines, or from a `$variable` template
//!   (see [`format`]); reopened on SIGUSR1 for logrotate, written by its own thread so a slow
//!   disk never holds up a request (lines that do not fit in the queue are dropped and
//!   counted: `rondo_access_log_dropped_total`);
//! - `access_log = false`: nothing.
//!
//! The forwarding code builds an [`AccessRecord`] from what it already holds (borrowed, no
//! allocation) and calls [`AccessLog::log`]; when the log is off that is one branch.

pub mod format;
pub mod record;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub use format::{Format, FormatError, Var};
pub use record::{AccessRecord, Tried, UpstreamTimes};

/// Where access lines go, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogConfig {
    /// No access log.
    Off,
    /// One line per request on the process log.
    ProcessLog,
    /// A file of its own.
    File {
        /// The file, created if missing, appended to.
        path: PathBuf,
        /// The line format.
        format: Format,
    },
}

impl AccessLogConfig {
    /// True unless the log is off.
    pub fn is_on(&self) -> bool {
        !matches!(self, AccessLogConfig::Off)
    }

    /// Opens the file as start-up would (creating it when missing, as `nginx -t` does) and
    /// closes it: `rondo check` then fails where `rondo serve` would.
    pub fn check(&self) -> Result<(), OpenError> {
        match self {
            AccessLogConfig::File { path, .. } => {
                writer::open(path).map(drop).map_err(|source| OpenError {
                    path: path.clone(),
                    source,
                })
            }
            AccessLogConfig::Off | AccessLogConfig::ProcessLog => Ok(()),
        }
    }
}

/// The access log's handle, cloned into every listener: cheap to clone, cheap to call.
#[derive(Debug, Clone)]
pub struct AccessLog {
    target: Target,
}

#[derive(Debug, Clone)]
enum Target {
    Off,
    ProcessLog,
    File {
        sender: Arc<writer::Sender>,
        format: Arc<Format>,
    },
}

/// Opening the access log file failed.
#[derive(Debug, thiserror::Error)]
#[error("opening the access log {}: {source}", path.display())]
pub struct OpenError {
    path: PathBuf,
    source: std::io::Error,
}

impl AccessLog {
    /// A log that writes nothing (tests, the demo).
    pub fn off() -> AccessLog {
        AccessLog {
            target: Target::Off,
        }
    }

    /// The log `config` describes; a file is opened (created, appended) and its writer
    /// thread started now, so a bad path stops start-up rather than losing lines later.
    pub fn open(config: &AccessLogConfig) -> Result<AccessLog, OpenError> {
        let target = match config {
            AccessLogConfig::Off => Target::Off,
            AccessLogConfig::ProcessLog => Target::ProcessLog,
            AccessLogConfig::File { path, format } => Target::File {
                sender: Arc::new(writer::start(path).map_err(|source| OpenError {
                    path: path.clone(),
                    source,
                })?),
                format: Arc::new(format.clone()),
            },
        };
        Ok(AccessLog { target })
    }

    /// True when [`AccessLog::log`] writes something: the caller may skip gathering what
    /// only the log needs.
    pub fn is_on(&self) -> bool {
        !matches!(self.target, Target::Off)
    }

    /// Logs one request. Never blocks: a file line is queued for the writer thread.
    pub fn log(&self, r: &AccessRecord<'_>) {
        match &self.target {
            Target::Off => {}
            Target::ProcessLog => log_on_process_log(r),
            Target::File { sender, format } => {
                let mut line = String::with_capacity(256);
                format.write(r, &mut line);
                sender.send(line);
            }
        }
    }

    /// Closes and reopens the file (after logrotate moved it). False, and nothing done,
    /// without a file.
    pub fn reopen(&self) -> bool {
        match &self.target {
            Target::File { sender, .. } => {
                sender.reopen();
                true
            }
            Target::Off | Target::ProcessLog => false,
        }
    }

    /// Waits until every line logged so far is in the file (tests; shutdown).
    pub fn flush(&self) {
        if let Target::File { sender, .. } = &self.target {
            sender.flush();
        }
    }

    /// Lines dropped because the writer could not keep up, since start.
    pub fn dropped(&self) -> u64 {
        match &self.target {
            Target::File { sender, .. } => sender.counts.dropped.load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// Lines lost to write errors, since start.
    pub fn failed(&self) -> u64 {
        match &self.target {
            Target::File { sender, .. } => sender.counts.failed.load(Ordering::Relaxed),
            _ => 0,
        }
    }
}

/// Reopens `log` on every signal `usr1` delivers (SIGUSR1: logrotate's `postrotate` sends
/// it, as for nginx). Without a file the signal is logged and ignored, never fatal: a
/// logrotate rule left in place after the log moved back to stderr must not stop the
/// balancer. Runs until the process exits; spawn it on the control runtime.
pub async fn reopen_on_sigusr1(log: AccessLog, mut usr1: tokio::signal::unix::Signal) {
    while usr1.recv().await.is_some() {
        if log.reopen() {
            tracing::info!("SIGUSR1: reopening the access log");
        } else {
            tracing::info!("SIGUSR1: no access log file to reopen, ignored");
        }
    }
}

/// The line on the process log: the same fields, as structured tracing fields.
fn log_on_process_log(r: &AccessRecord<'_>) {
    let tried = r.tried.as_slice();
    let backend = match tried {
        [] => "-".to_owned(),
        [one] => (*one).to_owned(),
        many => many.join(","),
    };
    tracing::info!(
        target: "rondo::access",
        client = %r.client,
        method = r.method,
        path = r.target,
        protocol = r.protocol,
        status = r.status,
        bytes_sent = r.bytes_sent,
        bytes_received = r.bytes_received,
        listener = r.listener,
        upstream = r.upstream.unwrap_or("-"),
        backend = backend.as_str(),
        attempts = r.attempts,
        request_id = r.request_id,
        duration_us = u64::try_from(r.total.as_micros()).unwrap_or(u64::MAX),
    );
}

#[cfg(test)]
mod tests;
