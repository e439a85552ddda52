//! `rondo`: the round-robin load balancer's command line. Parses and dispatches; the work is
//! in the library.

use clap::Parser;

/// A round-robin load balancer: spreads HTTP traffic over a pool of servers and keeps it
/// flowing when servers fail.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    Cli::parse();
    Ok(())
}
