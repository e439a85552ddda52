//! `rondo compare --live`: the same comparison run for real. For each algorithm, backends
//! with the scenario's service times and worker counts start in-process on loopback, the real
//! proxy starts in front of them, and `rondo bench` sends the scenario's requests open loop at
//! its rate (latency counted from each request's due time, so a queue shows). The results fill
//! the same table and charts as the simulation.

use std::time::Duration;

use anyhow::Context as _;

use super::{AlgorithmResult, BackendResult, LatencySummary, Scenario, SimBackend};
use crate::lab::backend::{Backend, ServiceTime};
use crate::lab::config::{ConfigBuilder, Section, UpstreamBuilder};
use rondo_bench::{self as bench, LoadSpec, ProgressMode};

/// Connections `rondo bench` may open: enough that the client never limits the load (a
/// fixed schedule can pile up hundreds of requests on a slow backend).
const CONNECTIONS: usize = 1024;

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

fn config(
    scenario: &Scenario,
    algorithm: balance::Algorithm,
    servers: &[Backend],
) -> ConfigBuilder {
    let upstream = scenario.backends.iter().zip(servers).fold(
        UpstreamBuilder::new("app")
            .algorithm(algorithm)
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
            // The live run sends no affinity keys: `--live` compares spreading, not hashing.
            key_affinity: None,
            keys_moved: None,
        });
    }
    Ok(results)
}
