//! `rondo compare`: every balancing algorithm on the same traffic, side by side.
//!
//! The seed's `compare_algorithms` ran its three round-robin variants against servers whose
//! speed was made up after the fact, so it could not show the one thing a comparison is for:
//! what the algorithm does when the backends are not alike. This is a discrete-event
//! simulation (see [`sim`]) that can.
//!
//! ## The model
//!
//! - **Traffic**: `requests` requests arrive as a Poisson process (exponential gaps) at
//!   `rate` requests per second of virtual time; by default 80 % of the pool's capacity
//!   ([`DEFAULT_UTILIZATION`] says why).
//! - **Backends**: the seed's four servers, weights 1, 1.5, 2 and 2.5. Each has
//!   [`DEFAULT_WORKERS`] workers serving one request each, and a FIFO queue in front of them
//!   for the rest. Service times are exponential with a mean of 100 ms divided by the weight,
//!   so the weights match the capacities (40, 60, 80, 100 req/s), except backend `b1`, which
//!   is [`DEFAULT_SLOWDOWN`] times slower than its weight says (30 req/s instead of 60): the
//!   configured weights are stale, as they are whenever a server degrades.
//! - **Balancer**: the real [`balance::Pool`], picking with `pool.pick(now, |_| true)` at
//!   each arrival and holding the lease until the response, so `least-connections` and `p2c`
//!   see the true in-flight counts and latencies. No failures, no breaker.
//! - **Fairness between algorithms**: common random numbers. Every algorithm sees the same
//!   arrival times and the same request sizes (a unit exponential draw that each backend
//!   scales by its mean service time), so the differences are the algorithms' own. A seed
//!   fixes everything; the same seed gives the same table.
//!
//! Latency is from arrival to response (queueing plus service); throughput is completed
//! requests per second from the start to the last response, so a backlog that outlives the
//! arrivals shows up as lost throughput.
//!
//! ## Simulated now, live later
//!
//! The table, the JSON, the conclusion and the charts take [`AlgorithmResult`]s filled through
//! a [`Tally`], which knows nothing of simulation: a live run through the proxy can fill the
//! same structure and reuse all of it.

pub mod chart;
pub mod conclusion;
pub mod contender;
pub mod keys;
pub mod live;
pub mod report;
pub mod sim;

use std::path::PathBuf;

use anyhow::Context as _;
use serde::Serialize;

pub use contender::Contender;
pub use report::{AlgorithmResult, BackendResult, LatencySummary, Tally};
pub use sim::{
    BASE_SERVICE, DEFAULT_REQUESTS, DEFAULT_SEED, DEFAULT_SLOWDOWN, DEFAULT_UTILIZATION,
    DEFAULT_WORKERS, SLOW_BACKEND, Scenario, ScenarioError, SimBackend, simulate,
};

/// Compare the balancing algorithms on the same simulated traffic.
#[derive(Debug, Clone, clap::Args)]
#[command(
    long_about = "Compare the balancing algorithms on the same simulated traffic.\n\n\
        Simulates a pool of four backends of unequal speed (weights 1, 1.5, 2 and \
        2.5, each with 4 workers and a FIFO queue, mean service 100 ms divided by the weight, \
        and backend b1 --slowdown times slower than its weight says). Requests arrive as a \
        Poisson process at --rate (default: 80% of the pool's capacity). Every algorithm gets \
        exactly the same arrivals and request sizes, and picks with the real balancer library, \
        so least-connections and p2c react to real in-flight counts and latencies.\n\n\
        Each request also carries an affinity key (a user, a session, a URL: --keys, \
        --key-count) that consistent-hash hashes; consistent-hash-bounded is the same with \
        hash_balance_factor = 1.25 (no backend above 125% of the average load). The table shows \
        how often a returning key found its previous backend, and for the hashing rows how many \
        keys move when the \
        busiest backend fails.\n\n\
        Prints a table (throughput, mean/p50/p95/p99 latency, each backend's share and peak \
        in flight), a conclusion drawn from the numbers, and writes two SVG charts. Virtual \
        time: it takes a second, not minutes, and the same --seed gives the same numbers.",
    after_help = "Examples:\n  \
        rondo compare                          the default scenario\n  \
        rondo compare --slowdown 1             weights that match the speeds: what changes?\n  \
        rondo compare --rate 150 --seed 7      lighter load, another draw\n  \
        rondo compare --algorithm round-robin,p2c --json\n  \
        rondo compare --keys zipf --algorithm consistent-hash,consistent-hash-bounded,p2c\n                                               hot keys: what hashing costs, and bounding it"
)]
pub struct CompareArgs {
    /// Requests to simulate for each algorithm.
    #[arg(long, default_value_t = DEFAULT_REQUESTS as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub requests: u64,

    /// Arrival rate, requests per second of virtual time [default: 80% of the pool's capacity]
    #[arg(long, allow_negative_numbers = true)]
    pub rate: Option<f64>,

    /// How many times slower than its weight says backend b1 is (1: every backend as fast as
    /// its weight promises).
    #[arg(long, default_value_t = DEFAULT_SLOWDOWN, allow_negative_numbers = true)]
    pub slowdown: f64,

    /// Seed for arrivals, request sizes and the random pickers.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,

    /// How often each affinity key is used: uniform, zipf (s = 1) or zipf:S. Keys are what
    /// consistent-hash hashes (a user, a session, a URL); the other algorithms ignore them.
    #[arg(long, value_name = "DIST", default_value = "uniform")]
    pub keys: keys::KeyDistribution,

    /// Distinct affinity keys.
    #[arg(long, default_value_t = keys::DEFAULT_KEYS, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub key_count: u32,

    /// Only these algorithms, comma-separated or repeated [default: all]. `consistent-hash-bounded`
    /// is consistent-hash with `hash_balance_factor = 1.25`.
    #[arg(long = "algorithm", value_name = "NAME", value_delimiter = ',', value_parser = parse_algorithm)]
    pub algorithms: Vec<Contender>,

    /// Directory for the SVG charts (created if missing).
    #[arg(long, default_value = "rondo-compare")]
    pub out: PathBuf,

    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Run the comparison for real instead of simulating it: for each algorithm, backends with
    /// the scenario's service times and workers start on loopback, the real proxy goes in
    /// front, and `rondo bench` sends the requests open loop at the scenario's rate, each with
    /// its affinity key in an `x-key` header (what the hashing rows hash). Takes about
    /// requests ÷ rate seconds per algorithm, plus the time queues need to drain.
    #[arg(long)]
    pub live: bool,
}

fn parse_algorithm(s: &str) -> Result<Contender, String> {
    s.parse()
}

impl CompareArgs {
    /// The scenario these arguments describe, checked.
    pub fn scenario(&self) -> anyhow::Result<Scenario> {
        if !(self.slowdown.is_finite() && self.slowdown > 0.0 && self.slowdown <= 1000.0) {
            anyhow::bail!(
                "--slowdown must be a number above 0 and at most 1000 (1 means as fast as its \
                 weight says), not {}",
                self.slowdown
            );
        }
        let requests = usize::try_from(self.requests).context("--requests is too large")?;
        let mut scenario = Scenario::new(
            Scenario::default_backends(self.slowdown),
            requests,
            self.seed,
        );
        if let Some(rate) = self.rate {
            scenario.rate = rate;
        }
        scenario.keys = keys::KeySpace {
            count: self.key_count,
            distribution: self.keys,
        };
        if !self.algorithms.is_empty() {
            scenario.algorithms = self.algorithms.clone();
        }
        if let Err(e) = scenario.validate() {
            anyhow::bail!("{e}");
        }
        Ok(scenario)
    }
}

/// What the JSON output says was run.
#[derive(Debug, Serialize)]
struct Source<'a> {
    kind: &'static str,
    requests: usize,
    rate: f64,
    capacity: f64,
    utilization: f64,
    seed: u64,
    keys: String,
    key_count: u32,
    backends: Vec<SourceBackend<'a>>,
}

#[derive(Debug, Serialize)]
struct SourceBackend<'a> {
    id: &'a str,
    weight: f64,
    workers: u32,
    mean_service_ms: f64,
    capacity: f64,
}

impl<'a> Source<'a> {
    fn new(s: &'a Scenario, live: bool) -> Source<'a> {
        Source {
            kind: if live { "live" } else { "simulation" },
            requests: s.requests,
            rate: s.rate,
            capacity: s.capacity(),
            utilization: s.utilization(),
            seed: s.seed,
            keys: s.keys.distribution.to_string(),
            key_count: s.keys.count,
            backends: s
                .backends
                .iter()
                .map(|b| SourceBackend {
                    id: &b.id,
                    weight: f64::from(b.weight.thousandths()) / 1000.0,
                    workers: b.workers,
                    mean_service_ms: b.mean_service.as_secs_f64() * 1e3,
                    capacity: b.capacity(),
                })
                .collect(),
        }
    }
}

/// What the scenario is, in a few lines for the top of the text report.
pub fn describe(s: &Scenario, live: bool) -> String {
    let mut out = format!(
        "{} {} requests per algorithm, Poisson arrivals at {:.1} req/s \
         ({:.0}% of the pool's {:.1} req/s), seed {}\n",
        s.requests,
        if live {
            "live (real proxy, real sockets)"
        } else {
            "simulated"
        },
        s.rate,
        s.utilization() * 100.0,
        s.capacity(),
        s.seed
    );
    out.push_str(&format!(
        "  affinity keys: {} distinct, {}{}\n",
        s.keys.count,
        s.keys.distribution,
        if live {
            format!(" (in an {} header)", live::KEY_HEADER)
        } else {
            String::new()
        }
    ));
    let total_weight: f64 = s
        .backends
        .iter()
        .map(|b| f64::from(b.weight.thousandths()))
        .sum();
    let total_capacity = s.capacity();
    for b in &s.backends {
        let w = f64::from(b.weight.thousandths());
        let weight_share = w / total_weight * 100.0;
        let capacity_share = b.capacity() / total_capacity * 100.0;
        out.push_str(&format!(
            "  {:<4} weight {:<5} {} workers, mean service {:>6.1} ms, capacity {:>6.1} req/s \
             ({:>4.1}% of the pool; its weight says {:>4.1}%)\n",
            b.id,
            w / 1000.0,
            b.workers,
            b.mean_service.as_secs_f64() * 1e3,
            b.capacity(),
            capacity_share,
            weight_share,
        ));
    }
    out
}

/// Runs `rondo compare`: simulates, prints the table (or JSON), the conclusion and the chart
/// paths.
pub fn run(args: CompareArgs) -> anyhow::Result<()> {
    let scenario = args.scenario()?;
    let results = if args.live {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(live::run_live(&scenario))?
    } else {
        simulate(&scenario)
    };
    let charts = chart::write_charts(&results, &args.out)?;
    let chart_paths: Vec<String> = charts.iter().map(|p| p.display().to_string()).collect();
    if args.json {
        println!(
            "{}",
            report::json(&Source::new(&scenario, args.live), &results, &chart_paths)?
        );
        return Ok(());
    }
    println!("{}", describe(&scenario, args.live));
    println!("{}", report::table(&results));
    for line in report::keys_moved_lines(&results) {
        println!("{line}");
    }
    println!("{}\n", report::wrap(&report::conclusion(&results), 96));
    println!("charts:");
    for p in &chart_paths {
        println!("  {p}");
    }
    Ok(())
}
