//! Idle keep-alive connections kept without a task, nginx's model.
//!
//! A client connection waiting for its next request costs its task: the connection loop's
//! state, the wait's timer and its place in the idle queue, about 1.7 KB (measured as resident
//! memory per idle connection). After [`PARK_AFTER`] of silence a plain HTTP/1.1 connection
//! ends its task and is *parked* here instead: its socket, the client's address, its admission
//! and the end of its `idle_timeout`, in a slot of a per-worker list with the slot's 32-byte
//! wake-up, and the address's text. Its next request starts a task again (see
//! [`super::connection::resume`]). A client sending its next request within [`PARK_AFTER`]
//! keeps its task, so a busy connection pays nothing for this.
//!
//! No timer and no task per parked connection: the socket's readiness wakes the slot's
//! [`Wakeup`], which queues the slot for the worker's one [`ParkedClients::serve`] task, and
//! the worker's one-second sweep ([`ParkedClients::expire`]) closes the connections whose
//! `idle_timeout` ran out, so the timeout is kept to within a second.
//!
//! A connection still parked at the sweep after the one that found it parked (silent for
//! 1.1–2.1 s) also leaves tokio's reactor, whose registration of a socket is a 256-byte
//! allocation aligned to 128 bytes, more than everything else a parked connection keeps: its
//! socket moves to a poll of the worker's own (an epoll instance, itself watched by the
//! reactor), whose events carry the slot ([`ParkedClients::unregister_long_parked`]). Leaving
//! the reactor and joining it again cost two system calls each way (+10 µs per request
//! measured when every request came after such a move), so connections silent for less
//! keep their registration: a client pausing between requests pays nothing.
//!
//! A parked connection whose request has just arrived is never closed for room or shutdown:
//! closing a socket with unread bytes would reset it and lose the request. It is served
//! instead (during shutdown, with `Connection: close`).

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
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

/// Events taken from the worker's poll of long-parked sockets in one system call.
const EVENTS_PER_TURN: usize = 128;

/// An idle keep-alive connection on its way into the parked list or out of it: what its task
/// needs to start again.
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
#[derive(Debug)]
pub(crate) struct ParkedClients {
    slots: RefCell<Vec<Slot>>,
    /// Empty slots below `slots.len()`.
    free: RefCell<Vec<u32>>,
    woken: Arc<Woken>,
    /// Parked connections now.
    len: Cell<usize>,
    /// Order of parking, so that room is made by closing the oldest first.
    next_age: Cell<u64>,
    /// The ages parked between the last two sweeps: those connections leave the reactor at
    /// the next one (each connection is looked at by one sweep only).
    due: Cell<(u64, u64)>,
    /// Adds long-parked sockets to the worker's poll of them and takes them out; `None`
    /// when that poll could not be made or failed (connections then stay in the reactor).
    registry: RefCell<Option<mio::Registry>>,
    /// That poll, until the worker's [`serve`](Self::serve) task takes it.
    watch: RefCell<Option<Watch>>,
}

/// A place for one parked connection, with the wake-up its socket calls (made once per
/// slot: parking allocates nothing once the worker has had as many parked connections).
#[derive(Debug)]
struct Slot {
    parked: Option<Parked>,
    wakeup: Arc<Wakeup>,
}

/// One parked connection: where its socket waits, what its task needs to start again, and
/// its order of parking.
#[derive(Debug)]
struct Parked {
    socket: Socket,
    ip: String,
    admitted: Admitted,
    until: Instant,
    age: u64,
}

/// Where a parked connection's socket waits.
#[derive(Debug)]
enum Socket {
    /// In tokio's reactor, whose readiness calls the slot's wake-up.
    Reactor(TcpStream),
    /// In the worker's own poll, whose events carry the slot.
    Poll(mio::net::TcpStream),
}

impl Socket {
    /// The socket in the worker's poll, its events carrying `slot`: moved there out of
    /// tokio's reactor, or already there.
    fn into_poll(self, registry: &mio::Registry, slot: usize) -> io::Result<mio::net::TcpStream> {
        let stream = match self {
            Socket::Reactor(stream) => stream,
            Socket::Poll(socket) => return Ok(socket),
        };
        let mut socket = mio::net::TcpStream::from_std(stream.into_std()?);
        registry.register(&mut socket, mio::Token(slot), mio::Interest::READABLE)?;
        Ok(socket)
    }

    /// Whether it has bytes to read, or its client closed or reset it (a non-blocking
    /// peek, which clears the reactor's stale readiness when nothing arrived).
    fn has_input(&self) -> bool {
        match self {
            Socket::Reactor(stream) => has_input(stream),
            Socket::Poll(socket) => {
                let mut byte = [0u8; 1];
                !matches!(socket.peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}

/// The worker's poll of its long-parked sockets, watched by tokio's reactor, and room for the
/// events one turn takes from it.
#[derive(Debug)]
struct Watch {
    poll: AsyncFd<mio::Poll>,
    events: mio::Events,
}

impl Watch {
    /// A poll for long-parked sockets and the registry that adds them to it; needs the
    /// worker's runtime.
    fn new() -> io::Result<(mio::Registry, Watch)> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other("not on a runtime"));
        }
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        // tokio 1.54 deprecated this safe constructor for its unsafe `register_with_interest`
        // (the workspace forbids `unsafe`): its contract, an fd that stays open and the same
        // while registered, holds for a `Poll`, which owns its epoll descriptor until dropped.
        #[allow(deprecated)]
        let poll = AsyncFd::with_interest(poll, tokio::io::Interest::READABLE)?;
        let events = mio::Events::with_capacity(EVENTS_PER_TURN);
        Ok((registry, Watch { poll, events }))
    }

    /// Waits until the poll has events and takes them into `events`; an error when the
    /// poll itself fails.
    async fn wait(&mut self) -> io::Result<()> {
        loop {
            let mut ready = self.poll.readable_mut().await?;
            match ready
                .get_inner_mut()
                .poll(&mut self.events, Some(Duration::ZERO))
            {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            // Fewer events than room for them: the poll is empty until tokio says otherwise.
            if self.events.iter().count() < self.events.capacity() {
                ready.clear_ready();
            }
            return Ok(());
        }
    }
}

/// What woke the worker's task for parked connections.
enum Woke {
    /// Slots of connections in the reactor were queued.
    Queue,
    /// The poll of long-parked sockets has events (or failed).
    Poll(io::Result<()>),
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

impl Default for ParkedClients {
    /// No connection parked yet, and the poll for long-parked ones (made on the worker's
    /// runtime; without it connections stay in the reactor however long they are parked).
    fn default() -> ParkedClients {
        let (registry, watch) = match Watch::new() {
            Ok((registry, watch)) => (Some(registry), Some(watch)),
            Err(e) => {
                tracing::warn!(error = %e, "long-parked idle connections stay in the reactor: cannot make a poll for them");
                (None, None)
            }
        };
        ParkedClients {
            slots: RefCell::default(),
            free: RefCell::default(),
            woken: Arc::default(),
            len: Cell::default(),
            next_age: Cell::default(),
            due: Cell::default(),
            registry: RefCell::new(registry),
            watch: RefCell::new(watch),
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
        let ParkedConn {
            stream,
            ip,
            admitted,
            until,
        } = conn;
        let socket = Socket::Reactor(stream);
        place.parked = Some(Parked {
            socket,
            ip,
            admitted,
            until,
            age,
        });
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
        let mut watch = parked.watch.borrow_mut().take();
        let mut woken = Vec::new();
        let mut readable = Vec::new();
        loop {
            let woke = tokio::select! {
                () = parked.woken.notify.notified() => Woke::Queue,
                Some(result) = async { Some(watch.as_mut()?.wait().await) } => Woke::Poll(result),
            };
            match woke {
                Woke::Queue => {
                    std::mem::swap(&mut woken, &mut *parked.woken.slots.lock());
                    let ready = woken.drain(..).filter(|&slot| parked.ready(slot, false));
                    readable.extend(ready.filter_map(|slot| parked.take(slot as usize)));
                }
                Woke::Poll(Ok(())) => {
                    if let Some(watch) = &watch {
                        let slots = watch.events.iter().map(|event| event.token().0);
                        readable.extend(slots.filter_map(|slot| parked.take(slot)));
                    }
                }
                Woke::Poll(Err(e)) => {
                    // Never seen: the poll is ours and valid. Its connections get their tasks
                    // back, and later ones stay in the reactor.
                    tracing::error!(error = %e, "the poll of long-parked idle connections failed; they stay in the reactor from now on");
                    watch = None;
                    parked.registry.borrow_mut().take();
                    for slot in parked.occupied(|p| matches!(p.socket, Socket::Poll(_))) {
                        readable.extend(parked.take(slot));
                    }
                }
            }
            for conn in readable.drain(..) {
                tokio::task::spawn_local(super::connection::resume(conn, Rc::clone(&worker)));
            }
        }
    }

    /// Polls the socket in `slot` with the slot's wake-up, if it is in the reactor: true
    /// when it has something to read (a request, the client's close, an error: the
    /// connection's task finds out which), false when it waits on, waits in the worker's poll
    /// or the slot is empty. With `verify`, readiness that may be left from before parking is
    /// checked with a peek (which clears it when nothing arrived).
    fn ready(&self, slot: u32, verify: bool) -> bool {
        let slots = self.slots.borrow();
        let Some(Slot {
            parked:
                Some(Parked {
                    socket: Socket::Reactor(stream),
                    ..
                }),
            wakeup,
        }) = slots.get(slot as usize)
        else {
            return false;
        };
        let waker = Waker::from(Arc::clone(wakeup));
        let mut cx = Context::from_waker(&waker);
        match stream.poll_read_ready(&mut cx) {
            Poll::Pending => false,
            Poll::Ready(Ok(())) if verify && !has_input(stream) => {
                stream.poll_read_ready(&mut cx).is_ready()
            }
            Poll::Ready(_) => true,
        }
    }

    /// Moves the sockets of connections parked between the two calls before this one (silent
    /// for over a second) out of tokio's reactor into the worker's poll, where they cost no
    /// registration. Called by the worker's one-second sweep. A connection whose socket
    /// cannot move (the system is out of memory) is closed, as an idle connection may be.
    pub(crate) fn unregister_long_parked(&self) {
        let (from, below) = self.due.replace((self.due.get().1, self.next_age.get()));
        let registry = self.registry.borrow();
        let Some(registry) = registry.as_ref() else {
            return;
        };
        let mut slots = self.slots.borrow_mut();
        for (slot, place) in slots.iter_mut().enumerate() {
            let Some(mut parked) = place.parked.take_if(|p| (from..below).contains(&p.age)) else {
                continue;
            };
            // Out of the reactor the wake-up is not called again.
            place.wakeup.parked.store(false, Ordering::Relaxed);
            match parked.socket.into_poll(registry, slot) {
                Ok(socket) => {
                    parked.socket = Socket::Poll(socket);
                    place.parked = Some(parked);
                }
                Err(e) => {
                    let client = &parked.ip;
                    tracing::debug!(client, error = %e, "idle connection closed: cannot move it out of the reactor");
                    self.free.borrow_mut().push(place.wakeup.slot);
                    self.len.set(self.len.get() - 1);
                }
            }
        }
    }

    /// Takes the connection out of `slot`, its socket in tokio's reactor.
    fn take(&self, slot: usize) -> Option<ParkedConn> {
        let Parked {
            socket,
            ip,
            admitted,
            until,
            ..
        } = self.remove(slot)?;
        let stream = match socket {
            Socket::Reactor(stream) => stream,
            Socket::Poll(mut socket) => {
                if let Some(registry) = self.registry.borrow().as_ref() {
                    let _ = registry.deregister(&mut socket);
                }
                match TcpStream::from_std(socket.into()) {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::debug!(client = ip, error = %e, "idle connection closed: cannot give it back to the reactor");
                        return None;
                    }
                }
            }
        };
        Some(ParkedConn {
            stream,
            ip,
            admitted,
            until,
        })
    }

    /// Empties `slot`.
    fn remove(&self, slot: usize) -> Option<Parked> {
        let mut slots = self.slots.borrow_mut();
        let place = slots.get_mut(slot)?;
        let parked = place.parked.take()?;
        place.wakeup.parked.store(false, Ordering::Relaxed);
        self.free.borrow_mut().push(place.wakeup.slot);
        self.len.set(self.len.get() - 1);
        Some(parked)
    }

    /// Closes the connection in `slot` unless its next request has arrived (that one is left
    /// for [`serve`](Self::serve)); true when closed.
    fn close(&self, slot: usize) -> bool {
        let (has_request, wakeup) = match self.slots.borrow().get(slot) {
            Some(Slot {
                parked: Some(parked),
                wakeup,
            }) => (parked.socket.has_input(), wakeup.slot),
            _ => return false,
        };
        if has_request {
            // From the reactor through the queue; from the worker's poll, its event.
            self.woken.push(wakeup);
            return false;
        }
        self.remove(slot).is_some()
    }

    /// Closes the connections whose `idle_timeout` ran out or whose listener a reload
    /// replaced (see [`super::Frontend::retire`]), and gives back the memory of slots no
    /// longer needed. Called by the worker's one-second sweep.
    pub(crate) fn expire(&self, now: Instant) {
        let done = |p: &Parked| p.until <= now || p.admitted.frontend().is_retired();
        for slot in self.occupied(done) {
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
        let mut by_age: Vec<(u64, usize)> = {
            let slots = self.slots.borrow();
            slots
                .iter()
                .enumerate()
                .filter_map(|(slot, s)| Some((s.parked.as_ref()?.age, slot)))
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
    fn occupied(&self, pick: impl Fn(&Parked) -> bool) -> Vec<usize> {
        let slots = self.slots.borrow();
        slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.parked.as_ref().is_some_and(&pick))
            .map(|(slot, _)| slot)
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

    /// Parked connections moved out of the reactor: the worker's poll, taken as its task
    /// would, after every connection parked so far has moved.
    fn unregister_all(parked: &ParkedClients) -> Watch {
        parked.unregister_long_parked();
        parked.unregister_long_parked();
        let in_poll = parked.occupied(|p| matches!(p.socket, Socket::Poll(_)));
        assert_eq!(
            in_poll.len(),
            parked.len(),
            "every connection left the reactor"
        );
        parked.watch.borrow_mut().take().unwrap()
    }

    /// Waits until the worker's poll has events, and returns their slots.
    async fn polled(watch: &mut Watch) -> Vec<usize> {
        tokio::time::timeout(Duration::from_secs(10), watch.wait())
            .await
            .unwrap()
            .unwrap();
        watch.events.iter().map(|event| event.token().0).collect()
    }

    /// Whether the worker's poll holds an event now.
    fn pending(watch: &mut Watch) -> bool {
        let poll = watch.poll.get_mut();
        poll.poll(&mut watch.events, Some(Duration::ZERO)).unwrap();
        !watch.events.is_empty()
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
    async fn a_long_parked_connection_leaves_the_reactor_and_wakes_from_the_workers_poll() {
        let (parked, frontend) = (ParkedClients::default(), frontend());
        let later = Instant::now() + Duration::from_secs(60);
        let mut clients = park_n(&parked, &frontend, &[later, later]).await;
        // The first sweep only marks them: they move at the second.
        parked.unregister_long_parked();
        assert!(
            parked
                .occupied(|p| matches!(p.socket, Socket::Poll(_)))
                .is_empty()
        );
        let mut watch = unregister_all(&parked);
        assert!(!pending(&mut watch), "silent clients wake nothing");
        clients[1]
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(polled(&mut watch).await, vec![1]);
        assert!(!parked.ready(1, false), "no longer in the reactor");
        let conn = parked.take(1).unwrap();
        assert_eq!((&*conn.ip, parked.len()), ("client 1", 1));
        // Back in the reactor whole: the request is there to read, and the client's next
        // bytes no longer reach the worker's poll.
        let mut request = [0u8; 18];
        let mut stream = conn.stream;
        stream.read_exact(&mut request).await.unwrap();
        assert_eq!(&request, b"GET / HTTP/1.1\r\n\r\n");
        clients[1].write_all(b"GET /").await.unwrap();
        stream.readable().await.unwrap();
        assert!(!pending(&mut watch));
        // A client closing wakes its connection too.
        drop(clients.remove(0));
        assert_eq!(polled(&mut watch).await, vec![0]);
        let mut stream = parked.take(0).unwrap().stream;
        assert_eq!(
            stream.read(&mut [0u8; 1]).await.unwrap(),
            0,
            "end of stream"
        );
        assert_eq!(parked.len(), 0);
    }

    #[tokio::test]
    async fn a_request_that_arrived_before_its_connection_left_the_reactor_wakes_it_from_the_poll()
    {
        let (parked, frontend) = (ParkedClients::default(), frontend());
        let later = Instant::now() + Duration::from_secs(60);
        let mut clients = park_n(&parked, &frontend, &[later]).await;
        clients[0].write_all(b"GET /").await.unwrap();
        assert_eq!(woken(&parked).await, vec![0]);
        let mut watch = unregister_all(&parked);
        // The queued wake-up finds it gone from the reactor; the poll reports it.
        assert!(!parked.ready(0, false));
        assert_eq!(polled(&mut watch).await, vec![0]);
        assert!(parked.take(0).is_some());
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
    async fn room_closes_long_parked_connections_but_never_one_whose_request_arrived() {
        let (parked, frontend) = (ParkedClients::default(), frontend());
        let later = Instant::now() + Duration::from_secs(60);
        let mut clients = park_n(&parked, &frontend, &[later, later, later]).await;
        let mut watch = unregister_all(&parked);
        clients[0].write_all(b"GET /").await.unwrap();
        // Waits until the request is there (the poll turned readable), without taking it.
        drop(watch.poll.readable().await.unwrap());
        assert_eq!(parked.close_oldest(2), 1);
        assert!(closed(&mut clients[1]).await);
        assert_eq!(parked.close_all(), 1);
        assert!(closed(&mut clients[2]).await);
        assert_eq!(parked.len(), 1);
        assert_eq!(polled(&mut watch).await, vec![0], "0 is left to be served");
    }

    #[tokio::test]
    async fn the_sweep_closes_connections_past_their_idle_timeout_and_frees_their_slots() {
        let (parked, frontend) = (ParkedClients::default(), frontend());
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut clients = park_n(&parked, &frontend, &[later, now, now]).await;
        // Two of the expired connections have left the reactor, one is still in it.
        parked.unregister_long_parked();
        let mut more = park_n(&parked, &frontend, &[now]).await;
        parked.unregister_long_parked();
        parked.expire(now);
        assert!(closed(&mut clients[1]).await && closed(&mut clients[2]).await);
        assert!(closed(&mut more[0]).await);
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
