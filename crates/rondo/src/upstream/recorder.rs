//! What the admin API reports beyond the pool's own counters: per backend, responses by
//! status code and a latency histogram fine enough for p50/p95/p99; per upstream, retries and
//! health checks by result.
//!
//! Recording sits on the request path, so it is lock-free and allocation-free: a backend's
//! recorder is found in a map published through an `ArcSwap` (one `load`, one hash of the id),
//! and recording is a handful of relaxed `fetch_add`s on fixed arrays. A recorder is created
//! the first time a backend finishes a request (or when the admin API adds it); that rare
//! write copies the map, as the pool copies its snapshot.
//!
//! The histogram has log-linear buckets in microseconds (HdrHistogram's layout at 3 bits of
//! precision): below 16 µs one bucket per microsecond, above it 8 buckets per power of two, so
//! a bucket is at most 12.5% wide and a reported percentile (the bucket's midpoint) is within
//! about 6% of the true value. 240 buckets reach past half an hour.

use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

/// Buckets below this many microseconds are one microsecond wide.
const LINEAR: u64 = 16;
/// Sub-buckets per power of two above [`LINEAR`]: 2^3.
const SUB_BITS: u32 = 3;
/// Number of fine buckets: 16 linear + 8 per octave from 2^4 µs to 2^32 µs (71 minutes).
const FINE_BUCKETS: usize = LINEAR as usize + 28 * (1 << SUB_BITS);

/// Upper bounds (seconds) of the Prometheus histogram's buckets: Prometheus' client defaults
/// (5 ms … 10 s) with 1 ms and 2.5 ms added, since a proxy's backends on a LAN often answer
/// in under 5 ms.
pub const PROMETHEUS_BOUNDS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Status codes 100..=599 are counted one by one; anything else lands in the last slot.
const CODES: usize = 501;

/// A lock-free latency histogram.
#[derive(Debug)]
pub struct Histogram {
    fine: Box<[AtomicU64]>,
    /// Non-cumulative counts per [`PROMETHEUS_BOUNDS`] bucket, plus one for `+Inf`.
    coarse: [AtomicU64; PROMETHEUS_BOUNDS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            fine: (0..FINE_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            coarse: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

/// The fine bucket of a latency in microseconds.
fn fine_index(micros: u64) -> usize {
    if micros < LINEAR {
        return micros as usize;
    }
    let octave = 63 - micros.leading_zeros(); // >= 4
    let sub = (micros >> (octave - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    let index = LINEAR as usize + ((octave - 4) as usize) * (1 << SUB_BITS) + sub as usize;
    index.min(FINE_BUCKETS - 1)
}

/// The range `[low, high)` of microseconds a fine bucket covers.
fn fine_range(index: usize) -> (u64, u64) {
    if index < LINEAR as usize {
        return (index as u64, index as u64 + 1);
    }
    let rel = index - LINEAR as usize;
    let octave = 4 + (rel >> SUB_BITS) as u32;
    let sub = (rel & ((1 << SUB_BITS) - 1)) as u64;
    let width = 1u64 << (octave - SUB_BITS);
    let low = (1u64 << octave) + sub * width;
    (low, low + width)
}

impl Histogram {
    /// Records one latency.
    #[inline]
    pub fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.fine[fine_index(micros)].fetch_add(1, Ordering::Relaxed);
        let secs = latency.as_secs_f64();
        let coarse = PROMETHEUS_BOUNDS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(PROMETHEUS_BOUNDS.len());
        self.coarse[coarse].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Their sum.
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed))
    }

    /// The `q`-quantile (0 < q ≤ 1): the midpoint of the bucket holding it; zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        quantile_of(&self.bucket_counts(), q)
    }

    /// The count of every fine bucket, for [`quantile_of`] over a difference of two readings
    /// (the history's per-interval p99).
    pub fn bucket_counts(&self) -> Vec<u64> {
        self.fine
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Per [`PROMETHEUS_BOUNDS`] bound, then `+Inf`: the latencies above the previous bound
    /// and at most this one (not cumulative: the encoder adds them up, as Prometheus' `le`
    /// buckets are).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        PROMETHEUS_BOUNDS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(&self.coarse)
            .map(|(bound, c)| (bound, c.load(Ordering::Relaxed)))
            .collect()
    }
}

/// The `q`-quantile (0 < q ≤ 1) of latencies counted in [`Histogram::bucket_counts`]'s
/// buckets: the midpoint of the bucket holding it; zero when they are all empty.
pub fn quantile_of(counts: &[u64], q: f64) -> Duration {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return Duration::ZERO;
    }
    // The rank of the quantile, 1-based: the smallest value with at least q of all below.
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            let (low, high) = fine_range(i);
            let mid = if high - low == 1 {
                low
            } else {
                low + (high - low) / 2
            };
            return Duration::from_micros(mid);
        }
    }
    Duration::ZERO
}

/// HTTP/2 connections and streams open to one backend now, over every worker (each worker
/// has its own connections; these sum them for the admin API and metrics).
#[derive(Debug, Default)]
pub struct Http2Gauges {
    /// Connections open (from the backend's SETTINGS until the connection ends).
    pub connections: AtomicU64,
    /// Streams open on them (a request until its response body ends).
    pub streams: AtomicU64,
}

impl Http2Gauges {
    /// (connections, streams) now.
    pub fn read(&self) -> (u64, u64) {
        (
            self.connections.load(Ordering::Relaxed),
            self.streams.load(Ordering::Relaxed),
        )
    }
}

/// What one backend recorded.
#[derive(Debug)]
pub struct BackendRecorder {
    /// Its HTTP/2 connections and streams now.
    pub http2: Http2Gauges,
    codes: Box<[AtomicU64]>,
    /// Latency of every finished attempt.
    pub latency: Histogram,
    /// Bytes relayed from clients to this backend (TCP mode and upgraded connections).
    bytes_sent: AtomicU64,
    /// Bytes relayed from this backend to clients (TCP mode and upgraded connections).
    bytes_received: AtomicU64,
}

impl Default for BackendRecorder {
    fn default() -> BackendRecorder {
        BackendRecorder {
            http2: Http2Gauges::default(),
            codes: (0..CODES).map(|_| AtomicU64::new(0)).collect(),
            latency: Histogram::default(),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
        }
    }
}

impl BackendRecorder {
    /// Records one finished attempt: the status its client saw from it (the backend's, or
    /// the 502/504 the proxy made of a failure) and its latency.
    #[inline]
    pub fn record(&self, status: u16, latency: Duration) {
        let slot = usize::from(status)
            .checked_sub(100)
            .filter(|&s| s < CODES - 1)
            .unwrap_or(CODES - 1);
        self.codes[slot].fetch_add(1, Ordering::Relaxed);
        self.latency.record(latency);
    }

    /// Counts bytes relayed on a connection that is no longer HTTP: `sent` to the backend,
    /// `received` from it.
    pub fn relayed(&self, sent: u64, received: u64) {
        self.bytes_sent.fetch_add(sent, Ordering::Relaxed);
        self.bytes_received.fetch_add(received, Ordering::Relaxed);
    }

    /// Bytes relayed so far: (to the backend, from the backend).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.bytes_sent.load(Ordering::Relaxed),
            self.bytes_received.load(Ordering::Relaxed),
        )
    }

    /// Attempts by status code, codes with none left out; code 0 collects codes outside
    /// 100..=599.
    pub fn codes(&self) -> Vec<(u16, u64)> {
        self.codes
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let n = c.load(Ordering::Relaxed);
                let code = if i == CODES - 1 { 0 } else { i as u16 + 100 };
                (n > 0).then_some((code, n))
            })
            .collect()
    }
}

/// Everything an upstream records for reporting.
#[derive(Debug, Default)]
pub struct Recorder {
    /// By backend id, read on every request: Fx-hashed (the ids come from the configuration
    /// and discovery, not from clients).
    backends: ArcSwap<FxHashMap<String, Arc<BackendRecorder>>>,
    retries: AtomicU64,
    local_errors: AtomicU64,
    unkeyed: AtomicU64,
    /// Connections switched to another protocol (WebSocket, `Upgrade`) or relayed in TCP mode.
    upgraded: AtomicU64,
}

impl Recorder {
    /// Records a finished attempt on backend `id` (see [`BackendRecorder::record`]): one
    /// `load` of the map and no reference count touched, except the first time.
    #[inline]
    pub fn record(&self, id: &str, status: u16, latency: Duration) {
        if let Some(r) = self.backends.load().get(id) {
            r.record(status, latency);
            return;
        }
        self.backend(id).record(status, latency);
    }

    /// The recorder of backend `id`, created on first use.
    #[inline]
    pub fn backend(&self, id: &str) -> Arc<BackendRecorder> {
        if let Some(r) = self.backends.load().get(id) {
            return Arc::clone(r);
        }
        let mut created = None;
        self.backends.rcu(|map| {
            let mut map = FxHashMap::clone(map);
            let r = map
                .entry(id.to_owned())
                .or_insert_with(|| Arc::new(BackendRecorder::default()));
            created = Some(Arc::clone(r));
            map
        });
        created.unwrap_or_default()
    }

    /// The recorder of backend `id` if it recorded anything.
    pub fn get(&self, id: &str) -> Option<Arc<BackendRecorder>> {
        self.backends.load().get(id).cloned()
    }

    /// Forgets backend `id` (removed from the pool): a backend added later under the same id
    /// starts from zero, as its pool counters do.
    pub fn forget(&self, id: &str) {
        self.backends.rcu(|map| {
            let mut map = FxHashMap::clone(map);
            map.remove(id);
            map
        });
    }

    /// Counts a retry.
    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection that stopped being HTTP (101 Switching Protocols, CONNECT) or a
    /// TCP-mode connection.
    pub fn upgraded(&self) {
        self.upgraded.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections upgraded or relayed so far.
    pub fn upgrades(&self) -> u64 {
        self.upgraded.load(Ordering::Relaxed)
    }

    /// Retries so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Counts an attempt that failed on our side (no descriptor, no port, no memory): kept
    /// apart from the backends' failures, which it must not feed.
    pub fn local_error(&self) {
        self.local_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Local errors so far (see [`Recorder::local_error`]).
    pub fn local_errors(&self) -> u64 {
        self.local_errors.load(Ordering::Relaxed)
    }

    /// Counts a request of a `consistent-hash` upstream that lacked its `hash_key` and went
    /// to the round-robin cycle instead: a key that is often missing spreads no affinity.
    pub fn unkeyed(&self) {
        self.unkeyed.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests without their hash key so far (see [`Recorder::unkeyed`]).
    pub fn unkeyed_requests(&self) -> u64 {
        self.unkeyed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fine_buckets_tile_the_range_without_gaps() {
        let mut next = 0;
        for i in 0..FINE_BUCKETS {
            let (low, high) = fine_range(i);
            assert_eq!(low, next, "bucket {i}");
            assert!(high > low);
            assert_eq!(fine_index(low), i);
            assert_eq!(fine_index(high - 1), i);
            next = high;
        }
        assert_eq!(fine_index(u64::MAX), FINE_BUCKETS - 1);
    }

    #[test]
    fn quantiles_are_within_the_bucket_precision() {
        let h = Histogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        for (q, want) in [(0.5, 50.0), (0.95, 95.0), (0.99, 99.0)] {
            let got = h.quantile(q).as_secs_f64() * 1000.0;
            assert!((got - want).abs() / want < 0.07, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.sum(), Duration::from_millis(5050));
        let buckets = h.buckets();
        assert_eq!(buckets[0], (0.001, 1));
        // 26..=50 ms.
        assert_eq!(buckets[5], (0.05, 25));
        assert_eq!(buckets[6], (0.1, 50));
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 100);
    }

    #[test]
    fn an_empty_histogram_reports_zero() {
        assert_eq!(Histogram::default().quantile(0.99), Duration::ZERO);
    }

    #[test]
    fn status_codes_are_counted_one_by_one() {
        let r = Recorder::default();
        let b = r.backend("a");
        b.record(200, Duration::from_millis(1));
        b.record(200, Duration::from_millis(1));
        b.record(503, Duration::from_millis(1));
        b.record(42, Duration::from_millis(1));
        assert_eq!(r.backend("a").codes(), [(200, 2), (503, 1), (0, 1)]);
        r.forget("a");
        assert!(r.get("a").is_none());
    }
}
