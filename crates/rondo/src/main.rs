//! `rondo`: the round-robin load balancer's command line. Parses and dispatches; the work is
//! in the library.

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
    // About and help come from `CompareArgs`.
    Compare(rondo::compare::CompareArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Compare(args) => rondo::compare::run(args),
    }
}
