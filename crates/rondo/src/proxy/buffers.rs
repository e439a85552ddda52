//! A worker's spare I/O buffers, kept for as long as they are in demand.
//!
//! Every request takes a few buffers (the client's input, the head rewritten for the backend,
//! the backend's response and the head for the client) and gives them back when it ends. A
//! fixed cap on the spare ones made the allocator churn once more requests were in flight than
//! the cap covered: past it, each returned buffer was freed and the next request allocated a
//! new one, and the allocator gave the freed pages back to the kernel (`madvise`) only to fault
//! them in again (at 256 connections: ~10,000 page faults a second, 0.3 per request).
//!
//! So the pool keeps whatever comes back and frees only what a whole sweep period did not
//! need: it notes the fewest spare buffers it held since the last sweep (its low-water mark);
//! that many were never taken, and each sweep frees them, down to [`KEPT_AT_REST`]. Under a
//! steady load nothing is freed or allocated; after a burst, memory returns within a period.

use std::cell::{Cell, RefCell};

use super::body;

/// Spare buffers a sweep never frees: enough for a quiet worker's requests to find one ready.
const KEPT_AT_REST: usize = 64;

/// Buffers larger than this (a buffer grew to hold a long head) are freed, not kept; those a
/// long body was read into ([`body::LONG_BODY_READ`]) are kept, so large responses one after
/// another reuse them rather than allocate and fault in new ones.
const LARGEST_KEPT: usize = body::LONG_BODY_READ;

/// The spare buffers of one worker (a `RefCell` borrow, never a lock).
#[derive(Debug, Default)]
pub(super) struct BufferPool {
    spare: RefCell<Vec<Vec<u8>>>,
    /// The fewest spare buffers held since the last sweep.
    low_water: Cell<usize>,
}

impl BufferPool {
    /// An empty buffer: a spare one, or a new one of [`body::CHUNK`] bytes.
    pub(super) fn take(&self) -> Vec<u8> {
        let mut spare = self.spare.borrow_mut();
        let buf = spare.pop();
        self.low_water.set(self.low_water.get().min(spare.len()));
        buf.unwrap_or_else(|| Vec::with_capacity(body::CHUNK))
    }

    /// Keeps `buf` for the next request (emptied), unless it grew too large.
    pub(super) fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() <= LARGEST_KEPT {
            buf.clear();
            self.spare.borrow_mut().push(buf);
        }
    }

    /// Frees the spare buffers no request needed since the last sweep, keeping at least
    /// [`KEPT_AT_REST`]. The ones freed are the longest unused (the bottom of the stack).
    pub(super) fn sweep(&self) {
        let mut spare = self.spare.borrow_mut();
        let unused = self
            .low_water
            .get()
            .min(spare.len().saturating_sub(KEPT_AT_REST));
        spare.drain(..unused);
        self.low_water.set(spare.len());
    }

    /// Frees every spare buffer (memory is short).
    pub(super) fn clear(&self) {
        self.spare.borrow_mut().clear();
        self.low_water.set(0);
    }

    /// Spare buffers held now.
    #[cfg(test)]
    fn spare(&self) -> usize {
        self.spare.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` buffers taken at once, then all given back: a burst of `n` requests.
    fn burst(pool: &BufferPool, n: usize) {
        let taken: Vec<_> = (0..n).map(|_| pool.take()).collect();
        for buf in taken {
            pool.give(buf);
        }
    }

    #[test]
    fn a_steady_load_above_the_resting_size_neither_allocates_nor_frees() {
        let pool = BufferPool::default();
        burst(&pool, 1000);
        let first: Vec<*const u8> = {
            let spare = pool.spare.borrow();
            spare.iter().map(|b| b.as_ptr()).collect()
        };
        for _ in 0..5 {
            burst(&pool, 1000);
            pool.sweep();
            assert_eq!(pool.spare(), 1000);
        }
        // The same allocations went round: none was freed and replaced.
        let mut now: Vec<*const u8> = pool.spare.borrow().iter().map(|b| b.as_ptr()).collect();
        let mut before = first;
        now.sort();
        before.sort();
        assert_eq!(now, before);
    }

    #[test]
    fn buffers_a_whole_period_did_not_need_are_freed_down_to_the_resting_size() {
        let pool = BufferPool::default();
        burst(&pool, 1000);
        pool.sweep(); // the period of the burst: every buffer was taken
        assert_eq!(pool.spare(), 1000);
        burst(&pool, 300);
        pool.sweep(); // 700 were never taken
        assert_eq!(pool.spare(), 300);
        pool.sweep(); // a quiet period
        assert_eq!(pool.spare(), KEPT_AT_REST);
        pool.sweep();
        assert_eq!(pool.spare(), KEPT_AT_REST);
    }

    #[test]
    fn given_buffers_come_back_empty_and_oversized_ones_are_freed() {
        let pool = BufferPool::default();
        let mut buf = pool.take();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        pool.give(buf);
        assert!(pool.take().is_empty());
        pool.give(Vec::with_capacity(LARGEST_KEPT + 1));
        assert_eq!(pool.spare(), 0);
        burst(&pool, 10);
        pool.clear();
        assert_eq!(pool.spare(), 0);
    }
}
