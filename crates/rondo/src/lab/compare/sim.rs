//! The discrete-event simulation behind `rondo compare`.
//!
//! Time is virtual: a [`Timestamp`] in nanoseconds that jumps from one event to the next, so
//! ten thousand requests take milliseconds of real time and the same seed always gives the
//! same numbers. There are two kinds of event, an arrival and a completion; at equal times
//! completions come first, so a request that ends exactly when another arrives is no longer
//! counted in flight.
//!
//! Each arrival asks the real [`balance::Pool`] for a backend (`pool.pick(now, |_| true)`)
//! and keeps the [`balance::Lease`] until its response completes, then finishes it with its
//! latency at the completion time: `least-connections` sees the true number of requests in
//! flight (queued ones included, as a proxy does) and `p2c` sees the true latencies.
//!
//! A backend has `workers` identical servers and one FIFO queue in front of them. A request
//! starts on the first worker to become free, no earlier than its arrival, so its start time
//! is known the moment it is dispatched: `start = max(arrival, earliest free worker)`. That
//! is exact for a first-come-first-served multi-server queue and needs no per-worker events.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::time::Duration;

use balance::{BackendSpec, Outcome, Pool, PoolConfig, Timestamp, Weight};
use rand::SeedableRng;
use rand_distr::{Distribution, Exp1};
use rand_pcg::Pcg64;

use super::contender::Contender;
use super::keys::{self, KeySpace};
use super::report::{AlgorithmResult, Tally};

/// Requests per algorithm unless told otherwise: enough for a stable p99 (100 samples beyond
/// it) and still well under a second of real time for all six algorithms.
pub const DEFAULT_REQUESTS: usize = 10_000;

/// Share of the pool's total capacity the default arrival rate uses.
///
/// At low load every algorithm looks the same, because no request ever waits: latency is
/// just service time. Near 100 % every queue explodes whatever the algorithm. 80 % is where
/// the choice of backend matters: an algorithm that matches each backend's real capacity keeps
/// every queue stable (each backend at about 80 %, with headroom for the bursts a Poisson
/// process makes), while one that sends a backend more than it can serve builds a queue there
/// that only grows. It is also the usual capacity-planning ceiling for a service.
pub const DEFAULT_UTILIZATION: f64 = 0.8;

/// Mean service time of a weight-1 backend: the seed's simulated servers answer in 100 ms
/// when they have no history (`base_response_time = 100`).
pub const BASE_SERVICE: Duration = Duration::from_millis(100);

/// Requests each default backend serves at once (its worker pool); more wait in its FIFO
/// queue. Small enough that queueing shows, large enough to be a server rather than a
/// single-threaded loop.
pub const DEFAULT_WORKERS: u32 = 4;

/// Which default backend is slower than its weight says: `b1`, weight 1.5.
pub const SLOW_BACKEND: usize = 1;

/// How much slower than its weight says [`SLOW_BACKEND`] is by default. A backend whose
/// configured weight no longer matches its speed (a noisy neighbour, a bad deploy, a
/// garbage-collection storm) is the everyday case the seed's "not adaptive to real-time
/// conditions" is about: 2× makes it plain without taking the backend out altogether.
pub const DEFAULT_SLOWDOWN: f64 = 2.0;

/// Seed of the default scenario.
pub const DEFAULT_SEED: u64 = 42;

/// One simulated backend.
#[derive(Debug, Clone, PartialEq)]
pub struct SimBackend {
    /// Its id in the pool and in the report.
    pub id: String,
    /// The weight the balancer is configured with.
    pub weight: Weight,
    /// Requests it serves at once; the rest wait in its FIFO queue.
    pub workers: u32,
    /// Mean of its (exponential) service time.
    pub mean_service: Duration,
}

impl SimBackend {
    /// Requests per second it completes when every worker is busy: `workers / mean_service`.
    pub fn capacity(&self) -> f64 {
        let secs = self.mean_service.as_secs_f64();
        if secs > 0.0 {
            f64::from(self.workers) / secs
        } else {
            f64::INFINITY
        }
    }
}

/// What to simulate: the backends, the traffic and which algorithms to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Requests per algorithm.
    pub requests: usize,
    /// Mean arrival rate, requests per second of virtual time (a Poisson process).
    pub rate: f64,
    /// The pool.
    pub backends: Vec<SimBackend>,
    /// The algorithms to compare, in report order.
    pub algorithms: Vec<Contender>,
    /// Seed of the arrival times and service-time draws (and of the pool's own generator,
    /// used by `random` and `p2c`).
    pub seed: u64,
    /// The requests' affinity keys (what `consistent-hash` hashes).
    pub keys: KeySpace,
}

impl Default for Scenario {
    /// The default scenario: [`Scenario::default_backends`] with [`DEFAULT_SLOWDOWN`],
    /// [`DEFAULT_REQUESTS`] requests at [`DEFAULT_UTILIZATION`] of capacity, every algorithm,
    /// seed [`DEFAULT_SEED`].
    fn default() -> Scenario {
        Scenario::new(
            Scenario::default_backends(DEFAULT_SLOWDOWN),
            DEFAULT_REQUESTS,
            DEFAULT_SEED,
        )
    }
}

impl Scenario {
    /// A scenario over `backends` whose rate is [`DEFAULT_UTILIZATION`] of their total
    /// capacity, running every algorithm.
    pub fn new(backends: Vec<SimBackend>, requests: usize, seed: u64) -> Scenario {
        let mut s = Scenario {
            requests,
            rate: 0.0,
            backends,
            algorithms: Contender::all(),
            seed,
            keys: KeySpace::default(),
        };
        s.rate = DEFAULT_UTILIZATION * s.capacity();
        s
    }

    /// The seed's four servers (`weight = 1.0 + i * 0.5`: 1, 1.5, 2, 2.5), each with
    /// [`DEFAULT_WORKERS`] workers and a mean service time of [`BASE_SERVICE`] divided by its
    /// weight, so each one's capacity is in proportion to its weight, as an operator would
    /// configure it; except [`SLOW_BACKEND`], whose service time is `slowdown` times longer
    /// than its weight says.
    ///
    /// With slowdown 2 the capacities are 40, 30, 80 and 100 requests per second (250 in
    /// all) where the weights promise 2 : 3 : 4 : 5.
    pub fn default_backends(slowdown: f64) -> Vec<SimBackend> {
        (0..4u32)
            .map(|i| {
                let weight = Weight::from_thousandths(1000 + 500 * i).unwrap_or(Weight::ONE);
                let w = f64::from(weight.thousandths()) / 1000.0;
                let mut secs = BASE_SERVICE.as_secs_f64() / w;
                if i as usize == SLOW_BACKEND {
                    secs *= slowdown;
                }
                SimBackend {
                    id: format!("b{i}"),
                    weight,
                    workers: DEFAULT_WORKERS,
                    mean_service: Duration::try_from_secs_f64(secs).unwrap_or(BASE_SERVICE),
                }
            })
            .collect()
    }

    /// Total capacity of the pool, requests per second.
    pub fn capacity(&self) -> f64 {
        self.backends.iter().map(SimBackend::capacity).sum()
    }

    /// The arrival rate as a share of capacity.
    pub fn utilization(&self) -> f64 {
        self.rate / self.capacity()
    }

    /// Checks what [`simulate`] needs: at least one request, algorithm and backend, a
    /// positive finite rate, distinct backend ids, workers and service times above zero.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        if self.requests == 0 {
            return Err(ScenarioError("the request count must be at least 1".into()));
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(ScenarioError(format!(
                "the arrival rate must be a positive number of requests per second, not {}",
                self.rate
            )));
        }
        if self.backends.is_empty() {
            return Err(ScenarioError("the pool needs at least one backend".into()));
        }
        if self.algorithms.is_empty() {
            return Err(ScenarioError("name at least one algorithm".into()));
        }
        for (i, b) in self.backends.iter().enumerate() {
            if b.workers == 0 || b.mean_service.is_zero() {
                return Err(ScenarioError(format!(
                    "backend {} needs at least one worker and a service time above zero",
                    b.id
                )));
            }
            if self.backends[..i].iter().any(|o| o.id == b.id) {
                return Err(ScenarioError(format!("backend id {} appears twice", b.id)));
            }
        }
        Ok(())
    }
}

/// Why a scenario cannot be simulated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError(String);

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScenarioError {}

/// The traffic every algorithm sees (common random numbers): arrival times and each request's
/// size, a unit-mean exponential draw that a backend turns into a service time by multiplying
/// it by its own mean. Request `k` is just as big whichever algorithm sends it wherever, so
/// differences between algorithms are differences between algorithms, not luck.
#[derive(Debug, Clone)]
struct Workload {
    /// Arrival times, nanoseconds, non-decreasing.
    arrivals: Vec<u64>,
    /// Unit-mean exponential sizes.
    sizes: Vec<f64>,
    /// Each request's affinity key.
    keys: Vec<u32>,
}

impl Workload {
    fn draw(requests: usize, rate: f64, seed: u64, keys: &KeySpace) -> Workload {
        // Two independent streams, so changing the rate does not change the sizes.
        let mut arrival_rng = Pcg64::seed_from_u64(seed);
        let mut size_rng = Pcg64::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
        let mean_gap = 1e9 / rate;
        let mut t = 0.0f64;
        let mut arrivals = Vec::with_capacity(requests);
        let mut sizes = Vec::with_capacity(requests);
        for _ in 0..requests {
            let gap: f64 = Exp1.sample(&mut arrival_rng);
            t += gap * mean_gap;
            arrivals.push(nanos(t));
            sizes.push(Exp1.sample(&mut size_rng));
        }
        Workload {
            arrivals,
            sizes,
            keys: keys.draw(requests, seed),
        }
    }
}

/// Nanoseconds as a whole number, saturating (negative and NaN become zero).
fn nanos(v: f64) -> u64 {
    // `as` saturates at the bounds and maps NaN to 0: exactly what is wanted.
    v.round() as u64
}

/// Runs `scenario` once per algorithm over the same traffic and returns one result per
/// algorithm, in the scenario's order.
///
/// Never panics: a scenario that [`Scenario::validate`] would reject gives results whose
/// requests went unserved (`completed < requests`) rather than an error.
///
/// ```
/// use rondo::lab::compare::{Scenario, simulate};
///
/// let scenario = Scenario { requests: 1_000, ..Scenario::default() };
/// for r in simulate(&scenario) {
///     println!("{:<18} p99 {:>8.1} ms", r.algorithm, r.latency.p99.as_secs_f64() * 1e3);
/// }
/// ```
pub fn simulate(scenario: &Scenario) -> Vec<AlgorithmResult> {
    let rate = if scenario.rate.is_finite() && scenario.rate > 0.0 {
        scenario.rate
    } else {
        0.0
    };
    let workload = if rate > 0.0 {
        Workload::draw(scenario.requests, rate, scenario.seed, &scenario.keys)
    } else {
        Workload {
            arrivals: Vec::new(),
            sizes: Vec::new(),
            keys: Vec::new(),
        }
    };
    scenario
        .algorithms
        .iter()
        .map(|&contender| run_one(scenario, &workload, contender))
        .collect()
}

/// Simulates one algorithm.
fn run_one(scenario: &Scenario, workload: &Workload, contender: Contender) -> AlgorithmResult {
    let mut tally = Tally::new(
        contender,
        scenario
            .backends
            .iter()
            .map(|b| (b.id.clone(), f64::from(b.weight.thousandths()) / 1000.0)),
    );
    let specs: Vec<BackendSpec> = scenario
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            // The address only identifies the backend; nothing connects to it.
            let port = 9001u16.saturating_add(u16::try_from(i).unwrap_or(u16::MAX - 9001));
            BackendSpec::new(([127, 0, 0, 1], port).into())
                .id(b.id.clone())
                .weight(b.weight)
        })
        .collect();
    let config = PoolConfig {
        algorithm: contender.algorithm,
        hash_balance_factor: contender.balance_factor,
        // Nothing fails in this model: no breaker, no ejection, so the comparison is the
        // algorithms' alone.
        breaker: None,
        ejection: None,
        seed: scenario.seed,
        ..PoolConfig::default()
    };
    let Ok(pool) = Pool::new(config, &specs, Timestamp::ZERO) else {
        for _ in &workload.arrivals {
            tally.unserved();
        }
        return tally.finish(Duration::ZERO);
    };
    // Mean service time of each backend, nanoseconds.
    let mean: Vec<f64> = scenario
        .backends
        .iter()
        .map(|b| b.mean_service.as_secs_f64() * 1e9)
        .collect();
    // When each worker of each backend is next free (min-heaps).
    let mut free: Vec<BinaryHeap<Reverse<u64>>> = scenario
        .backends
        .iter()
        .map(|b| (0..b.workers.max(1)).map(|_| Reverse(0)).collect())
        .collect();
    // Requests in flight: (completion, request) in a min-heap, and their leases by request.
    let mut pending: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut leases = Vec::with_capacity(workload.arrivals.len());
    let mut last = 0u64;
    let hashing = contender.hashes();
    let mut sent = vec![0u64; scenario.backends.len()];

    for (k, ((&arrival, &size), &key)) in workload
        .arrivals
        .iter()
        .zip(&workload.sizes)
        .zip(&workload.keys)
        .enumerate()
    {
        while let Some(&Reverse((done, id))) = pending.peek() {
            if done > arrival {
                break;
            }
            pending.pop();
            complete(&mut leases, &mut tally, id, done, workload);
        }
        let now = Timestamp::from_nanos(arrival);
        let picked = if hashing {
            pool.pick_keyed(now, keys::hash(key), |_| true)
        } else {
            pool.pick(now, |_| true)
        };
        let Some(lease) = picked else {
            tally.unserved();
            leases.push(None);
            continue;
        };
        let Some(b) = scenario
            .backends
            .iter()
            .position(|s| s.id == lease.backend().id())
        else {
            // A backend the scenario does not know cannot happen; count it as unserved.
            tally.unserved();
            leases.push(None);
            continue;
        };
        tally.sent(b, lease.backend().in_flight());
        tally.key(key, b);
        sent[b] += 1;
        let worker_free = free[b].pop().map_or(0, |Reverse(t)| t);
        let start = arrival.max(worker_free);
        let end = start.saturating_add(nanos(size * mean[b]));
        free[b].push(Reverse(end));
        pending.push(Reverse((end, k)));
        leases.push(Some((lease, b)));
        last = last.max(end);
    }
    while let Some(Reverse((done, id))) = pending.pop() {
        complete(&mut leases, &mut tally, id, done, workload);
    }
    drop(leases);
    // The failure that hurts most: the backend that took the most requests.
    let busiest = (0..sent.len()).max_by_key(|&b| sent[b]);
    if let (true, Some(b)) = (hashing, busiest) {
        let failed = &scenario.backends[b].id;
        let now = Timestamp::from_nanos(last);
        tally.keys_moved(keys::moved_when_failing(
            &pool,
            scenario.keys.count,
            failed,
            now,
        ));
    }
    tally.finish(Duration::from_nanos(last))
}

/// Ends request `id` at `done`: its latency is from arrival to completion.
fn complete(
    leases: &mut [Option<(balance::Lease<'_>, usize)>],
    tally: &mut Tally,
    id: usize,
    done: u64,
    workload: &Workload,
) {
    let Some((lease, b)) = leases.get_mut(id).and_then(Option::take) else {
        return;
    };
    let latency = Duration::from_nanos(done.saturating_sub(workload.arrivals[id]));
    lease.finish(Outcome::Success, latency, Timestamp::from_nanos(done));
    tally.completed(b, latency);
}

#[cfg(test)]
mod tests {
    use super::*;
    use balance::Algorithm;

    fn one_backend(workers: u32, service_ms: u64) -> Scenario {
        let b = SimBackend {
            id: "only".into(),
            weight: Weight::ONE,
            workers,
            mean_service: Duration::from_millis(service_ms),
        };
        Scenario::new(vec![b], 20_000, 7)
    }

    #[test]
    fn default_backends_have_capacity_in_proportion_to_weight_except_the_slow_one() {
        let caps: Vec<f64> = Scenario::default_backends(2.0)
            .iter()
            .map(SimBackend::capacity)
            .collect();
        let expected = [40.0, 30.0, 80.0, 100.0];
        for (c, e) in caps.iter().zip(expected) {
            assert!((c - e).abs() < 1e-6, "{caps:?}");
        }
        let s = Scenario::default();
        assert!((s.rate - 200.0).abs() < 1e-6 && (s.utilization() - 0.8).abs() < 1e-9);
    }

    #[test]
    fn a_single_server_queue_matches_queueing_theory() {
        // M/M/1 at 80 %: mean time in system is 1 / (mu - lambda) = 1 / (10 - 8) s = 500 ms.
        let s = one_backend(1, 100);
        let r = &simulate(&Scenario {
            algorithms: vec![Algorithm::RoundRobin.into()],
            ..s
        })[0];
        let mean = r.latency.mean.as_secs_f64();
        assert!((mean - 0.5).abs() < 0.1, "mean {mean}");
        assert_eq!(r.completed, 20_000);
    }

    #[test]
    fn a_lightly_loaded_multi_server_queue_hardly_waits() {
        // 8 workers at 10 % load: latency is the service time itself (mean 100 ms).
        let mut s = one_backend(8, 100);
        s.rate = 8.0;
        s.requests = 5_000;
        s.algorithms = vec![Algorithm::RoundRobin.into()];
        let mean = simulate(&s)[0].latency.mean.as_secs_f64();
        assert!((mean - 0.1).abs() < 0.01, "mean {mean}");
    }

    #[test]
    fn the_same_seed_gives_the_same_results_and_another_seed_does_not() {
        let s = Scenario {
            requests: 2_000,
            ..Scenario::default()
        };
        assert_eq!(simulate(&s), simulate(&s));
        let other = Scenario {
            seed: 43,
            ..s.clone()
        };
        assert_ne!(simulate(&s)[0].latency, simulate(&other)[0].latency);
    }

    #[test]
    fn every_algorithm_sees_the_same_traffic() {
        let w1 = Workload::draw(100, 50.0, 3, &KeySpace::default());
        let w2 = Workload::draw(100, 100.0, 3, &KeySpace::default());
        assert_eq!(w1.sizes, w2.sizes, "sizes do not depend on the rate");
        assert!(w1.arrivals.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn consistent_hash_keeps_every_returning_key_and_a_failure_moves_only_its_keys() {
        let mut scenario = Scenario {
            requests: 5_000,
            algorithms: vec![
                Algorithm::RoundRobin.into(),
                Algorithm::ConsistentHash.into(),
            ],
            ..Scenario::default()
        };
        scenario.keys = KeySpace {
            count: 1_000,
            distribution: keys::KeyDistribution::Zipf(1.0),
        };
        let results = simulate(&scenario);
        let (rr, hash) = (&results[0], &results[1]);
        assert_eq!(hash.key_affinity, Some(1.0));
        let rr_kept = rr.key_affinity.unwrap();
        assert!(rr_kept < 0.5, "round robin is not sticky: {rr_kept}");
        assert!(rr.keys_moved.is_none());
        let moved = hash.keys_moved.as_ref().unwrap();
        assert_eq!(moved.moved_needlessly, 0);
        assert_eq!(moved.moved, moved.were_on_failed);
        // The busiest backend fails, and it held a real part of the keys.
        assert!(moved.moved > 0.1 && moved.moved < 0.6, "{moved:?}");
        let busiest = hash.backends.iter().max_by_key(|b| b.requests).unwrap();
        assert_eq!(moved.failed, busiest.id);
    }

    #[test]
    fn invalid_scenarios_are_rejected_and_do_not_panic() {
        let s = Scenario {
            rate: f64::NAN,
            ..Scenario::default()
        };
        assert!(s.validate().is_err());
        assert!(simulate(&s).iter().all(|r| r.completed == 0));
        let mut dup = Scenario::default();
        dup.backends[1].id = "b0".into();
        assert!(dup.validate().unwrap_err().to_string().contains("twice"));
        dup.requests = 10;
        assert!(simulate(&dup).iter().all(|r| r.completed == 0));
        let mut empty = Scenario::default();
        empty.backends.clear();
        assert!(empty.validate().is_err());
        empty.requests = 10;
        empty.rate = 1.0;
        assert!(simulate(&empty).iter().all(|r| r.completed == 0));
    }
}
