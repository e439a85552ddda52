//! Results of a comparison and how they are shown: the aligned text table, the JSON document
//! and the conclusion drawn from the numbers.
//!
//! Nothing here knows the numbers were simulated. An [`AlgorithmResult`] is filled through a
//! [`Tally`] (a request sent to a backend, a response with its latency, the elapsed time), so
//! a live run through the proxy can produce the same structure and reuse the table, the JSON,
//! the conclusion and the charts unchanged.

use std::fmt::Write as _;
use std::time::Duration;

use balance::Algorithm;
use serde::{Serialize, Serializer};

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
    /// The algorithm.
    #[serde(serialize_with = "algorithm_name")]
    pub algorithm: Algorithm,
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
}

fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(round3(d.as_secs_f64() * 1e3))
}

fn seconds<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(round3(d.as_secs_f64()))
}

fn algorithm_name<S: Serializer>(a: &Algorithm, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(a.name())
}

/// Three decimals are plenty for milliseconds and keep the JSON readable.
fn round3(v: f64) -> f64 {
    (v * 1e3).round() / 1e3
}

/// Collects one run as it happens and turns it into an [`AlgorithmResult`].
#[derive(Debug, Clone)]
pub struct Tally {
    algorithm: Algorithm,
    backends: Vec<BackendResult>,
    /// Per backend: total latency and count of its completed requests.
    latency_sums: Vec<(Duration, u64)>,
    latencies: Vec<Duration>,
    requests: u64,
}

impl Tally {
    /// A tally for `algorithm` over backends given as `(id, weight)`, in pool order.
    pub fn new(algorithm: Algorithm, backends: impl IntoIterator<Item = (String, f64)>) -> Tally {
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
            algorithm,
            latency_sums: vec![(Duration::ZERO, 0); backends.len()],
            backends,
            latencies: Vec::new(),
            requests: 0,
        }
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
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The results as an aligned text table: one row per algorithm with throughput, latency,
/// each backend's share and each backend's peak in flight, under group headings. The backend
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

/// How far a run's shares are from its weights: the largest difference, in percentage
/// points, between a backend's share and `weight / total weight`.
pub fn weight_deviation(r: &AlgorithmResult) -> f64 {
    let total: f64 = r.backends.iter().map(|b| b.weight).sum();
    if total <= 0.0 {
        return 0.0;
    }
    r.backends
        .iter()
        .map(|b| (b.share - b.weight / total).abs() * 100.0)
        .fold(0.0, f64::max)
}

/// The lowest and highest backend share of a run, in percent.
fn share_range(r: &AlgorithmResult) -> (f64, f64) {
    r.backends.iter().fold((100.0f64, 0.0f64), |(lo, hi), b| {
        (lo.min(b.share * 100.0), hi.max(b.share * 100.0))
    })
}

fn is_adaptive(a: Algorithm) -> bool {
    matches!(a, Algorithm::LeastConnections | Algorithm::P2c)
}

/// A one-paragraph conclusion computed from the numbers: how the static algorithms spread
/// the load, how the adaptive ones did, and whether the seed's claim (round robin is fair but
/// not adaptive; least-connections and p2c win when backends differ) held in this run.
pub fn conclusion(results: &[AlgorithmResult]) -> String {
    let done: Vec<&AlgorithmResult> = results.iter().filter(|r| r.completed > 0).collect();
    let Some(best) = done
        .iter()
        .copied()
        .min_by(|a, b| a.latency.p99.cmp(&b.latency.p99))
    else {
        return "No request completed, so there is nothing to compare.".to_owned();
    };
    let find = |a: Algorithm| done.iter().copied().find(|r| r.algorithm == a);
    let p99 = |r: &AlgorithmResult| ms(r.latency.p99);
    let mut s = Vec::new();

    if let Some(rr) = find(Algorithm::RoundRobin) {
        let (lo, hi) = share_range(rr);
        let mut sentence = if hi - lo < 1.0 {
            format!(
                "plain round-robin was fair in the sense it promises: every backend got the same \
                 share ({lo:.1}–{hi:.1}%) whatever its speed or weight, and its p99 was {}",
                human(rr.latency.p99)
            )
        } else {
            format!(
                "plain round-robin's shares ranged from {lo:.1}% to {hi:.1}% and its p99 was {}",
                human(rr.latency.p99)
            )
        };
        if let Some(worst) = rr.backends.iter().max_by_key(|b| b.peak_in_flight) {
            let _ = write!(
                sentence,
                "; {} piled up the most, {} requests in flight at its peak",
                worst.id, worst.peak_in_flight
            );
        }
        s.push(sentence + ".");
    }

    let weighted: Vec<&AlgorithmResult> = [Algorithm::Weighted, Algorithm::SmoothWeighted]
        .into_iter()
        .filter_map(find)
        .collect();
    if !weighted.is_empty() {
        let names = join(weighted.iter().map(|r| r.algorithm.name().to_owned()));
        let dev = weighted
            .iter()
            .map(|r| weight_deviation(r))
            .fold(0.0, f64::max);
        let p99s = join(weighted.iter().map(|r| human(r.latency.p99)));
        let verb = if dev < 0.05 {
            "followed the configured weights exactly"
        } else if dev < 0.5 {
            "followed the configured weights"
        } else {
            "approached the configured weights"
        };
        let what = if weighted.len() == 1 {
            "schedule"
        } else {
            "schedules"
        };
        s.push(format!(
            "the {names} {what} {verb} (within {dev:.1} points), p99 {p99s}: \
             the weights are fixed, so they help exactly as much as they match each backend's \
             real speed."
        ));
    }
    if let Some(random) = find(Algorithm::Random) {
        s.push(format!(
            "the random picker matched the weights only on average (within {:.1} points), p99 {}.",
            weight_deviation(random),
            human(random.latency.p99)
        ));
    }

    let adaptive: Vec<&AlgorithmResult> = done
        .iter()
        .copied()
        .filter(|r| is_adaptive(r.algorithm))
        .collect();
    let fixed: Vec<&AlgorithmResult> = done
        .iter()
        .copied()
        .filter(|r| !is_adaptive(r.algorithm))
        .collect();
    let best_fixed = fixed
        .iter()
        .copied()
        .min_by(|a, b| a.latency.p99.cmp(&b.latency.p99));
    if !adaptive.is_empty() {
        let names = join(adaptive.iter().map(|r| r.algorithm.name().to_owned()));
        let p99s = join(adaptive.iter().map(|r| human(r.latency.p99)));
        let watch = match adaptive.as_slice() {
            [one] if one.algorithm == Algorithm::P2c => {
                "watches each backend's latency and requests in flight"
            }
            [_] => "watches each backend's requests in flight",
            _ => "watch each backend's requests in flight (p2c its latency too)",
        };
        let mut sentence = format!("the adaptive {names}, which {watch}, reached p99 {p99s}");
        if let Some(f) = best_fixed {
            let best_adaptive = adaptive
                .iter()
                .map(|r| p99(r))
                .fold(f64::INFINITY, f64::min);
            let _ = write!(
                sentence,
                " against {} for the best fixed schedule ({})",
                human(f.latency.p99),
                f.algorithm
            );
            if best_adaptive > 0.0 && p99(f) > best_adaptive {
                let _ = write!(sentence, ", {:.1}× lower", p99(f) / best_adaptive);
            }
        }
        s.push(sentence + ".");
    }

    let top = done.iter().map(|r| r.throughput).fold(0.0, f64::max);
    let behind: Vec<&AlgorithmResult> = done
        .iter()
        .copied()
        .filter(|r| r.throughput < 0.95 * top)
        .collect();
    if !behind.is_empty() {
        let names = join(behind.iter().map(|r| r.algorithm.name().to_owned()));
        let slowest = behind
            .iter()
            .map(|r| r.throughput)
            .fold(f64::INFINITY, f64::min);
        s.push(format!(
            "under {names} the pool also fell behind the traffic (down to {slowest:.1} req/s \
             against {top:.1}): an overloaded backend was still working off its queue long \
             after the others were idle."
        ));
    }

    let verdict = match (best_fixed, adaptive.is_empty()) {
        (_, true) => format!(
            "lowest p99: {} ({}); run least-connections or p2c to compare with an adaptive \
             algorithm.",
            best.algorithm,
            human(best.latency.p99)
        ),
        (None, false) => format!(
            "lowest p99: {} ({}).",
            best.algorithm,
            human(best.latency.p99)
        ),
        (Some(f), false) => {
            let winners: Vec<&AlgorithmResult> = adaptive
                .iter()
                .copied()
                .filter(|r| r.latency.p99 < f.latency.p99)
                .collect();
            if winners.len() == adaptive.len() {
                format!(
                    "So the seed's claim holds here: round robin is fair but not adaptive, and \
                     with backends that differ the adaptive algorithms win (lowest p99: {}, \
                     {}).",
                    best.algorithm,
                    human(best.latency.p99)
                )
            } else if !winners.is_empty() {
                format!(
                    "So the seed's claim holds only in part: {} beat every fixed schedule, {} \
                     did not (lowest p99: {}, {}).",
                    join(winners.iter().map(|r| r.algorithm.name().to_owned())),
                    join(
                        adaptive
                            .iter()
                            .filter(|r| r.latency.p99 >= f.latency.p99)
                            .map(|r| r.algorithm.name().to_owned())
                    ),
                    best.algorithm,
                    human(best.latency.p99)
                )
            } else {
                format!(
                    "So the seed's claim does not hold in this run: the adaptive algorithms did \
                     not beat the fixed schedules, and {} had the lowest p99 ({}).",
                    best.algorithm,
                    human(best.latency.p99)
                )
            }
        }
    };
    s.push(verdict);
    s.iter()
        .map(|x| capitalise(x))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A latency for prose: milliseconds below ten seconds, seconds above.
fn human(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 10.0 {
        format!("{:.1} ms", secs * 1e3)
    } else {
        format!("{secs:.1} s")
    }
}

/// `a`, `a and b`, `a, b and c`.
fn join(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    match items.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `text` broken into lines of at most `width` columns at spaces.
pub fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split_whitespace() {
        let len = word.chars().count();
        if line > 0 && line + 1 + len > width {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn result(algorithm: Algorithm, p99: u64, shares: [u64; 2]) -> AlgorithmResult {
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
            lines[1].starts_with("algorithm") && lines[1].ends_with("    b"),
            "{t}"
        );
        assert!(lines[3].starts_with("round-robin") && lines[3].contains("900.0"));
        assert!(lines[4].starts_with("p2c") && lines[4].contains("75.0"));
        // Columns line up: every data row is as long as the header row.
        assert_eq!(lines[3].len(), lines[1].len(), "{t}");
    }

    #[test]
    fn conclusion_follows_the_numbers() {
        let adaptive_wins = [
            result(Algorithm::RoundRobin, 900, [50, 50]),
            result(Algorithm::LeastConnections, 120, [30, 70]),
            result(Algorithm::P2c, 100, [25, 75]),
        ];
        let c = conclusion(&adaptive_wins);
        assert!(c.starts_with("Plain round-robin was fair"), "{c}");
        assert!(
            c.contains("claim holds here") && c.contains("p2c, 100.0 ms"),
            "{c}"
        );
        assert!(c.contains("p99 was 900.0 ms"), "{c}");
        assert!(c.contains("9.0× lower"), "{c}");

        let static_wins = [
            result(Algorithm::Weighted, 80, [25, 75]),
            result(Algorithm::P2c, 100, [25, 75]),
        ];
        let c = conclusion(&static_wins);
        assert!(
            c.contains("does not hold") && c.contains("weighted had"),
            "{c}"
        );
        assert!(
            c.contains("The weighted schedule followed the configured weights exactly"),
            "{c}"
        );

        let split = [
            result(Algorithm::Random, 500, [25, 75]),
            result(Algorithm::LeastConnections, 100, [25, 75]),
            result(Algorithm::P2c, 600, [25, 75]),
        ];
        assert!(conclusion(&split).contains("only in part"));
        assert!(conclusion(&[]).contains("nothing to compare"));
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

    #[test]
    fn wrap_breaks_at_spaces() {
        assert_eq!(wrap("aa bb cc dd", 5), "aa bb\ncc dd");
        assert_eq!(wrap("", 5), "");
    }
}
