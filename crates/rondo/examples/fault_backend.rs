//! A backend for `bench/faults.sh` that misbehaves on a signal: the tests' mock backend
//! (`rondo::lab::backend`), started on a loopback port and kept running, so the benchmark and
//! the tests fail in the same ways.
//!
//! ```text
//! cargo build --release --example fault_backend
//! target/release/examples/fault_backend ADDRESS FAULT   # e.g. 127.0.0.1:9001 hang
//! ```
//!
//! It answers every request at once until SIGUSR1, then misbehaves as FAULT says until
//! SIGUSR2:
//!
//! | FAULT | what it does with each request |
//! |---|---|
//! | `none` | answers normally (SIGUSR1 changes nothing) |
//! | `hang` | reads it and never answers |
//! | `reset-mid-body` | sends the head and 1 KiB of a 64 KiB body, then resets the connection |
//! | `stall-mid-body` | sends the head and 1 KiB of a 64 KiB body, then nothing more |
//! | `status-500` | answers 500 |
//! | `slow` | answers after 200 ms |
//!
//! Health checks (`GET /health`) are always answered 200, as an application whose health
//! endpoint does not exercise the broken path. It prints one line on stdout when it listens,
//! and one when the first request (health checks not counted) arrives after its start and
//! after each SIGUSR2, with the time since, in seconds: the time until a proxy sent it traffic
//! again.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rondo::lab::backend::{Backend, Fault};
use tokio::signal::unix::{SignalKind, signal};

/// What `slow` adds to every answer: long enough to show in a p99, far below any proxy's
/// response timeout.
const SLOW: Duration = Duration::from_millis(200);

/// How often it looks for the first request after a start or a SIGUSR2: the precision of the
/// time it prints.
const POLL: Duration = Duration::from_millis(1);

/// A misbehaviour named on the command line.
#[derive(Debug, Clone, Copy)]
enum Misbehaviour {
    Fault(Fault),
    Status500,
    Slow,
}

impl Misbehaviour {
    fn parse(name: &str) -> anyhow::Result<Misbehaviour> {
        Ok(match name {
            "none" => Misbehaviour::Fault(Fault::None),
            "hang" => Misbehaviour::Fault(Fault::Hang),
            "reset-mid-body" => Misbehaviour::Fault(Fault::ResetMidBody),
            "stall-mid-body" => Misbehaviour::Fault(Fault::StallMidBody),
            "status-500" => Misbehaviour::Status500,
            "slow" => Misbehaviour::Slow,
            other => bail!(
                "unknown fault `{other}`: expected none, hang, reset-mid-body, stall-mid-body, \
                 status-500 or slow"
            ),
        })
    }

    /// Starts (`on`) or ends misbehaving.
    fn apply(self, backend: &Backend, on: bool) {
        match self {
            Misbehaviour::Fault(f) => backend.set_fault(if on { f } else { Fault::None }),
            Misbehaviour::Status500 => backend.set_status(if on { 500 } else { 0 }),
            Misbehaviour::Slow => backend.set_delay(if on { SLOW } else { Duration::ZERO }),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: fault_backend ADDRESS FAULT (e.g. 127.0.0.1:9001 hang)";
    let addr: SocketAddr = args
        .next()
        .context(usage)?
        .parse()
        .context("the address must be IP:PORT, e.g. 127.0.0.1:9001")?;
    let misbehaviour = Misbehaviour::parse(&args.next().context(usage)?)?;
    // One thread, as the proxies measured in front of it have one worker each.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(serve(addr, misbehaviour))
}

async fn serve(addr: SocketAddr, misbehaviour: Misbehaviour) -> anyhow::Result<()> {
    let mut on = signal(SignalKind::user_defined1()).context("cannot handle SIGUSR1")?;
    let mut off = signal(SignalKind::user_defined2()).context("cannot handle SIGUSR2")?;
    let backend = Backend::builder("fault")
        .addr(addr)
        .start()
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    println!("listening on {}", backend.addr());
    // Waiting for the first request since `since` (a start or the end of a fault).
    let mut waiting = Some(("start", Instant::now(), backend.received()));
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            _ = on.recv() => misbehaviour.apply(&backend, true),
            _ = off.recv() => {
                misbehaviour.apply(&backend, false);
                waiting = Some(("fault ended", Instant::now(), backend.received()));
            }
            _ = tick.tick(), if waiting.is_some() => {
                if let Some((since, at, count)) = waiting
                    && backend.received() > count
                {
                    println!("first request {:.2} s after {since}", at.elapsed().as_secs_f64());
                    waiting = None;
                }
            }
        }
    }
}
