//! Per-backend circuit breaker: stop sending to a backend that keeps failing, try it again
//! after a pause with a bounded number of probe requests.
//!
//! | state     | admits                         | on success          | on failure                          |
//! |-----------|--------------------------------|---------------------|-------------------------------------|
//! | closed    | everything                     | failure count → 0   | count + 1; at the threshold → open  |
//! | open      | nothing                        | —                   | —                                   |
//! | half-open | up to `half_open_probes` probes | → closed            | → open, the pause starts again      |
//!
//! open → half-open happens when `recovery_timeout` has passed, on [`CircuitBreaker::poll`],
//! which the owning pool calls from its refresh. Defaults (5 failures, 60 s) are the seed's.
//!
//! The whole state is one `AtomicU64` (state in the high half, a counter in the low half)
//! plus the time it opened, so the request path reads it with one load and changes it with
//! one compare-and-swap, never a lock.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::time::Timestamp;

/// When a breaker opens and how it recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker. Seed default: 5.
    pub failure_threshold: NonZeroU32,
    /// How long an open breaker rejects everything before it lets probes through.
    /// Seed default: 60 s.
    pub recovery_timeout: Duration,
    /// Requests admitted at once while half-open. Default 1: the first answer decides, as in
    /// the seed and in Hystrix; a larger value recovers faster behind long requests.
    pub half_open_probes: NonZeroU32,
    /// Whether every [`crate::Outcome::ApplicationError`] (a 500 and the like) counts as a
    /// failure, as the seed counted every 5xx. Default false: one opens a breaker only
    /// while another backend in rotation answers well, so an application bug that every
    /// backend answers with 500 opens none and cannot take the whole site down, while a
    /// backend broken alone is still isolated.
    pub count_application_errors: bool,
}

impl Default for BreakerConfig {
    fn default() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN),
            recovery_timeout: Duration::from_secs(60),
            half_open_probes: NonZeroU32::MIN,
            count_application_errors: false,
        }
    }
}

/// The three states of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Traffic flows; consecutive failures are counted.
    Closed,
    /// Traffic is refused until the recovery timeout has passed.
    Open,
    /// A bounded number of probe requests decide between closed and open.
    HalfOpen,
}

impl BreakerState {
    /// Lower-case name, as used in statistics and metrics (`closed`, `open`, `half_open`).
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// What the breaker says about one more request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: send it.
    Allowed,
    /// Half-open: send it as a probe; its outcome decides the state. A probe that ends
    /// without an outcome must be handed back with [`CircuitBreaker::cancel_probe`].
    Probe,
    /// Open, or half-open with every probe slot taken.
    Rejected,
}

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;

fn pack(state: u64, count: u32) -> u64 {
    (state << 32) | u64::from(count)
}

fn unpack(word: u64) -> (u64, u32) {
    (word >> 32, word as u32)
}

/// A lock-free circuit breaker.
///
/// The configuration is passed to each call rather than stored, so a config reload changes
/// thresholds without losing the state a backend has built up.
#[derive(Debug)]
pub struct CircuitBreaker {
    /// State and counter: consecutive failures when closed, probes admitted when half-open.
    word: AtomicU64,
    /// When an open breaker lets probes through (nanoseconds of [`Timestamp`]).
    reopen_at: AtomicU64,
}

impl Default for CircuitBreaker {
    fn default() -> CircuitBreaker {
        CircuitBreaker::new()
    }
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new() -> CircuitBreaker {
        CircuitBreaker {
            word: AtomicU64::new(pack(CLOSED, 0)),
            reopen_at: AtomicU64::new(0),
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        match unpack(self.word.load(Ordering::Acquire)).0 {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Consecutive failures counted while closed.
    pub fn consecutive_failures(&self) -> u32 {
        match unpack(self.word.load(Ordering::Acquire)) {
            (CLOSED, n) => n,
            _ => 0,
        }
    }

    /// When an open breaker will let probes through; `None` unless open.
    pub fn reopens_at(&self) -> Option<Timestamp> {
        (unpack(self.word.load(Ordering::Acquire)).0 == OPEN)
            .then(|| Timestamp::from_nanos(self.reopen_at.load(Ordering::Acquire)))
    }

    /// Asks to send one request. Closed costs one atomic load.
    #[inline]
    pub fn try_acquire(&self, config: &BreakerConfig) -> Admission {
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let (state, count) = unpack(word);
            let next = match state {
                CLOSED => return Admission::Allowed,
                HALF_OPEN if count < config.half_open_probes.get() => pack(HALF_OPEN, count + 1),
                _ => return Admission::Rejected,
            };
            match self
                .word
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Admission::Probe,
                Err(actual) => word = actual,
            }
        }
    }

    /// Records a success. Returns the new state if it changed (half-open → closed).
    pub fn on_success(&self) -> Option<BreakerState> {
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let next = match unpack(word) {
                (CLOSED, 0) | (OPEN, _) => return None,
                (CLOSED, _) | (HALF_OPEN, _) => pack(CLOSED, 0),
                _ => return None,
            };
            match self
                .word
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return (unpack(word).0 == HALF_OPEN).then_some(BreakerState::Closed);
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// Records a failure at `now`. Returns the new state if it changed (→ open).
    pub fn on_failure(&self, config: &BreakerConfig, now: Timestamp) -> Option<BreakerState> {
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let next = match unpack(word) {
                (CLOSED, n) if n + 1 < config.failure_threshold.get() => pack(CLOSED, n + 1),
                (CLOSED, _) | (HALF_OPEN, _) => pack(OPEN, 0),
                _ => return None,
            };
            if unpack(next).0 == OPEN {
                // Written before the state so a reader that sees OPEN sees this time or a
                // later one; a concurrent loser of the CAS below only rewrites a near time.
                let reopen = now.saturating_add(config.recovery_timeout);
                self.reopen_at.store(reopen.as_nanos(), Ordering::Release);
            }
            match self
                .word
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return (unpack(next).0 == OPEN).then_some(BreakerState::Open),
                Err(actual) => word = actual,
            }
        }
    }

    /// Hands back a probe slot whose request ended without an outcome (the client left).
    pub fn cancel_probe(&self) {
        let mut word = self.word.load(Ordering::Acquire);
        while let (HALF_OPEN, n) = unpack(word) {
            let next = pack(HALF_OPEN, n.saturating_sub(1));
            match self
                .word
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(actual) => word = actual,
            }
        }
    }

    /// Moves an open breaker to half-open now, before its pause is over: an active health
    /// check just passed, so the backend answers again and a few real requests may find out
    /// whether it serves (Envoy's `successful_active_health_check_uneject_host`). A backend
    /// that passes checks but fails real traffic fails its probes and opens again. Returns
    /// the new state if it changed.
    pub fn half_open_now(&self) -> Option<BreakerState> {
        let word = self.word.load(Ordering::Acquire);
        (unpack(word).0 == OPEN
            && self
                .word
                .compare_exchange(
                    word,
                    pack(HALF_OPEN, 0),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok())
        .then_some(BreakerState::HalfOpen)
    }

    /// Moves an open breaker whose pause is over to half-open. Returns the new state if it
    /// changed.
    pub fn poll(&self, now: Timestamp) -> Option<BreakerState> {
        let due = self.reopens_at()?;
        if now < due {
            return None;
        }
        self.half_open_now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tested {
        cfg: BreakerConfig,
        b: CircuitBreaker,
    }

    impl Tested {
        fn try_acquire(&self) -> Admission {
            self.b.try_acquire(&self.cfg)
        }
        fn on_failure(&self, now: Timestamp) -> Option<BreakerState> {
            self.b.on_failure(&self.cfg, now)
        }
        fn on_success(&self) -> Option<BreakerState> {
            self.b.on_success()
        }
        fn poll(&self, now: Timestamp) -> Option<BreakerState> {
            self.b.poll(now)
        }
    }

    impl std::ops::Deref for Tested {
        type Target = CircuitBreaker;
        fn deref(&self) -> &CircuitBreaker {
            &self.b
        }
    }

    fn breaker(threshold: u32, probes: u32) -> Tested {
        let cfg = BreakerConfig {
            failure_threshold: NonZeroU32::new(threshold).unwrap(),
            recovery_timeout: Duration::from_secs(60),
            half_open_probes: NonZeroU32::new(probes).unwrap(),
            count_application_errors: false,
        };
        Tested {
            cfg,
            b: CircuitBreaker::new(),
        }
    }

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_nanos(secs * 1_000_000_000)
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let b = breaker(5, 1);
        for _ in 0..4 {
            assert_eq!(b.on_failure(at(1)), None);
        }
        assert_eq!(b.try_acquire(), Admission::Allowed);
        assert_eq!(b.on_failure(at(1)), Some(BreakerState::Open));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.try_acquire(), Admission::Rejected);
        assert_eq!(b.reopens_at(), Some(at(61)));
    }

    #[test]
    fn a_success_resets_the_consecutive_count() {
        let b = breaker(3, 1);
        b.on_failure(at(0));
        b.on_failure(at(0));
        assert_eq!(b.on_success(), None);
        assert_eq!(b.consecutive_failures(), 0);
        b.on_failure(at(0));
        b.on_failure(at(0));
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_after_recovery_timeout_admits_bounded_probes() {
        let b = breaker(1, 2);
        b.on_failure(at(0));
        assert_eq!(b.poll(at(59)), None);
        assert_eq!(b.poll(at(60)), Some(BreakerState::HalfOpen));
        assert_eq!(b.try_acquire(), Admission::Probe);
        assert_eq!(b.try_acquire(), Admission::Probe);
        assert_eq!(b.try_acquire(), Admission::Rejected);
        b.cancel_probe();
        assert_eq!(b.try_acquire(), Admission::Probe);
    }

    #[test]
    fn probe_success_closes_and_probe_failure_reopens_with_a_new_pause() {
        let b = breaker(1, 1);
        b.on_failure(at(0));
        b.poll(at(60));
        assert_eq!(b.try_acquire(), Admission::Probe);
        assert_eq!(b.on_failure(at(70)), Some(BreakerState::Open));
        assert_eq!(b.reopens_at(), Some(at(130)));
        assert_eq!(b.poll(at(129)), None);
        assert_eq!(b.poll(at(130)), Some(BreakerState::HalfOpen));
        assert_eq!(b.try_acquire(), Admission::Probe);
        assert_eq!(b.on_success(), Some(BreakerState::Closed));
        assert_eq!(b.try_acquire(), Admission::Allowed);
    }

    #[test]
    fn concurrent_failures_open_it_exactly_once() {
        let b = std::sync::Arc::new(breaker(5, 1));
        let opened: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let b = &b;
                    s.spawn(move || (0..100).filter(|_| b.on_failure(at(1)).is_some()).count())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(opened, 1);
    }
}
