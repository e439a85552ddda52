//! The program's clock: tokio's monotonic time mapped onto the `balance` crate's
//! [`Timestamp`]s, so that `tokio::time::pause()` in tests moves every state machine too; on
//! a worker thread, read once per turn of its event loop ([`loop_now`]).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use balance::Timestamp;
use tokio::time::Instant;

thread_local! {
    /// The time a worker's event loop last started running its ready tasks (see [`Ticking`]);
    /// `None` on other threads.
    static LOOP_NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Now, as of the start of the worker's current turn of its event loop: one clock reading per
/// turn instead of a dozen per request (deadlines, attempt and response times, the pool's
/// expiry), each ~50 ns in a VM. nginx (`ngx_time_update`) and HAProxy (`now_ms`) read the
/// clock the same way. The reading lags by the time the turn has run so far: a turn runs at
/// most 61 tasks (tokio's `LocalSet` tick), microseconds each, milliseconds when they are TLS
/// handshakes, so deadlines built on it end that much early and times measured with it are
/// that coarse. On a thread that is not a worker it is the clock itself.
#[inline]
pub fn loop_now() -> Instant {
    LOOP_NOW.with(Cell::get).unwrap_or_else(Instant::now)
}

/// The time from `start` (a [`loop_now`] reading) to now.
#[inline]
pub fn since(start: Instant) -> std::time::Duration {
    loop_now().saturating_duration_since(start)
}

/// `tokio::time::timeout` on [`loop_now`]: the deadline costs no clock reading.
pub fn timeout<F: Future>(limit: std::time::Duration, future: F) -> tokio::time::Timeout<F> {
    tokio::time::timeout_at(loop_now() + limit, future)
}

/// Runs `future` until `timer` fires (the caller has reset it to the deadline): `None` then.
///
/// A connection keeps its timers for its whole life and resets them for each wait, which
/// moves a pending timer's deadline later with an atomic store; a new timer per wait
/// (`tokio::time::timeout`) takes the timer wheel's lock to go in and again to come out.
pub async fn within<F: Future>(
    timer: Pin<&mut tokio::time::Sleep>,
    future: F,
) -> Option<F::Output> {
    tokio::select! {
        biased;
        out = future => Some(out),
        () = timer => None,
    }
}

/// Reads the clock for [`loop_now`].
fn tick() {
    LOOP_NOW.with(|now| now.set(Some(Instant::now())));
}

/// A worker's event loop future (its `LocalSet` running): reads the clock for [`loop_now`]
/// each time it is polled, which is once per turn of the loop, before the turn's tasks run.
/// (A runtime hook on waking up is not enough: a busy worker does not sleep between turns.)
pub struct Ticking<F>(pub Pin<Box<F>>);

impl<F> std::fmt::Debug for Ticking<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ticking")
    }
}

impl<F: Future> Future for Ticking<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        tick();
        self.0.as_mut().poll(cx)
    }
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
    fn loop_now_is_the_clock_off_a_worker_and_one_reading_per_turn_on_one() {
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
            assert_eq!(loop_now(), woke, "the reading holds until the next turn");
            assert_eq!(since(woke), Duration::ZERO);

            tick();
            assert!(
                since(woke) >= Duration::from_millis(5),
                "the next turn reads again"
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

    #[test]
    fn a_worker_that_never_sleeps_still_reads_the_clock_every_turn() {
        use std::rc::Rc;
        std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let local = tokio::task::LocalSet::new();
            let turns = local.run_until(async {
                // More ready tasks than one turn runs: the loop goes from turn to turn
                // without sleeping (as a worker at 1,000 busy connections does).
                let stop = Rc::new(Cell::new(false));
                for _ in 0..200 {
                    let stop = Rc::clone(&stop);
                    tokio::task::spawn_local(async move {
                        while !stop.get() {
                            tokio::task::yield_now().await;
                        }
                    });
                }
                // A reading from before the busy spell (a worker has one from its idle start).
                tick();
                let first = loop_now();
                let wall = std::time::Instant::now();
                while wall.elapsed() < Duration::from_millis(20) {
                    tokio::task::yield_now().await;
                }
                let later = loop_now();
                stop.set(true);
                later.saturating_duration_since(first)
            });
            let advanced = rt.block_on(Ticking(Box::pin(turns)));
            assert!(
                advanced >= Duration::from_millis(15),
                "loop_now moved {advanced:?} in 20 ms of busy turns"
            );
        })
        .join()
        .unwrap();
    }
}
