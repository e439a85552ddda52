//! A pool: the backends of one upstream, the picker over the ones that can take traffic, and
//! the one place where their state changes are turned into a new picker.
//!
//! Everything the request path reads (membership, availability, effective weights, the
//! picker) is one immutable [`Snapshot`] published with one `ArcSwap::store`, so a pick is
//! one `load` and never sees half an update. Writers (outcomes that trip a breaker, health
//! checks, drain, reload, the timer) serialise on a mutex that the request path never takes,
//! rebuild the snapshot from the backends' live state, and publish it.
//!
//! Which backends take traffic, in order:
//!
//! 1. the available primaries (up, breaker not open, not ejected, not draining), unless they
//!    are fewer than the panic threshold's share of all primaries;
//! 2. in panic, every primary that is not draining and whose breaker is not open: better to
//!    spread the load over all than to crush the survivors (Envoy's panic mode);
//! 3. with no available primary, the available backups (nginx's `backup`);
//! 4. with neither, and a panic threshold set, every primary as in 2.
//!
//! Longer than ~500 lines because the pool is one state machine (membership, snapshot, picks,
//! leases, outcomes, timers) behind one lock-free snapshot; its parts are in the sibling
//! modules (breaker, ejection, health, slow start, stats) and what remains shares one type.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::backend::{Backend, BackendSpec};
use crate::breaker::{Admission, BreakerConfig, BreakerState};
use crate::ejection::EjectionConfig;
use crate::error::PoolError;
use crate::health::{Health, HealthConfig};
use crate::maglev::{MaglevTable, id_hash};
use crate::picker::{Algorithm, AnyPicker, HashSetup, PickContext, PickState, Picker};
use crate::slow_start::SlowStartConfig;
use crate::time::Timestamp;
use crate::weight::{Weight, reduce};

/// Where the round-robin cycle starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartPosition {
    /// Where nginx starts (the first pick is the heaviest backend): reproducible.
    #[default]
    First,
    /// At an offset drawn from the pool's seed, so a fleet of balancers with the same
    /// configuration does not send its first requests to the same backend in lock-step
    /// (envoyproxy/envoy#31378).
    Random,
}

/// How a pool balances and when it takes backends out.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// The selection algorithm.
    pub algorithm: Algorithm,
    /// Rise/fall of active health checks.
    pub health: HealthConfig,
    /// Circuit breaker; `None` turns it off.
    pub breaker: Option<BreakerConfig>,
    /// Passive ejection (nginx `max_fails`/`fail_timeout`); `None` turns it off.
    pub ejection: Option<EjectionConfig>,
    /// Slow start for backends coming back; `None` turns it off.
    pub slow_start: Option<SlowStartConfig>,
    /// Panic threshold in percent of primaries (0 turns panic mode off).
    pub panic_threshold: u8,
    /// Where the cycle starts.
    pub start: StartPosition,
    /// Seed for the random picker, p2c and a random start.
    pub seed: u64,
    /// `consistent-hash` only: no backend takes more than this factor times its weighted
    /// share of the requests in flight (Mirrokni et al.'s bounded loads; HAProxy's
    /// `hash-balance-factor`); a key whose backend is full goes to its next choice. `None`
    /// for no bound; otherwise at least 1.
    pub hash_balance_factor: Option<f64>,
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            algorithm: Algorithm::default(),
            health: HealthConfig::default(),
            breaker: Some(BreakerConfig::default()),
            ejection: None,
            slow_start: None,
            panic_threshold: 0,
            start: StartPosition::default(),
            seed: 0,
            hash_balance_factor: None,
        }
    }
}

/// Which backends a snapshot balances over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The available primaries.
    Primary,
    /// The available backups: no primary is available.
    Backup,
    /// Every primary regardless of health: too few are healthy.
    Panic,
    /// Nothing can take traffic.
    Empty,
}

impl Mode {
    /// Lower-case name for statistics.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Primary => "primary",
            Mode::Backup => "backup",
            Mode::Panic => "panic",
            Mode::Empty => "empty",
        }
    }
}

/// A change in a backend's state, reported to the pool's [`Observer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Health checks changed its health.
    Health(Health),
    /// Its circuit breaker changed state.
    Breaker(BreakerState),
    /// Real traffic ejected it until the given time.
    Ejected(Timestamp),
    /// An ejection ended (time out or a passing health check).
    Reinstated,
    /// It started or stopped draining.
    Draining(bool),
    /// It was added to the pool.
    Added,
    /// It was removed from the pool (it finishes its in-flight requests).
    Removed,
    /// Slow start brought it to full weight.
    FullWeight,
}

/// Receives state changes, e.g. to log them and count them. Called outside the request path
/// only when something changes.
pub trait Observer: Send + Sync {
    /// `backend` went through `event` at `now`.
    fn on_event(&self, backend: &Backend, event: Event, now: Timestamp);
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct IgnoreEvents;

impl Observer for IgnoreEvents {
    fn on_event(&self, _: &Backend, _: Event, _: Timestamp) {}
}

/// What the request path reads: immutable once published.
#[derive(Debug)]
pub struct Snapshot {
    config: PoolConfig,
    backends: Box<[Arc<Backend>]>,
    /// Removed backends that still have requests in flight.
    retiring: Box<[Arc<Backend>]>,
    /// See [`Snapshot::departed_requests`].
    departed_requests: u64,
    /// Effective weights (thousandths, after slow start) of the members, by backend index;
    /// 0 for backends not in rotation.
    effective: Box<[u32]>,
    picker: AnyPicker,
    mode: Mode,
    next_deadline: Option<Timestamp>,
}

impl Snapshot {
    /// The configuration it was built with.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Every backend of the pool, in configuration order.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// Backends removed from the pool that still finish requests.
    pub fn retiring(&self) -> &[Arc<Backend>] {
        &self.retiring
    }

    /// Requests sent to backends that have left the pool (removed, replaced by a reload or
    /// by discovery) and finished: with the requests of [`backends`](Self::backends) and
    /// [`retiring`](Self::retiring), the pool's total since it was built, which never goes
    /// down as its membership changes.
    pub fn departed_requests(&self) -> u64 {
        self.departed_requests
    }

    /// Which backends take traffic.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The weight backend `index` takes traffic with now (slow start applied); `None` when it
    /// is not in rotation.
    pub fn effective_weight(&self, index: usize) -> Option<Weight> {
        self.effective
            .get(index)
            .and_then(|&t| Weight::from_thousandths(t).ok())
    }

    /// True when some backend that `accept` takes could be picked now: it is in rotation,
    /// or it is a backup a retry may take ([`Pool::pick_backup`]). A pick may still find
    /// none (connection limits, a breaker's probe slots). O(n).
    pub fn any_candidate(&self, mut accept: impl FnMut(&Backend) -> bool) -> bool {
        (0..self.backends.len()).any(|i| {
            (self.effective[i] > 0 || self.backup_in_reserve(i)) && accept(&self.backends[i])
        })
    }

    /// True for a backup that is available while the primaries serve, outside the picker's
    /// tier: what [`Pool::pick_backup`] chooses from.
    fn backup_in_reserve(&self, index: usize) -> bool {
        let b = &self.backends[index];
        matches!(self.mode, Mode::Primary | Mode::Panic) && b.is_backup() && b.is_available()
    }

    /// The picker.
    pub fn picker(&self) -> &AnyPicker {
        &self.picker
    }

    /// The next time something changes by itself (a breaker half-opens, an ejection ends, a
    /// slow-start step): when [`Pool::refresh`] should run next.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.next_deadline
    }
}

/// The write side: serialised, never touched by the request path.
struct Members {
    config: PoolConfig,
    backends: Vec<Arc<Backend>>,
    retiring: Vec<Arc<Backend>>,
    /// See [`Snapshot::departed_requests`].
    departed_requests: u64,
}

/// The backends of one upstream and how to choose among them.
pub struct Pool {
    snapshot: ArcSwap<Snapshot>,
    state: PickState,
    members: Mutex<Members>,
    observer: Arc<dyn Observer>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("snapshot", &self.snapshot.load())
            .finish_non_exhaustive()
    }
}

/// How often a pool with retiring backends is refreshed to notice they finished.
const RETIRE_POLL: Duration = Duration::from_millis(250);

/// The checks of [`Pool::new`] and [`Pool::update`]: unique ids, a usable balance factor.
fn check(config: &PoolConfig, specs: &[BackendSpec]) -> Result<(), PoolError> {
    if let Some(f) = config.hash_balance_factor
        && !(f.is_finite() && f >= 1.0)
    {
        return Err(PoolError::BalanceFactor(f));
    }
    check_unique(specs)
}

fn check_unique(specs: &[BackendSpec]) -> Result<(), PoolError> {
    let mut ids: Vec<&str> = specs.iter().map(|s| s.id.as_str()).collect();
    ids.sort_unstable();
    match ids.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => Err(PoolError::DuplicateId(w[0].to_owned())),
        None => Ok(()),
    }
}

impl Pool {
    /// A pool of fresh backends (healthy, breakers closed). An empty pool is allowed: picks
    /// return `None` until backends are added.
    pub fn new(
        config: PoolConfig,
        specs: &[BackendSpec],
        now: Timestamp,
    ) -> Result<Pool, PoolError> {
        Pool::with_observer(config, specs, Arc::new(IgnoreEvents), now)
    }

    /// Like [`Pool::new`], reporting state changes to `observer`.
    pub fn with_observer(
        config: PoolConfig,
        specs: &[BackendSpec],
        observer: Arc<dyn Observer>,
        now: Timestamp,
    ) -> Result<Pool, PoolError> {
        check(&config, specs)?;
        let start = match config.start {
            StartPosition::First => 0,
            StartPosition::Random => PickState::random_start(config.seed),
        };
        let members = Members {
            backends: specs.iter().map(|s| Arc::new(Backend::new(s))).collect(),
            retiring: Vec::new(),
            departed_requests: 0,
            config: config.clone(),
        };
        // Every backend of a new pool is new: with slow start they all ramp from the pool's
        // start (envoyproxy/envoy#19437), and one that joins later ramps from its own, so it
        // is compared with members that are still ramping too.
        if config.slow_start.is_some() {
            members.backends.iter().for_each(|b| b.start_ramp(now));
        }
        let snapshot = build(&members, now, None);
        Ok(Pool {
            snapshot: ArcSwap::from_pointee(snapshot),
            state: PickState::new(start, config.seed),
            members: Mutex::new(members),
            observer,
        })
    }

    /// The current snapshot, for reporting.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Picks a backend and starts a request on it: the backend is available, the caller's
    /// `accept` took it (e.g. "not tried yet by this request"), it is under its connection
    /// limit and its breaker admits the request. `None` when no backend qualifies.
    ///
    /// The request ends when the returned [`Lease`] is finished or dropped.
    #[inline]
    pub fn pick<F: FnMut(&Backend) -> bool>(&self, now: Timestamp, accept: F) -> Option<Lease<'_>> {
        self.pick_with(now, Choice::<fn(&Backend) -> bool>::Cycle, accept)
    }

    /// Like [`Pool::pick`] for a request with an affinity key (the hash of its client
    /// address, URI, header…): a `consistent-hash` pool sends equal keys to the same
    /// backend while it can take them, and a key whose backend cannot to the key's next
    /// choice. Other algorithms ignore the key. A request without a key uses
    /// [`Pool::pick`], which on a `consistent-hash` pool follows the smooth-weighted cycle.
    #[inline]
    pub fn pick_keyed<F: FnMut(&Backend) -> bool>(
        &self,
        now: Timestamp,
        key: u64,
        accept: F,
    ) -> Option<Lease<'_>> {
        self.pick_with(now, Choice::<fn(&Backend) -> bool>::Keyed(key), accept)
    }

    /// Picks the first backend that `want` names (e.g. the one a sticky cookie names) when it
    /// is in rotation and can take the request as [`Pool::pick`] would check; `None`
    /// otherwise, and the caller picks as usual. O(n) calls of `want`.
    pub fn pick_preferred<W: FnMut(&Backend) -> bool, F: FnMut(&Backend) -> bool>(
        &self,
        now: Timestamp,
        want: W,
        accept: F,
    ) -> Option<Lease<'_>> {
        self.pick_with(now, Choice::Preferred(want), accept)
    }

    /// For a retry that found no primary left to try (each one `accept` refuses, the ones
    /// this request tried, failed it): an available backup it has not tried, as nginx moves
    /// on to its `backup` servers once the primaries failed a request. `None` when the pool
    /// serves from its backups already (its picks choose them) or none is available. O(n):
    /// only a failing request's retry pays for it.
    pub fn pick_backup<F: FnMut(&Backend) -> bool>(
        &self,
        now: Timestamp,
        accept: F,
    ) -> Option<Lease<'_>> {
        self.pick_with(now, Choice::<fn(&Backend) -> bool>::Backup, accept)
    }

    #[inline]
    fn pick_with<W: FnMut(&Backend) -> bool, F: FnMut(&Backend) -> bool>(
        &self,
        now: Timestamp,
        choice: Choice<W>,
        mut accept: F,
    ) -> Option<Lease<'_>> {
        let snap = self.snapshot.load();
        let breaker = snap.config.breaker.as_ref();
        let mut probe = false;
        let ctx = PickContext {
            backends: &snap.backends,
            state: &self.state,
            now,
        };
        let admit = |i: usize| {
            let b = &snap.backends[i];
            if !accept(b) {
                return false;
            }
            probe = match breaker.map(|c| b.breaker.try_acquire(c)) {
                Some(Admission::Rejected) => return false,
                Some(Admission::Probe) => true,
                _ => false,
            };
            let started = match b.max_connections() {
                Some(limit) => b.stats.try_begin(limit.get()),
                None => {
                    b.stats.begin();
                    true
                }
            };
            if !started && probe {
                b.breaker.cancel_probe();
            }
            started
        };
        let index = match choice {
            Choice::Cycle => snap.picker.pick(&ctx, admit),
            Choice::Keyed(key) => snap.picker.pick_keyed(&ctx, key, admit),
            Choice::Preferred(mut want) => {
                let mut admit = admit;
                let in_rotation = |&i: &usize| snap.effective[i] > 0;
                let found = snap.backends.iter().position(|b| want(b));
                found.filter(in_rotation).filter(|&i| admit(i))
            }
            Choice::Backup => {
                let mut admit = admit;
                (0..snap.backends.len())
                    .filter(|&i| snap.backup_in_reserve(i))
                    .find(|&i| admit(i))
            }
        }?;
        let counted = snap.picker.counts_in_flight();
        if counted {
            self.state.begin();
        }
        Some(Lease {
            pool: self,
            backend: Arc::clone(&snap.backends[index]),
            probe,
            counted,
            done: false,
        })
    }

    /// Requests in flight on the pool as bounded-load hashing counts them (0 unless the
    /// pool is `consistent-hash` with a `hash_balance_factor`).
    pub fn counted_in_flight(&self) -> u64 {
        self.state.in_flight()
    }

    /// Records an active health check result for the backend with this id. Returns the new
    /// health when it changed.
    ///
    /// Active and passive signals agree: a passing check that leaves the backend up also
    /// ends a passive ejection, and when checks failed while its breaker was open (the
    /// backend was down, as after a crash) it moves the breaker to half-open at once, so a
    /// restarted backend takes traffic again within `rise × interval` instead of waiting out
    /// the breaker's `recovery_timeout`. A backend whose checks never failed but whose real
    /// traffic does keeps its breaker open for `recovery_timeout` (the table in
    /// `docs/balance.md` has every case).
    pub fn record_check(
        &self,
        id: &str,
        passed: bool,
        now: Timestamp,
    ) -> Result<Option<Health>, PoolError> {
        let backend = self.find(id)?;
        let config = self.snapshot.load().config.health;
        let changed = backend.health.record(&config, passed);
        let mut events = Vec::new();
        if let Some(h) = changed {
            backend.downtime.changed(h, now);
            events.push(Event::Health(h));
            if h == Health::Up {
                backend.start_ramp(now);
            }
        }
        if !passed && backend.breaker.state() == BreakerState::Open {
            backend
                .check_failed_while_open
                .store(true, Ordering::Relaxed);
        }
        if passed && backend.health() == Health::Up {
            if backend.ejection.reinstate() {
                events.push(Event::Reinstated);
            }
            if backend
                .check_failed_while_open
                .swap(false, Ordering::Relaxed)
                && let Some(state) = backend.breaker.half_open_now()
            {
                events.push(Event::Breaker(state));
            }
        }
        self.changed(&backend, &events, now);
        Ok(changed)
    }

    /// Forces a backend's health, outside of checks: e.g. up when active checks are turned
    /// off, so a backend they had taken out does not stay out forever. Returns the new
    /// health when it changed.
    pub fn set_health(
        &self,
        id: &str,
        health: Health,
        now: Timestamp,
    ) -> Result<Option<Health>, PoolError> {
        let backend = self.find(id)?;
        let changed = backend.health.set(health);
        if let Some(h) = changed {
            backend.downtime.changed(h, now);
        }
        if changed == Some(Health::Up) {
            backend.start_ramp(now);
        }
        if let Some(h) = changed {
            self.changed(&backend, &[Event::Health(h)], now);
        }
        Ok(changed)
    }

    /// Stops new requests to a backend; in-flight ones finish.
    pub fn drain(&self, id: &str, now: Timestamp) -> Result<(), PoolError> {
        let backend = self.find(id)?;
        if backend.set_draining(true) {
            self.changed(&backend, &[Event::Draining(true)], now);
        }
        Ok(())
    }

    /// Ends a drain: the backend takes traffic again (through slow start, if configured).
    pub fn enable(&self, id: &str, now: Timestamp) -> Result<(), PoolError> {
        let backend = self.find(id)?;
        if backend.set_draining(false) {
            backend.start_ramp(now);
            self.changed(&backend, &[Event::Draining(false)], now);
        }
        Ok(())
    }

    /// Changes a backend's weight from the next pick on.
    pub fn set_weight(&self, id: &str, weight: Weight, now: Timestamp) -> Result<(), PoolError> {
        let mut m = self.members.lock();
        let backend = m
            .backends
            .iter()
            .find(|b| b.id() == id)
            .ok_or_else(|| PoolError::UnknownBackend(id.to_owned()))?;
        backend.set_weight(weight);
        self.publish(&mut m, now);
        Ok(())
    }

    /// Adds a backend (through slow start, if configured).
    pub fn add(&self, spec: &BackendSpec, now: Timestamp) -> Result<Arc<Backend>, PoolError> {
        let mut m = self.members.lock();
        if m.backends.iter().any(|b| b.id() == spec.id) {
            return Err(PoolError::DuplicateId(spec.id.clone()));
        }
        let backend = Arc::new(Backend::new(spec));
        backend.start_ramp(now);
        m.backends.push(Arc::clone(&backend));
        self.observer.on_event(&backend, Event::Added, now);
        self.publish(&mut m, now);
        Ok(backend)
    }

    /// Removes a backend: it gets no new requests and its in-flight ones finish (it is listed
    /// in [`Snapshot::retiring`] until they have).
    pub fn remove(&self, id: &str, now: Timestamp) -> Result<(), PoolError> {
        let mut m = self.members.lock();
        let pos = m
            .backends
            .iter()
            .position(|b| b.id() == id)
            .ok_or_else(|| PoolError::UnknownBackend(id.to_owned()))?;
        let backend = m.backends.remove(pos);
        backend.set_draining(true);
        self.observer.on_event(&backend, Event::Removed, now);
        m.retiring.push(backend);
        self.publish(&mut m, now);
        Ok(())
    }

    /// Replaces configuration and membership at once (a config reload). Backends whose id
    /// and address are unchanged keep all their state (health, breaker, counters, in-flight)
    /// and take the new weight, backup flag and limit; new ones start fresh (through slow
    /// start, if configured); missing ones are removed as by [`Pool::remove`]. The rotation
    /// continues from where it was.
    pub fn update(
        &self,
        config: PoolConfig,
        specs: &[BackendSpec],
        now: Timestamp,
    ) -> Result<(), PoolError> {
        check(&config, specs)?;
        let mut m = self.members.lock();
        let mut old = std::mem::take(&mut m.backends);
        for spec in specs {
            let kept = old
                .iter()
                .position(|b| b.id() == spec.id && b.address() == spec.address);
            let backend = match kept {
                Some(pos) => {
                    let b = old.swap_remove(pos);
                    b.reconfigure(spec);
                    b
                }
                None => {
                    let b = Arc::new(Backend::new(spec));
                    b.start_ramp(now);
                    self.observer.on_event(&b, Event::Added, now);
                    b
                }
            };
            m.backends.push(backend);
        }
        for gone in old {
            gone.set_draining(true);
            self.observer.on_event(&gone, Event::Removed, now);
            m.retiring.push(gone);
        }
        m.config = config;
        self.publish(&mut m, now);
        Ok(())
    }

    /// Applies every change that is due by `now` (breakers half-opening, ejections ending,
    /// slow-start steps, retired backends that finished) and returns when to call again.
    pub fn refresh(&self, now: Timestamp) -> Option<Timestamp> {
        let mut m = self.members.lock();
        let mut changed = false;
        for b in &m.backends {
            if let Some(state) = b.breaker.poll(now) {
                self.observer.on_event(b, Event::Breaker(state), now);
                changed = true;
            }
            if b.ejection.poll(now) {
                b.start_ramp(now);
                self.observer.on_event(b, Event::Reinstated, now);
                changed = true;
            }
        }
        let before = m.retiring.len();
        let mut departed = 0;
        m.retiring.retain(|b| {
            let finished = b.in_flight() == 0;
            if finished {
                departed += b.stats().requests();
            }
            !finished
        });
        m.departed_requests += departed;
        changed |= m.retiring.len() != before;
        let snap = self.snapshot.load();
        if changed || snap.next_deadline.is_some_and(|d| d <= now) {
            drop(snap);
            self.publish(&mut m, now);
        }
        self.snapshot.load().next_deadline
    }

    fn find(&self, id: &str) -> Result<Arc<Backend>, PoolError> {
        self.snapshot
            .load()
            .backends
            .iter()
            .find(|b| b.id() == id)
            .cloned()
            .ok_or_else(|| PoolError::UnknownBackend(id.to_owned()))
    }

    /// Reports events and rebuilds, when there are any.
    /// Publishes the new state, then reports the events (in this order, so an observer that
    /// reacts by reading the snapshot, such as a timer loop looking for its next deadline,
    /// sees the change).
    fn changed(&self, backend: &Backend, events: &[Event], now: Timestamp) {
        if events.is_empty() {
            return;
        }
        self.publish(&mut self.members.lock(), now);
        for &e in events {
            self.observer.on_event(backend, e, now);
        }
    }

    fn publish(&self, m: &mut Members, now: Timestamp) {
        let snap = build(m, now, self.snapshot.load().picker.hash_table());
        for b in &m.backends {
            let Some(since) = b.ramp_since() else {
                continue;
            };
            match &m.config.slow_start {
                Some(ss) if ss.share(since, now).1.is_some() => {}
                Some(_) => {
                    b.end_ramp();
                    self.observer.on_event(b, Event::FullWeight, now);
                }
                None => b.end_ramp(),
            }
        }
        self.snapshot.store(Arc::new(snap));
    }

    /// Gives the outcome of a request whose lease was [deferred](Lease::defer): recorded and
    /// counted for or against the backend as [`Lease::finish`] would have, with the latency
    /// measured when the lease ended.
    pub fn judge(&self, mut deferred: Deferred, outcome: Outcome, now: Timestamp) {
        deferred.judged = true;
        let backend = &deferred.backend;
        backend
            .stats
            .record(outcome == Outcome::Success, deferred.latency, now);
        self.judge_outcome(backend, outcome, now);
    }

    /// Records the end of a request (see [`Lease::finish`]).
    fn finish(&self, backend: &Backend, outcome: Outcome, latency: Duration, now: Timestamp) {
        backend
            .stats
            .record(outcome == Outcome::Success, latency, now);
        backend.stats.end();
        self.judge_outcome(backend, outcome, now);
    }

    /// Feeds a request's outcome to the backend's breaker and passive ejection.
    fn judge_outcome(&self, backend: &Backend, outcome: Outcome, now: Timestamp) {
        let success = outcome == Outcome::Success;
        let snap = self.snapshot.load();
        let mut events = [None, None];
        if let Some(c) = &snap.config.breaker {
            let breaker = &backend.breaker;
            events[0] = match outcome {
                Outcome::Success => breaker.on_success(),
                Outcome::ServerError | Outcome::TransportError => breaker.on_failure(c, now),
                Outcome::ApplicationError if c.count_application_errors => {
                    breaker.on_failure(c, now)
                }
                // An application error opens (or keeps open) a breaker only when its backend
                // is the odd one out: another in rotation answers well. An application bug
                // that every backend answers 500 opens none; a backend broken alone is
                // isolated (the question Envoy's success-rate outlier detection asks).
                Outcome::ApplicationError => {
                    let half_open = breaker.state() == BreakerState::HalfOpen;
                    let opens = half_open
                        || breaker.consecutive_failures() + 1 >= c.failure_threshold.get();
                    match (opens, odd_one_out(&snap, backend)) {
                        (true, true) | (false, _) => breaker.on_failure(c, now),
                        // A probe answered as the others answer: the server works.
                        (true, false) if half_open => breaker.on_success(),
                        (true, false) => None,
                    }
                }
            }
            .map(Event::Breaker);
        }
        if success {
            backend.ejection.on_success();
        } else {
            // A pool of one backend never ejects it, as nginx ignores `max_fails` for a group
            // of one server: taking the only server out turns one failed request into
            // `fail_timeout` of refusals while it may already serve again.
            match &snap.config.ejection {
                Some(c)
                    if snap.backends.len() > 1
                        && (outcome == Outcome::TransportError || c.count_server_errors) =>
                {
                    events[1] = backend.ejection.on_failure(c, now).map(Event::Ejected);
                }
                _ => {}
            }
        }
        drop(snap);
        let events: Vec<Event> = events.into_iter().flatten().collect();
        if events.contains(&Event::Breaker(BreakerState::Open)) {
            // Only checks failing from now on say the backend went down.
            backend
                .check_failed_while_open
                .store(false, Ordering::Relaxed);
        }
        if events.contains(&Event::Breaker(BreakerState::Closed)) {
            backend.start_ramp(now);
        }
        self.changed(backend, &events, now);
    }
}

/// True when another backend in rotation answers well (no failure since its last success):
/// `backend`'s failures are its own, not the application's on every backend. O(n), asked
/// only when an application error would open a breaker.
fn odd_one_out(snap: &Snapshot, backend: &Backend) -> bool {
    snap.backends
        .iter()
        .zip(snap.effective.iter())
        .any(|(b, &weight)| {
            weight > 0 && !std::ptr::eq(&**b, backend) && b.breaker.consecutive_failures() == 0
        })
}

/// How a pick chooses: the algorithm's order, a key's, or one backend the caller wants.
enum Choice<W> {
    Cycle,
    Keyed(u64),
    Preferred(W),
    /// An available backup, outside the tier that serves (see [`Pool::pick_backup`]).
    Backup,
}

/// How a request ended, as far as the backend's health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The backend answered (any status below 500).
    Success,
    /// The backend answered that it cannot serve now (HTTP 502, 503, 504; gRPC UNAVAILABLE
    /// and the like): counts against the circuit breaker, and against passive ejection only
    /// when [`EjectionConfig::count_server_errors`] is set.
    ServerError,
    /// The backend answered that the application failed this request (HTTP 500, 501, 505…;
    /// gRPC INTERNAL and the like): the server itself works. Counts against the success
    /// rate; against the breaker only with [`BreakerConfig::count_application_errors`], and
    /// against passive ejection only with [`EjectionConfig::count_server_errors`].
    ApplicationError,
    /// No usable answer: connect refused or timed out, reset, response timeout. Counts
    /// against the breaker and passive ejection (nginx's default `proxy_next_upstream error
    /// timeout`).
    TransportError,
}

/// A request in progress on a backend. Finish it with the outcome; dropping it unfinished
/// (the client went away) ends it without counting for or against the backend.
pub struct Lease<'a> {
    pool: &'a Pool,
    backend: Arc<Backend>,
    probe: bool,
    /// Counted in the pool's in-flight total (bounded-load hashing).
    counted: bool,
    done: bool,
}

impl fmt::Debug for Lease<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("backend", &self.backend.id())
            .field("probe", &self.probe)
            .finish()
    }
}

impl Lease<'_> {
    /// The chosen backend.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// True when the request is a half-open breaker's probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// Ends the request with its outcome and latency.
    pub fn finish(mut self, outcome: Outcome, latency: Duration, now: Timestamp) {
        self.done = true;
        self.pool.finish(&self.backend, outcome, latency, now);
    }

    /// Ends the request now (it no longer counts as in flight) and leaves its outcome for
    /// later: a gRPC call answers HTTP 200 and says whether it failed only in the trailers
    /// that end its response body, long after the response went on its way. Give the
    /// outcome with [`Pool::judge`]; a [`Deferred`] dropped unjudged counts neither way.
    pub fn defer(mut self, latency: Duration) -> Deferred {
        self.done = true;
        self.backend.stats.end();
        Deferred {
            backend: Arc::clone(&self.backend),
            latency,
            probe: self.probe,
            judged: false,
        }
    }
}

/// A request that ended without its outcome (see [`Lease::defer`]).
pub struct Deferred {
    backend: Arc<Backend>,
    latency: Duration,
    probe: bool,
    judged: bool,
}

impl fmt::Debug for Deferred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deferred")
            .field("backend", &self.backend.id())
            .field("probe", &self.probe)
            .finish()
    }
}

impl Deferred {
    /// The backend the request went to.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        // A half-open breaker's probe that never got its outcome hands its slot back.
        if !self.judged && self.probe {
            self.backend.breaker.cancel_probe();
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.pool.state.end();
        }
        if !self.done {
            self.backend.stats.end();
            if self.probe {
                self.backend.breaker.cancel_probe();
            }
        }
    }
}

/// The Maglev table of a `consistent-hash` snapshot: over every member of the tier that
/// serves (backups when the snapshot is in backup mode, else primaries), available or not,
/// with configured weights (slow start would move keys at every step), reusing `previous`
/// when those are unchanged.
fn hash_setup(m: &Members, mode: Mode, previous: Option<&Arc<MaglevTable>>) -> Option<HashSetup> {
    if m.config.algorithm != Algorithm::ConsistentHash || mode == Mode::Empty {
        return None;
    }
    let tier: Vec<(u32, u64, u64)> = m
        .backends
        .iter()
        .enumerate()
        .filter(|(_, b)| b.is_backup() == (mode == Mode::Backup))
        .map(|(i, b)| {
            (
                i as u32,
                id_hash(b.id()),
                u64::from(b.weight().thousandths()),
            )
        })
        .collect();
    let reduced = reduce(&tier.iter().map(|t| t.2).collect::<Vec<_>>());
    let tier: Vec<(u32, u64, u64)> = tier
        .iter()
        .zip(reduced)
        .map(|(&(i, h, _), w)| (i, h, w))
        .collect();
    Some(HashSetup {
        table: MaglevTable::reuse_or_build(previous, &tier),
        bound: m
            .config
            .hash_balance_factor
            .map(|f| (f * 1000.0).round() as u64),
    })
}

/// Builds a snapshot from the members' live state; `previous` is the last snapshot's hash
/// table, reused when the membership it was built from is unchanged.
fn build(m: &Members, now: Timestamp, previous: Option<&Arc<MaglevTable>>) -> Snapshot {
    let cfg = &m.config;
    let primaries = || {
        m.backends
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.is_backup())
    };
    let total_primaries = primaries().count();
    let available: Vec<usize> = primaries()
        .filter(|(_, b)| b.is_available())
        .map(|(i, _)| i)
        .collect();
    let panic = |count: usize| {
        cfg.panic_threshold > 0 && count * 100 < usize::from(cfg.panic_threshold) * total_primaries
    };
    let panic_set = || -> Vec<usize> {
        primaries()
            .filter(|(_, b)| b.is_panic_candidate())
            .map(|(i, _)| i)
            .collect()
    };
    let (mode, chosen) = if !available.is_empty() && !panic(available.len()) {
        (Mode::Primary, available)
    } else if !available.is_empty() {
        (Mode::Panic, panic_set())
    } else {
        let backups: Vec<usize> = m
            .backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.is_backup() && b.is_available())
            .map(|(i, _)| i)
            .collect();
        if !backups.is_empty() {
            (Mode::Backup, backups)
        } else if cfg.panic_threshold > 0 {
            (Mode::Panic, panic_set())
        } else {
            (Mode::Empty, Vec::new())
        }
    };
    let mode = if chosen.is_empty() { Mode::Empty } else { mode };

    let mut next_deadline: Option<Timestamp> = None;
    let mut soonest = |t: Timestamp| next_deadline = Some(next_deadline.map_or(t, |d| d.min(t)));
    let mut effective = vec![0u32; m.backends.len()];
    for &i in &chosen {
        let b = &m.backends[i];
        let full = b.weight().thousandths();
        let share = match (&cfg.slow_start, b.ramp_since()) {
            (Some(ss), Some(since)) => {
                let (share, next) = ss.share(since, now);
                if let Some(t) = next {
                    soonest(t);
                }
                share
            }
            _ => 1000,
        };
        effective[i] = ((u64::from(full) * u64::from(share) / 1000) as u32).max(1);
    }
    for b in &m.backends {
        if let Some(t) = b.breaker.reopens_at() {
            soonest(t);
        }
        if let Some(t) = b.ejection.ejected_until() {
            soonest(t);
        }
    }
    if !m.retiring.is_empty() {
        soonest(now.saturating_add(RETIRE_POLL));
    }

    let ids: Vec<u32> = chosen.iter().map(|&i| i as u32).collect();
    let weights = reduce(
        &chosen
            .iter()
            .map(|&i| u64::from(effective[i]))
            .collect::<Vec<_>>(),
    );
    Snapshot {
        config: cfg.clone(),
        backends: m.backends.clone().into_boxed_slice(),
        retiring: m.retiring.clone().into_boxed_slice(),
        departed_requests: m.departed_requests,
        effective: effective.into_boxed_slice(),
        picker: AnyPicker::build(cfg.algorithm, &ids, &weights, hash_setup(m, mode, previous)),
        mode,
        next_deadline,
    }
}
