//! Staying up when descriptors run short: idle client connections make room, accepting backs
//! off instead of spinning, and a listener refuses clients past its connection limit.
//!
//! nginx's model: when `worker_connections` or the open-file limit run out it closes the
//! connections that are only waiting (keep-alive between requests, or connected without a
//! request head yet) so that new clients and requests in progress proceed, and it stops
//! accepting for a moment rather than retrying `accept` in a loop. Busy connections are never
//! cut for this.
//!
//! Each worker keeps the count of its idle connections and a ticket counter: a connection
//! takes a ticket when it goes idle; making room closes every connection idle since before
//! the current ticket (all of them that are idle at that moment) with one wake-up, so an idle
//! connection costs a ticket and a waiter, no list entry.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, timeout_at};

/// How long accepting pauses after the process or system ran out of descriptors: long enough
/// not to burn a core, short enough that a freed descriptor is used at once (nginx pauses
/// accepting for 500 ms; idle connections closing free descriptors within milliseconds).
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Descriptors kept back from client connections for everything else: listening sockets,
/// health checks, the admin API, log files.
const RESERVED_DESCRIPTORS: u64 = 64;

/// A worker's idle client connections.
#[derive(Debug, Default)]
pub(crate) struct IdleClients {
    /// The ticket the next connection going idle takes.
    next: Cell<u64>,
    /// Connections idle since before this ticket close.
    close_below: Cell<u64>,
    /// Connections idle now.
    count: Cell<usize>,
    wake: Notify,
    /// Whether the worker is in an episode of descriptor shortage (logged once per episode).
    short: Cell<bool>,
}

/// Counts a connection as idle until dropped.
struct Idle<'a>(&'a IdleClients);

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        self.0.count.set(self.0.count.get().saturating_sub(1));
    }
}

impl IdleClients {
    /// Waits until `stream` has bytes to read or was closed (`true`), or until `limit` passes
    /// or room must be made (`false`: close the connection). A connection told to make room
    /// whose next request has already arrived is served instead: closing a socket with unread
    /// bytes would reset it, and the client would lose that request.
    ///
    /// The reactor may report a socket readable before anything arrived (a new socket, or a
    /// flag left from the last read); with `verify`, such readiness is checked with a
    /// non-blocking peek and the wait goes on, so a connection that never sends stays counted
    /// as idle. Used for new connections (one peek per connection); keep-alive waits skip it
    /// to keep the request path at two reads and two writes.
    pub(crate) async fn wait_readable(
        &self,
        stream: &TcpStream,
        limit: Duration,
        verify: bool,
    ) -> bool {
        let ticket = self.next.get();
        self.next.set(ticket + 1);
        self.count.set(self.count.get() + 1);
        let _idle = Idle(self);
        let deadline = Instant::now() + limit;
        loop {
            tokio::select! {
                ready = timeout_at(deadline, stream.readable()) => match ready {
                    Ok(Ok(())) if verify && !has_input(stream) => {}
                    Ok(Ok(())) => return true,
                    _ => return false,
                },
                () = self.wake.notified() => if ticket < self.close_below.get() {
                    return has_input(stream);
                },
            }
        }
    }

    /// Returns when room is wanted (see [`make_room`](Self::make_room)); the connection
    /// waiting for it counts as idle meanwhile.
    pub(crate) async fn room_wanted(&self) {
        let ticket = self.next.get();
        self.next.set(ticket + 1);
        self.count.set(self.count.get() + 1);
        let _idle = Idle(self);
        loop {
            self.wake.notified().await;
            if ticket < self.close_below.get() {
                return;
            }
        }
    }

    /// Closes every connection idle now; returns how many.
    pub(crate) fn make_room(&self) -> usize {
        self.close_below.set(self.next.get());
        self.wake.notify_waiters();
        self.count.get()
    }

    /// Notes that accepting failed for lack of descriptors (`error`): logged once per
    /// episode, and idle connections closed to make room.
    pub(crate) fn out_of_descriptors(&self, error: &std::io::Error) {
        let closed = self.make_room();
        if !self.short.replace(true) {
            tracing::warn!(
                error = %error,
                closed_idle = closed,
                "out of file descriptors: closing idle connections and pausing accepts"
            );
        }
    }

    /// Notes a successful accept: an episode of shortage is over.
    pub(crate) fn accepted(&self) {
        if self.short.replace(false) {
            tracing::info!("file descriptors available again");
        }
    }
}

/// True when `stream` has a byte to read or was closed; `false` (and the reactor's readiness
/// cleared) when nothing arrived.
pub(crate) fn has_input(stream: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
    let peeked = stream.try_io(tokio::io::Interest::READABLE, || {
        socket2::SockRef::from(stream).peek(&mut byte)
    });
    !matches!(peeked, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// A listener's count of open client connections against its limit, shared by every worker.
#[derive(Debug)]
pub(crate) struct ConnectionLimit {
    open: AtomicUsize,
    max: usize,
    /// Connections refused because the limit was reached and nothing idle could be closed.
    refused: AtomicUsize,
}

/// An open client connection, counted until dropped.
#[derive(Debug)]
pub(crate) struct Open<'a>(&'a ConnectionLimit);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnectionLimit {
    /// A limit of `max` connections, or one derived from the open-file limit.
    pub(crate) fn new(max: Option<usize>) -> ConnectionLimit {
        ConnectionLimit {
            open: AtomicUsize::new(0),
            max: max.unwrap_or_else(default_max_connections),
            refused: AtomicUsize::new(0),
        }
    }

    /// The limit.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Counts one more connection, or `None` at the limit.
    pub(crate) fn open(&self) -> Option<Open<'_>> {
        let before = self.open.fetch_add(1, Ordering::Relaxed);
        if before >= self.max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Open(self))
    }

    /// Counts a connection admitted past the limit because idle ones are closing to make
    /// room for it.
    pub(crate) fn open_anyway(&self) -> Open<'_> {
        self.open.fetch_add(1, Ordering::Relaxed);
        Open(self)
    }

    /// Counts a refused connection.
    pub(crate) fn refuse(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections refused so far.
    pub(crate) fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }
}

/// The soft open-file limit now.
pub(crate) fn descriptor_limit() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
}

/// `max_client_connections` when not set: each proxied connection needs two descriptors (the
/// client's and the backend's), after [`RESERVED_DESCRIPTORS`]; HAProxy derives its `maxconn`
/// from `ulimit -n` the same way.
pub(crate) fn default_max_connections() -> usize {
    max_connections_for(descriptor_limit())
}

/// The formula of [`default_max_connections`] for an open-file limit.
pub(crate) fn max_connections_for(limit: u64) -> usize {
    usize::try_from(limit.saturating_sub(RESERVED_DESCRIPTORS) / 2)
        .unwrap_or(usize::MAX)
        .max(1)
}

/// Raises the soft open-file limit to the hard limit (what a daemon is allowed), and returns
/// the limit in force.
pub(crate) fn raise_descriptor_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(_) => descriptor_limit(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_limit_leaves_room_for_backend_connections() {
        assert_eq!(max_connections_for(1024), 480);
        assert_eq!(max_connections_for(65_536), 32_736);
        assert_eq!(max_connections_for(10), 1);
    }

    #[test]
    fn a_connection_past_the_limit_is_refused_until_one_closes() {
        let limit = ConnectionLimit::new(Some(2));
        let a = limit.open().unwrap();
        let _b = limit.open().unwrap();
        assert!(limit.open().is_none());
        drop(a);
        assert!(limit.open().is_some());
    }

    #[tokio::test]
    async fn making_room_closes_the_connections_idle_now_and_not_later_ones() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let idle = std::rc::Rc::new(IdleClients::default());
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let (i, s) = (std::rc::Rc::clone(&idle), std::sync::Arc::new(server));
                let waiting = {
                    let s = std::sync::Arc::clone(&s);
                    tokio::task::spawn_local(async move {
                        i.wait_readable(&s, Duration::from_secs(30), true).await
                    })
                };
                for _ in 0..100 {
                    if idle.count.get() == 1 {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                assert_eq!(idle.count.get(), 1);
                assert_eq!(idle.make_room(), 1);
                assert!(!waiting.await.unwrap(), "closed to make room");
                assert_eq!(idle.count.get(), 0);
                // A connection going idle after that is not affected by it.
                let i = std::rc::Rc::clone(&idle);
                let later = tokio::task::spawn_local(async move {
                    i.wait_readable(&s, Duration::from_millis(50), true).await
                });
                assert!(!later.await.unwrap(), "times out normally");
            })
            .await;
    }
}
