//! The last 15 minutes of an upstream and of each of its backends, for the dashboard's charts:
//! every [`INTERVAL`] the control thread turns the recorder's running totals into one point
//! (requests per second, share of 5xx, p99 of the requests of that interval). Kept here rather
//! than in the page, so a dashboard opened during an incident shows what led to it.
//!
//! Sampling reads the recorder's atomics and diffs them against the previous sample: nothing
//! is added to the request path. 180 points of a few numbers per backend; backends that leave
//! the pool leave the history.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use super::Upstream;
use super::events::millis;
use super::recorder::{BackendRecorder, quantile_of};

/// Time between two points.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// Points kept: 15 minutes.
pub const KEEP: usize = 180;

/// One interval of traffic.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// End of the interval, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Requests (attempts) finished per second.
    pub rate: f64,
    /// Share of them answered 5xx (by the backend, or by rondo for a failed attempt), 0 to 1.
    pub errors: f64,
    /// 99th percentile of their latency, milliseconds (0 without requests).
    pub p99_ms: f64,
}

/// A backend's points.
#[derive(Debug, Clone, Serialize)]
pub struct BackendHistory {
    /// The backend.
    pub id: String,
    /// Oldest first.
    pub points: Vec<Point>,
}

/// An upstream's points and its backends'.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamHistory {
    /// The upstream.
    pub name: String,
    /// The whole upstream, oldest first.
    pub points: Vec<Point>,
    /// Per backend, in pool order.
    pub backends: Vec<BackendHistory>,
}

/// Running totals of one backend at the last sample.
#[derive(Debug, Clone, Default)]
struct Totals {
    requests: u64,
    errors: u64,
    /// Latency histogram bucket counts.
    buckets: Vec<u64>,
}

impl Totals {
    fn read(r: &BackendRecorder) -> Totals {
        let errors = r
            .codes()
            .iter()
            .filter(|(code, _)| *code >= 500 || *code == 0)
            .map(|(_, n)| n)
            .sum();
        Totals {
            requests: r.latency.count(),
            errors,
            buckets: r.latency.bucket_counts(),
        }
    }

    /// What happened since `before` (a recorder forgotten and recreated starts again from 0).
    fn since(&self, before: &Totals) -> Totals {
        if self.requests < before.requests {
            return self.clone();
        }
        Totals {
            requests: self.requests - before.requests,
            errors: self.errors.saturating_sub(before.errors),
            buckets: self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, n)| n.saturating_sub(before.buckets.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    fn add(&mut self, other: &Totals) {
        self.requests += other.requests;
        self.errors += other.errors;
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
    }

    fn point(&self, time_ms: u64, secs: f64) -> Point {
        Point {
            time_ms,
            rate: if secs > 0.0 {
                self.requests as f64 / secs
            } else {
                0.0
            },
            errors: if self.requests > 0 {
                self.errors as f64 / self.requests as f64
            } else {
                0.0
            },
            p99_ms: quantile_of(&self.buckets, 0.99).as_secs_f64() * 1e3,
        }
    }
}

#[derive(Debug, Default)]
struct Track {
    last: Totals,
    points: VecDeque<Point>,
}

#[derive(Debug, Default)]
struct Inner {
    /// When the last sample was taken (`None` before the first).
    at: Option<Instant>,
    upstream: VecDeque<Point>,
    backends: HashMap<String, Track>,
}

/// An upstream's history (see the module documentation).
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<Inner>,
}

fn push(points: &mut VecDeque<Point>, p: Point) {
    if points.len() == KEEP {
        points.pop_front();
    }
    points.push_back(p);
}

impl History {
    /// Takes one sample of `upstream` now: a point per backend and one for the upstream,
    /// covering the time since the previous sample (the first sample only sets the baseline).
    pub fn sample(&self, upstream: &Upstream) {
        let now = Instant::now();
        let time_ms = millis(SystemTime::now());
        let snap = upstream.pool().snapshot();
        let mut inner = self.inner.lock();
        let secs = inner.at.map(|at| (now - at).as_secs_f64());
        inner.at = Some(now);
        let mut all = Totals::default();
        let mut kept = HashMap::with_capacity(snap.backends().len());
        for b in snap.backends() {
            let totals = upstream
                .recorder()
                .get(b.id())
                .map_or_else(Totals::default, |r| Totals::read(&r));
            let mut track = inner.backends.remove(b.id()).unwrap_or_default();
            if let Some(secs) = secs {
                let delta = totals.since(&track.last);
                all.add(&delta);
                push(&mut track.points, delta.point(time_ms, secs));
            }
            track.last = totals;
            kept.insert(b.id().to_owned(), track);
        }
        inner.backends = kept;
        if let Some(secs) = secs {
            push(&mut inner.upstream, all.point(time_ms, secs));
        }
    }

    /// The points after `since_ms` (milliseconds since the Unix epoch; 0 for all), with the
    /// backends in pool order.
    pub fn since(&self, upstream: &Upstream, since_ms: u64) -> UpstreamHistory {
        let inner = self.inner.lock();
        let after = |points: &VecDeque<Point>| -> Vec<Point> {
            points
                .iter()
                .filter(|p| p.time_ms > since_ms)
                .copied()
                .collect()
        };
        let snap = upstream.pool().snapshot();
        UpstreamHistory {
            name: upstream.name().to_owned(),
            points: after(&inner.upstream),
            backends: snap
                .backends()
                .iter()
                .filter_map(|b| {
                    let track = inner.backends.get(b.id())?;
                    Some(BackendHistory {
                        id: b.id().to_owned(),
                        points: after(&track.points),
                    })
                })
                .collect(),
        }
    }
}

impl Upstream {
    /// Samples this upstream's history every [`INTERVAL`] until `stop` resolves.
    pub async fn run_history(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => self.history().sample(&self),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;

    fn upstream() -> Upstream {
        let text = "[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\
             [[upstreams]]\nname = \"app\"\nbackends = [{ address = \"127.0.0.1:9\", id = \"a\" }, \
             { address = \"127.0.0.1:10\", id = \"b\" }]\n";
        let config = crate::config::parse(text, "test.toml").unwrap();
        Upstream::new(config.upstreams[0].clone(), Clock::new()).unwrap()
    }

    #[test]
    fn each_point_covers_only_its_interval() {
        let up = upstream();
        let history = History::default();
        for _ in 0..5 {
            up.recorder().record("a", 200, Duration::from_millis(2));
        }
        history.sample(&up); // baseline: no point yet
        assert!(history.since(&up, 0).points.is_empty());

        for _ in 0..3 {
            up.recorder().record("a", 200, Duration::from_millis(1));
        }
        up.recorder().record("a", 503, Duration::from_millis(400));
        up.recorder().record("b", 200, Duration::from_millis(1));
        history.sample(&up);
        let h = history.since(&up, 0);
        let (a, b) = (&h.backends[0], &h.backends[1]);
        assert_eq!((a.id.as_str(), b.id.as_str()), ("a", "b"));
        assert_eq!(a.points.len(), 1);
        // 4 requests in the interval on a (not the 5 before), one of them a 503.
        assert_eq!(a.points[0].errors, 0.25);
        assert!(a.points[0].p99_ms > 300.0, "{:?}", a.points[0]);
        assert_eq!(b.points[0].errors, 0.0);
        assert!(b.points[0].p99_ms < 2.0);
        // The upstream: 5 requests, one error; p99 from both backends' buckets.
        assert_eq!(h.points[0].errors, 0.2);
        assert!(h.points[0].p99_ms > 300.0);

        // A quiet interval: zero rate, and nothing from before leaks into it.
        history.sample(&up);
        let h = history.since(&up, 0);
        assert_eq!(h.points.len(), 2);
        assert_eq!(h.points[1].rate, 0.0);
        assert_eq!(h.points[1].p99_ms, 0.0);
        // `since` returns only newer points.
        let first = h.points[0].time_ms;
        assert_eq!(
            history.since(&up, first).points.len(),
            usize::from(h.points[1].time_ms > first)
        );
    }

    #[test]
    fn history_keeps_fifteen_minutes() {
        let up = upstream();
        let history = History::default();
        for _ in 0..KEEP + 10 {
            history.sample(&up);
        }
        let h = history.since(&up, 0);
        assert_eq!(h.points.len(), KEEP);
        assert_eq!(h.backends[0].points.len(), KEEP);
    }
}
