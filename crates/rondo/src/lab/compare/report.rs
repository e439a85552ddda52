//! Results of a comparison and how they are shown: the aligned text table, the JSON document
//! and the conclusion drawn from the numbers.
//!
//! Nothing here knows the numbers were simulated. An [`AlgorithmResult`] is filled through a
//! [`Tally`] (a request sent to a backend, a response with its latency, the elapsed time), so
//! a live run through the proxy can produce the same structure and reuse the table, the JSON,
//! the conclusion and the charts unchanged.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::contender::Contender;
use super::keys::{Affinity, KeysMoved};

pub use super::conclusion::{conclusion, weight_deviation, wrap};

/// Latency distribution of the completed requests of one run.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct LatencySummary {
    /// Arithmetic mean.
    #[serde(rename = "mean_ms", serialize_with = "millis")]
    pub mean: Duration,
    /// Median.
    #[serde(rename = "p50_ms", serialize_with = "millis")]
    pub p50: Duration,
    /// 95th percentile.
    #[serde(rename = "p95_ms", serialize_with = "millis")]
    pub p95: Duration,
    /// 99th percentile.
    #[serde(rename = "p99_ms", serialize_with = "millis")]
    pub p99: Duration,
    /// Slowest request.
    #[serde(rename = "max_ms", serialize_with = "millis")]
    pub max: Duration,
}

impl LatencySummary {
    /// Summarises `samples` (sorted in place). Percentiles are nearest-rank: the p-th
    /// percentile is the smallest sample with at least p % of the samples at or below it, a
    /// value that was actually observed. All zero for no samples.
    pub fn from_samples(samples: &mut [Duration]) -> LatencySummary {
        if samples.is_empty() {
            return LatencySummary::default();
        }
        samples.sort_unstable();
        let n = samples.len();
        let rank = |p: f64| {
            let r = (p / 100.0 * n as f64).ceil() as usize;
            samples[r.clamp(1, n) - 1]
        };
        let total: u128 = samples.iter().map(Duration::as_nanos).sum();
        let mean = u64::try_from(total / n as u128).unwrap_or(u64::MAX);
        LatencySummary {
            mean: Duration::from_nanos(mean),
            p50: rank(50.0),
            p95: rank(95.0),
            p99: rank(99.0),
            max: samples[n - 1],
        }
    }
}

/// What one backend received during one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendResult {
    /// Its id.
    pub id: String,
    /// Its configured weight.
    pub weight: f64,
    /// Requests sent to it.
    pub requests: u64,
    /// Its share of the requests that were sent to some backend, from 0 to 1.
    pub share: f64,
    /// Most requests it had in flight at once (queued ones included), as the balancer
    /// counted them.
    pub peak_in_flight: u32,
    /// Mean latency of its completed requests (zero when none completed).
    #[serde(rename = "mean_latency_ms", serialize_with = "millis")]
    pub mean_latency: Duration,
}

/// One algorithm's run, simulated or (later) live.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlgorithmResult {
    /// The algorithm (with its bounded-load factor, for `consistent-hash-bounded`).
    #[serde(serialize_with = "algorithm_name")]
    pub algorithm: Contender,
    /// Requests issued.
    pub requests: u64,
    /// Requests that completed.
    pub completed: u64,
    /// From the start of the run to the last response (virtual time in a simulation).
    #[serde(rename = "elapsed_s", serialize_with = "seconds")]
    pub elapsed: Duration,
    /// Completed requests per second of `elapsed`.
    pub throughput: f64,
    /// Latency of the completed requests.
    pub latency: LatencySummary,
    /// Per backend, in pool order.
    pub backends: Vec<BackendResult>,
    /// Share of requests whose key had been seen before that went to the same backend as
    /// that key's previous request, 0 to 1 (`None`: the run had no keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_affinity: Option<f64>,
    /// For `consistent-hash`: the keys that moved when the busiest backend failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys_moved: Option<KeysMoved>,
}

fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(round3(d.as_secs_f64() * 1e3))
}

fn seconds<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(round3(d.as_secs_f64()))
}

fn algorithm_name<S: Serializer>(a: &Contender, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(a.name())
}

/// Three decimals are plenty for milliseconds and keep the JSON readable.
fn round3(v: f64) -> f64 {
    (v * 1e3).round() / 1e3
}

/// Collects one run as it happens and turns it into an [`AlgorithmResult`].
#[derive(Debug, Clone)]
pub struct Tally {
    algorithm: Contender,
    backends: Vec<BackendResult>,
    /// Per backend: total latency and count of its completed requests.
    latency_sums: Vec<(Duration, u64)>,
    latencies: Vec<Duration>,
    requests: u64,
    affinity: Affinity,
    keys_moved: Option<KeysMoved>,
}

impl Tally {
    /// A tally for `algorithm` over backends given as `(id, weight)`, in pool order.
    pub fn new(
        algorithm: impl Into<Contender>,
        backends: impl IntoIterator<Item = (String, f64)>,
    ) -> Tally {
        let backends: Vec<BackendResult> = backends
            .into_iter()
            .map(|(id, weight)| BackendResult {
                id,
                weight,
                requests: 0,
                share: 0.0,
                peak_in_flight: 0,
                mean_latency: Duration::ZERO,
            })
            .collect();
        Tally {
            algorithm: algorithm.into(),
            latency_sums: vec![(Duration::ZERO, 0); backends.len()],
            backends,
            latencies: Vec::new(),
            requests: 0,
            affinity: Affinity::default(),
            keys_moved: None,
        }
    }

    /// The request just [`sent`](Tally::sent) to backend `index` had affinity key `key`.
    pub(crate) fn key(&mut self, key: u32, index: usize) {
        self.affinity.sent(key, index);
    }

    /// What a backend failure did to the keys (measured after the run).
    pub(crate) fn keys_moved(&mut self, moved: KeysMoved) {
        self.keys_moved = Some(moved);
    }

    /// A request was sent to backend `index`, which now has `in_flight` requests (this one
    /// included). An unknown index counts the request as unserved.
    pub fn sent(&mut self, index: usize, in_flight: u32) {
        self.requests += 1;
        if let Some(b) = self.backends.get_mut(index) {
            b.requests += 1;
            b.peak_in_flight = b.peak_in_flight.max(in_flight);
        }
    }

    /// A request found no backend to take it.
    pub fn unserved(&mut self) {
        self.requests += 1;
    }

    /// A request to backend `index` completed after `latency`.
    pub fn completed(&mut self, index: usize, latency: Duration) {
        self.latencies.push(latency);
        if let Some((sum, count)) = self.latency_sums.get_mut(index) {
            *sum = sum.saturating_add(latency);
            *count += 1;
        }
    }

    /// The result of a run that took `elapsed`.
    pub fn finish(mut self, elapsed: Duration) -> AlgorithmResult {
        let sent: u64 = self.backends.iter().map(|b| b.requests).sum();
        for (b, &(sum, count)) in self.backends.iter_mut().zip(&self.latency_sums) {
            if sent > 0 {
                b.share = b.requests as f64 / sent as f64;
            }
            if count > 0 {
                let mean = sum.as_nanos() / u128::from(count);
                b.mean_latency = Duration::from_nanos(u64::try_from(mean).unwrap_or(u64::MAX));
            }
        }
        let completed = self.latencies.len() as u64;
        let secs = elapsed.as_secs_f64();
        AlgorithmResult {
            algorithm: self.algorithm,
            requests: self.requests,
            completed,
            elapsed,
            throughput: if secs > 0.0 {
                completed as f64 / secs
            } else {
                0.0
            },
            latency: LatencySummary::from_samples(&mut self.latencies),
            backends: self.backends,
            key_affinity: self.affinity.share(),
            keys_moved: self.keys_moved,
        }
    }
}

/// Milliseconds, for tables and sentences.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The results as an aligned text table: one row per algorithm with throughput, latency,
/// each backend's share, each backend's peak in flight and the share of returning keys that
/// found their previous backend ("kept"), under group headings. The backend
/// columns follow the first result's backends; every column is as wide as its widest cell.
pub fn table(results: &[AlgorithmResult]) -> String {
    let ids: Vec<&str> = results
        .first()
        .map(|r| r.backends.iter().map(|b| b.id.as_str()).collect())
        .unwrap_or_default();
    let mut header: Vec<String> = ["algorithm", "req/s", "mean", "p50", "p95", "p99"]
        .map(str::to_owned)
        .to_vec();
    header.extend(ids.iter().map(|id| (*id).to_owned()));
    header.extend(ids.iter().map(|id| (*id).to_owned()));
    header.push("kept".to_owned());
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let l = &r.latency;
            let mut row = vec![
                r.algorithm.name().to_owned(),
                format!("{:.1}", r.throughput),
            ];
            row.extend([l.mean, l.p50, l.p95, l.p99].map(|d| format!("{:.1}", ms(d))));
            let backend = |i: usize| r.backends.get(i);
            row.extend(
                (0..ids.len())
                    .map(|i| format!("{:.1}", backend(i).map_or(0.0, |b| b.share * 100.0))),
            );
            row.extend(
                (0..ids.len()).map(|i| backend(i).map_or(0, |b| b.peak_in_flight).to_string()),
            );
            row.push(
                r.key_affinity
                    .map_or("-".to_owned(), |k| format!("{:.1}", k * 100.0)),
            );
            row
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    // Numbers get some air: latencies at least 8 wide, the rest at least 5.
    for (c, w) in widths.iter_mut().enumerate().skip(1) {
        *w = (*w).max(if (2..6).contains(&c) { 8 } else { 5 });
    }
    // Column groups: (first column, column count, heading); two spaces between groups, one
    // inside.
    let n = ids.len();
    let groups = [
        (0, 1, ""),
        (1, 1, ""),
        (2, 4, "latency (ms)"),
        (6, n, "share (%)"),
        (6 + n, n, "peak in flight"),
        (6 + 2 * n, 1, "keys (%)"),
    ];
    let group_width = |first: usize, count: usize| -> usize {
        widths[first..first + count].iter().sum::<usize>() + count.saturating_sub(1)
    };
    let line = |cells: &[String]| -> String {
        let mut out = String::new();
        for (g, &(first, count, _)) in groups.iter().enumerate() {
            if count == 0 {
                continue;
            }
            if g > 0 {
                out.push_str("  ");
            }
            for (c, &w) in widths.iter().enumerate().skip(first).take(count) {
                if c > first {
                    out.push(' ');
                }
                let cell = cells.get(c).map_or("", String::as_str);
                if c == 0 {
                    let _ = write!(out, "{cell:<w$}");
                } else {
                    let _ = write!(out, "{cell:>w$}");
                }
            }
        }
        trim_end(&mut out);
        out.push('\n');
        out
    };

    let mut out = String::new();
    for (g, &(first, count, heading)) in groups.iter().enumerate() {
        if count == 0 {
            continue;
        }
        if g > 0 {
            out.push_str("  ");
        }
        let w = group_width(first, count);
        let _ = write!(out, "{heading:^w$}");
    }
    trim_end(&mut out);
    out.push('\n');
    out.push_str(&line(&header));
    let rule = groups
        .iter()
        .filter(|g| g.1 > 0)
        .map(|&(first, count, _)| group_width(first, count))
        .sum::<usize>()
        + 2 * (groups.iter().filter(|g| g.1 > 0).count() - 1);
    out.push_str(&"-".repeat(rule));
    out.push('\n');
    for row in &rows {
        out.push_str(&line(row));
    }
    out
}

/// One sentence per run that measured a backend failure's effect on the keys
/// (`consistent-hash`): how many keys moved, how many had to, and how many moved needlessly.
pub fn keys_moved_lines(results: &[AlgorithmResult]) -> Vec<String> {
    results
        .iter()
        .filter_map(|r| {
            let k = r.keys_moved.as_ref()?;
            Some(format!(
                "{}: when {} fails, {:.1}% of keys move ({:.1}% were on it; {} moved needlessly)",
                r.algorithm.name(),
                k.failed,
                k.moved * 100.0,
                k.were_on_failed * 100.0,
                k.moved_needlessly
            ))
        })
        .collect()
}

fn trim_end(s: &mut String) {
    let len = s.trim_end_matches(' ').len();
    s.truncate(len);
}

/// The results as one JSON document: `source` (what was run: a simulated scenario, or a live
/// setup), `results`, the `conclusion` and the paths of the `charts`.
pub fn json<S: Serialize>(
    source: &S,
    results: &[AlgorithmResult],
    charts: &[String],
) -> serde_json::Result<String> {
    #[derive(Serialize)]
    struct Doc<'a, S> {
        source: &'a S,
        results: &'a [AlgorithmResult],
        conclusion: String,
        charts: &'a [String],
    }
    serde_json::to_string_pretty(&Doc {
        source,
        results,
        conclusion: conclusion(results),
        charts,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use balance::Algorithm;

    pub(crate) fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// A result over backends `a` (weight 1) and `b` (weight 3) with these request counts
    /// and p99: the sample the table, JSON and conclusion tests share.
    pub(crate) fn result(algorithm: Algorithm, p99: u64, shares: [u64; 2]) -> AlgorithmResult {
        let mut t = Tally::new(algorithm, [("a".into(), 1.0), ("b".into(), 3.0)]);
        for (i, &n) in shares.iter().enumerate() {
            for _ in 0..n {
                t.sent(i, 1);
                t.completed(i, ms(10));
            }
        }
        t.completed(0, ms(p99));
        let mut r = t.finish(Duration::from_secs(1));
        r.latency.p99 = ms(p99);
        r
    }

    #[test]
    fn percentiles_are_nearest_rank_over_observed_samples() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(ms).collect();
        let s = LatencySummary::from_samples(&mut samples);
        assert_eq!(
            (s.p50, s.p95, s.p99, s.max),
            (ms(50), ms(95), ms(99), ms(100))
        );
        assert_eq!(s.mean, Duration::from_micros(50_500));
        assert_eq!(
            LatencySummary::from_samples(&mut []),
            LatencySummary::default()
        );
        let s = LatencySummary::from_samples(&mut [ms(7)]);
        assert_eq!((s.p50, s.p99), (ms(7), ms(7)));
    }

    #[test]
    fn tally_counts_shares_peaks_and_unserved_requests() {
        let mut t = Tally::new(
            Algorithm::RoundRobin,
            [("a".into(), 1.0), ("b".into(), 1.0)],
        );
        t.sent(0, 1);
        t.sent(0, 2);
        t.sent(1, 1);
        t.unserved();
        t.completed(0, ms(10));
        t.completed(0, ms(30));
        t.completed(1, ms(5));
        let r = t.finish(Duration::from_secs(2));
        assert_eq!((r.requests, r.completed), (4, 3));
        assert!((r.throughput - 1.5).abs() < 1e-9);
        let a = &r.backends[0];
        assert_eq!(
            (a.requests, a.peak_in_flight, a.mean_latency),
            (2, 2, ms(20))
        );
        assert!((a.share - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn table_has_a_row_per_algorithm_and_a_column_per_backend() {
        let rs = [
            result(Algorithm::RoundRobin, 900, [50, 50]),
            result(Algorithm::P2c, 100, [25, 75]),
        ];
        let t = table(&rs);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        assert!(
            lines[0].contains("latency (ms)") && lines[0].contains("share (%)"),
            "{t}"
        );
        assert!(
            lines[1].starts_with("algorithm") && lines[1].ends_with("b   kept"),
            "{t}"
        );
        assert!(lines[3].starts_with("round-robin") && lines[3].contains("900.0"));
        assert!(lines[4].starts_with("p2c") && lines[4].contains("75.0"));
        // Columns line up: every data row is as long as the header row.
        assert_eq!(lines[3].len(), lines[1].len(), "{t}");
    }

    #[test]
    fn json_names_algorithms_and_gives_milliseconds() {
        let rs = [result(Algorithm::SmoothWeighted, 250, [25, 75])];
        let doc = json(&"test", &rs, &["x.svg".into()]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(v["results"][0]["algorithm"], "smooth-weighted");
        assert_eq!(v["results"][0]["latency"]["p99_ms"], 250.0);
        assert_eq!(v["results"][0]["backends"][1]["share"], 0.75);
        assert_eq!(v["charts"][0], "x.svg");
        assert!(v["conclusion"].as_str().unwrap().len() > 20);
    }
}
