//! Passive ejection, nginx's `max_fails` / `fail_timeout`: a backend that fails `max_fails`
//! real requests within `fail_timeout` is taken out of rotation for `fail_timeout`.
//!
//! Unlike the circuit breaker (consecutive failures, then probes), this counts failures in a
//! window, so a backend that fails one request in three is still caught. After the
//! timeout it returns; if it fails again it goes out again. An active health check that
//! passes brings an ejected backend back early ([`Ejection::reinstate`]).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::time::Timestamp;

/// When real traffic takes a backend out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EjectionConfig {
    /// Failures within `fail_timeout` that eject the backend (nginx: `max_fails`).
    pub max_fails: NonZeroU32,
    /// The counting window and the time out of rotation (nginx: `fail_timeout`, 10 s).
    pub fail_timeout: Duration,
    /// Whether 5xx answers count as failures too. nginx counts only errors and timeouts
    /// by default (`proxy_next_upstream error timeout`), so an application's 500 does not
    /// take a server out; the circuit breaker counts them either way.
    pub count_server_errors: bool,
}

/// A backend's recent failures and ejection deadline.
#[derive(Debug, Default)]
pub struct Ejection {
    fails: AtomicU32,
    /// Start of the current counting window (nanoseconds).
    window_start: AtomicU64,
    /// End of the ejection (nanoseconds); 0 when not ejected.
    until: AtomicU64,
}

impl Ejection {
    /// True while ejected (until [`Ejection::poll`] or [`Ejection::reinstate`] ends it).
    #[inline]
    pub fn is_ejected(&self) -> bool {
        self.until.load(Ordering::Acquire) != 0
    }

    /// When the ejection ends, if ejected.
    pub fn ejected_until(&self) -> Option<Timestamp> {
        match self.until.load(Ordering::Acquire) {
            0 => None,
            t => Some(Timestamp::from_nanos(t)),
        }
    }

    /// Counts a failed request. Returns the end of the ejection when this failure caused it.
    pub fn on_failure(&self, config: &EjectionConfig, now: Timestamp) -> Option<Timestamp> {
        if self.is_ejected() {
            return None;
        }
        let start = Timestamp::from_nanos(self.window_start.load(Ordering::Acquire));
        let fails = if now.saturating_since(start) > config.fail_timeout {
            self.window_start.store(now.as_nanos(), Ordering::Release);
            self.fails.store(1, Ordering::Release);
            1
        } else {
            self.fails.fetch_add(1, Ordering::AcqRel) + 1
        };
        if fails < config.max_fails.get() {
            return None;
        }
        // max(1): 0 means "not ejected".
        let until = now.saturating_add(config.fail_timeout).as_nanos().max(1);
        self.fails.store(0, Ordering::Release);
        self.until
            .compare_exchange(0, until, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Timestamp::from_nanos(until))
    }

    /// Counts a successful request: the failure count starts over (as nginx does).
    pub fn on_success(&self) {
        if self.fails.load(Ordering::Relaxed) != 0 {
            self.fails.store(0, Ordering::Release);
        }
    }

    /// Ends an ejection whose time is over. Returns true if it ended now.
    pub fn poll(&self, now: Timestamp) -> bool {
        let until = self.until.load(Ordering::Acquire);
        until != 0
            && now.as_nanos() >= until
            && self
                .until
                .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Ends an ejection early (a health check passed). Returns true if it was ejected.
    pub fn reinstate(&self) -> bool {
        self.fails.store(0, Ordering::Release);
        self.until.swap(0, Ordering::AcqRel) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Timestamp {
        Timestamp::from_nanos(s * 1_000_000_000)
    }

    fn cfg(max: u32) -> EjectionConfig {
        EjectionConfig {
            max_fails: NonZeroU32::new(max).unwrap(),
            fail_timeout: Duration::from_secs(10),
            count_server_errors: false,
        }
    }

    #[test]
    fn ejects_after_max_fails_within_the_window_and_returns_after_the_timeout() {
        let (c, e) = (cfg(3), Ejection::default());
        assert_eq!(e.on_failure(&c, secs(1)), None);
        assert_eq!(e.on_failure(&c, secs(2)), None);
        assert_eq!(e.on_failure(&c, secs(3)), Some(secs(13)));
        assert!(e.is_ejected());
        assert!(!e.poll(secs(12)));
        assert!(e.poll(secs(13)));
        assert!(!e.is_ejected());
    }

    #[test]
    fn failures_spread_wider_than_the_window_do_not_eject() {
        let (c, e) = (cfg(2), Ejection::default());
        assert_eq!(e.on_failure(&c, secs(100)), None);
        assert_eq!(e.on_failure(&c, secs(111)), None);
        assert_eq!(e.on_failure(&c, secs(115)), Some(secs(125)));
    }

    #[test]
    fn success_resets_the_count_and_reinstate_ends_an_ejection() {
        let (c, e) = (cfg(2), Ejection::default());
        e.on_failure(&c, secs(1));
        e.on_success();
        assert_eq!(e.on_failure(&c, secs(2)), None);
        assert!(e.on_failure(&c, secs(3)).is_some());
        assert!(e.reinstate());
        assert!(!e.is_ejected());
        assert!(!e.reinstate());
    }
}
