//! Typed errors of the pool and of algorithm names. Each message says what was wrong and
//! what is accepted. ([`crate::WeightError`] lives next to [`crate::Weight`].)

use thiserror::Error;

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
