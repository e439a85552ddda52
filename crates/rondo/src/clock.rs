//! The program's clock: tokio's monotonic time mapped onto the `balance` crate's
//! [`Timestamp`]s, so that `tokio::time::pause()` in tests moves every state machine too.

use std::cell::Cell;

use balance::Timestamp;
use tokio::time::Instant;

thread_local! {
    /// The time a worker thread last woke up (see [`tick`]); `None` on other threads.
    static LOOP_NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Now, as of the worker's last return from waiting for events: one clock reading per turn
/// of the event loop instead of a dozen per request (deadlines, attempt and response times,
/// the pool's expiry), each ~50 ns in a VM. nginx (`ngx_time_update`) and HAProxy (`now_ms`)
/// read the clock the same way. The reading lags by the time the turn has run so far
/// (microseconds; at most tens of milliseconds when a turn is heavy with TLS handshakes), so
/// deadlines built on it end that much early and times measured with it are that coarse. On
/// a thread that is not a worker it is the clock itself.
#[inline]
pub fn loop_now() -> Instant {
    LOOP_NOW.with(Cell::get).unwrap_or_else(Instant::now)
}

/// The time from `start` (a [`loop_now`] reading) to now.
#[inline]
pub fn since(start: Instant) -> std::time::Duration {
    loop_now().saturating_duration_since(start)
}

/// Runs `future` until `timer` fires (the caller has reset it to the deadline): `None` then.
///
/// A connection keeps its timers for its whole life and resets them for each wait, which
/// moves a pending timer's deadline later with an atomic store; a new timer per wait
/// (`tokio::time::timeout`) takes the timer wheel's lock to go in and again to come out.
pub async fn within<F: std::future::Future>(
    timer: std::pin::Pin<&mut tokio::time::Sleep>,
    future: F,
) -> Option<F::Output> {
    tokio::select! {
        biased;
        out = future => Some(out),
        () = timer => None,
    }
}

/// Reads the clock for [`loop_now`]: called by a worker's runtime each time its thread wakes
/// up, before it runs the tasks the wake-up made ready.
pub fn tick() {
    LOOP_NOW.with(|now| now.set(Some(Instant::now())));
}

/// Converts instants to timestamps relative to a fixed origin.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose origin is now.
    pub fn new() -> Clock {
        Clock {
            origin: Instant::now(),
        }
    }

    /// Now ([`loop_now`]), as a timestamp.
    #[inline]
    pub fn now(&self) -> Timestamp {
        self.at(loop_now())
    }

    /// `instant` as a timestamp.
    #[inline]
    pub fn at(&self, instant: Instant) -> Timestamp {
        Timestamp::from_elapsed(instant.saturating_duration_since(self.origin))
    }

    /// The instant of a timestamp.
    pub fn instant(&self, t: Timestamp) -> Instant {
        self.origin + std::time::Duration::from_nanos(t.as_nanos())
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn loop_now_is_the_clock_off_a_worker_and_the_last_wake_up_on_one() {
        // A thread of its own: the reading is per thread.
        std::thread::spawn(|| {
            let before = loop_now();
            std::thread::sleep(Duration::from_millis(5));
            assert!(
                since(before) >= Duration::from_millis(5),
                "no tick yet: the clock"
            );

            tick();
            let woke = loop_now();
            std::thread::sleep(Duration::from_millis(5));
            assert_eq!(loop_now(), woke, "the reading holds until the next wake-up");
            assert_eq!(since(woke), Duration::ZERO);

            tick();
            assert!(
                since(woke) >= Duration::from_millis(5),
                "the next wake-up reads again"
            );
            let clock = Clock::new();
            std::thread::sleep(Duration::from_millis(1));
            tick();
            let stamp = clock.now();
            std::thread::sleep(Duration::from_millis(5));
            assert_eq!(clock.now(), stamp, "timestamps come from the same reading");
            assert_eq!(stamp, clock.at(loop_now()));
        })
        .join()
        .unwrap();
    }
}
