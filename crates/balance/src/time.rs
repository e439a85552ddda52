//! Time as a plain number, passed in by the caller.
//!
//! The library never reads a clock: every state machine that depends on time (circuit
//! breaker recovery, passive ejection windows, slow start, latency decay) takes a
//! [`Timestamp`] argument. The program maps its monotonic clock onto timestamps (nanoseconds
//! since it started), and tests advance time by hand, so they are exact and instant.

use std::time::Duration;

/// A point in time: nanoseconds since an origin the caller chose (usually process start).
///
/// Only differences between timestamps mean anything. `u64` nanoseconds last 584 years.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The origin itself.
    pub const ZERO: Timestamp = Timestamp(0);

    /// A timestamp `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Timestamp {
        Timestamp(nanos)
    }

    /// A timestamp `elapsed` after the origin (saturating at the far future).
    pub fn from_elapsed(elapsed: Duration) -> Timestamp {
        Timestamp(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, saturating at the far future.
    pub fn saturating_add(self, d: Duration) -> Timestamp {
        let d = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        let t = Timestamp::from_nanos(10);
        assert_eq!(
            t.saturating_since(Timestamp::from_nanos(20)),
            Duration::ZERO
        );
        assert_eq!(
            Timestamp::from_nanos(u64::MAX - 1).saturating_add(Duration::from_secs(1)),
            Timestamp::from_nanos(u64::MAX)
        );
        assert_eq!(
            t.saturating_add(Duration::from_nanos(5))
                .saturating_since(t),
            Duration::from_nanos(5)
        );
    }
}
