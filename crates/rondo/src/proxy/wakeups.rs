//! The requests in progress on a worker thread, and the wake-up coalescing that uses their
//! count: a worker with many requests in progress waits a moment before it asks the kernel
//! for ready sockets, so that one wake-up collects the events of many connections.
//!
//! A worker that runs out of work parks in `epoll_wait` and is woken by the next socket that
//! becomes ready. Under load from many connections that happens tens of thousands of times a
//! second, each time for one or two events, and each wake-up is a context switch and a system
//! call (measured on 16 KiB responses at 64 connections: 0.69 `epoll_wait` and 0.23 context
//! switches per request). Network cards meet the same problem with interrupt coalescing
//! (ethtool's `rx-usecs`): so, before it parks, a worker that has at least
//! [`MIN_IN_PROGRESS`] requests in progress, and whose last park ended within [`BUSY_PARK`],
//! sleeps for `wakeup_coalescing` first. With fewer requests in progress (a lone client, a
//! quiet service) or after a long park it never pauses, so their latency is untouched.
//!
//! The count is per thread because each worker has a thread of its own (a current-thread
//! runtime), and the park hooks tokio calls cannot reach the worker itself.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Requests in progress below which a worker never pauses: a request waits out a pause in
/// full only when few others share it.
pub(crate) const MIN_IN_PROGRESS: usize = 8;

/// A park shorter than this means events arrive faster than the worker sleeps: the next one
/// is worth waiting for. After a longer park the traffic is sparse and a pause would only
/// add latency.
pub(crate) const BUSY_PARK: Duration = Duration::from_micros(200);

thread_local! {
    static IN_PROGRESS: Cell<usize> = const { Cell::new(0) };
    static PARKED_AT: Cell<Option<Instant>> = const { Cell::new(None) };
    static LAST_PARK: Cell<Duration> = const { Cell::new(Duration::MAX) };
}

/// A request (an HTTP/1.1 exchange or an HTTP/2 stream) counted as in progress on this
/// thread until dropped.
#[derive(Debug)]
pub(crate) struct InProgress(std::marker::PhantomData<*const ()>);

impl InProgress {
    /// Counts one more request in progress on this thread.
    pub(crate) fn start() -> InProgress {
        IN_PROGRESS.with(|n| n.set(n.get() + 1));
        InProgress(std::marker::PhantomData)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        IN_PROGRESS.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// The requests in progress on this thread.
pub(crate) fn in_progress() -> usize {
    IN_PROGRESS.with(Cell::get)
}

/// A worker's `wakeup_coalescing` and where it counts its pauses.
#[derive(Debug, Clone)]
pub(crate) struct Coalescing {
    /// The pause before parking; zero: never pause.
    pub(crate) pause: Duration,
    /// Pauses taken (`rondo_worker_pauses_total`).
    pub(crate) pauses: Arc<AtomicU64>,
}

impl Coalescing {
    /// Makes the runtime `builder` builds pause before its parks as the module says. Nothing
    /// is installed when the pause is zero.
    pub(crate) fn install(self, builder: &mut tokio::runtime::Builder) {
        if self.pause.is_zero() {
            return;
        }
        builder
            .on_thread_park(move || {
                if pays_to_pause(in_progress(), LAST_PARK.with(Cell::get)) {
                    self.pauses.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(self.pause);
                }
                PARKED_AT.with(|at| at.set(Some(Instant::now())));
            })
            .on_thread_unpark(|| {
                if let Some(at) = PARKED_AT.with(Cell::take) {
                    LAST_PARK.with(|last| last.set(at.elapsed()));
                }
            });
    }
}

/// Whether a worker about to park with `in_progress` requests in progress, whose last park
/// lasted `last_park`, should pause first.
fn pays_to_pause(in_progress: usize, last_park: Duration) -> bool {
    in_progress >= MIN_IN_PROGRESS && last_park < BUSY_PARK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_only_with_many_requests_in_progress_after_a_short_park() {
        let short = BUSY_PARK - Duration::from_micros(1);
        assert!(pays_to_pause(MIN_IN_PROGRESS, short));
        assert!(pays_to_pause(1_000, Duration::ZERO));
        assert!(
            !pays_to_pause(MIN_IN_PROGRESS - 1, short),
            "a lone client never waits"
        );
        assert!(
            !pays_to_pause(1_000, BUSY_PARK),
            "sparse traffic never waits"
        );
        assert!(
            !pays_to_pause(1_000, Duration::MAX),
            "nor does the first park"
        );
    }

    #[test]
    fn requests_in_progress_are_counted_per_thread_until_dropped() {
        let before = in_progress();
        let first = InProgress::start();
        let second = InProgress::start();
        assert_eq!(in_progress(), before + 2);
        let elsewhere = std::thread::spawn(in_progress).join().ok();
        assert_eq!(elsewhere, Some(0), "another thread counts its own");
        drop(first);
        assert_eq!(in_progress(), before + 1);
        drop(second);
        assert_eq!(in_progress(), before);
    }

    /// Wakes `rt` from another thread every ~20 µs (plus the timer slack), 100 times, so
    /// that its parks are short.
    fn woken_often(rt: &tokio::runtime::Runtime) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sender = std::thread::spawn(move || {
            for n in 0..100 {
                std::thread::sleep(Duration::from_micros(20));
                if tx.send(n).is_err() {
                    return;
                }
            }
        });
        rt.block_on(async { while rx.recv().await.is_some() {} });
        assert!(sender.join().is_ok());
    }

    #[test]
    fn a_busy_runtime_pauses_before_parking_and_counts_it() {
        let pauses = Arc::new(AtomicU64::new(0));
        let coalescing = Coalescing {
            pause: Duration::from_micros(50),
            pauses: Arc::clone(&pauses),
        };
        let mut builder = tokio::runtime::Builder::new_current_thread();
        coalescing.install(&mut builder);
        let Ok(rt) = builder.build() else {
            panic!("a current-thread runtime builds")
        };
        // Short parks, few requests in progress: never a pause.
        woken_often(&rt);
        assert_eq!(pauses.load(Ordering::Relaxed), 0);
        // Short parks, many requests in progress: pauses.
        let held: Vec<InProgress> = (0..MIN_IN_PROGRESS).map(|_| InProgress::start()).collect();
        woken_often(&rt);
        drop(held);
        assert!(pauses.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn a_zero_pause_installs_nothing() {
        let pauses = Arc::new(AtomicU64::new(0));
        let coalescing = Coalescing {
            pause: Duration::ZERO,
            pauses: Arc::clone(&pauses),
        };
        let mut builder = tokio::runtime::Builder::new_current_thread();
        coalescing.install(&mut builder);
        let Ok(rt) = builder.build() else {
            panic!("a current-thread runtime builds")
        };
        let held: Vec<InProgress> = (0..MIN_IN_PROGRESS).map(|_| InProgress::start()).collect();
        woken_often(&rt);
        drop(held);
        assert_eq!(pauses.load(Ordering::Relaxed), 0);
    }
}
