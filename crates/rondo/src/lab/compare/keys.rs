//! Affinity keys in `rondo compare`: which user, session or URL each simulated request
//! belongs to, what `consistent-hash` hashes, and what a comparison of the hash algorithms
//! must show — how often a key comes back to the same backend, and how many keys move when a
//! backend fails.
//!
//! Keys are drawn uniformly or from a Zipf distribution (a few hot keys and a long tail, as
//! real users and URLs are). The other algorithms ignore keys; their affinity shows what a
//! cache or a session store behind them would get without hashing.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use balance::{Pool, Timestamp};
use rand::SeedableRng;
use rand_distr::{Distribution, Uniform, Zipf};
use rand_pcg::Pcg64;
use serde::Serialize;

/// Distinct keys unless told otherwise: many more than backends, as users are.
pub const DEFAULT_KEYS: u32 = 10_000;

/// How often each key is used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyDistribution {
    /// Every key as likely as any other.
    Uniform,
    /// Key of rank k drawn with probability ∝ 1/k^s (s = 1: the classic web-traffic shape).
    Zipf(f64),
}

impl fmt::Display for KeyDistribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyDistribution::Uniform => f.write_str("uniform"),
            KeyDistribution::Zipf(s) => write!(f, "zipf:{s}"),
        }
    }
}

impl FromStr for KeyDistribution {
    type Err = String;

    /// `uniform`, `zipf` (exponent 1) or `zipf:S` with 0 < S ≤ 10.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("`{s}` is not a key distribution: use uniform, zipf or zipf:S (e.g. zipf:1.2)")
        };
        match s {
            "uniform" => Ok(KeyDistribution::Uniform),
            "zipf" => Ok(KeyDistribution::Zipf(1.0)),
            _ => {
                let exponent: f64 = s
                    .strip_prefix("zipf:")
                    .and_then(|e| e.parse().ok())
                    .ok_or_else(bad)?;
                if exponent.is_finite() && exponent > 0.0 && exponent <= 10.0 {
                    Ok(KeyDistribution::Zipf(exponent))
                } else {
                    Err(bad())
                }
            }
        }
    }
}

/// The keys of a scenario's requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeySpace {
    /// Distinct keys (at least 1).
    pub count: u32,
    /// How often each is used.
    pub distribution: KeyDistribution,
}

impl Default for KeySpace {
    fn default() -> KeySpace {
        KeySpace {
            count: DEFAULT_KEYS,
            distribution: KeyDistribution::Uniform,
        }
    }
}

impl KeySpace {
    /// One key per request, from its own random stream so keys never change the arrivals.
    pub(crate) fn draw(&self, requests: usize, seed: u64) -> Vec<u32> {
        let mut rng = Pcg64::seed_from_u64(seed ^ 0x6a09_e667_f3bc_c908);
        let count = self.count.max(1);
        match self.distribution {
            KeyDistribution::Zipf(s) => match Zipf::new(f64::from(count), s) {
                // Ranks are 1..=count; key 0 is the hottest.
                Ok(zipf) => (0..requests)
                    .map(|_| {
                        (zipf.sample(&mut rng) as u32)
                            .saturating_sub(1)
                            .min(count - 1)
                    })
                    .collect(),
                Err(_) => vec![0; requests],
            },
            KeyDistribution::Uniform => match Uniform::new(0, count) {
                Ok(uniform) => (0..requests).map(|_| uniform.sample(&mut rng)).collect(),
                Err(_) => vec![0; requests],
            },
        }
    }
}

/// The 64-bit hash of key `k` that the pool is given, as the proxy gives it the hash of a
/// header or cookie (any well-mixed function does: the pool only needs spread).
pub(crate) fn hash(k: u32) -> u64 {
    let mut z = u64::from(k).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Follows each key's last backend during a run: a repeat of a key counts as kept when it
/// went where the key's previous request went.
#[derive(Debug, Default, Clone)]
pub(crate) struct Affinity {
    last: HashMap<u32, usize>,
    repeats: u64,
    kept: u64,
}

impl Affinity {
    /// A request with key `key` went to backend `b`.
    pub(crate) fn sent(&mut self, key: u32, b: usize) {
        if let Some(prev) = self.last.insert(key, b) {
            self.repeats += 1;
            self.kept += u64::from(prev == b);
        }
    }

    /// Share of repeated keys that found their previous backend, 0 to 1; `None` when no key
    /// was repeated.
    pub(crate) fn share(&self) -> Option<f64> {
        (self.repeats > 0).then(|| self.kept as f64 / self.repeats as f64)
    }
}

/// What happened to the keys when one backend failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeysMoved {
    /// The backend taken out.
    pub failed: String,
    /// Share of all keys whose backend changed, 0 to 1.
    pub moved: f64,
    /// Share of all keys that were on the failed backend, 0 to 1: the least any algorithm
    /// must move.
    pub were_on_failed: f64,
    /// Keys that moved although their backend did not fail (0 for a good hash).
    pub moved_needlessly: u64,
}

/// Asks `pool` where each of `keys` keys goes with every backend available, then with
/// `failed` refused, and counts what moved. Nothing is in flight (leases are dropped at
/// once), so a bounded-load table answers as it would for an idle pool.
pub(crate) fn moved_when_failing(
    pool: &Pool,
    keys: u32,
    failed: &str,
    now: Timestamp,
) -> KeysMoved {
    let (mut moved, mut on_failed, mut needless) = (0u64, 0u64, 0u64);
    // Backends compared by address (a `Copy` value): no id string per key.
    let failed_at = pool
        .snapshot()
        .backends()
        .iter()
        .find(|b| b.id() == failed)
        .map(|b| b.address());
    for k in 0..keys {
        let h = hash(k);
        let before = pool
            .pick_keyed(now, h, |_| true)
            .map(|l| l.backend().address());
        let after = pool
            .pick_keyed(now, h, |b| b.id() != failed)
            .map(|l| l.backend().address());
        let was_on_failed = before.is_some() && before == failed_at;
        on_failed += u64::from(was_on_failed);
        if before != after {
            moved += 1;
            needless += u64::from(!was_on_failed);
        }
    }
    let all = f64::from(keys.max(1));
    KeysMoved {
        failed: failed.to_owned(),
        moved: moved as f64 / all,
        were_on_failed: on_failed as f64 / all,
        moved_needlessly: needless,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions_parse_and_bad_ones_say_what_is_accepted() {
        assert_eq!("uniform".parse(), Ok(KeyDistribution::Uniform));
        assert_eq!("zipf".parse(), Ok(KeyDistribution::Zipf(1.0)));
        assert_eq!("zipf:1.5".parse(), Ok(KeyDistribution::Zipf(1.5)));
        for bad in ["zipf:0", "zipf:-1", "zipf:x", "normal", "zipf:NaN"] {
            let e = bad.parse::<KeyDistribution>().unwrap_err();
            assert!(e.contains("uniform, zipf or zipf:S"), "{bad}: {e}");
        }
    }

    #[test]
    fn zipf_keys_are_skewed_and_uniform_ones_are_not() {
        let count = |d| {
            let keys = KeySpace {
                count: 1000,
                distribution: d,
            }
            .draw(100_000, 7);
            assert!(keys.iter().all(|&k| k < 1000));
            keys.iter().filter(|&&k| k == 0).count()
        };
        // Zipf s=1 over 1000 keys: the hottest key has 1/H(1000) ≈ 13 % of the requests.
        let hot = count(KeyDistribution::Zipf(1.0));
        assert!((12_000..15_000).contains(&hot), "{hot}");
        let flat = count(KeyDistribution::Uniform);
        assert!((50..200).contains(&flat), "{flat}");
    }

    #[test]
    fn affinity_counts_repeats_that_found_their_backend() {
        let mut a = Affinity::default();
        assert_eq!(a.share(), None);
        a.sent(1, 0);
        a.sent(1, 0);
        a.sent(1, 2);
        a.sent(2, 1);
        assert_eq!(a.share(), Some(0.5));
    }
}
