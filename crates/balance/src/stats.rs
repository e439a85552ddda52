//! A backend's live statistics: counters, response times and the load score.
//!
//! Written on every response and read by the `p2c` picker and by reporting, so everything is
//! an atomic: no lock is ever held on the request path. Three views of latency serve three
//! readers:
//!
//! - a per-response EWMA (α = 1/10: the last ~20 responses carry most of the weight) for
//!   statistics;
//! - the average over the last [`WINDOW`] responses, the seed's `response_times` deque;
//! - a *peak* EWMA (Finagle's, also tower's): jumps up to any slower response at once and
//!   decays with a time constant [`PEAK_EWMA_DECAY`], so a backend that just slowed down is
//!   avoided immediately and forgiven gradually. It is what `p2c` compares.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::time::Timestamp;

/// Responses in the recent-window average, as in the seed (`deque(maxlen=100)`).
pub const WINDOW: usize = 100;

/// Time constant of the peak EWMA's decay. Finagle and linkerd use 10 s: long enough to
/// remember a slow spell, short enough to retry a backend within a minute.
pub const PEAK_EWMA_DECAY: Duration = Duration::from_secs(10);

/// The latency charged per request in flight to a backend with no response yet (the seed's
/// simulated backends answer in 100 ms when they have no history). An idle backend with no
/// history costs nothing, so a new backend is tried at once, but only one request at a time
/// until its first answer sets a real estimate: exploration without a thundering herd.
pub const DEFAULT_RTT: Duration = Duration::from_millis(100);

/// Weight of the newest sample in the per-response EWMAs.
const ALPHA: f64 = 0.1;

/// Lock-free `f64` cell.
#[derive(Debug)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn new(v: f64) -> AtomicF64 {
        AtomicF64(AtomicU64::new(v.to_bits()))
    }
    fn load(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
    fn store(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    /// Replaces the value with `f(value)` by a load and a store, not a compare-and-swap:
    /// two responses finishing at the same instant may lose one sample of an average, which
    /// an estimate tolerates, and every response saves a locked instruction.
    fn update(&self, f: impl Fn(f64) -> f64) {
        self.store(f(self.load()));
    }
}

/// Counters and latency of one backend.
#[derive(Debug)]
pub struct Stats {
    requests: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    in_flight: AtomicU32,
    /// The most requests it ever had in flight at once (HAProxy's `smax`, "max sessions").
    peak_in_flight: AtomicU32,
    /// Per-response EWMA of latency, seconds; NaN until the first response.
    ewma: AtomicF64,
    /// Per-response EWMA of the failure indicator (0 or 1).
    error_rate: AtomicF64,
    /// Peak EWMA of latency, seconds, and when it was last updated.
    peak: AtomicF64,
    peak_at: AtomicU64,
    /// The last `WINDOW` latencies in microseconds, and how many were ever written.
    recent: [AtomicU32; WINDOW],
    recent_count: AtomicU64,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            requests: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            peak_in_flight: AtomicU32::new(0),
            ewma: AtomicF64::new(f64::NAN),
            error_rate: AtomicF64::new(0.0),
            peak: AtomicF64::new(DEFAULT_RTT.as_secs_f64()),
            peak_at: AtomicU64::new(0),
            recent: std::array::from_fn(|_| AtomicU32::new(0)),
            recent_count: AtomicU64::new(0),
        }
    }
}

/// A consistent-enough copy of a backend's statistics for reporting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatsSnapshot {
    /// Requests sent to the backend (started).
    pub requests: u64,
    /// Requests that ended in success.
    pub successes: u64,
    /// Requests that ended in failure (connect error, timeout, 5xx, reset).
    pub failures: u64,
    /// Requests in flight now.
    pub in_flight: u32,
    /// The most requests it ever had in flight at once.
    pub peak_in_flight: u32,
    /// `successes / (successes + failures)`, 1.0 before any outcome.
    pub success_rate: f64,
    /// Per-response EWMA of latency; zero before any response.
    pub ewma: Duration,
    /// Average latency of the last [`WINDOW`] responses; zero before any response.
    pub recent_average: Duration,
    /// Peak EWMA of latency as of the snapshot time.
    pub peak_ewma: Duration,
    /// Recent failure rate (per-response EWMA), in `[0, 1]`.
    pub error_rate: f64,
    /// The load score (see [`Stats::load_score`]).
    pub load_score: f64,
}

impl Stats {
    /// Marks a request as started.
    #[inline]
    pub(crate) fn begin(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.note_peak(now);
    }

    /// Raises the peak to `in_flight` if it is a new one. A plain load first: the peak is
    /// rarely beaten, so almost every request only reads a shared cache line.
    #[inline]
    fn note_peak(&self, in_flight: u32) {
        if in_flight > self.peak_in_flight.load(Ordering::Relaxed) {
            self.peak_in_flight.fetch_max(in_flight, Ordering::Relaxed);
        }
    }

    /// Tries to start a request under a connection limit; false (and nothing counted) when
    /// the backend already has `limit` requests in flight.
    #[inline]
    pub(crate) fn try_begin(&self, limit: u32) -> bool {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= limit {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.note_peak(before + 1);
        true
    }

    /// Marks a request as finished without recording an outcome.
    #[inline]
    pub(crate) fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Requests in flight now.
    #[inline]
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Records a finished request's outcome and latency.
    pub(crate) fn record(&self, success: bool, latency: Duration, now: Timestamp) {
        if success {
            self.successes.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let secs = latency.as_secs_f64();
        self.ewma.update(|old| {
            if old.is_nan() {
                secs
            } else {
                old + ALPHA * (secs - old)
            }
        });
        let err = if success { 0.0 } else { 1.0 };
        self.error_rate.update(|old| old + ALPHA * (err - old));
        // Finagle's update: above the estimate, jump to it; below, move toward it by the
        // share of the time constant that passed since the last update.
        let first = self.recent_count.load(Ordering::Relaxed) == 0;
        let old = if first { 0.0 } else { self.peak.load() };
        let since =
            now.saturating_since(Timestamp::from_nanos(self.peak_at.load(Ordering::Relaxed)));
        let w = decay_factor(since);
        let peak = if secs > old {
            secs
        } else {
            old * w + secs * (1.0 - w)
        };
        self.peak.store(peak);
        self.peak_at.store(now.as_nanos(), Ordering::Relaxed);
        // Load and store rather than fetch_add, for the same reason as `AtomicF64::update`.
        let count = self.recent_count.load(Ordering::Relaxed);
        self.recent_count.store(count + 1, Ordering::Relaxed);
        let slot = count as usize % WINDOW;
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.recent[slot].store(micros, Ordering::Relaxed);
    }

    /// The peak EWMA, in seconds, decayed to `now` without writing anything.
    #[inline]
    pub fn peak_ewma_at(&self, now: Timestamp) -> f64 {
        let at = Timestamp::from_nanos(self.peak_at.load(Ordering::Relaxed));
        let elapsed = now.saturating_since(at);
        self.peak.load() * decay_factor(elapsed)
    }

    /// The load score, the seed's `get_load_score` made sound: the expected time a new
    /// request would take here, i.e. latency (peak EWMA, seconds) times the queue it joins
    /// (in flight + 1), divided by the chance it succeeds (a failed request is retried, so
    /// an error rate `e` costs `1 / (1 - e)` attempts; capped at 100 attempts).
    /// A backend with no response yet scores `in flight × DEFAULT_RTT` (see [`DEFAULT_RTT`]).
    #[inline]
    pub fn load_score(&self, now: Timestamp) -> f64 {
        let in_flight = self.in_flight();
        if self.recent_count.load(Ordering::Relaxed) == 0 {
            return f64::from(in_flight) * DEFAULT_RTT.as_secs_f64();
        }
        let success = (1.0 - self.error_rate.load()).max(0.01);
        self.peak_ewma_at(now) * f64::from(in_flight + 1) / success
    }

    /// Requests sent to the backend so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// A copy for reporting.
    pub fn snapshot(&self, now: Timestamp) -> StatsSnapshot {
        let successes = self.successes.load(Ordering::Relaxed);
        let failures = self.failures.load(Ordering::Relaxed);
        let done = successes + failures;
        let count = self.recent_count.load(Ordering::Relaxed).min(WINDOW as u64) as usize;
        let sum: u64 = self.recent[..count]
            .iter()
            .map(|s| u64::from(s.load(Ordering::Relaxed)))
            .sum();
        let ewma = self.ewma.load();
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            successes,
            failures,
            in_flight: self.in_flight(),
            peak_in_flight: self.peak_in_flight.load(Ordering::Relaxed),
            success_rate: if done == 0 {
                1.0
            } else {
                successes as f64 / done as f64
            },
            ewma: if ewma.is_nan() {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(ewma)
            },
            recent_average: if count == 0 {
                Duration::ZERO
            } else {
                Duration::from_micros(sum / count as u64)
            },
            peak_ewma: Duration::from_secs_f64(self.peak_ewma_at(now)),
            error_rate: self.error_rate.load(),
            load_score: self.load_score(now),
        }
    }
}

/// `exp(-elapsed / PEAK_EWMA_DECAY)`. Under load, updates come microseconds apart, where
/// `1 - x + x²/2` is exact to 1e-7 and costs a fraction of `exp`, which is on every response.
#[inline]
fn decay_factor(elapsed: Duration) -> f64 {
    let x = elapsed.as_secs_f64() / PEAK_EWMA_DECAY.as_secs_f64();
    if x < 1.0 / 128.0 {
        1.0 - x + x * x / 2.0
    } else {
        (-x).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn counts_outcomes_and_averages_the_recent_window() {
        let s = Stats::default();
        let t = Timestamp::from_nanos(1);
        for i in 0..150u64 {
            s.begin();
            s.record(i % 10 != 0, ms(if i < 50 { 1000 } else { 10 }), t);
            s.end();
        }
        let snap = s.snapshot(t);
        assert_eq!(
            (snap.requests, snap.successes, snap.failures, snap.in_flight),
            (150, 135, 15, 0)
        );
        assert_eq!(
            snap.recent_average,
            ms(10),
            "only the last 100 responses count"
        );
        assert!((snap.success_rate - 0.9).abs() < 1e-9);
    }

    #[test]
    fn the_peak_in_flight_is_the_most_requests_ever_in_flight_at_once() {
        let s = Stats::default();
        s.begin();
        assert!(s.try_begin(3));
        s.begin();
        assert!(!s.try_begin(3), "refused at the limit: no new peak");
        s.end();
        s.end();
        assert!(s.try_begin(3));
        let snap = s.snapshot(Timestamp::from_nanos(1));
        assert_eq!((snap.in_flight, snap.peak_in_flight), (2, 3));
    }

    #[test]
    fn peak_ewma_jumps_up_at_once_and_decays_over_time() {
        let s = Stats::default();
        let t0 = Timestamp::from_nanos(1_000);
        s.record(true, ms(5), t0);
        s.record(true, ms(500), t0);
        assert!((s.peak_ewma_at(t0) - 0.5).abs() < 1e-9, "jumps to the peak");
        let later = t0.saturating_add(PEAK_EWMA_DECAY);
        assert!((s.peak_ewma_at(later) - 0.5 / std::f64::consts::E).abs() < 1e-6);
    }

    #[test]
    fn a_backend_with_no_history_is_tried_once_then_scored_by_its_first_answer() {
        let now = Timestamp::from_nanos(1);
        let s = Stats::default();
        assert_eq!(s.load_score(now), 0.0, "idle and unknown: try it");
        s.begin();
        assert_eq!(
            s.load_score(now),
            DEFAULT_RTT.as_secs_f64(),
            "one request out: wait for it"
        );
        s.record(true, ms(2), now);
        s.end();
        assert!(
            (s.peak_ewma_at(now) - 0.002).abs() < 1e-9,
            "the first answer is the estimate"
        );
        assert!((s.load_score(now) - 0.002).abs() < 1e-6);
    }

    #[test]
    fn load_score_grows_with_queue_latency_and_errors() {
        let now = Timestamp::from_nanos(1);
        let (fast, busy, failing) = (Stats::default(), Stats::default(), Stats::default());
        for s in [&fast, &busy, &failing] {
            s.record(true, ms(10), now);
        }
        busy.begin();
        busy.begin();
        for _ in 0..5 {
            failing.record(false, ms(10), now);
        }
        let f = fast.load_score(now);
        assert!(busy.load_score(now) > 2.5 * f);
        assert!(failing.load_score(now) > 1.5 * f);
    }

    #[test]
    fn connection_limit_admits_up_to_the_limit() {
        let s = Stats::default();
        assert!(s.try_begin(2));
        assert!(s.try_begin(2));
        assert!(!s.try_begin(2));
        assert_eq!(s.in_flight(), 2);
        s.end();
        assert!(s.try_begin(2));
    }
}
