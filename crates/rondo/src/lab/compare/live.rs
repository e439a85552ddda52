//! `rondo compare --live`: the same comparison run for real. For each algorithm, backends
//! with the scenario's service times and worker counts start in-process on loopback, the real
//! proxy starts in front of them, and `rondo bench` sends the scenario's requests open loop at
//! its rate (latency counted from each request's due time, so a queue shows). The results fill
//! the same table and charts as the simulation.
//!
//! Each request carries the scenario's affinity key in an [`KEY_HEADER`] header (the same
//! draw as the simulation's), which the hashing rows hash (`hash_key = "header:x-key"`);
//! the key affinity column is read back from what each backend received, in arrival order.
//! What a failure moves is measured by the simulation only: failing a backend mid-run here
//! would measure the failure, not the algorithm.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::keys::Affinity;
use super::{AlgorithmResult, BackendResult, Contender, LatencySummary, Scenario, SimBackend};
use crate::lab::backend::{Backend, ServiceTime};
use crate::lab::config::{ConfigBuilder, Section, UpstreamBuilder};
use rondo_bench::{self as bench, LoadSpec, ProgressMode};

/// Connections `rondo bench` may open: enough that the client never limits the load (a
/// fixed schedule can pile up hundreds of requests on a slow backend).
const CONNECTIONS: usize = 1024;

/// The header each request's affinity key travels in.
pub const KEY_HEADER: &str = "x-key";

/// A backend serving `workers` requests at once (a fair FIFO queue beyond), each taking an
/// exponential service time of mean `mean_service`.
async fn start_backend(spec: &SimBackend, seed: u64) -> anyhow::Result<Backend> {
    let backend = Backend::builder(&spec.id)
        .workers(spec.workers.max(1) as usize)
        .service_time(ServiceTime::Exponential {
            mean: spec.mean_service,
            seed,
        })
        .start()
        .await?;
    Ok(backend)
}

fn config(scenario: &Scenario, contender: Contender, servers: &[Backend]) -> ConfigBuilder {
    let mut upstream = UpstreamBuilder::new("app").algorithm(contender.algorithm);
    if contender.hashes() {
        upstream = upstream.set("hash_key", format!("header:{KEY_HEADER}"));
    }
    if let Some(f) = contender.balance_factor {
        upstream = upstream.set("hash_balance_factor", f);
    }
    let upstream = scenario.backends.iter().zip(servers).fold(
        upstream
            .set("max_fails", 0)
            .set("keepalive", CONNECTIONS as i64)
            .duration("response_timeout", Duration::from_secs(600))
            .health_check(Section::disabled())
            .circuit_breaker(Section::disabled()),
        |u, (b, server)| u.backend(&b.id, server.addr(), b.weight.as_f64()),
    );
    ConfigBuilder::proxy(upstream)
}

/// Runs every algorithm of `scenario` for real, one after another.
pub async fn run_live(scenario: &Scenario) -> anyhow::Result<Vec<AlgorithmResult>> {
    let keys: Arc<[u32]> = scenario.keys.draw(scenario.requests, scenario.seed).into();
    let mut results = Vec::new();
    for &algorithm in &scenario.algorithms {
        let mut servers = Vec::new();
        for (i, b) in scenario.backends.iter().enumerate() {
            servers.push(start_backend(b, scenario.seed ^ (i as u64 + 1)).await?);
        }
        let config = config(scenario, algorithm, &servers)
            .parse()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let proxy = crate::runtime::start(&config).context("starting the proxy")?;
        let addr = proxy.addr("web").context("the proxy's listener")?;
        let mut spec = LoadSpec::new(format!("http://{addr}/"));
        spec.connections = CONNECTIONS.min(scenario.requests.max(1));
        spec.requests = Some(scenario.requests as u64);
        spec.rate = Some(scenario.rate);
        spec.timeout = Some(Duration::from_secs(600));
        spec.backend_header = Some("x-backend".into());
        spec.keys = Some(bench::RequestKeys {
            header: KEY_HEADER.into(),
            sequence: Arc::clone(&keys),
        });
        spec.progress = ProgressMode::Off;
        let report = bench::generate(&spec).await;
        tokio::task::spawn_blocking(move || proxy.shutdown(Duration::from_secs(1))).await?;
        let report = report?;
        let completed = report.successes;
        let l = &report.latency;
        let backends = scenario
            .backends
            .iter()
            .zip(&servers)
            .map(|(b, s)| {
                let requests = s.hits() as u64;
                BackendResult {
                    id: b.id.clone(),
                    weight: b.weight.as_f64(),
                    requests,
                    share: if completed == 0 {
                        0.0
                    } else {
                        requests as f64 / completed as f64
                    },
                    peak_in_flight: s.peak_in_flight(),
                    mean_latency: s.mean_latency(),
                }
            })
            .collect();
        results.push(AlgorithmResult {
            algorithm,
            requests: scenario.requests as u64,
            completed,
            elapsed: report.elapsed,
            throughput: report.requests_per_sec,
            latency: LatencySummary {
                mean: l.mean,
                p50: l.p50,
                p95: l.p95,
                p99: l.p99,
                max: l.max,
            },
            backends,
            key_affinity: key_affinity(&servers),
            keys_moved: None,
        });
    }
    Ok(results)
}

/// Share of repeated keys that found their previous backend, from what the backends received
/// (merged in arrival order); `None` when no key came twice.
fn key_affinity(servers: &[Backend]) -> Option<f64> {
    let mut arrivals: Vec<(std::time::Instant, u32, usize)> = servers
        .iter()
        .enumerate()
        .flat_map(|(b, s)| {
            s.seen().into_iter().filter_map(move |seen| {
                let key = seen.header(KEY_HEADER)?.parse().ok()?;
                Some((seen.at, key, b))
            })
        })
        .collect();
    arrivals.sort_by_key(|(at, _, _)| *at);
    let mut affinity = Affinity::default();
    for (_, key, b) in arrivals {
        affinity.sent(key, b);
    }
    affinity.share()
}
