//! `rondo compare --live`: the same comparison run for real. For each algorithm, backends
//! with the scenario's service times and worker counts start in-process on loopback, the real
//! proxy starts in front of them, and `rondo bench` sends the scenario's requests open loop at
//! its rate (latency counted from each request's due time, so a queue shows). The results fill
//! the same table and charts as the simulation.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use rand::SeedableRng;
use rand_distr::{Distribution, Exp1};
use rand_pcg::Pcg64;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::{AlgorithmResult, BackendResult, LatencySummary, Scenario, SimBackend};
use crate::lab::local_http::LocalServer;
use rondo_bench::{self as bench, LoadSpec, ProgressMode};

/// Connections `rondo bench` may open: enough that the client never limits the load (a
/// fixed schedule can pile up hundreds of requests on a slow backend).
const CONNECTIONS: usize = 1024;

/// What one live backend saw.
#[derive(Debug, Default)]
struct Seen {
    requests: AtomicU64,
    in_flight: AtomicU32,
    peak: AtomicU32,
    total_micros: AtomicU64,
}

/// A backend serving `workers` requests at once (a fair FIFO queue beyond), each taking an
/// exponential service time of mean `mean_service`.
async fn start_backend(
    spec: &SimBackend,
    seed: u64,
) -> anyhow::Result<(SocketAddr, Arc<Seen>, LocalServer)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let seen = Arc::new(Seen::default());
    let workers = Arc::new(Semaphore::new(spec.workers.max(1) as usize));
    let rng = Arc::new(parking_lot::Mutex::new(Pcg64::seed_from_u64(seed)));
    let (id, mean) = (Arc::<str>::from(spec.id.as_str()), spec.mean_service);
    let handler_seen = Arc::clone(&seen);
    let server = LocalServer::start(listener, move |_req| {
        let (id, seen, workers, rng) = (
            Arc::clone(&id),
            Arc::clone(&handler_seen),
            Arc::clone(&workers),
            Arc::clone(&rng),
        );
        async move {
            let arrived = tokio::time::Instant::now();
            let now = seen.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
            seen.peak.fetch_max(now, Ordering::Relaxed);
            let permit = workers.acquire().await;
            let draw: f64 = Exp1.sample(&mut *rng.lock());
            tokio::time::sleep(mean.mul_f64(draw)).await;
            drop(permit);
            seen.in_flight.fetch_sub(1, Ordering::Relaxed);
            seen.requests.fetch_add(1, Ordering::Relaxed);
            let micros = u64::try_from(arrived.elapsed().as_micros()).unwrap_or(u64::MAX);
            seen.total_micros.fetch_add(micros, Ordering::Relaxed);
            Response::builder()
                .header("x-backend", &*id)
                .body(Full::new(Bytes::from_static(b"ok")))
                .unwrap_or_default()
        }
    });
    Ok((addr, seen, server))
}

fn config_text(scenario: &Scenario, algorithm: balance::Algorithm, addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = scenario
        .backends
        .iter()
        .zip(addrs)
        .map(|(b, a)| {
            format!(
                "  {{ id = \"{}\", address = \"{a}\", weight = {} }},",
                b.id, b.weight
            )
        })
        .collect();
    format!(
        "workers = 2\naccess_log = false\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\
         [[upstreams]]\nname = \"app\"\nalgorithm = \"{algorithm}\"\nmax_fails = 0\nkeepalive = {CONNECTIONS}\n\
         response_timeout = \"10m\"\nbackends = [\n{}\n]\n\
         [upstreams.health_check]\nenabled = false\n[upstreams.circuit_breaker]\nenabled = false\n",
        list.join("\n")
    )
}

/// Runs every algorithm of `scenario` for real, one after another.
pub async fn run_live(scenario: &Scenario) -> anyhow::Result<Vec<AlgorithmResult>> {
    let mut results = Vec::new();
    for &algorithm in &scenario.algorithms {
        let mut addrs = Vec::new();
        let mut seen = Vec::new();
        let mut servers = Vec::new();
        for (i, b) in scenario.backends.iter().enumerate() {
            let (addr, s, server) = start_backend(b, scenario.seed ^ (i as u64 + 1)).await?;
            addrs.push(addr);
            seen.push(s);
            servers.push(server);
        }
        let text = config_text(scenario, algorithm, &addrs);
        let config =
            crate::config::parse(&text, "compare-live.toml").map_err(|e| anyhow::anyhow!("{e}"))?;
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
        drop(servers);
        let report = report?;
        let completed = report.successes;
        let l = &report.latency;
        let backends = scenario
            .backends
            .iter()
            .zip(&seen)
            .map(|(b, s)| {
                let requests = s.requests.load(Ordering::Relaxed);
                BackendResult {
                    id: b.id.clone(),
                    weight: b.weight.as_f64(),
                    requests,
                    share: if completed == 0 {
                        0.0
                    } else {
                        requests as f64 / completed as f64
                    },
                    peak_in_flight: s.peak.load(Ordering::Relaxed),
                    mean_latency: Duration::from_micros(
                        s.total_micros.load(Ordering::Relaxed) / requests.max(1),
                    ),
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
        });
    }
    Ok(results)
}
