//! `rondo`: the round-robin load balancer's command line. Parses and dispatches; the work is
//! in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Validate a configuration file and exit, like `nginx -t`.
    Check {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Check { config } => Ok(check(&config)),
    }
}

/// `rondo check`: the verdict on stdout, or the errors on stderr and exit code 1.
fn check(path: &std::path::Path) -> ExitCode {
    match rondo::config::load(path) {
        Ok(config) => {
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
