//! Counters the proxy bumps on the request path, per listener and per upstream: lock-free
//! handles (plain atomics) that the runtime takes from [`ProxyMetrics`] when it builds a
//! listener or upstream and hands to the forwarding code, and that `/metrics` reads at
//! scrape time. Nothing is global: a test builds its own [`ProxyMetrics`].
//!
//! Taking a handle locks a registry (at start-up and reload only); using one never does.
//! Handles are found again by name, so counts survive a reload that rebuilds a listener.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

/// Every handle given out, by listener and upstream name.
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    listeners: Mutex<Vec<Arc<ListenerCounters>>>,
    upstreams: Mutex<Vec<Arc<UpstreamCounters>>>,
    /// The client connections each worker serves, by worker index.
    workers: Mutex<Vec<Arc<AtomicUsize>>>,
}

impl ProxyMetrics {
    /// The counters of listener `name` (created on first use).
    pub fn listener(&self, name: &str) -> Arc<ListenerCounters> {
        get_or_insert(
            &self.listeners,
            name,
            |n| n.name.as_str(),
            || ListenerCounters {
                name: name.to_owned(),
                ..ListenerCounters::default()
            },
        )
    }

    /// The counters of upstream `name` (created on first use).
    pub fn upstream(&self, name: &str) -> Arc<UpstreamCounters> {
        get_or_insert(
            &self.upstreams,
            name,
            |u| u.name.as_str(),
            || UpstreamCounters {
                name: name.to_owned(),
                ..UpstreamCounters::default()
            },
        )
    }

    /// Drops upstream `name`'s counters and every listener's responses from it (a reload
    /// removed the upstream): `/metrics` no longer shows it. Requests still in flight count
    /// into handles nothing reads any more.
    pub fn forget_upstream(&self, name: &str) {
        self.upstreams.lock().retain(|u| u.name != name);
        for l in self.listeners.lock().iter() {
            l.responses.lock().retain(|r| r.upstream() != name);
        }
    }

    /// Drops listener `name`'s counters (a reload removed it, or a new one could not start):
    /// `/metrics` and the statistics no longer show it.
    pub fn forget_listener(&self, name: &str) {
        self.listeners.lock().retain(|l| l.name != name);
    }

    /// New open-connection counts for `workers` worker threads, by index (taken once, when
    /// the workers start), for the workers to spread connections by.
    pub fn worker_connections(&self, workers: usize) -> Vec<Arc<AtomicUsize>> {
        let counts: Vec<Arc<AtomicUsize>> = (0..workers).map(|_| Arc::default()).collect();
        self.workers.lock().clone_from(&counts);
        counts
    }

    /// Every worker's open-connection count, by index.
    pub fn workers(&self) -> Vec<Arc<AtomicUsize>> {
        self.workers.lock().clone()
    }

    /// Every listener's counters, in the order they were first taken.
    pub fn listeners(&self) -> Vec<Arc<ListenerCounters>> {
        self.listeners.lock().clone()
    }

    /// Every upstream's counters, in the order they were first taken.
    pub fn upstreams(&self) -> Vec<Arc<UpstreamCounters>> {
        self.upstreams.lock().clone()
    }
}

fn get_or_insert<T>(
    list: &Mutex<Vec<Arc<T>>>,
    name: &str,
    name_of: impl Fn(&T) -> &str,
    make: impl FnOnce() -> T,
) -> Arc<T> {
    let mut list = list.lock();
    if let Some(found) = list.iter().find(|t| name_of(t) == name) {
        return Arc::clone(found);
    }
    let made = Arc::new(make());
    list.push(Arc::clone(&made));
    made
}

/// One listener's connections, bytes and responses.
#[derive(Debug, Default)]
pub struct ListenerCounters {
    name: String,
    /// Connections open now.
    pub active: AtomicI64,
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Connections refused or dropped at accept (descriptor limit, shutdown).
    pub refused: AtomicU64,
    /// Requests answered 503 without being forwarded because the process was over
    /// `max_memory`.
    pub refused_requests: AtomicU64,
    /// Bytes read from clients.
    pub bytes_in: AtomicU64,
    /// Bytes written to clients.
    pub bytes_out: AtomicU64,
    responses: Mutex<Vec<Arc<ResponseCounts>>>,
}

impl ListenerCounters {
    /// The listener's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The response counts of requests this listener sent to `upstream` (`""` for answers
    /// given before a request was routed, e.g. 400 for a malformed head). Take it once per
    /// route when building the listener, not per request.
    pub fn responses(&self, upstream: &str) -> Arc<ResponseCounts> {
        get_or_insert(&self.responses, upstream, ResponseCounts::upstream, || {
            ResponseCounts::new(upstream)
        })
    }

    /// The response counts of every upstream.
    pub fn all_responses(&self) -> Vec<Arc<ResponseCounts>> {
        self.responses.lock().clone()
    }

    /// Counts an accepted connection; the guard counts it closed when dropped.
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(Arc::clone(self))
    }
}

/// Holds a listener's count of open connections while the connection lives.
#[derive(Debug)]
pub struct ConnectionGuard(Arc<ListenerCounters>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Who made a response: a backend, or rondo itself (502, 503, 504, 4xx for bad requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A backend's answer, forwarded.
    Backend,
    /// An answer rondo wrote.
    Proxy,
}

impl Source {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Backend => "backend",
            Source::Proxy => "proxy",
        }
    }
}

/// Lowest and highest status code counted; anything else is counted as 599.
const FIRST_CODE: u16 = 100;
const LAST_CODE: u16 = 599;
const CODES: usize = (LAST_CODE - FIRST_CODE + 1) as usize;

/// Responses by status code and source: one atomic per (code, source), so counting is one
/// `fetch_add` whatever the code (8 KB per listener and upstream pair).
#[derive(Debug)]
pub struct ResponseCounts {
    upstream: String,
    counts: Box<[[AtomicU64; 2]]>,
}

impl ResponseCounts {
    fn new(upstream: &str) -> ResponseCounts {
        ResponseCounts {
            upstream: upstream.to_owned(),
            counts: (0..CODES)
                .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
                .collect(),
        }
    }

    /// The upstream these responses came through (`""`: none).
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Counts one response.
    pub fn record(&self, status: u16, source: Source) {
        let index = usize::from(status.clamp(FIRST_CODE, LAST_CODE) - FIRST_CODE);
        if let Some(pair) = self.counts.get(index) {
            pair[source as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts that are not zero: (code, source, count).
    pub fn nonzero(&self) -> Vec<(u16, Source, u64)> {
        let mut out = Vec::new();
        for (i, pair) in self.counts.iter().enumerate() {
            for source in [Source::Backend, Source::Proxy] {
                let n = pair[source as usize].load(Ordering::Relaxed);
                if n > 0 {
                    out.push((FIRST_CODE + i as u16, source, n));
                }
            }
        }
        out
    }
}

/// Why a request was retried on another backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// The connection could not be made (refused, timed out, unreachable).
    Connect,
    /// The backend closed or reset the connection before a response.
    Reset,
    /// No response head within `response_timeout`.
    Timeout,
    /// The response's status is in `retry_on_status`.
    Status,
}

impl RetryReason {
    /// Every reason, in label order.
    pub const ALL: [RetryReason; 4] = [
        RetryReason::Connect,
        RetryReason::Reset,
        RetryReason::Timeout,
        RetryReason::Status,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Connect => "connect",
            RetryReason::Reset => "reset",
            RetryReason::Timeout => "timeout",
            RetryReason::Status => "status",
        }
    }
}

/// One upstream's connection pool and retries.
#[derive(Debug, Default)]
pub struct UpstreamCounters {
    name: String,
    /// Idle pooled connections now (all workers).
    pub pool_idle: AtomicI64,
    /// Backend connections opened since start.
    pub pool_opened: AtomicU64,
    /// Requests sent on a pooled connection rather than a new one.
    pub pool_reused: AtomicU64,
    retries: [AtomicU64; 4],
}

impl UpstreamCounters {
    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Counts one retry.
    pub fn retry(&self, reason: RetryReason) {
        self.retries[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Retries for `reason` since start.
    pub fn retries(&self, reason: RetryReason) -> u64 {
        self.retries[reason as usize].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_found_again_by_name() {
        let m = ProxyMetrics::default();
        let a = m.listener("web");
        a.accepted.fetch_add(2, Ordering::Relaxed);
        assert_eq!(m.listener("web").accepted.load(Ordering::Relaxed), 2);
        assert_eq!(m.listeners().len(), 1);
        let r = a.responses("app");
        r.record(200, Source::Backend);
        assert_eq!(a.responses("app").nonzero(), [(200, Source::Backend, 1)]);
    }

    #[test]
    fn codes_are_counted_by_source_and_odd_ones_clamped() {
        let r = ResponseCounts::new("app");
        r.record(503, Source::Proxy);
        r.record(503, Source::Backend);
        r.record(503, Source::Proxy);
        r.record(999, Source::Backend);
        assert_eq!(
            r.nonzero(),
            [
                (503, Source::Backend, 1),
                (503, Source::Proxy, 2),
                (599, Source::Backend, 1)
            ]
        );
    }

    #[test]
    fn a_connection_guard_counts_open_connections() {
        let l = ProxyMetrics::default().listener("web");
        let g1 = l.connection();
        let g2 = l.connection();
        assert_eq!(l.active.load(Ordering::Relaxed), 2);
        drop((g1, g2));
        assert_eq!(l.active.load(Ordering::Relaxed), 0);
        assert_eq!(l.accepted.load(Ordering::Relaxed), 2);
    }
}
