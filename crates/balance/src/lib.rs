//! # balance
//!
//! Backend selection for load balancers, with no I/O: the round-robin family (plain,
//! classic weighted, nginx's smooth weighted), weighted random, least connections, power of
//! two choices and consistent hashing (weighted Maglev with bounded loads, [`maglev`]), plus
//! what keeps sick backends out of rotation: health hysteresis,
//! per-backend circuit breakers, passive ejection, drain, backups, panic mode and slow start.
//!
//! It knows nothing of sockets, async runtimes or clocks: time is a [`Timestamp`] the caller
//! passes in, so every state machine is exact and instant to test. The program `rondo` puts
//! it behind a real HTTP proxy.
//!
//! ## Design
//!
//! - A [`Pool`] publishes one immutable [`Snapshot`] (members, availability, effective
//!   weights, picker) through an `ArcSwap`; a pick is one `load`, one atomic `fetch_add` on
//!   a cursor shared by every thread, and one table lookup. No lock, no allocation.
//! - Availability changes that are rare (health, breaker open, ejection, drain, weights,
//!   membership) rebuild the snapshot; transient refusals (connection limit, a half-open
//!   breaker's probe slots, a retry's already-tried backends) are skipped by moving on in the
//!   same order, so the others keep exact proportions.
//! - Over every full cycle each backend in rotation receives exactly its weight's share, and
//!   `smooth-weighted` replays nginx's sequence element by element.
//!
//! ## Example
//!
//! ```
//! use balance::{Algorithm, BackendSpec, Outcome, Pool, PoolConfig, Timestamp, Weight};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let specs = [
//!     BackendSpec::new("127.0.0.1:9001".parse()?).weight(Weight::new(1.0)?),
//!     BackendSpec::new("127.0.0.1:9002".parse()?).weight(Weight::new(1.5)?),
//! ];
//! let config = PoolConfig { algorithm: Algorithm::SmoothWeighted, ..PoolConfig::default() };
//! let pool = Pool::new(config, &specs, Timestamp::ZERO)?;
//!
//! // Five picks: weights 1 : 1.5 are 2 : 3.
//! let mut picked = Vec::new();
//! for _ in 0..5 {
//!     let lease = pool.pick(Timestamp::ZERO, |_| true).ok_or("no backend")?;
//!     picked.push(lease.backend().address().port());
//!     lease.finish(Outcome::Success, Duration::from_millis(3), Timestamp::ZERO);
//! }
//! assert_eq!(picked, [9002, 9001, 9002, 9001, 9002]);
//! # Ok(())
//! # }
//! ```
//!
//! `examples/go_style.rs` shows the seed's Go-style round robin made idiomatic.

#![forbid(unsafe_code)]

mod alias;
mod backend;
mod breaker;
mod ejection;
mod error;
mod fastmod;
mod health;
pub mod maglev;
mod picker;
mod pool;
mod rng;
pub mod schedule;
mod slow_start;
mod stats;
mod time;
mod weight;

pub use backend::{Backend, BackendSpec, BackendState};
pub use breaker::{Admission, BreakerConfig, BreakerState, CircuitBreaker};
pub use ejection::{Ejection, EjectionConfig};
pub use error::{PoolError, UnknownAlgorithm};
pub use health::{Downtime, Health, HealthConfig, HealthTracker};
pub use picker::{
    Algorithm, AnyPicker, ConsistentHash, Cycle, LEAST_CONNECTIONS_WINDOW, LeastConnections,
    MIN_SKIPS, PickContext, PickState, Picker, PowerOfTwo, WeightedRandom,
};
pub use pool::{
    Deferred, Event, IgnoreEvents, Lease, Mode, Observer, Outcome, Pool, PoolConfig, Snapshot,
    StartPosition,
};
pub use slow_start::{STEPS as SLOW_START_STEPS, SlowStartConfig};
pub use stats::{DEFAULT_RTT, PEAK_EWMA_DECAY, Stats, StatsSnapshot, WINDOW};
pub use time::Timestamp;
pub use weight::{MAX_WEIGHT, Weight, WeightError};
