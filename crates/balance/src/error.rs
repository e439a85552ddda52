//! Typed errors of the library. Each message says what was wrong and what is accepted.

use thiserror::Error;

use crate::weight::MAX_WEIGHT;

/// A weight that cannot be used.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum WeightError {
    /// Zero, negative, NaN or infinite.
    #[error("weight {0} is not a positive number; weights are > 0 (e.g. 1, 2.5)")]
    NotPositive(f64),
    /// Above [`MAX_WEIGHT`].
    #[error("weight {0} is too large; the largest weight is {MAX_WEIGHT}")]
    TooLarge(f64),
    /// More than three decimal places.
    #[error("weight {0} has more than three decimal places; use e.g. 1.5 or 0.125")]
    TooPrecise(f64),
}

/// A pool operation that cannot be carried out.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PoolError {
    /// Two backends share an id.
    #[error("backend id `{0}` appears twice; ids must be unique within an upstream")]
    DuplicateId(String),
    /// No backend has this id.
    #[error("no backend `{0}` in this upstream")]
    UnknownBackend(String),
    /// A bounded-load factor below 1 (or not a number): no backend could take its share.
    #[error(
        "hash_balance_factor {0} is below 1; use e.g. 1.25 (each backend up to 125% of its share)"
    )]
    BalanceFactor(f64),
}

/// An algorithm name that is not one of [`crate::Algorithm::NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "unknown algorithm `{0}`; expected one of: round-robin, weighted, smooth-weighted, random, least-connections, p2c, consistent-hash"
)]
pub struct UnknownAlgorithm(pub String);
