//! Requests waiting for a connection slot when every backend is at its `max_connections`:
//! a bounded queue ordered by priority (the seed's `Request.priority`, higher first), then by
//! arrival. A finished request wakes the first waiter, which picks again.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::oneshot;

struct Waiter {
    priority: i32,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Waiter) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}

impl Eq for Waiter {}

impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Waiter) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiter {
    /// Higher priority first, then earlier arrival.
    fn cmp(&self, other: &Waiter) -> CmpOrdering {
        self.priority
            .cmp(&other.priority)
            .then(other.seq.cmp(&self.seq))
    }
}

/// The wait queue of one upstream.
pub struct Queue {
    capacity: usize,
    /// Waiters queued now: checked without the lock on every finished request.
    len: AtomicUsize,
    seq: AtomicU64,
    heap: Mutex<BinaryHeap<Waiter>>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl Queue {
    /// A queue holding at most `capacity` waiters (0: no queue).
    pub fn new(capacity: usize) -> Queue {
        Queue {
            capacity,
            len: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            heap: Mutex::new(BinaryHeap::new()),
        }
    }

    /// Waiters now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// True when nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Joins the queue; `None` when it is full. The receiver resolves when a slot frees.
    pub fn join(&self, priority: i32) -> Option<oneshot::Receiver<()>> {
        let mut heap = self.heap.lock();
        if heap.len() >= self.capacity {
            return None;
        }
        let (wake, rx) = oneshot::channel();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        heap.push(Waiter {
            priority,
            seq,
            wake,
        });
        self.len.store(heap.len(), Ordering::Release);
        Some(rx)
    }

    /// A slot freed: wakes the first waiter still waiting. Costs one atomic load when the
    /// queue is empty, which is the request path's common case.
    pub fn release(&self) {
        if self.len.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut heap = self.heap.lock();
        while let Some(w) = heap.pop() {
            if w.wake.send(()).is_ok() {
                break;
            }
        }
        self.len.store(heap.len(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_priority_first_then_arrival_order_and_bounded() {
        let q = Queue::new(3);
        let mut low = q.join(0).unwrap();
        let mut high = q.join(5).unwrap();
        let mut low2 = q.join(0).unwrap();
        assert!(q.join(9).is_none(), "full");
        q.release();
        assert!(high.try_recv().is_ok());
        q.release();
        assert!(low.try_recv().is_ok());
        assert!(low2.try_recv().is_err());
        drop(low2);
        q.release();
        assert!(q.is_empty());
    }
}
