//! Active health checks: each backend of an upstream is probed on a timer, off the request
//! path, and the results go to the pool (`Pool::record_check`), which applies rise/fall
//! hysteresis, slow start and reinstates passively ejected backends.
//!
//! One loop per upstream ([`Upstream::run_health_checks`]) follows the pool's membership (a
//! reload or the admin API adds and removes backends) and keeps one probe task per backend.
//! A probe task checks, records the result, then waits until `interval × (1 − jitter × u)`
//! (u uniform in [0, 1)) after the check began: checks of one backend never overlap (a slow
//! check delays the next one instead of starting a second), checks of many backends drift
//! apart instead of firing in lock-step, and two checks never start more than `interval`
//! apart, so a backend that comes back is in rotation within `rise × interval` (plus the last
//! probe's own time). The first check of each backend fires at a random point of its first
//! interval for the same reason.
//!
//! Every probe opens a fresh connection and closes it: reusing the proxy's keep-alive
//! connections would test a connection, not the backend — a pooled socket can stay open to a
//! process that no longer accepts new ones (its listener closed, its accept queue full), and
//! a check must see what the next request would see. The whole probe (connect, write, read
//! the status line) is bounded by `timeout`.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use balance::Health;
use parking_lot::{Mutex, RwLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Upstream;
use crate::config::{CheckKind, HealthCheckConfig};

/// Why a check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckFailure {
    /// The backend answered with a status `expected_status` does not accept.
    Status(u16),
    /// No answer within `timeout`.
    Timeout,
    /// The connection was refused: nothing listens on the port.
    Refused,
    /// Another connection or protocol error (reset, closed early, not HTTP).
    Error(String),
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckFailure::Status(s) => write!(f, "status {s}"),
            CheckFailure::Timeout => f.write_str("timeout"),
            CheckFailure::Refused => f.write_str("connection refused"),
            CheckFailure::Error(e) => f.write_str(e),
        }
    }
}

/// Health check counters of one backend, by result. Monotonic, for metrics.
#[derive(Debug, Default)]
pub struct CheckCounters {
    passed: AtomicU64,
    bad_status: AtomicU64,
    timed_out: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
    /// The last result in words, for the log line of a health transition.
    last: Mutex<Option<String>>,
    /// When the last check ended.
    last_at: Mutex<Option<std::time::SystemTime>>,
}

impl CheckCounters {
    /// Checks that passed.
    pub fn passed(&self) -> u64 {
        self.passed.load(Ordering::Relaxed)
    }

    /// Checks answered with an unexpected status.
    pub fn bad_status(&self) -> u64 {
        self.bad_status.load(Ordering::Relaxed)
    }

    /// Checks that timed out.
    pub fn timed_out(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }

    /// Checks whose connection was refused.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Checks that failed otherwise (reset, early close, not HTTP).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Checks that failed, for any reason.
    pub fn failed(&self) -> u64 {
        self.bad_status() + self.timed_out() + self.refused() + self.errors()
    }

    /// The last result in words: "status 200", "timeout", "connection refused"…; `None`
    /// before the first check.
    pub fn last_result(&self) -> Option<String> {
        self.last.lock().clone()
    }

    /// When the last check ended; `None` before the first.
    pub fn last_checked(&self) -> Option<std::time::SystemTime> {
        *self.last_at.lock()
    }

    fn record(&self, result: &Result<u16, CheckFailure>) {
        let counter = match result {
            Ok(_) => &self.passed,
            Err(CheckFailure::Status(_)) => &self.bad_status,
            Err(CheckFailure::Timeout) => &self.timed_out,
            Err(CheckFailure::Refused) => &self.refused,
            Err(CheckFailure::Error(_)) => &self.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        *self.last_at.lock() = Some(std::time::SystemTime::now());
        *self.last.lock() = Some(match result {
            Ok(0) => "connected".to_owned(),
            Ok(s) => format!("status {s}"),
            Err(e) => e.to_string(),
        });
    }
}

/// The check counters of an upstream's backends, by backend id. Counters of a backend kept
/// by a reload survive it; a removed backend's are dropped with its probe task.
#[derive(Debug, Default)]
pub(crate) struct Checks {
    by_id: RwLock<HashMap<String, Arc<CheckCounters>>>,
}

impl Checks {
    pub(crate) fn get(&self, id: &str) -> Option<Arc<CheckCounters>> {
        self.by_id.read().get(id).cloned()
    }

    fn entry(&self, id: &str) -> Arc<CheckCounters> {
        if let Some(c) = self.get(id) {
            return c;
        }
        Arc::clone(self.by_id.write().entry(id.to_owned()).or_default())
    }

    fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.by_id.write().retain(|id, _| keep(id));
    }
}

/// Largest response head a probe reads: a health endpoint's status line and headers.
const MAX_HEAD: usize = 16 * 1024;

/// Probes `addr` once; `Ok(status)` when the check passes (0 for TCP). Bounded by
/// `config.timeout`.
/// With `tls`, HTTP checks run over TLS (a TCP check only connects).
pub async fn probe(
    addr: SocketAddr,
    config: &HealthCheckConfig,
    tls: Option<&crate::tls::UpstreamTls>,
) -> Result<u16, CheckFailure> {
    match tokio::time::timeout(config.timeout, probe_unbounded(addr, config, tls)).await {
        Ok(result) => result,
        Err(_) => Err(CheckFailure::Timeout),
    }
}

async fn probe_unbounded(
    addr: SocketAddr,
    config: &HealthCheckConfig,
    tls: Option<&crate::tls::UpstreamTls>,
) -> Result<u16, CheckFailure> {
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => CheckFailure::Refused,
        _ => CheckFailure::Error(e.to_string()),
    };
    match config.kind {
        CheckKind::Tcp => {
            TcpStream::connect(addr).await.map_err(io)?;
            return Ok(0);
        }
        CheckKind::Grpc => return super::grpc_check::probe(addr, config, tls, io).await,
        CheckKind::Http => {}
    }
    let mut stream = crate::tls::BackendConn::connect(addr, tls)
        .await
        .map_err(io)?;
    let host = match &config.host {
        Some(h) => h.clone(),
        None => addr.to_string(),
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: rondo-health-check\r\n\r\n",
        config.path
    );
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(CheckFailure::Error(
                "connection closed before a status line".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let parsed = response.parse(&buf);
        // The status line is enough: the code is known once it is parsed, complete head
        // or not (a head with too many headers still has a valid status).
        if let Some(code) = response.code {
            return if config.accepts(code) {
                Ok(code)
            } else {
                Err(CheckFailure::Status(code))
            };
        }
        match parsed {
            Ok(_) if buf.len() < MAX_HEAD => {}
            Ok(_) => return Err(CheckFailure::Error("status line too long".into())),
            Err(e) => return Err(CheckFailure::Error(format!("not an HTTP response: {e}"))),
        }
    }
}

/// SplitMix64: enough randomness to spread timers, without a dependency.
#[derive(Debug)]
pub(super) struct Jitter(pub(super) u64);

impl Jitter {
    /// A number in [0, 1), uniform.
    pub(super) fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `interval × (1 − jitter × u)`, u uniform in [0, 1): up to `jitter` of the interval
    /// earlier, never later (see the module's documentation).
    fn spread(&mut self, interval: Duration, jitter: f64) -> Duration {
        let factor = 1.0 - jitter * self.next_unit();
        interval.mul_f64(factor.max(0.0))
    }
}

impl Upstream {
    /// Why no backend can take traffic, when failed health checks are what keeps every one
    /// out: `GET /health got status 404 from all 3 backends (expected 200-399)`, or with
    /// mixed results `GET /health failed on all 3 backends: status 404 on 2, connection
    /// refused on 1 (expected 200-399)`. `None` when
    /// checks are off, a backend passes them, or a backend has not been checked yet. For the
    /// 503 log line, the stats and `rondo status`: a newcomer whose backends have no
    /// `/health` learns why every request gets 503.
    pub fn down_by_checks(&self) -> Option<String> {
        let config = self.config_ref();
        let check = &config.health_check;
        let snap = self.pool().snapshot();
        let backends = snap.backends();
        if !check.enabled || backends.is_empty() {
            return None;
        }
        // Result → backends that got it, in order of first appearance.
        let mut results: Vec<(String, usize)> = Vec::new();
        for b in backends {
            if b.health() != balance::Health::Down {
                return None;
            }
            let last = self.check_counters(b.id())?.last_result()?;
            match results.iter_mut().find(|(r, _)| *r == last) {
                Some((_, n)) => *n += 1,
                None => results.push((last, 1)),
            }
        }
        let (probe, n) = (check.probe(), backends.len());
        let mut line = match results.as_slice() {
            [(only, _)] => format!("{probe} got {only} from all {n} backends"),
            _ => {
                let each: Vec<String> =
                    results.iter().map(|(r, k)| format!("{r} on {k}")).collect();
                format!("{probe} failed on all {n} backends: {}", each.join(", "))
            }
        };
        if check.kind == CheckKind::Http {
            line.push_str(&format!(" (expected {})", check.expected()));
        }
        Some(line)
    }

    /// Counters of health checks of the backend with this id (`None` until its first probe
    /// task has started; kept while the backend stays in the pool).
    pub fn check_counters(&self, id: &str) -> Option<Arc<CheckCounters>> {
        self.checks.get(id)
    }

    /// Runs the health checks of this upstream's backends until `stop` resolves: one probe
    /// task per backend, started and stopped as the pool's membership and the configuration
    /// change (`enabled = false` stops them all).
    pub async fn run_health_checks(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        // Probe tasks by backend (id, address); dropped (and so aborted) on return.
        let mut tasks: HashMap<(String, SocketAddr), tokio::task::JoinHandle<()>> = HashMap::new();
        let mut seed = super::random_seed();
        loop {
            let enabled = self.config().health_check.enabled;
            let snap = self.pool.snapshot();
            let wanted: Vec<(String, SocketAddr)> = if enabled {
                snap.backends()
                    .iter()
                    .map(|b| (b.id().to_owned(), b.address()))
                    .collect()
            } else {
                Vec::new()
            };
            tasks.retain(|key, task| {
                let keep = wanted.contains(key) && !task.is_finished();
                if !keep {
                    task.abort();
                }
                keep
            });
            if !enabled {
                // Checks turned off by a reload: a backend they had taken out would
                // otherwise never come back.
                for b in snap.backends() {
                    if b.health() == Health::Down {
                        *self.checks.entry(b.id()).last.lock() =
                            Some("health checks disabled".to_owned());
                        let _ = self.pool.set_health(b.id(), Health::Up, self.clock.now());
                    }
                }
            }
            for key in wanted {
                if tasks.contains_key(&key) {
                    continue;
                }
                seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let task = tokio::spawn(Arc::clone(&self).check_backend(
                    key.0.clone(),
                    key.1,
                    Jitter(seed),
                ));
                tasks.insert(key, task);
            }
            let ids: Vec<String> = snap.backends().iter().map(|b| b.id().to_owned()).collect();
            self.checks.retain(|id| ids.iter().any(|i| i == id));
            drop(snap);
            tokio::select! {
                _ = &mut stop => break,
                _ = self.membership.notified() => {}
            }
        }
        for task in tasks.into_values() {
            task.abort();
        }
    }

    /// Checks one backend until the membership loop aborts the task.
    async fn check_backend(self: Arc<Self>, id: String, addr: SocketAddr, mut jitter: Jitter) {
        let counters = self.checks.entry(&id);
        // The first check at a random point of the first interval.
        let first = self
            .config()
            .health_check
            .interval
            .mul_f64(jitter.next_unit());
        tokio::time::sleep(first).await;
        loop {
            let config = self.config();
            let check = &config.health_check;
            let tls = self.tls();
            let began = tokio::time::Instant::now();
            let result = probe(addr, check, tls.as_deref()).await;
            counters.record(&result);
            tracing::debug!(upstream = self.name(), backend = id.as_str(), result = ?result, "health check");
            // The result is recorded before the pool hears of it, so the transition's log
            // line (the reporter's) can give its reason.
            // An error means the backend was removed since: the membership loop is about
            // to stop this task (or it was added back, and the next check counts again).
            let _ = self
                .pool
                .record_check(&id, result.is_ok(), self.clock.now());
            tokio::time::sleep_until(began + jitter.spread(check.interval, check.jitter)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_bounds_and_spreads() {
        let mut j = Jitter(42);
        let interval = Duration::from_millis(1000);
        let all: Vec<Duration> = (0..1000).map(|_| j.spread(interval, 0.1)).collect();
        assert!(all.iter().all(|d| *d > Duration::from_millis(900)));
        assert!(
            all.iter().all(|d| *d <= interval),
            "never later than the interval"
        );
        let min = all.iter().min().unwrap();
        let max = all.iter().max().unwrap();
        assert!(*max - *min > Duration::from_millis(75), "{min:?}..{max:?}");
        assert_eq!(j.spread(interval, 0.0), interval);
    }
}
