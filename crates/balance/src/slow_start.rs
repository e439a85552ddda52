//! Slow start: a backend that comes back (health up, ejection over, breaker closed, added
//! at run time) ramps from a small share to its full weight over a window, so a cold cache
//! or JIT is not hit with a full share at once.
//!
//! The ramp is linear in [`STEPS`] steps, starting at `min_share` (Envoy's default minimum is
//! 10%), so the schedule is rebuilt a bounded number of times per recovery rather than on
//! every pick.

use std::time::Duration;

use crate::time::Timestamp;

/// Steps in a ramp: the schedule is rebuilt at most this many times per recovery.
pub const STEPS: u32 = 10;

/// How a recovered backend ramps up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowStartConfig {
    /// Time from first share to full weight.
    pub window: Duration,
    /// Share of its weight a backend gets at first, in `(0, 1]`. Envoy's default: 0.1.
    pub min_share: f64,
}

impl SlowStartConfig {
    /// A ramp over `window` from Envoy's 10%.
    pub fn new(window: Duration) -> SlowStartConfig {
        SlowStartConfig {
            window,
            min_share: 0.1,
        }
    }

    /// The share of its weight a backend available since `since` gets at `now`, in
    /// thousandths, with the time of the next step (`None` once at full weight).
    pub fn share(&self, since: Timestamp, now: Timestamp) -> (u32, Option<Timestamp>) {
        let window = self.window.as_nanos();
        if window == 0 {
            return (1000, None);
        }
        let elapsed = now.saturating_since(since).as_nanos();
        let step = (elapsed * u128::from(STEPS) / window).min(u128::from(STEPS)) as u32;
        if step >= STEPS {
            return (1000, None);
        }
        let min = (self.min_share.clamp(0.001, 1.0) * 1000.0) as u32;
        let share = (step * 1000 / STEPS).max(min);
        let next_nanos = window * u128::from(step + 1) / u128::from(STEPS);
        let next = since.saturating_add(Duration::from_nanos(
            u64::try_from(next_nanos).unwrap_or(u64::MAX),
        ));
        (share, Some(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps_linearly_from_the_minimum_share_to_full_weight() {
        let c = SlowStartConfig::new(Duration::from_secs(10));
        let s = |secs: u64| Timestamp::from_nanos(secs * 1_000_000_000);
        assert_eq!(c.share(s(100), s(100)), (100, Some(s(101))));
        assert_eq!(c.share(s(100), s(101)), (100, Some(s(102))));
        assert_eq!(c.share(s(100), s(105)), (500, Some(s(106))));
        assert_eq!(c.share(s(100), s(109)), (900, Some(s(110))));
        assert_eq!(c.share(s(100), s(110)), (1000, None));
        assert_eq!(c.share(s(100), s(500)), (1000, None));
    }
}
