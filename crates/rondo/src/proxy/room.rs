//! Staying up when descriptors run short: idle client connections make room, accepting backs
//! off instead of spinning, and a listener refuses clients past its connection limit.
//!
//! nginx's model: when `worker_connections` or the open-file limit run out it closes the
//! connections that are only waiting (keep-alive between requests, or connected without a
//! request head yet) so that new clients and requests in progress proceed, and it stops
//! accepting for a moment rather than retrying `accept` in a loop. Busy connections are never
//! cut for this.
//!
//! Making room closes one batch, oldest idle first ([`IdleClients::make_room`], nginx's
//! "reusing connections"): a sixteenth of the idle connections, at least one, so that the
//! connections after it find room without closing more. Shutdown and `max_memory` close them
//! all ([`IdleClients::close_all`]).
//!
//! Each worker keeps the count of its idle connections, a ticket counter and one
//! [`Notify`]: a connection going idle takes a ticket and waits on the `Notify`, whose queue
//! of waiters is in the order they started waiting, and `notify_one` wakes the oldest. So an
//! idle connection costs a ticket and its place in that queue, no list of our own and no
//! allocation; making room costs one wake-up per connection closed. The ticket tells a
//! connection told to close from one that only found a permit left by an earlier batch.
//! Connections idle past [`super::parked::PARK_AFTER`] leave that queue for the worker's
//! [`ParkedClients`]: they are the oldest, so making room closes them first.

use std::cell::Cell;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Sleep;

use super::parked::ParkedClients;

/// How long accepting pauses after the process or system ran out of descriptors: long enough
/// not to burn a core, short enough that a freed descriptor is used at once (nginx pauses
/// accepting for 500 ms; idle connections closing free descriptors within milliseconds).
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Descriptors kept back from client connections for everything else: listening sockets,
/// health checks, the admin API, log files.
const RESERVED_DESCRIPTORS: u64 = 64;

/// Making room closes this fraction of the idle connections (at least one).
const ROOM_BATCH_DIVISOR: usize = 16;

/// A worker's idle client connections.
#[derive(Debug, Default)]
pub(crate) struct IdleClients {
    /// The ticket the next connection going idle takes.
    next: Cell<u64>,
    /// Connections idle since before this ticket close when told to.
    close_below: Cell<u64>,
    /// Connections idle now.
    count: Cell<usize>,
    /// Of those, connections told to close that have not woken yet.
    told: Cell<usize>,
    wake: Notify,
    /// Whether the worker is in an episode of descriptor shortage (logged once per episode).
    short: Cell<bool>,
    /// Idle connections that gave up their task (idle the longest: closed first).
    pub(crate) parked: ParkedClients,
}

/// How a wait for a client's next bytes ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    /// Bytes arrived, or the client closed: read the socket to know which.
    Readable,
    /// The time given passed.
    TimedOut,
    /// Room was wanted (descriptors running short, shutdown, `max_memory`): close.
    Close,
}

/// Counts a connection as idle until dropped.
struct Idle<'a>(&'a IdleClients);

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        let count = self.0.count.get().saturating_sub(1);
        self.0.count.set(count);
        // A connection told to close that left for another reason (its request arrived at
        // the same moment) is no longer waiting to be woken.
        self.0.told.set(self.0.told.get().min(count));
    }
}

impl IdleClients {
    /// Waits until `stream` has bytes to read or was closed, until `limit` passes, or until
    /// room must be made (then the connection closes). A connection told to make room
    /// whose next request has already arrived is served instead: closing a socket with unread
    /// bytes would reset it, and the client would lose that request.
    ///
    /// The reactor may report a socket readable before anything arrived (a new socket, or a
    /// flag left from the last read); with `verify`, such readiness is checked (by
    /// [`has_input`]'s peek, or by reading the first bytes where they can be kept) and the
    /// wait goes on when nothing arrived, so a connection that never sends stays counted as
    /// idle. Used for new connections; keep-alive waits skip it to keep the request path at
    /// two reads and two writes. `verify` returns true when bytes arrived or the connection
    /// closed, and leaves the reactor's readiness cleared when it returns false.
    ///
    /// `timer` is the connection's own, reset for each wait (see [`crate::clock::within`]).
    pub(crate) async fn wait_readable(
        &self,
        stream: &TcpStream,
        limit: Duration,
        mut verify: Option<&mut dyn FnMut(&TcpStream) -> bool>,
        mut timer: Pin<&mut Sleep>,
    ) -> Waited {
        let (ticket, _idle) = self.go_idle();
        timer.as_mut().reset(crate::clock::loop_now() + limit);
        // One place in the queue for the whole wait, so the connection keeps its age.
        let told = self.wake.notified();
        tokio::pin!(told);
        loop {
            tokio::select! {
                biased;
                ready = stream.readable() => match ready {
                    Ok(()) if verify.as_mut().is_some_and(|arrived| !arrived(stream)) => {}
                    Ok(()) => return Waited::Readable,
                    Err(_) => return Waited::Close,
                },
                () = timer.as_mut() => return Waited::TimedOut,
                () = &mut told => {
                    if self.woken(ticket) {
                        return match has_input(stream) {
                            true => Waited::Readable,
                            false => Waited::Close,
                        };
                    }
                    told.set(self.wake.notified());
                }
            }
        }
    }

    /// Returns when room is wanted (see [`make_room`](Self::make_room)); the connection
    /// waiting for it counts as idle meanwhile.
    pub(crate) async fn room_wanted(&self) {
        let (ticket, _idle) = self.go_idle();
        loop {
            self.wake.notified().await;
            if self.woken(ticket) {
                return;
            }
        }
    }

    /// Counts a connection as idle (until the guard drops) and gives it its ticket.
    fn go_idle(&self) -> (u64, Idle<'_>) {
        let ticket = self.next.get();
        self.next.set(ticket + 1);
        self.count.set(self.count.get() + 1);
        (ticket, Idle(self))
    }

    /// Notes a wake-up of the connection holding `ticket`; true when it was told to close,
    /// false for a permit an earlier batch left for a connection idle since.
    fn woken(&self, ticket: u64) -> bool {
        self.told.set(self.told.get().saturating_sub(1));
        ticket < self.close_below.get()
    }

    /// Closes one batch of idle connections, the oldest first (parked ones before those still
    /// in their task): a sixteenth of them, at least one (none when none is idle). Returns
    /// how many were closed or told to close.
    pub(crate) fn make_room(&self) -> usize {
        let waiting = self.count.get().saturating_sub(self.told.get());
        let all = waiting + self.parked.len();
        let batch = (all / ROOM_BATCH_DIVISOR).max(1).min(all);
        let closed = self.parked.close_oldest(batch);
        closed + self.close_waiting(batch.saturating_sub(closed).min(waiting))
    }

    /// Tells the `batch` connections idle the longest in their task to close.
    fn close_waiting(&self, batch: usize) -> usize {
        if batch > 0 {
            self.close_below.set(self.next.get());
            self.told.set(self.told.get() + batch);
            for _ in 0..batch {
                self.wake.notify_one();
            }
        }
        batch
    }

    /// Closes every connection idle now (shutdown, `max_memory`); returns how many.
    pub(crate) fn close_all(&self) -> usize {
        let waiting = self.count.get().saturating_sub(self.told.get());
        self.close_below.set(self.next.get());
        self.told.set(self.count.get());
        self.wake.notify_waiters();
        waiting + self.parked.close_all()
    }

    /// Notes that accepting failed for lack of descriptors (`error`): logged once per
    /// episode, and a batch of idle connections closed to make room.
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

/// Reads what `stream` holds into `buf`'s spare room without waiting, clearing the reactor's
/// readiness when the read left room unfilled (the socket is then empty), as tokio's own
/// reads do. `try_read_buf` alone clears it only on `WouldBlock`: a new connection whose
/// request came in one such read still looked readable once it was answered, so instead of
/// waiting for its next request as an idle connection (parked, a few hundred bytes) it
/// waited inside the request's state with its buffers (17 KB resident) and was closed at
/// `header_timeout` rather than `idle_timeout`.
pub(crate) fn read_now(stream: &TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let room = buf.capacity() - buf.len();
    let n = stream.try_read_buf(buf)?;
    if n > 0 && n < room {
        // No turn of the reactor since the read, so no readiness newer than it is lost.
        let _ = stream.try_io(tokio::io::Interest::READABLE, || {
            Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
        });
    }
    Ok(n)
}

/// A listener's count of open client connections against its limit, shared by every worker.
#[derive(Debug)]
pub(crate) struct ConnectionLimit {
    open: AtomicUsize,
    max: usize,
    /// Connections refused because the limit was reached and nothing idle could be closed.
    refused: AtomicUsize,
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

    /// Counts one more connection (until [`close`](Self::close)); false at the limit.
    pub(crate) fn open(&self) -> bool {
        let before = self.open.fetch_add(1, Ordering::Relaxed);
        if before >= self.max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Counts a connection admitted past the limit because idle ones are closing to make
    /// room for it.
    pub(crate) fn open_anyway(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection counted by [`open`](Self::open) or
    /// [`open_anyway`](Self::open_anyway) as closed.
    pub(crate) fn close(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
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
    use crate::proxy::test_sockets::connected;

    /// A new connection's wait (verified readiness), with a timer of its own.
    async fn wait(idle: &IdleClients, stream: &TcpStream, limit: Duration) -> Waited {
        let timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        let mut peek = has_input;
        idle.wait_readable(stream, limit, Some(&mut peek), timer)
            .await
    }

    #[test]
    fn the_default_limit_leaves_room_for_backend_connections() {
        assert_eq!(max_connections_for(1024), 480);
        assert_eq!(max_connections_for(65_536), 32_736);
        assert_eq!(max_connections_for(10), 1);
    }

    #[test]
    fn a_connection_past_the_limit_is_refused_until_one_closes() {
        let limit = ConnectionLimit::new(Some(2));
        assert!(limit.open());
        assert!(limit.open());
        assert!(!limit.open());
        limit.close();
        assert!(limit.open());
    }

    #[tokio::test]
    async fn making_room_closes_the_connections_idle_now_and_not_later_ones() {
        let (_client, server) = connected().await;
        let idle = std::rc::Rc::new(IdleClients::default());
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let (i, s) = (std::rc::Rc::clone(&idle), std::sync::Arc::new(server));
                let waiting = {
                    let s = std::sync::Arc::clone(&s);
                    tokio::task::spawn_local(
                        async move { wait(&i, &s, Duration::from_secs(30)).await },
                    )
                };
                for _ in 0..100 {
                    if idle.count.get() == 1 {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                assert_eq!(idle.count.get(), 1);
                assert_eq!(idle.make_room(), 1);
                assert_eq!(waiting.await.unwrap(), Waited::Close, "closed to make room");
                assert_eq!(idle.count.get(), 0);
                // A connection going idle after that is not affected by it.
                let i = std::rc::Rc::clone(&idle);
                let later = tokio::task::spawn_local(async move {
                    wait(&i, &s, Duration::from_millis(50)).await
                });
                assert_eq!(later.await.unwrap(), Waited::TimedOut, "times out normally");
            })
            .await;
    }

    #[tokio::test]
    async fn a_read_that_empties_the_socket_leaves_it_not_ready_until_more_arrives() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = connected().await;
        let not_ready = |server: &TcpStream| {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            std::pin::pin!(server.readable())
                .as_mut()
                .poll(&mut cx)
                .is_pending()
        };
        for bytes in [&b"GET / HTTP/1.1\r\n\r\n"[..], b"more"] {
            client.write_all(bytes).await.unwrap();
            server.readable().await.unwrap();
            let mut buf = Vec::with_capacity(1024);
            assert_eq!(read_now(&server, &mut buf).unwrap(), bytes.len());
            assert_eq!(buf, bytes);
            assert!(
                not_ready(&server),
                "readiness cleared with the socket emptied"
            );
        }
        // A read that fills its room may have left bytes behind: readiness stays.
        client.write_all(b"0123456789").await.unwrap();
        server.readable().await.unwrap();
        let mut small = Vec::with_capacity(4);
        assert_eq!(read_now(&server, &mut small).unwrap(), 4);
        assert!(!not_ready(&server), "still readable");
    }

    #[tokio::test]
    async fn one_timer_serves_a_connections_waits_one_after_another() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = connected().await;
        let idle = IdleClients::default();
        let mut timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        let long = Duration::from_secs(30);
        let mut byte = [0u8; 1];

        client.write_all(b"1").await.unwrap();
        let waited = idle
            .wait_readable(&server, long, None, timer.as_mut())
            .await;
        assert_eq!(waited, Waited::Readable);
        server.readable().await.unwrap();
        assert_eq!(server.try_read(&mut byte).unwrap(), 1);
        // Read to `WouldBlock`, so tokio forgets the readiness.
        assert!(server.try_read(&mut byte).is_err());
        // The same timer, its deadline moved earlier: the short wait ends on time.
        let short = Duration::from_millis(50);
        let waited = idle
            .wait_readable(&server, short, None, timer.as_mut())
            .await;
        assert_eq!(waited, Waited::TimedOut);
        // And moved later again after it fired: the next bytes end the wait, not the timer.
        let sender = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.write_all(b"2").await.unwrap();
        };
        let (waited, ()) = tokio::join!(
            idle.wait_readable(&server, long, None, timer.as_mut()),
            sender
        );
        assert_eq!(waited, Waited::Readable);
        assert_eq!(idle.count.get(), 0, "no wait still counted as idle");
    }

    #[tokio::test]
    async fn making_room_closes_the_oldest_idle_connection_and_close_all_the_rest() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        let mut servers = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            servers.push(std::rc::Rc::new(listener.accept().await.unwrap().0));
        }
        let idle = std::rc::Rc::new(IdleClients::default());
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let mut waiting = Vec::new();
                for (n, server) in servers.iter().enumerate() {
                    let (i, s) = (std::rc::Rc::clone(&idle), std::rc::Rc::clone(server));
                    waiting.push(tokio::task::spawn_local(async move {
                        wait(&i, &s, Duration::from_secs(30)).await
                    }));
                    // In order: each waits before the next one starts.
                    while idle.count.get() == n {
                        tokio::task::yield_now().await;
                    }
                }
                assert_eq!(idle.make_room(), 1, "one batch of three is one");
                while idle.count.get() == 3 {
                    tokio::task::yield_now().await;
                }
                assert!(waiting[0].is_finished(), "the oldest closed");
                assert!(!waiting[1].is_finished() && !waiting[2].is_finished());
                assert_eq!(idle.make_room(), 1);
                while idle.count.get() == 2 {
                    tokio::task::yield_now().await;
                }
                assert!(waiting[1].is_finished() && !waiting[2].is_finished());
                assert_eq!(idle.close_all(), 1);
                for w in waiting {
                    assert_eq!(w.await.unwrap(), Waited::Close, "closed to make room");
                }
                assert_eq!(idle.make_room(), 0, "none idle, none told");
            })
            .await;
    }
}
