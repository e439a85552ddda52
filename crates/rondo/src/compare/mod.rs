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
pub mod report;
pub mod sim;

pub use report::{AlgorithmResult, BackendResult, LatencySummary, Tally};
pub use sim::{
    BASE_SERVICE, DEFAULT_REQUESTS, DEFAULT_SEED, DEFAULT_SLOWDOWN, DEFAULT_UTILIZATION,
    DEFAULT_WORKERS, SLOW_BACKEND, Scenario, ScenarioError, SimBackend, simulate,
};
