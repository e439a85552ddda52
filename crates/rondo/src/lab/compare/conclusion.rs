//! The conclusion `rondo compare` draws from its numbers, in words: how the static algorithms
//! spread the load, how the adaptive ones did, and whether the seed's claim held in this run.

use std::fmt::Write as _;
use std::time::Duration;

use balance::Algorithm;

use super::report::{AlgorithmResult, ms};

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
        .filter(|r| is_adaptive(r.algorithm.algorithm))
        .collect();
    // Bounded-load hashing watches the in-flight counts too: not a fixed schedule (the
    // hashing sentence speaks of it).
    let fixed: Vec<&AlgorithmResult> = done
        .iter()
        .copied()
        .filter(|r| !is_adaptive(r.algorithm.algorithm) && r.algorithm.balance_factor.is_none())
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
                    "So the textbook claim holds here: round robin is fair but not adaptive, and \
                     with backends that differ the adaptive algorithms win (lowest p99: {}, \
                     {}).",
                    best.algorithm,
                    human(best.latency.p99)
                )
            } else if !winners.is_empty() {
                format!(
                    "So the textbook claim holds only in part: {} beat every fixed schedule, {} \
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
                    "So the textbook claim does not hold in this run: the adaptive algorithms did \
                     not beat the fixed schedules, and {} had the lowest p99 ({}).",
                    best.algorithm,
                    human(best.latency.p99)
                )
            }
        }
    };
    s.push(verdict);
    if let Some(hash) = hashing(results) {
        s.push(hash);
    }
    s.iter()
        .map(|x| capitalise(x))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What consistent hashing bought and cost in this run: returning keys kept on their
/// backend against the best of the others, the p99 paid for it, and the keys a failure moved.
fn hashing(results: &[AlgorithmResult]) -> Option<String> {
    let hash = results
        .iter()
        .find(|r| r.algorithm == Algorithm::ConsistentHash && r.completed > 0)?;
    let kept = hash.key_affinity?;
    let others = results
        .iter()
        .filter(|r| !r.algorithm.hashes())
        .filter_map(|r| r.key_affinity)
        .fold(0.0f64, f64::max);
    let mut sentence = format!(
        "consistent-hash sent {:.1}% of returning keys back to the backend they had before \
         (at most {:.1}% for the others), at a p99 of {}",
        kept * 100.0,
        others * 100.0,
        human(hash.latency.p99)
    );
    if let Some(m) = &hash.keys_moved {
        let _ = write!(
            sentence,
            "; when {} failed, {:.1}% of the keys moved, {} of them needlessly",
            m.failed,
            m.moved * 100.0,
            m.moved_needlessly
        );
    }
    let bounded = results
        .iter()
        .find(|r| r.algorithm.hashes() && r.algorithm.balance_factor.is_some() && r.completed > 0);
    if let Some(b) = bounded
        && let (Some(kept), Some(f)) = (b.key_affinity, b.algorithm.balance_factor)
    {
        let peak = |r: &AlgorithmResult| r.backends.iter().map(|x| x.peak_in_flight).max();
        let _ = write!(
            sentence,
            "; bounded to {:.0}% of the average load ({}), it kept {:.1}% of them at a p99 of {}",
            f * 100.0,
            b.algorithm,
            kept * 100.0,
            human(b.latency.p99)
        );
        if let (Some(p), Some(q)) = (peak(hash), peak(b)) {
            let _ = write!(sentence, ", the busiest backend's peak in flight {p} → {q}");
        }
    }
    Some(sentence + ".")
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
    use crate::lab::compare::report::tests::result;

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
    fn wrap_breaks_at_spaces() {
        assert_eq!(wrap("aa bb cc dd", 5), "aa bb\ncc dd");
        assert_eq!(wrap("", 5), "");
    }
}
