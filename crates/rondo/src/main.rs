//! `rondo`: the round-robin load balancer's command line. Parses and dispatches; the work is
//! in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rondo::serve::LogFormat;

/// A round-robin load balancer: spreads HTTP traffic over a pool of servers and keeps it
/// flowing when servers fail.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the load balancer until SIGTERM or SIGINT (then finish in-flight requests).
    /// SIGHUP reloads the configuration file.
    Serve {
        /// The configuration file (see rondo.example.toml and docs/configuration.md).
        #[arg(long, short)]
        config: PathBuf,
        /// Also reload when the configuration file changes (polled every 500 ms).
        #[arg(long)]
        watch: bool,
        /// Write the process id to this file (removed on exit), for `rondo reload`.
        #[arg(long)]
        pid_file: Option<PathBuf>,
        /// Log line format on stderr. `RUST_LOG` sets the level (default `info`; `warn`
        /// hides the access log).
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Make a running `rondo serve` reload its configuration file (sends it SIGHUP).
    Reload {
        /// The pid file written by `rondo serve --pid-file`.
        #[arg(long, conflicts_with = "pid", required_unless_present = "pid")]
        pid_file: Option<PathBuf>,
        /// The process id of `rondo serve`.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Validate a configuration file and exit, like `nginx -t`.
    Check {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    // About and help come from `CompareArgs`.
    Compare(rondo::lab::compare::CompareArgs),
    // About and help come from `DemoArgs`.
    Demo(rondo::lab::demo::DemoArgs),
    /// Generate HTTP load against a URL and report throughput, latency percentiles, status
    /// codes, errors and (with --backend-header) each backend's share.
    Bench(rondo_bench::BenchArgs),
    /// Show a running balancer's upstreams and backends (from its admin API's /api/v1/stats).
    Status(rondo::admin::status::StatusArgs),
}

fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Serve {
            config,
            watch,
            pid_file,
            log_format,
        } => {
            rondo::serve::init_logging(log_format);
            let options = rondo::serve::ServeOptions { watch, pid_file };
            rondo::serve::run_with(&config, &options)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reload { pid_file, pid } => {
            let pid = match (pid, pid_file) {
                (Some(pid), _) => pid,
                (None, Some(file)) => rondo::serve::read_pid_file(&file)?,
                (None, None) => anyhow::bail!("give --pid-file FILE or --pid PID"),
            };
            rondo::serve::send_reload(pid)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => Ok(check(&config)),
        Command::Compare(args) => rondo::lab::compare::run(args).map(|()| ExitCode::SUCCESS),
        Command::Demo(args) => rondo::lab::demo::run(args).map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => rondo_bench::run(args).map(|()| ExitCode::SUCCESS),
        Command::Status(args) => rondo::admin::status::run(args).map(|()| ExitCode::SUCCESS),
    }
}

/// `rondo check`: the verdict on stdout, or the errors on stderr and exit code 1.
fn check(path: &std::path::Path) -> ExitCode {
    match rondo::config::load(path) {
        Ok(config) => {
            // The certificate, key and CA files are read as a start would read them.
            let tls = rondo::tls::check(&config, std::time::SystemTime::now());
            for warning in &tls.warnings {
                eprintln!("warning: {warning}");
            }
            if !tls.errors.is_empty() {
                for e in &tls.errors {
                    eprintln!("error: {e}");
                }
                eprintln!("rondo: configuration file {} test failed", path.display());
                return ExitCode::FAILURE;
            }
            println!(
                "rondo: configuration file {} is valid: {}",
                path.display(),
                config.summary()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!("rondo: configuration file {} test failed", path.display());
            ExitCode::FAILURE
        }
    }
}
