//! Client connections spread over the workers by how many each one serves, whichever worker
//! won the race to accept them.
//!
//! Every worker accepts from the same listening sockets: the kernel wakes them all, and the
//! first to call `accept` takes the connection. A burst of new connections (a client pool
//! opening 256 keep-alive connections at once) lands mostly on whichever worker was awake,
//! and keep-alive connections stay where they landed: with two workers, one run of `wrk
//! -c256` put every connection on one worker while the other idled. So the accepting worker
//! hands a connection to the worker with the fewest open connections when it holds clearly
//! more itself (HAProxy hands each accepted connection to its least loaded thread,
//! `tune.listener.multi-queue`): more than an eighth more, plus [`SLACK`], so a stream of
//! short connections seldom pays for a hand-off (two `epoll_ctl` calls and a wake-up of the
//! other thread).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

use super::Frontend;

/// Connections a worker may hold beyond another's (and beyond an eighth more) before it hands
/// new ones over.
pub(crate) const SLACK: usize = 4;

/// The open client connections of every worker, and the way to each one's inbox.
#[derive(Debug)]
pub(crate) struct Spread {
    open: Box<[Arc<AtomicUsize>]>,
    inboxes: Box<[mpsc::UnboundedSender<Handoff>]>,
}

/// What one worker needs of the spread: its place in it, and its inbox.
#[derive(Debug)]
pub(crate) struct Seat {
    /// The worker's index.
    pub(crate) index: usize,
    /// Every worker's load and inbox.
    pub(crate) spread: Arc<Spread>,
    /// Connections other workers accepted for this one.
    pub(crate) inbox: mpsc::UnboundedReceiver<Handoff>,
}

/// An accepted connection on its way to the worker that serves it, already counted there.
#[derive(Debug)]
pub(crate) struct Handoff {
    /// The connection, out of the accepting worker's reactor.
    pub(crate) stream: std::net::TcpStream,
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// The listener it came in on.
    pub(crate) frontend: Arc<Frontend>,
    /// Its place in the receiving worker's load, taken when it was handed over.
    pub(crate) counted: Counted,
}

impl Spread {
    /// A seat for each worker, counting its connections in `open` (one count per worker, from
    /// [`crate::counters::ProxyMetrics::worker_connections`], so `/metrics` shows them).
    pub(crate) fn seats(open: Vec<Arc<AtomicUsize>>) -> Vec<Seat> {
        let (inboxes, receivers): (Vec<_>, Vec<_>) =
            open.iter().map(|_| mpsc::unbounded_channel()).unzip();
        let spread = Arc::new(Spread {
            open: open.into(),
            inboxes: inboxes.into(),
        });
        receivers
            .into_iter()
            .enumerate()
            .map(|(index, inbox)| Seat {
                index,
                spread: Arc::clone(&spread),
                inbox,
            })
            .collect()
    }

    /// The worker that should serve a connection worker `me` has just accepted: `me`, unless
    /// another holds clearly fewer connections (see the module's documentation).
    pub(crate) fn target(&self, me: usize) -> usize {
        let load = |w: usize| self.open.get(w).map_or(0, |n| n.load(Ordering::Relaxed));
        let Some((least, fewest)) = (0..self.open.len())
            .filter(|&w| w != me)
            .map(|w| (w, load(w)))
            .min_by_key(|&(_, n)| n)
        else {
            return me;
        };
        if load(me) > fewest + fewest / 8 + SLACK {
            least
        } else {
            me
        }
    }

    /// Counts a connection in worker `worker`'s load for as long as the value lives.
    pub(crate) fn count(&self, worker: usize) -> Counted {
        match self.open.get(worker) {
            Some(open) => {
                open.fetch_add(1, Ordering::Relaxed);
                Counted(Arc::clone(open))
            }
            None => Counted::alone(),
        }
    }

    /// Sends `handoff` to worker `to`; gives it back when that worker has stopped.
    pub(crate) fn send(&self, to: usize, handoff: Handoff) -> Result<(), Handoff> {
        match self.inboxes.get(to) {
            Some(inbox) => inbox.send(handoff).map_err(|e| e.0),
            None => Err(handoff),
        }
    }
}

/// One connection in a worker's load (see [`Spread::count`]).
#[derive(Debug)]
pub(crate) struct Counted(Arc<AtomicUsize>);

impl Counted {
    /// A count of its own, for a connection outside any spread (unit tests, or a worker
    /// index the spread does not have).
    pub(crate) fn alone() -> Counted {
        Counted(Arc::new(AtomicUsize::new(1)))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_keeps_what_it_accepts_until_it_holds_clearly_more_than_another() {
        let seats = Spread::seats(vec![Arc::default(), Arc::default()]);
        let spread = &seats[0].spread;
        let mut held = Vec::new();
        for _ in 0..=SLACK {
            assert_eq!(spread.target(0), 0);
            held.push(spread.count(0));
        }
        // Worker 0 holds SLACK + 1, worker 1 none: the next goes to worker 1.
        assert_eq!(spread.target(0), 1);
        held.push(spread.count(1));
        assert_eq!(spread.target(1), 1, "worker 1 holds fewer");
        // 40 against 32: within an eighth plus the slack.
        let more: Vec<_> = (0..35).map(|_| spread.count(0)).collect();
        let others: Vec<_> = (0..31).map(|_| spread.count(1)).collect();
        assert_eq!(spread.target(0), 0);
        held.push(spread.count(0));
        assert_eq!(spread.target(0), 1, "41 against 32 is more than 32 + 4 + 4");
        drop((more, others, held));
        assert_eq!(spread.target(0), 0, "every count dropped");
    }

    #[test]
    fn one_worker_keeps_everything() {
        let seats = Spread::seats(vec![Arc::default()]);
        let held: Vec<_> = (0..100).map(|_| seats[0].spread.count(0)).collect();
        assert_eq!(seats[0].spread.target(0), 0);
        drop(held);
    }
}
