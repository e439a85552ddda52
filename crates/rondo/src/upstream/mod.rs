//! A live upstream: its backends and picker (a `balance::Pool`), the settings the proxy
//! applies to it (tries, timeouts, pooling), the retry budget, the queue for requests that
//! wait for a connection slot, and the timer loop that applies time-driven state changes.
//!
//! Data flows one way: the proxy asks the upstream for a backend, forwards, and reports the
//! outcome back through the lease; health checks and the admin API write through the same
//! pool API. Nothing reaches around it.

mod admin_changes;
mod discovered;
pub mod dns;
pub mod etcd;
pub mod events;
mod grpc_check;
mod health;
pub mod history;
mod queue;
pub mod recorder;
mod set;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use balance::{Backend, Event, Health, Mode, Observer, Pool, PoolError, Timestamp};
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::config::UpstreamConfig;
use admin_changes::AdminChanges;
use events::{Events, caused_by};

pub use discovered::SourceStatus;
pub use health::{CheckCounters, CheckFailure, probe};
pub use queue::Queue;
pub use recorder::Recorder;
pub use set::UpstreamSet;

/// One upstream, shared by every worker thread.
#[derive(Debug)]
pub struct Upstream {
    /// The per-request settings, swapped whole by a reload; the request path loads it once.
    config: ArcSwap<UpstreamConfig>,
    /// The queue's priority header, fixed at start (the queue is built once), parsed once
    /// (`None` if it is not a valid field name, which then matches no request).
    priority_name: Option<http::HeaderName>,
    pool: Pool,
    clock: Clock,
    /// Requests in progress, for the retry budget.
    active: AtomicU64,
    /// Retries in progress.
    retrying: AtomicU64,
    queue: Queue,
    name: String,
    /// Wakes the timer loop when a state change may have moved its next deadline.
    changed: Arc<Notify>,
    /// Wakes the health check loop when backends come or go or the configuration changes.
    membership: Arc<Notify>,
    /// Wakes every attempt still connecting when a backend's state changes, so one whose
    /// backend left rotation goes elsewhere (see [`Upstream::left_rotation`]).
    state_changed: Arc<Notify>,
    /// Health check counters by backend.
    checks: Arc<health::Checks>,
    /// Status codes, latency histograms, retries and health checks, for the admin API.
    recorder: Recorder,
    /// Recent state changes, for the dashboard.
    events: Arc<Events>,
    /// The last 15 minutes of traffic, for the dashboard's charts.
    history: history::History,
    /// Backends learnt at run time (DNS names, etcd) and the admin API's changes, applied
    /// over the file's; the lock also orders their updates with a reload's.
    discovered: parking_lot::Mutex<discovered::Discovered>,
    /// Wakes the DNS loop when a reload may have changed the named backends.
    named_changed: Notify,
    /// TLS to the backends (`tls = { … }`), set at start and on reload.
    tls: arc_swap::ArcSwapOption<crate::tls::UpstreamTls>,
}

/// Logs state changes (one line each) and wakes the upstream's timer and health check loops
/// and the attempts still connecting.
struct Reporter {
    upstream: String,
    changed: Arc<Notify>,
    membership: Arc<Notify>,
    state_changed: Arc<Notify>,
    checks: Arc<health::Checks>,
    /// The recent changes, for the dashboard.
    events: Arc<Events>,
}

impl Reporter {
    /// Keeps `event` in the events ring, with its reason.
    fn remember(&self, id: &str, event: Event) {
        let check = || {
            self.checks
                .get(id)
                .and_then(|c| c.last_result())
                .unwrap_or_else(|| "no check yet".to_owned())
        };
        let (kind, detail) = match event {
            Event::Health(Health::Up) => ("health", format!("up: {}", check())),
            Event::Health(Health::Down) => ("health", format!("down: {}", check())),
            Event::Breaker(s) => ("breaker", s.as_str().to_owned()),
            Event::Ejected(_) => ("ejected", "failed requests".to_owned()),
            Event::Reinstated => ("reinstated", String::new()),
            Event::Draining(true) => ("draining", String::new()),
            Event::Draining(false) => ("enabled", String::new()),
            Event::Added => ("added", String::new()),
            Event::Removed => ("removed", String::new()),
            Event::FullWeight => ("full_weight", "slow start over".to_owned()),
        };
        self.events.push(&self.upstream, id, kind, detail);
    }
}

impl Observer for Reporter {
    fn on_event(&self, backend: &Backend, event: Event, _now: Timestamp) {
        let (upstream, id) = (self.upstream.as_str(), backend.id());
        self.remember(id, event);
        match event {
            Event::Health(h) => {
                let reason = self
                    .checks
                    .get(id)
                    .and_then(|c| c.last_result())
                    .unwrap_or_else(|| "no check yet".to_owned());
                match h {
                    Health::Up => tracing::info!(
                        upstream,
                        backend = id,
                        health = "up",
                        reason,
                        "backend health changed"
                    ),
                    Health::Down => tracing::warn!(
                        upstream,
                        backend = id,
                        health = "down",
                        reason,
                        "backend health changed"
                    ),
                }
            }
            Event::Breaker(s) => tracing::warn!(
                upstream,
                backend = id,
                state = s.as_str(),
                "circuit breaker changed"
            ),
            Event::Ejected(_) => tracing::warn!(
                upstream,
                backend = id,
                "backend ejected after failed requests"
            ),
            Event::Reinstated => tracing::info!(upstream, backend = id, "backend reinstated"),
            Event::Draining(true) => tracing::info!(upstream, backend = id, "backend draining"),
            Event::Draining(false) => tracing::info!(upstream, backend = id, "backend enabled"),
            Event::Added => tracing::info!(upstream, backend = id, "backend added"),
            Event::Removed => tracing::info!(upstream, backend = id, "backend removed"),
            Event::FullWeight => tracing::info!(
                upstream,
                backend = id,
                "backend at full weight after slow start"
            ),
        }
        if matches!(event, Event::Added | Event::Removed) {
            self.membership.notify_one();
        }
        self.changed.notify_one();
        self.state_changed.notify_waiters();
    }
}

/// Holds a place in the upstream's count of active requests (for the retry budget).
#[derive(Debug)]
pub struct ActiveGuard<'a>(&'a AtomicU64);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Upstream {
    /// Builds the upstream and its pool of fresh backends.
    pub fn new(config: UpstreamConfig, clock: Clock) -> Result<Upstream, PoolError> {
        let changed = Arc::new(Notify::new());
        let membership = Arc::new(Notify::new());
        let state_changed = Arc::new(Notify::new());
        let checks = Arc::new(health::Checks::default());
        let events = Arc::new(Events::default());
        let reporter = Reporter {
            upstream: config.name.clone(),
            changed: Arc::clone(&changed),
            membership: Arc::clone(&membership),
            state_changed: Arc::clone(&state_changed),
            checks: Arc::clone(&checks),
            events: Arc::clone(&events),
        };
        let mut pool_config = config.pool.clone();
        if pool_config.seed == 0 {
            pool_config.seed = random_seed();
        }
        let pool = Pool::with_observer(
            pool_config,
            &config.backends,
            Arc::new(reporter),
            clock.now(),
        )?;
        Ok(Upstream {
            queue: Queue::new(config.queue.size),
            priority_name: http::HeaderName::from_bytes(config.queue.priority_header.as_bytes())
                .ok(),
            name: config.name.clone(),
            config: ArcSwap::from_pointee(config),
            pool,
            clock,
            active: AtomicU64::new(0),
            retrying: AtomicU64::new(0),
            changed,
            membership,
            state_changed,
            checks,
            recorder: Recorder::default(),
            events,
            history: history::History::default(),
            discovered: parking_lot::Mutex::default(),
            named_changed: Notify::new(),
            tls: arc_swap::ArcSwapOption::empty(),
        })
    }

    /// The backends' recent state changes.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// The last 15 minutes of its traffic.
    pub fn history(&self) -> &history::History {
        &self.history
    }

    /// What it records for the admin API and metrics.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its current configuration, owned: for holders that keep it across long waits (health
    /// check and DNS loops, reload). The request path uses [`Upstream::config_ref`].
    pub fn config(&self) -> Arc<UpstreamConfig> {
        self.config.load_full()
    }

    /// The same configuration, borrowed for the length of one request: arc-swap's guard reads
    /// it without touching the `Arc`'s shared reference count (which every worker would
    /// otherwise bounce), and a request holding it sees one configuration across a reload.
    pub fn config_ref(&self) -> arc_swap::Guard<Arc<UpstreamConfig>> {
        self.config.load()
    }

    /// The request header that orders the wait queue (fixed at start; empty when the
    /// configured name is not a valid field name, so no request carries it).
    pub fn priority_header(&self) -> &str {
        self.priority_name
            .as_ref()
            .map_or("", http::HeaderName::as_str)
    }

    /// [`Self::priority_header`] as a field name, for header maps.
    pub fn priority_name(&self) -> Option<&http::HeaderName> {
        self.priority_name.as_ref()
    }

    /// Applies a reloaded configuration of this upstream (same name): membership, weights
    /// and pool settings through [`Pool::update`] (kept backends keep their health, breaker,
    /// counters and in-flight requests; removed ones drain; new ones slow-start), then the
    /// per-request settings. The queue's size and priority header are fixed at start; a
    /// change of them is reported in the returned list and not applied.
    pub fn reload(&self, mut new: UpstreamConfig) -> Result<Vec<&'static str>, PoolError> {
        let old = self.config();
        let mut ignored = Vec::new();
        if new.queue.size != old.queue.size {
            ignored.push("queue_size");
            new.queue.size = old.queue.size;
        }
        if new.queue.priority_header != old.queue.priority_header {
            ignored.push("priority_header");
            new.queue.priority_header = old.queue.priority_header.clone();
        }
        let mut pool_config = new.pool.clone();
        if pool_config.seed == 0 {
            pool_config.seed = self.pool.snapshot().config().seed;
        }
        let mut discovered = self.discovered.lock();
        if new.discovery.is_none() {
            discovered.set_etcd(None);
        }
        // The file as written applies again: the admin API's changes end here.
        discovered.admin = AdminChanges::default();
        caused_by("reload", || {
            self.pool.update(
                pool_config,
                &discovered.members(&new.backends),
                self.clock.now(),
            )
        })?;
        self.config.store(Arc::new(new));
        drop(discovered);
        self.named_changed.notify_one();
        self.membership.notify_one();
        self.changed.notify_one();
        Ok(ignored)
    }

    /// Applies the discovered backends (after the file's) through the same `Pool::update` a
    /// reload uses; the events it raises are labelled as caused `by` the source ("DNS",
    /// "etcd").
    fn apply_discovered(&self, by: &'static str) {
        let discovered = self.discovered.lock();
        let config = self.config();
        let pool_config = self.pool.snapshot().config().clone();
        let members = discovered.members(&config.backends);
        let applied = caused_by(by, || {
            self.pool.update(pool_config, &members, self.clock.now())
        });
        if let Err(e) = applied {
            tracing::error!(upstream = self.name.as_str(), error = %e, "discovered backends not applied");
        }
    }

    /// What each discovery source (DNS name) last did, for the admin API and metrics.
    pub fn discovery(&self) -> Vec<SourceStatus> {
        self.discovered.lock().statuses()
    }

    /// How new connections to its backends speak TLS; `None`: plain TCP.
    pub fn tls(&self) -> Option<Arc<crate::tls::UpstreamTls>> {
        self.tls.load_full()
    }

    /// Sets (or clears) TLS to its backends for new connections.
    pub fn set_tls(&self, tls: Option<crate::tls::UpstreamTls>) {
        self.tls.store(tls.map(Arc::new));
    }

    /// Backends and picker.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The clock its timestamps come from.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The wait queue for connection slots.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Counts a request as active until the guard drops.
    pub fn begin(&self) -> ActiveGuard<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(&self.active)
    }

    /// Takes a retry from the budget (Envoy's: retries in progress at most `percent` of
    /// active requests, but always at least `min`), or `None` when it is spent.
    pub fn try_retry(&self) -> Option<ActiveGuard<'_>> {
        let budget = self.config.load().retry_budget;
        let active = self.active.load(Ordering::Relaxed);
        let allowed = (active * u64::from(budget.percent) / 100).max(u64::from(budget.min));
        let now = self.retrying.fetch_add(1, Ordering::Relaxed);
        if now >= allowed {
            self.retrying.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(ActiveGuard(&self.retrying))
    }

    /// True when `backend` is out of rotation (health, breaker, ejection; not a drain) while
    /// the upstream still serves from its primaries: one backend failed, not the upstream.
    /// Its requests still unsent go elsewhere at once, and their retries are not held to the
    /// retry budget.
    pub fn is_out_while_others_serve(&self, backend: &Backend) -> bool {
        !backend.is_available()
            && !backend.is_draining()
            && self.pool.snapshot().mode() == Mode::Primary
    }

    /// Resolves once [`Upstream::is_out_while_others_serve`] holds for `backend`: an attempt
    /// still connecting to it waits on this beside its connect. A backend that dies can
    /// complete handshakes into its listen queue for a moment after its process is gone and
    /// then drop the SYNs that overflow it; the kernel sends those again only after a second,
    /// so without this their requests would wait that long although the first failure
    /// already took the backend out.
    pub async fn left_rotation(&self, backend: &Backend) {
        loop {
            let changed = self.state_changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a change between the two is not missed.
            changed.as_mut().enable();
            if self.is_out_while_others_serve(backend) {
                return;
            }
            changed.await;
        }
    }

    /// Applies time-driven changes (breakers half-opening, ejections ending, slow start)
    /// until `stop` resolves. One loop per upstream, sleeping until its next deadline or until
    /// a state change wakes it.
    pub async fn run_timers(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let next = self.pool.refresh(self.clock.now());
            let sleep = async {
                match next {
                    Some(t) => tokio::time::sleep_until(self.clock.instant(t)).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = &mut stop => return,
                _ = sleep => {}
                _ = self.changed.notified() => {}
            }
        }
    }
}

/// A seed for the random pickers from the standard library's per-process random hash keys.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(extra: &str) -> Upstream {
        let text = format!(
            "[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\
             [[upstreams]]\nname = \"app\"\n{extra}\nbackends = [{{ address = \"127.0.0.1:9\" }}]\n"
        );
        let config = crate::config::parse(&text, "test.toml").unwrap();
        Upstream::new(config.upstreams[0].clone(), Clock::new()).unwrap()
    }

    #[test]
    fn retries_in_progress_stay_within_the_budget_with_a_floor() {
        let up = upstream("retry_budget_percent = 20\nretry_budget_min = 3");
        // Few active requests: the floor of 3 applies.
        let floor: Vec<_> = (0..5).filter_map(|_| up.try_retry()).collect();
        assert_eq!(floor.len(), 3);
        drop(floor);
        // 50 active requests: 20% is 10.
        let active: Vec<_> = (0..50).map(|_| up.begin()).collect();
        let many: Vec<_> = (0..20).filter_map(|_| up.try_retry()).collect();
        assert_eq!(many.len(), 10);
        drop(many);
        drop(active);
        assert_eq!(up.active.load(Ordering::Relaxed), 0);
        assert_eq!(up.retrying.load(Ordering::Relaxed), 0);
    }
}
