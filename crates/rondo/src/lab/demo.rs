//! `rondo demo`: the seed's whole story on real sockets, with no setup.
//!
//! Four backends start in-process on loopback with the seed's weights (1, 2, 3, 1.5), the real
//! balancer starts in front of them from a real configuration, and real traffic shows, step by
//! step: how 20 requests are spread; a backend stopped and the traffic moving around it while
//! the balancer notices; the backend returning; a benchmark of 1,000 requests at 20
//! connections; the algorithms compared; the statistics. It ends by itself in a few seconds.

use std::time::Duration;

use anyhow::Context as _;
use balance::BackendState;

use crate::lab::backend::{Backend, ServiceTime};
use crate::lab::compare;
use crate::lab::config::{ConfigBuilder, Section, UpstreamBuilder};
use crate::runtime::{self, Running};
use rondo_bench::{self as bench, LoadSpec, ProgressMode};

/// `rondo demo` options.
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Run the whole story on loopback: backends, the balancer and real traffic, no setup needed"
)]
pub struct DemoArgs {
    /// Leave the balancer and backends running at the end and print their URLs (Ctrl-C to stop).
    #[arg(long)]
    pub keep_running: bool,
}

/// The seed's four servers: name, weight, and a service time (heavier servers are faster).
const SERVERS: [(&str, f64, u64); 4] = [
    ("server1", 1.0, 4),
    ("server2", 2.0, 2),
    ("server3", 3.0, 1),
    ("server4", 1.5, 3),
];

/// The backend stopped in step 3 (the seed marks server2 unhealthy).
const VICTIM: usize = 1;

fn title(n: u32, text: &str) {
    println!("\n{n}. {text}\n{}", "=".repeat(text.len() + 3));
}

fn demo_config(backends: &[Backend]) -> ConfigBuilder {
    let upstream = backends.iter().zip(SERVERS).fold(
        UpstreamBuilder::new("app")
            .algorithm("smooth-weighted")
            .set("max_fails", 1)
            .duration("fail_timeout", Duration::from_secs(2))
            .health_check(
                Section::new()
                    .duration("interval", Duration::from_millis(500))
                    .duration("timeout", Duration::from_millis(250))
                    .set("fall", 2)
                    .set("rise", 2),
            )
            .circuit_breaker(
                Section::new()
                    .set("failure_threshold", 3)
                    .duration("recovery_timeout", Duration::from_secs(2)),
            ),
        |u, (b, (name, weight, _))| u.backend(name, b.addr(), weight),
    );
    ConfigBuilder::proxy(upstream)
}

/// Sends `n` requests one after another and prints how they were spread.
async fn distribution(url: &str, n: u64) -> anyhow::Result<()> {
    let mut spec = LoadSpec::new(url);
    spec.connections = 1;
    spec.requests = Some(n);
    spec.backend_header = Some("x-backend".into());
    spec.progress = ProgressMode::Off;
    let report = bench::generate(&spec).await?;
    let total_weight: f64 = SERVERS.iter().map(|s| s.1).sum();
    println!(
        "  {:<10} {:>6} {:>9} {:>9}",
        "backend", "weight", "requests", "share"
    );
    for (name, weight, _) in SERVERS {
        let got = report
            .backends
            .iter()
            .find(|b| b.value == name)
            .map_or(0, |b| b.responses);
        let share = got as f64 / n as f64 * 100.0;
        println!(
            "  {name:<10} {weight:>6} {got:>9} {share:>8.1}%   (weight share {:.1}%)",
            weight / total_weight * 100.0
        );
    }
    println!("  {} of {n} succeeded", report.successes);
    Ok(())
}

fn states(running: &Running) -> String {
    let Some(up) = running.upstream("app") else {
        return String::new();
    };
    up.pool()
        .snapshot()
        .backends()
        .iter()
        .map(|b| format!("{}={}", b.id(), b.state().as_str()))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn wait_for(running: &Running, want: BackendState, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        let up = running
            .upstream("app")
            .map(|u| u.pool().snapshot().backends()[VICTIM].state());
        if up == Some(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn statistics(running: &Running) {
    let Some(up) = running.upstream("app") else {
        return;
    };
    let snap = up.pool().snapshot();
    let now = up.clock().now();
    println!(
        "  {:<10} {:>6} {:>8} {:>9} {:>8} {:>9} {:>11} {:>10}",
        "backend", "weight", "state", "requests", "success", "avg (ms)", "breaker", "load score"
    );
    for b in snap.backends() {
        let s = b.stats().snapshot(now);
        println!(
            "  {:<10} {:>6} {:>8} {:>9} {:>7.1}% {:>9.2} {:>11} {:>10.4}",
            b.id(),
            b.weight().to_string(),
            b.state().as_str(),
            s.requests,
            s.success_rate * 100.0,
            s.recent_average.as_secs_f64() * 1000.0,
            b.breaker_state().as_str(),
            s.load_score
        );
    }
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(story(args))
}

async fn story(args: DemoArgs) -> anyhow::Result<()> {
    println!("=== Round Robin Load Balancer Demo: real backends, real proxy, real traffic ===");
    title(1, "Setting up the load balancer");
    let mut backends = Vec::new();
    for (name, _, ms) in SERVERS {
        backends.push(
            Backend::builder(name)
                .service_time(ServiceTime::Fixed(Duration::from_millis(ms)))
                .start()
                .await
                .context("starting a demo backend")?,
        );
    }
    let config = demo_config(&backends)
        .parse()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let running = runtime::start(&config).context("starting the balancer")?;
    let addr = running.addr("web").context("the demo listener")?;
    let url = format!("http://{addr}/");
    for (b, (_, weight, ms)) in backends.iter().zip(SERVERS) {
        println!(
            "  {:<8} at {}  weight {weight:<4} answers in ~{ms} ms",
            b.name(),
            b.addr()
        );
    }
    println!("  balancer at {url}  (smooth weighted round robin, nginx's algorithm)");

    title(2, "Load balancing: 20 requests");
    distribution(&url, 20).await?;

    title(3, "A backend fails");
    backends[VICTIM].kill().await;
    println!(
        "  stopped {} ({}): its port now refuses connections",
        backends[VICTIM].name(),
        backends[VICTIM].addr()
    );
    distribution(&url, 20).await?;
    println!("  no request was lost: the failed attempt was retried on the next backend");
    println!(
        "  right away, real traffic ejected it: {}",
        states(&running)
    );
    if wait_for(&running, BackendState::Down, Duration::from_secs(5)).await {
        println!(
            "  health checks (every 500 ms, fall 2) then marked it down: {}",
            states(&running)
        );
    }

    title(4, "The backend returns");
    let victim = &backends[VICTIM];
    victim
        .restart()
        .await
        .context("restarting the demo backend")?;
    println!("  restarted {} on {}", victim.name(), victim.addr());
    if wait_for(&running, BackendState::Up, Duration::from_secs(10)).await {
        println!(
            "  health checks passed twice (rise 2): back in rotation: {}",
            states(&running)
        );
    } else {
        println!("  not back yet: {}", states(&running));
    }
    distribution(&url, 20).await?;

    title(5, "Performance benchmark: 1,000 requests, 20 connections");
    let mut spec = LoadSpec::new(&url);
    spec.connections = 20;
    spec.requests = Some(1000);
    spec.backend_header = Some("x-backend".into());
    spec.progress = ProgressMode::Off;
    let report = bench::generate(&spec).await?;
    let l = &report.latency;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "  requests     {} ({} succeeded, {:.1}%)",
        report.requests,
        report.successes,
        report.success_rate * 100.0
    );
    println!("  throughput   {:.0} requests/s", report.requests_per_sec);
    println!(
        "  latency      mean {:.2} ms  p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        ms(l.mean),
        ms(l.p50),
        ms(l.p95),
        ms(l.p99),
        ms(l.max)
    );

    title(
        6,
        "Algorithm comparison (simulated, seeded: backends of unequal speed)",
    );
    let scenario = compare::Scenario {
        requests: 5000,
        ..compare::Scenario::default()
    };
    let results = compare::simulate(&scenario);
    println!("{}", compare::report::table(&results));
    println!("{}", compare::report::conclusion(&results));

    title(7, "Detailed statistics");
    statistics(&running);
    let counted: Vec<String> = backends
        .iter()
        .map(|b| format!("{}={}", b.name(), b.hits()))
        .collect();
    println!(
        "  counted by the backends themselves: {} requests ({})",
        backends.iter().map(Backend::hits).sum::<usize>(),
        counted.join(" ")
    );

    if args.keep_running {
        println!("\nStill running. Proxy: {url}");
        println!(
            "Dashboard: http://{}/   (statistics: /api/v1/stats, metrics: /metrics)",
            running.admin_addr()
        );
        println!(
            "Backends: {}",
            backends
                .iter()
                .map(|b| format!("http://{}/", b.addr()))
                .collect::<Vec<_>>()
                .join(" ")
        );
        println!("Press Ctrl-C to stop.");
        tokio::signal::ctrl_c().await?;
    }
    tokio::task::spawn_blocking(move || running.shutdown(Duration::from_secs(2))).await?;
    println!("\nDone.");
    Ok(())
}
