//! Idle keep-alive connections kept without a task, nginx's model.
//!
//! A client connection waiting for its next request costs its task: the connection loop's
//! state, the wait's timer and its place in the idle queue, about 1.7 KB (measured as resident
//! memory per idle connection). After [`PARK_AFTER`] of silence a plain HTTP/1.1 connection
//! ends its task and is *parked* here instead: its socket, the client's address, its admission
//! and the end of its `idle_timeout`, in a 112-byte slot with the slot's 32-byte wake-up and
//! the address's text, next to tokio's registration of the socket. Its next request starts a
//! task again (see [`super::connection::resume`]). A client sending its next request within
//! [`PARK_AFTER`] keeps its task, so a busy connection pays nothing for this.
//!
//! No timer and no task per parked connection: the socket's readiness wakes a small
//! [`Wakeup`] that queues the connection's slot for the worker's one [`ParkedClients::serve`]
//! task, and the worker's one-second sweep ([`ParkedClients::expire`]) closes the connections
//! whose `idle_timeout` ran out, so the timeout is kept to within a second.
//!
//! A parked connection whose request has just arrived is never closed for room or shutdown:
//! closing a socket with unread bytes would reset it and lose the request. It is served
//! instead (during shutdown, with `Connection: close`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Worker;
use super::connection::Admitted;
use super::room::has_input;

/// How long a keep-alive connection waits for its next request in its own task before it is
/// parked: long enough that a client sending requests one after another does not park (a
/// load generator at 1,000 connections on a loaded machine sees gaps of tens of
/// milliseconds), short enough that a burst of connections going idle does not hold a
/// burst of tasks (the allocator keeps memory it was given at the peak).
pub(crate) const PARK_AFTER: Duration = Duration::from_millis(100);

/// An idle keep-alive connection without a task: what its task needs to start again.
#[derive(Debug)]
pub(crate) struct ParkedConn {
    pub(super) stream: TcpStream,
    /// The client's address as logs and headers show it.
    pub(super) ip: String,
    pub(super) admitted: Admitted,
    /// When its `idle_timeout` runs out.
    pub(super) until: Instant,
}

/// A worker's parked connections, in slots reused as connections come and go.
#[derive(Debug, Default)]
pub(crate) struct ParkedClients {
    slots: RefCell<Vec<Slot>>,
    /// Empty slots below `slots.len()`.
    free: RefCell<Vec<u32>>,
    woken: Arc<Woken>,
    /// Parked connections now.
    len: Cell<usize>,
    /// Order of parking, so that room is made by closing the oldest first.
    next_age: Cell<u64>,
}

/// A place for one parked connection, with the wake-up its socket calls (made once per
/// slot: parking allocates nothing once the worker has had as many parked connections).
#[derive(Debug)]
struct Slot {
    parked: Option<Parked>,
    wakeup: Arc<Wakeup>,
}

#[derive(Debug)]
struct Parked {
    conn: ParkedConn,
    age: u64,
}

/// Slots whose sockets turned readable, for the worker's [`ParkedClients::serve`] task.
#[derive(Debug, Default)]
struct Woken {
    slots: parking_lot::Mutex<Vec<u32>>,
    notify: Notify,
}

impl Woken {
    fn push(&self, slot: u32) {
        self.slots.lock().push(slot);
        self.notify.notify_one();
    }
}

/// The waker a parked socket's readiness calls. tokio keeps the last waker until the socket
/// is polled again, so it goes quiet once its connection left (a wake-up from a connection
/// that has left just polls the slot's next connection once).
#[derive(Debug)]
struct Wakeup {
    slot: u32,
    parked: AtomicBool,
    woken: Arc<Woken>,
}

impl Wake for Wakeup {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.parked.load(Ordering::Relaxed) {
            self.woken.push(self.slot);
        }
    }
}

impl ParkedClients {
    /// Parks a connection; its task ends after this. Its socket is polled here, which
    /// registers the slot's wake-up; a request that arrived meanwhile goes to the worker's
    /// task at once.
    pub(crate) fn park(&self, conn: ParkedConn) {
        let mut slots = self.slots.borrow_mut();
        let slot = match self.free.borrow_mut().pop() {
            Some(slot) => slot,
            None => {
                let Ok(slot) = u32::try_from(slots.len()) else {
                    return; // four billion parked connections: this one closes instead
                };
                let wakeup = Arc::new(Wakeup {
                    slot,
                    parked: AtomicBool::new(false),
                    woken: Arc::clone(&self.woken),
                });
                slots.push(Slot {
                    parked: None,
                    wakeup,
                });
                slot
            }
        };
        let age = self.next_age.get();
        self.next_age.set(age + 1);
        let place = &mut slots[slot as usize];
        place.wakeup.parked.store(true, Ordering::Relaxed);
        place.parked = Some(Parked { conn, age });
        self.len.set(self.len.get() + 1);
        drop(slots);
        // Registers the wake-up; a request that arrived meanwhile is served by the worker's
        // task at once.
        if self.ready(slot, true) {
            self.woken.push(slot);
        }
    }

    /// Parked connections now.
    pub(crate) fn len(&self) -> usize {
        self.len.get()
    }

    /// The worker's task for its parked connections: starts a connection's task again when
    /// its socket turns readable (a request, or the client closing). Runs until the worker
    /// stops.
    pub(crate) async fn serve(worker: Rc<Worker>) {
        let parked = &worker.idle.parked;
        let mut woken = Vec::new();
        loop {
            parked.woken.notify.notified().await;
            std::mem::swap(&mut woken, &mut *parked.woken.slots.lock());
            for slot in woken.drain(..) {
                if !parked.ready(slot, false) {
                    continue;
                }
                if let Some(conn) = parked.take(slot) {
                    tokio::task::spawn_local(super::connection::resume(conn, Rc::clone(&worker)));
                }
            }
        }
    }

    /// Polls the socket in `slot` with the slot's wake-up: true when it has something to read
    /// (a request, the client's close, an error: the connection's task finds out which), false
    /// when it waits on or the slot is empty. With `verify`, readiness that may be left from
    /// before parking is checked with a peek (which clears it when nothing arrived).
    fn ready(&self, slot: u32, verify: bool) -> bool {
        let slots = self.slots.borrow();
        let Some(Slot {
            parked: Some(parked),
            wakeup,
        }) = slots.get(slot as usize)
        else {
            return false;
        };
        let waker = Waker::from(Arc::clone(wakeup));
        let mut cx = Context::from_waker(&waker);
        let stream = &parked.conn.stream;
        match stream.poll_read_ready(&mut cx) {
            Poll::Pending => false,
            Poll::Ready(Ok(())) if verify && !has_input(stream) => {
                stream.poll_read_ready(&mut cx).is_ready()
            }
            Poll::Ready(_) => true,
        }
    }

    /// Takes the connection out of `slot`.
    fn take(&self, slot: u32) -> Option<ParkedConn> {
        let mut slots = self.slots.borrow_mut();
        let place = slots.get_mut(slot as usize)?;
        let parked = place.parked.take()?;
        place.wakeup.parked.store(false, Ordering::Relaxed);
        self.free.borrow_mut().push(slot);
        self.len.set(self.len.get() - 1);
        Some(parked.conn)
    }

    /// Closes the connection in `slot` unless its next request has arrived (that one is left
    /// for [`serve`](Self::serve)); true when closed.
    fn close(&self, slot: u32) -> bool {
        let has_request = match self.slots.borrow().get(slot as usize) {
            Some(Slot {
                parked: Some(parked),
                ..
            }) => has_input(&parked.conn.stream),
            _ => return false,
        };
        if has_request {
            self.woken.push(slot);
            return false;
        }
        self.take(slot).is_some()
    }

    /// Closes the connections whose `idle_timeout` ran out, and gives back the memory of
    /// slots no longer needed. Called by the worker's one-second sweep.
    pub(crate) fn expire(&self, now: Instant) {
        for slot in self.occupied(|p| p.conn.until <= now) {
            self.close(slot);
        }
        let mut slots = self.slots.borrow_mut();
        while slots.last().is_some_and(|s| s.parked.is_none()) {
            slots.pop();
        }
        let len = slots.len();
        if len < slots.capacity() / 4 {
            slots.shrink_to(len * 2);
        }
        let mut free = self.free.borrow_mut();
        free.retain(|&slot| (slot as usize) < len);
        let unused = free.len();
        if unused < free.capacity() / 4 {
            free.shrink_to(unused * 2);
        }
    }

    /// Closes up to `n` parked connections, the longest parked first; returns how many.
    pub(crate) fn close_oldest(&self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let mut by_age: Vec<(u64, u32)> = {
            let slots = self.slots.borrow();
            slots
                .iter()
                .enumerate()
                .filter_map(|(slot, s)| Some((s.parked.as_ref()?.age, slot as u32)))
                .collect()
        };
        if by_age.len() > n {
            by_age.select_nth_unstable(n);
            by_age.truncate(n);
        }
        by_age
            .into_iter()
            .filter(|&(_, slot)| self.close(slot))
            .count()
    }

    /// Closes every parked connection (shutdown, `max_memory`); returns how many.
    pub(crate) fn close_all(&self) -> usize {
        let all = self.occupied(|_| true);
        all.into_iter().filter(|&slot| self.close(slot)).count()
    }

    /// The occupied slots whose connection `pick` selects.
    fn occupied(&self, pick: impl Fn(&Parked) -> bool) -> Vec<u32> {
        let slots = self.slots.borrow();
        slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.parked.as_ref().is_some_and(&pick))
            .map(|(slot, _)| slot as u32)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::Frontend;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A listener's frontend, as the runtime builds it.
    fn frontend() -> Arc<Frontend> {
        let text = "[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\
                    [[upstreams]]\nname = \"app\"\nbackends = [{ address = \"127.0.0.1:9\" }]\n";
        let config = crate::config::parse(text, "test.toml").unwrap();
        let upstream = Arc::new(
            crate::upstream::Upstream::new(config.upstreams[0].clone(), crate::clock::Clock::new())
                .unwrap(),
        );
        let observe = crate::proxy::Observe {
            access_log: crate::access_log::AccessLog::open(&config.access_log).unwrap(),
            metrics: Arc::default(),
        };
        let find = |_: &str| Ok(Arc::clone(&upstream));
        Arc::new(Frontend::new(&config.listeners[0], find, &observe).unwrap())
    }

    /// `n` connected pairs: the client's end, and the server's end parked (oldest first),
    /// each until `until`.
    async fn park_n(
        parked: &ParkedClients,
        frontend: &Arc<Frontend>,
        until: &[Instant],
    ) -> Vec<TcpStream> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut clients = Vec::new();
        for (n, &until) in until.iter().enumerate() {
            let client = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            parked.park(ParkedConn {
                stream,
                ip: format!("client {n}"),
                admitted: Admitted::new_for_test(Arc::clone(frontend)),
                until,
            });
            clients.push(client);
        }
        clients
    }

    /// Whether the server closed `client`'s connection (end of stream), within 10 s.
    async fn closed(client: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), client.read(&mut byte)).await,
            Ok(Ok(0))
        )
    }

    /// Waits until a parked socket's readiness queued its slot, and returns the slots queued.
    async fn woken(parked: &ParkedClients) -> Vec<u32> {
        tokio::time::timeout(Duration::from_secs(10), parked.woken.notify.notified())
            .await
            .unwrap();
        std::mem::take(&mut *parked.woken.slots.lock())
    }

    #[tokio::test]
    async fn a_parked_connection_wakes_when_its_client_writes_and_is_taken_whole() {
        let (parked, frontend) = (ParkedClients::default(), frontend());
        let later = Instant::now() + Duration::from_secs(60);
        let mut clients = park_n(&parked, &frontend, &[later, later]).await;
        assert_eq!(parked.len(), 2);
        assert!(!parked.ready(0, false) && !parked.ready(1, false), "silent");
        clients[1]
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(woken(&parked).await, vec![1]);
        assert!(parked.ready(1, false));
        let conn = parked.take(1).unwrap();
        assert_eq!(&*conn.ip, "client 1");
        assert_eq!(parked.len(), 1);
        // The socket came out as it went in: the request is still there to read.
        let mut request = [0u8; 18];
        let mut stream = conn.stream;
        stream.read_exact(&mut request).await.unwrap();
        assert_eq!(&request, b"GET / HTTP/1.1\r\n\r\n");
        // The slot is reused by the next connection parked.
        let more = park_n(&parked, &frontend, &[later]).await;
        assert_eq!(parked.slots.borrow().len(), 2);
        drop((clients, more));
    }

    #[tokio::test]
    async fn room_closes_the_longest_parked_but_never_one_whose_request_arrived() {
        let (parked, frontend) = (ParkedClients::default(), frontend());
        let later = Instant::now() + Duration::from_secs(60);
        let mut clients = park_n(&parked, &frontend, &[later, later, later]).await;
        clients[0].write_all(b"GET /").await.unwrap();
        assert_eq!(woken(&parked).await, vec![0]);
        // The two longest parked are 0 and 1; 0 has a request waiting, so only 1 closes.
        assert_eq!(parked.close_oldest(2), 1);
        assert!(closed(&mut clients[1]).await);
        assert_eq!(parked.len(), 2);
        assert_eq!(
            *parked.woken.slots.lock(),
            vec![0],
            "0 is left to be served"
        );
        // Shutdown closes the rest but the one with a request.
        assert_eq!(parked.close_all(), 1);
        assert!(closed(&mut clients[2]).await);
        assert_eq!(parked.len(), 1);
        let open = frontend.reports[0].listener.active.load(Ordering::Relaxed);
        assert_eq!(open, 1, "a closed connection no longer counts as open");
    }

    #[tokio::test]
    async fn the_sweep_closes_connections_past_their_idle_timeout_and_frees_their_slots() {
        let (parked, frontend) = (ParkedClients::default(), frontend());
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut clients = park_n(&parked, &frontend, &[later, now, now]).await;
        parked.expire(now);
        assert!(closed(&mut clients[1]).await && closed(&mut clients[2]).await);
        assert_eq!(parked.len(), 1);
        assert_eq!(
            parked.slots.borrow().len(),
            1,
            "trailing empty slots are given back"
        );
        parked.expire(later);
        assert!(closed(&mut clients[0]).await);
        assert_eq!((parked.len(), parked.slots.borrow().len()), (0, 0));
    }
}
