//! Health hysteresis: `fall` consecutive failed checks take a backend out, `rise`
//! consecutive passed checks bring it back (the seed's `max_failure_count = 3` and
//! `recovery_threshold = 2`, HAProxy's `fall`/`rise`).
//!
//! One flapping probe does not move a backend in or out of rotation. Backends start healthy,
//! as in nginx and HAProxy: a new pool serves at once and a dead backend leaves after `fall`
//! checks.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::time::Timestamp;

/// How many consecutive results change a backend's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Consecutive passed checks that bring a down backend back. Seed default: 2.
    pub rise: NonZeroU32,
    /// Consecutive failed checks that take an up backend out. Seed default: 3.
    pub fall: NonZeroU32,
}

impl Default for HealthConfig {
    fn default() -> HealthConfig {
        HealthConfig {
            rise: NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN),
            fall: NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN),
        }
    }
}

/// Up or down, as health checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// In rotation.
    Up,
    /// Out of rotation until `rise` checks pass.
    Down,
}

const DOWN_BIT: u64 = 1 << 32;

/// A backend's health with its streak of contrary results, in one atomic word (the down flag
/// in bit 32, the streak below), so readers on the request path never take a lock.
#[derive(Debug)]
pub struct HealthTracker {
    word: AtomicU64,
}

impl Default for HealthTracker {
    fn default() -> HealthTracker {
        HealthTracker::new(Health::Up)
    }
}

impl HealthTracker {
    /// A tracker starting in `initial`.
    pub fn new(initial: Health) -> HealthTracker {
        let word = if initial == Health::Down { DOWN_BIT } else { 0 };
        HealthTracker {
            word: AtomicU64::new(word),
        }
    }

    /// The current health.
    #[inline]
    pub fn health(&self) -> Health {
        if self.word.load(Ordering::Acquire) & DOWN_BIT != 0 {
            Health::Down
        } else {
            Health::Up
        }
    }

    /// Consecutive results that disagree with the current health (failures while up,
    /// successes while down).
    pub fn streak(&self) -> u32 {
        self.word.load(Ordering::Acquire) as u32
    }

    /// Records one check result. Returns the new health when this result changed it.
    pub fn record(&self, config: &HealthConfig, passed: bool) -> Option<Health> {
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let down = word & DOWN_BIT != 0;
            let streak = word as u32;
            let (next, changed) = if passed != down {
                // The result agrees with the current state: the contrary streak is over.
                (word & DOWN_BIT, false)
            } else {
                let needed = if down {
                    config.rise.get()
                } else {
                    config.fall.get()
                };
                if streak + 1 >= needed {
                    ((word & DOWN_BIT) ^ DOWN_BIT, true)
                } else {
                    ((word & DOWN_BIT) | u64::from(streak + 1), false)
                }
            };
            if next == word {
                return None;
            }
            match self
                .word
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if changed => {
                    return Some(if next & DOWN_BIT != 0 {
                        Health::Down
                    } else {
                        Health::Up
                    });
                }
                Ok(_) => return None,
                Err(actual) => word = actual,
            }
        }
    }

    /// Forces a state (an operator's decision, or a backend added as down). Returns the new
    /// health if it changed.
    pub fn set(&self, health: Health) -> Option<Health> {
        let next = if health == Health::Down { DOWN_BIT } else { 0 };
        let prev = self.word.swap(next, Ordering::AcqRel);
        ((prev & DOWN_BIT) != (next & DOWN_BIT)).then_some(health)
    }
}

/// How long a backend has spent down by its health checks since it joined the pool: the
/// finished down spells plus the current one (HAProxy's `downtime`, which its stats page shows
/// next to each server). Written only when health changes, never on the request path.
#[derive(Debug, Default)]
pub struct Downtime {
    /// When the current down spell began, nanoseconds + 1 (so a spell starting at the origin
    /// is exact); 0 while up.
    since: AtomicU64,
    /// Nanoseconds of the finished spells.
    total: AtomicU64,
}

impl Downtime {
    /// Notes a change of health at `now`.
    pub(crate) fn changed(&self, health: Health, now: Timestamp) {
        match health {
            Health::Down => {
                // Already down (a forced state repeated): the spell goes on from its start.
                let _ = self.since.compare_exchange(
                    0,
                    now.as_nanos() + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
            Health::Up => {
                let since = self.since.swap(0, Ordering::AcqRel);
                if since != 0 {
                    let spell = now.as_nanos().saturating_sub(since - 1);
                    self.total.fetch_add(spell, Ordering::AcqRel);
                }
            }
        }
    }

    /// Time spent down up to `now`, the current spell included.
    pub fn at(&self, now: Timestamp) -> Duration {
        let since = self.since.load(Ordering::Acquire);
        let current = if since == 0 {
            0
        } else {
            now.as_nanos().saturating_sub(since - 1)
        };
        Duration::from_nanos(self.total.load(Ordering::Acquire) + current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rise: u32, fall: u32) -> HealthConfig {
        HealthConfig {
            rise: NonZeroU32::new(rise).unwrap(),
            fall: NonZeroU32::new(fall).unwrap(),
        }
    }

    #[test]
    fn goes_down_after_fall_consecutive_failures_only() {
        let (c, t) = (cfg(2, 3), HealthTracker::default());
        assert_eq!(t.record(&c, false), None);
        assert_eq!(t.record(&c, false), None);
        assert_eq!(t.record(&c, true), None, "a pass breaks the streak");
        assert_eq!(t.record(&c, false), None);
        assert_eq!(t.record(&c, false), None);
        assert_eq!(t.record(&c, false), Some(Health::Down));
        assert_eq!(t.health(), Health::Down);
        assert_eq!(t.record(&c, false), None);
    }

    #[test]
    fn comes_back_after_rise_consecutive_passes() {
        let (c, t) = (cfg(2, 3), HealthTracker::new(Health::Down));
        assert_eq!(t.record(&c, true), None);
        assert_eq!(t.record(&c, false), None);
        assert_eq!(t.record(&c, true), None);
        assert_eq!(t.record(&c, true), Some(Health::Up));
        assert_eq!(t.health(), Health::Up);
        assert_eq!(t.streak(), 0);
    }

    #[test]
    fn downtime_adds_the_down_spells_and_counts_the_current_one() {
        let at = |s: u64| Timestamp::from_nanos(s * 1_000_000_000);
        let d = Downtime::default();
        assert_eq!(d.at(at(5)), Duration::ZERO);
        d.changed(Health::Down, at(0));
        d.changed(Health::Down, at(2));
        assert_eq!(
            d.at(at(3)),
            Duration::from_secs(3),
            "the spell runs from its start"
        );
        d.changed(Health::Up, at(4));
        assert_eq!(
            d.at(at(100)),
            Duration::from_secs(4),
            "up time does not count"
        );
        d.changed(Health::Up, at(101));
        d.changed(Health::Down, at(110));
        assert_eq!(d.at(at(111)), Duration::from_secs(5));
    }

    #[test]
    fn rise_and_fall_of_one_follow_every_result() {
        let (c, t) = (cfg(1, 1), HealthTracker::default());
        assert_eq!(t.record(&c, false), Some(Health::Down));
        assert_eq!(t.record(&c, true), Some(Health::Up));
        assert_eq!(t.set(Health::Down), Some(Health::Down));
        assert_eq!(t.set(Health::Down), None);
    }
}
