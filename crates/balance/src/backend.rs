//! A backend: what it is (identity, address, weight) and what it is going through (health,
//! breaker, ejection, drain, load), shared between the request path, health checks and
//! reporting.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::breaker::{BreakerState, CircuitBreaker};
use crate::ejection::Ejection;
use crate::health::{Downtime, Health, HealthTracker};
use crate::stats::Stats;
use crate::time::Timestamp;
use crate::weight::Weight;

/// How a backend is configured: the part that comes from a config file or the admin API.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSpec {
    /// Unique within its pool; defaults to the address in the program's config.
    pub id: String,
    /// Where requests go.
    pub address: SocketAddr,
    /// Relative share of traffic.
    pub weight: Weight,
    /// Receives traffic only when no primary backend is available.
    pub backup: bool,
    /// Most requests in flight at once; `None` for no limit.
    pub max_connections: Option<NonZeroU32>,
}

impl BackendSpec {
    /// A primary backend of weight 1 with no connection limit, its id the address.
    pub fn new(address: SocketAddr) -> BackendSpec {
        BackendSpec {
            id: address.to_string(),
            address,
            weight: Weight::ONE,
            backup: false,
            max_connections: None,
        }
    }

    /// The same backend with another weight.
    pub fn weight(mut self, weight: Weight) -> BackendSpec {
        self.weight = weight;
        self
    }

    /// The same backend as a backup.
    pub fn backup(mut self) -> BackendSpec {
        self.backup = true;
        self
    }

    /// The same backend with a connection limit.
    pub fn max_connections(mut self, limit: NonZeroU32) -> BackendSpec {
        self.max_connections = Some(limit);
        self
    }

    /// The same backend with another id.
    pub fn id(mut self, id: impl Into<String>) -> BackendSpec {
        self.id = id.into();
        self
    }
}

/// Why a backend is (or is not) in rotation, for reporting. The first reason that applies, in
/// this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendState {
    /// Draining: no new requests, in-flight ones finish.
    Draining,
    /// Health checks say down.
    Down,
    /// Its circuit breaker is open.
    BreakerOpen,
    /// Passively ejected after failing real requests.
    Ejected,
    /// Available.
    Up,
}

impl BackendState {
    /// Lower-case name for statistics.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Draining => "draining",
            BackendState::Down => "down",
            BackendState::BreakerOpen => "breaker_open",
            BackendState::Ejected => "ejected",
            BackendState::Up => "up",
        }
    }
}

/// A live backend. Every field that changes at run time is an atomic, so readers never lock.
#[derive(Debug)]
pub struct Backend {
    id: String,
    address: SocketAddr,
    weight: AtomicU32,
    backup: AtomicBool,
    /// 0 means no limit.
    max_connections: AtomicU32,
    draining: AtomicBool,
    /// When it last came back into rotation, for slow start: nanoseconds + 1, so that a ramp
    /// starting at the origin is exact; 0: not ramping.
    ramp_since: AtomicU64,
    pub(crate) health: HealthTracker,
    /// Time spent down by health checks, for reporting.
    pub(crate) downtime: Downtime,
    pub(crate) breaker: CircuitBreaker,
    /// An active check failed while the breaker was open: the next passing check is evidence
    /// the backend came back (see `Pool::record_check`).
    pub(crate) check_failed_while_open: AtomicBool,
    pub(crate) ejection: Ejection,
    pub(crate) stats: Stats,
}

impl Backend {
    /// A fresh backend: healthy, breaker closed, no history.
    pub fn new(spec: &BackendSpec) -> Backend {
        Backend {
            id: spec.id.clone(),
            address: spec.address,
            weight: AtomicU32::new(spec.weight.thousandths()),
            backup: AtomicBool::new(spec.backup),
            max_connections: AtomicU32::new(spec.max_connections.map_or(0, NonZeroU32::get)),
            draining: AtomicBool::new(false),
            ramp_since: AtomicU64::new(0),
            health: HealthTracker::default(),
            downtime: Downtime::default(),
            breaker: CircuitBreaker::new(),
            check_failed_while_open: AtomicBool::new(false),
            ejection: Ejection::default(),
            stats: Stats::default(),
        }
    }

    /// Applies the configurable parts of `spec` (weight, backup, limit), keeping all state.
    pub(crate) fn reconfigure(&self, spec: &BackendSpec) {
        self.weight
            .store(spec.weight.thousandths(), Ordering::Release);
        self.backup.store(spec.backup, Ordering::Release);
        self.max_connections.store(
            spec.max_connections.map_or(0, NonZeroU32::get),
            Ordering::Release,
        );
    }

    /// Its id, unique within the pool.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its configured weight.
    pub fn weight(&self) -> Weight {
        Weight::from_thousandths(self.weight.load(Ordering::Acquire)).unwrap_or(Weight::ONE)
    }

    pub(crate) fn set_weight(&self, weight: Weight) {
        self.weight.store(weight.thousandths(), Ordering::Release);
    }

    /// Whether it is a backup.
    pub fn is_backup(&self) -> bool {
        self.backup.load(Ordering::Acquire)
    }

    /// Its connection limit, if any.
    pub fn max_connections(&self) -> Option<NonZeroU32> {
        NonZeroU32::new(self.max_connections.load(Ordering::Relaxed))
    }

    /// Whether it is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Sets draining; returns true if that changed anything.
    pub(crate) fn set_draining(&self, draining: bool) -> bool {
        self.draining.swap(draining, Ordering::AcqRel) != draining
    }

    /// Health as active checks see it.
    pub fn health(&self) -> Health {
        self.health.health()
    }

    /// Time it has spent down by its health checks up to `now`, since it joined the pool.
    pub fn downtime(&self, now: Timestamp) -> Duration {
        self.downtime.at(now)
    }

    /// Circuit breaker state.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// The circuit breaker itself, for reporting (consecutive failures, reopen time).
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// Whether real traffic has ejected it.
    pub fn is_ejected(&self) -> bool {
        self.ejection.is_ejected()
    }

    /// Live counters and latency.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.stats.in_flight()
    }

    /// Its state for reporting (see [`BackendState`] for the precedence).
    pub fn state(&self) -> BackendState {
        if self.is_draining() {
            BackendState::Draining
        } else if self.health() == Health::Down {
            BackendState::Down
        } else if self.breaker_state() == BreakerState::Open {
            BackendState::BreakerOpen
        } else if self.is_ejected() {
            BackendState::Ejected
        } else {
            BackendState::Up
        }
    }

    /// True when it may be put in the schedule: not draining, up, breaker not open, not
    /// ejected.
    pub fn is_available(&self) -> bool {
        self.state() == BackendState::Up
    }

    /// True when it may take traffic in panic mode, which ignores health and ejection but
    /// never sends to a draining backend or through an open breaker.
    pub(crate) fn is_panic_candidate(&self) -> bool {
        !self.is_draining() && self.breaker_state() != BreakerState::Open
    }

    /// Starts a slow-start ramp at `now`.
    pub(crate) fn start_ramp(&self, now: Timestamp) {
        self.ramp_since
            .store(now.as_nanos().saturating_add(1), Ordering::Release);
    }

    /// When the current ramp started, if ramping.
    pub(crate) fn ramp_since(&self) -> Option<Timestamp> {
        match self.ramp_since.load(Ordering::Acquire) {
            0 => None,
            t => Some(Timestamp::from_nanos(t - 1)),
        }
    }

    pub(crate) fn end_ramp(&self) {
        self.ramp_since.store(0, Ordering::Release);
    }
}
