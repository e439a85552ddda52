//! `rondo`: the round-robin load balancer's command line. Parses and dispatches; the work is
//! in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};
use rondo::serve::{DEFAULT_CONFIG, LogFormat};

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
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
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
    /// Make a running `rondo serve` reload its configuration file and say whether it did:
    /// validates the file, sends SIGHUP, reads the outcome from the admin API; exit code 1
    /// when the reload failed or was partial.
    Reload(rondo::cli::reload::ReloadArgs),
    /// Validate a configuration file and exit, like `nginx -t`. Backend names are resolved
    /// once: one that does not is a warning (this machine's DNS may differ from the
    /// balancer's), an error with --strict.
    Check {
        /// The configuration file [default: /etc/rondo/rondo.toml].
        #[arg(conflicts_with = "config")]
        file: Option<PathBuf>,
        /// The configuration file, as for `rondo serve`.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Fail when a backend name does not resolve.
        #[arg(long)]
        strict: bool,
    },
    // About and help come from `CompareArgs`.
    Compare(rondo::lab::compare::CompareArgs),
    // About and help come from `DemoArgs`.
    Demo(rondo::lab::demo::DemoArgs),
    /// Generate HTTP load (HTTP/1.1, HTTP/2, or gRPC unary calls) against a URL and report
    /// throughput, latency percentiles, status codes, errors and (with --backend-header)
    /// each backend's share.
    Bench(rondo_bench::BenchArgs),
    /// Show a running balancer's upstreams and backends (from its admin API's /api/v1/stats).
    Status(rondo::cli::status::StatusArgs),
    /// Print a shell completion script, e.g. `rondo completions bash >
    /// /usr/share/bash-completion/completions/rondo`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `rondo man > /usr/share/man/man1/rondo.1`.
    Man,
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
        Command::Reload(args) => rondo::cli::reload::run(args),
        Command::Check {
            file,
            config,
            strict,
        } => Ok(check(
            file.or(config)
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_CONFIG)),
            strict,
        )),
        Command::Compare(args) => rondo::lab::compare::run(args).map(|()| ExitCode::SUCCESS),
        Command::Demo(args) => rondo::lab::demo::run(args).map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => rondo_bench::run(args).map(|()| ExitCode::SUCCESS),
        Command::Status(args) => rondo::cli::status::run(args).map(|()| ExitCode::SUCCESS),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "rondo", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `rondo check`: the verdict on stdout, or the errors on stderr and exit code 1; names that
/// do not resolve are warnings (errors with `strict`).
fn check(path: &Path, strict: bool) -> ExitCode {
    match rondo::config::load(path) {
        Ok(config) => {
            let unresolved = rondo::upstream::dns::check_names(&config);
            let word = if strict { "error" } else { "warning" };
            for problem in &unresolved {
                eprintln!("rondo: {word}: {problem}");
            }
            if strict && !unresolved.is_empty() {
                eprintln!("rondo: configuration file {} test failed", path.display());
                return ExitCode::FAILURE;
            }
            if let Err(e) = config.access_log.check() {
                eprintln!("error: {e}");
                eprintln!("rondo: configuration file {} test failed", path.display());
                return ExitCode::FAILURE;
            }
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
            for u in config.upstreams.iter().filter(|u| u.health_check.enabled) {
                println!(
                    "rondo: upstream `{}`: a backend stays in rotation while it passes `{}` \
                     (checked every {}; set [upstreams.health_check] path to one your \
                     backends serve, or enabled = false)",
                    u.name,
                    u.health_check.describe(),
                    rondo::config::units::format_duration(u.health_check.interval),
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!("rondo: configuration file {} test failed", path.display());
            ExitCode::FAILURE
        }
    }
}
