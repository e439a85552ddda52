//! What `rondo compare` runs side by side: every algorithm, plus `consistent-hash` with
//! bounded load (`hash_balance_factor`), which is a setting of that algorithm rather than one
//! of its own but behaves differently enough to deserve its own row: it trades some key
//! affinity for a cap on the hot keys' backend (Mirrokni et al., "Consistent Hashing with
//! Bounded Loads", the idea behind HAProxy's `hash-balance-factor`).

use std::fmt;
use std::str::FromStr;

use balance::Algorithm;

/// The bounded-load factor of the `consistent-hash-bounded` row: no backend takes more than
/// 125 % of the average load, the value the consistent-hash configuration documents as its
/// example and HAProxy's documentation suggests as a start.
pub const BOUNDED_FACTOR: f64 = 1.25;

/// The name the bounded-load row goes by (in `--algorithm`, the table, the charts, the JSON).
pub const BOUNDED_NAME: &str = "consistent-hash-bounded";

/// One row of a comparison: an algorithm, and for `consistent-hash` an optional bounded-load
/// factor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contender {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// `hash_balance_factor`, only with `consistent-hash`.
    pub balance_factor: Option<f64>,
}

impl Contender {
    /// Every algorithm in documentation order, with the bounded-load row after
    /// `consistent-hash`.
    pub fn all() -> Vec<Contender> {
        let mut all: Vec<Contender> = Algorithm::ALL.iter().map(|&a| a.into()).collect();
        if let Some(at) = all
            .iter()
            .position(|c| c.algorithm == Algorithm::ConsistentHash)
        {
            all.insert(at + 1, Contender::bounded());
        }
        all
    }

    /// `consistent-hash` with a balance factor of [`BOUNDED_FACTOR`].
    pub fn bounded() -> Contender {
        Contender {
            algorithm: Algorithm::ConsistentHash,
            balance_factor: Some(BOUNDED_FACTOR),
        }
    }

    /// Its name: the algorithm's, or [`BOUNDED_NAME`].
    pub fn name(self) -> &'static str {
        match self.balance_factor {
            Some(_) => BOUNDED_NAME,
            None => self.algorithm.name(),
        }
    }

    /// Whether its picks hash the requests' keys.
    pub fn hashes(self) -> bool {
        self.algorithm == Algorithm::ConsistentHash
    }
}

impl From<Algorithm> for Contender {
    fn from(algorithm: Algorithm) -> Contender {
        Contender {
            algorithm,
            balance_factor: None,
        }
    }
}

/// Equal to the plain algorithm: the bounded-load row is not `consistent-hash`.
impl PartialEq<Algorithm> for Contender {
    fn eq(&self, other: &Algorithm) -> bool {
        self.algorithm == *other && self.balance_factor.is_none()
    }
}

impl fmt::Display for Contender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Contender {
    type Err = String;

    /// An algorithm's name, or [`BOUNDED_NAME`].
    fn from_str(s: &str) -> Result<Contender, String> {
        if s == BOUNDED_NAME {
            return Ok(Contender::bounded());
        }
        s.parse::<Algorithm>()
            .map(Contender::from)
            .map_err(|e| format!("{e}, or {BOUNDED_NAME}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounded_row_follows_consistent_hash_and_round_trips_by_name() {
        let all = Contender::all();
        assert_eq!(all.len(), Algorithm::ALL.len() + 1);
        let at = all
            .iter()
            .position(|c| *c == Algorithm::ConsistentHash)
            .unwrap_or(usize::MAX);
        assert_eq!(all.get(at + 1), Some(&Contender::bounded()));
        for c in all {
            assert_eq!(c.name().parse::<Contender>(), Ok(c));
        }
        assert_ne!(Contender::bounded(), Algorithm::ConsistentHash);
        let err = "hashing".parse::<Contender>().unwrap_err();
        assert!(err.ends_with("or consistent-hash-bounded"), "{err}");
    }
}
