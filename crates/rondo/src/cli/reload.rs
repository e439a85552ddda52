//! `rondo reload`: asks a running `rondo serve` to reload its configuration file and says
//! whether it did, like `nginx -s reload` but with an answer.
//!
//! The signal (SIGHUP) carries no answer back, so the admin API's `GET /api/v1/reload`
//! (see [`crate::admin::reloads`]) is read before and after sending it: once its generation
//! moves on, its result is the answer. The admin address, its token and, without `--pid`,
//! the process id come from the configuration file, which is checked first: a file that does
//! not validate would be refused by the running process too, so it is reported here and no
//! signal is sent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::admin_client::fetch;
use crate::admin::reloads::{ReloadReport, ReloadResult};
use crate::config;
use crate::serve::{DEFAULT_CONFIG, read_pid_file, send_reload};

/// `rondo reload` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ReloadArgs {
    /// The running balancer's configuration file: it is validated first, and its `[admin]`
    /// table says where to read the result.
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// The admin API to read the outcome from, as HOST:PORT (default: `[admin] listen` of
    /// the file; needed when that is port 0).
    #[arg(long)]
    pub admin: Option<String>,
    /// The process to signal (default: the pid the admin API reports).
    #[arg(long, conflicts_with = "pid_file")]
    pub pid: Option<u32>,
    /// A pid file written by `rondo serve --pid-file`, instead of `--pid`.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
}

/// How long the reload may take to show up in the admin API: loading and applying a file
/// takes milliseconds; seconds mean the process is not reloading.
const WAIT: Duration = Duration::from_secs(10);

/// How often the admin API is asked while waiting.
const POLL: Duration = Duration::from_millis(50);

/// Runs `rondo reload`: success only when the new configuration is wholly in effect.
pub fn run(args: ReloadArgs) -> anyhow::Result<ExitCode> {
    let config = match config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "rondo: not reloaded: {} does not validate; the running configuration keeps \
                 serving",
                args.config.display()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let given_pid = match (args.pid, &args.pid_file) {
        (Some(pid), _) => Some(pid),
        (None, Some(file)) => Some(read_pid_file(file)?),
        (None, None) => None,
    };
    let admin = match (&args.admin, config.admin.enabled) {
        (Some(admin), _) => admin.clone(),
        (None, true) if config.admin.listen.port() != 0 => {
            reachable(config.admin.listen).to_string()
        }
        (None, _) => {
            let pid = given_pid.context(
                "the admin API is off or on port 0 in this file, so rondo can neither ask for \
                 the process id nor read the outcome: give --pid or --pid-file (and --admin \
                 HOST:PORT for the outcome)",
            )?;
            send_reload(pid)?;
            println!(
                "rondo: sent SIGHUP to process {pid}; without the admin API the outcome is only \
                 in its log"
            );
            return Ok(ExitCode::SUCCESS);
        }
    };
    let token = config.admin.token.as_deref();
    // Once this reload applies, the admin API listens where the file says; before it, where
    // the running configuration said (the same address unless this reload moves it).
    let moved_to = (config.admin.enabled && config.admin.listen.port() != 0)
        .then(|| reachable(config.admin.listen).to_string())
        .filter(|file| *file != admin);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (pid, before) = match (rt.block_on(report(&admin, token)), given_pid) {
        (Ok(before), given) => (given.unwrap_or(before.pid), Some(before.generation)),
        // Not answering: the process may be on the old address of a reload that moves it.
        (Err(_), Some(pid)) => (pid, None),
        (Err(e), None) => {
            return Err(e.context(format!(
                "no admin API answers at {admin}; if this reload moves `[admin] listen`, give \
                 --admin OLD_HOST:PORT, or --pid or --pid-file"
            )));
        }
    };
    send_reload(pid)?;
    let deadline = Instant::now() + WAIT;
    let mut failed = None;
    let after = 'polled: loop {
        for address in std::iter::once(&admin).chain(&moved_to) {
            // The report of this process, newer than the one before the signal (without one,
            // the admin API only answers once the reload moved it there).
            match rt.block_on(report(address, token)) {
                Ok(now)
                    if now.pid == pid
                        && before.is_none_or(|generation| now.generation > generation) =>
                {
                    break 'polled now;
                }
                Ok(_) => {}
                Err(e) => failed = Some(e),
            }
        }
        if Instant::now() >= deadline {
            let tried = moved_to
                .as_ref()
                .map_or(String::new(), |m| format!(" or {m}"));
            let last = failed.map_or(String::new(), |e| format!(" (last: {e:#})"));
            anyhow::bail!(
                "sent SIGHUP to process {pid}, but its admin API (at {admin}{tried}) reported \
                 no reload within {WAIT:?}{last}: is {pid} the process listening there?"
            );
        }
        std::thread::sleep(POLL);
    };
    Ok(verdict(&after))
}

/// Prints how the reload ended; success only when it applied.
fn verdict(report: &ReloadReport) -> ExitCode {
    let pid = report.pid;
    match report.result {
        ReloadResult::Applied => {
            println!("rondo: configuration reloaded (process {pid})");
            return ExitCode::SUCCESS;
        }
        ReloadResult::Partial => eprintln!(
            "rondo: configuration partly reloaded (process {pid}); these changes were not made \
             (the rest is in effect):"
        ),
        ReloadResult::Failed | ReloadResult::None => eprintln!(
            "rondo: configuration NOT reloaded (process {pid}); the running one keeps serving:"
        ),
    }
    for problem in &report.problems {
        eprintln!("  {problem}");
    }
    ExitCode::FAILURE
}

/// Where to reach an admin API listening on `listen`: an unspecified address (all
/// interfaces) is reached through loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port())
        }
        _ => listen,
    }
}

async fn report(admin: &str, token: Option<&str>) -> anyhow::Result<ReloadReport> {
    let body = fetch(admin, "/api/v1/reload", token).await?;
    serde_json::from_slice(&body).context("the admin API answered something that is not rondo's reload report (is it an older rondo?)")
}
