//! One worker thread: a single-threaded tokio runtime that accepts on every listener and
//! serves the connections it accepted, with its own pools of idle backend connections and
//! spare buffers (a `RefCell` borrow, never a lock), and the graceful stop: stop accepting,
//! close idle connections, give busy ones `shutdown_grace` to finish.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::connection::serve_connection;
use super::spread::{Counted, Handoff, Seat, Spread};
use super::{
    Frontend, FrontendSocket, buffers, connpool, forward, h2_upstream, memory, parked, room,
};

/// Per-thread state: idle backend connections and spare buffers.
pub(crate) struct Worker {
    pub(super) conns: connpool::ConnPool,
    buffers: buffers::BufferPool,
    /// Connections in the middle of a request, connections served by hyper (HTTP/2, which
    /// close on GOAWAY once their streams end) and TCP-mode connections: what a graceful
    /// shutdown waits for. Idle keep-alive HTTP/1.1 connections are simply closed.
    busy: std::cell::Cell<usize>,
    /// HTTP/2 backend connections, shared by the requests of this worker.
    pub(super) h2: h2_upstream::H2Pool,
    /// Client connections waiting for a request, closed first when descriptors run short.
    pub(super) idle: room::IdleClients,
    /// Set when the server is shutting down: responses say `Connection: close`.
    closing: std::cell::Cell<bool>,
    /// The process's `max_memory`, shared by every worker.
    pub(super) memory: Arc<memory::MemoryLimit>,
    /// The last episode of being over `max_memory` whose idle connections this worker closed.
    shed_in: std::cell::Cell<u64>,
    /// Set when the worker stops: HTTP/2 connections send GOAWAY.
    stop: watch::Receiver<bool>,
    /// Its index among the workers, and every worker's load (see [`super::spread`]).
    index: usize,
    spread: Arc<Spread>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("conns", &self.conns)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker of its own, with the process's memory limit, the signal that stops it and
    /// its place among the workers.
    fn new(
        memory: Arc<memory::MemoryLimit>,
        stop: watch::Receiver<bool>,
        index: usize,
        spread: Arc<Spread>,
    ) -> Worker {
        Worker {
            conns: connpool::ConnPool::default(),
            buffers: buffers::BufferPool::default(),
            busy: std::cell::Cell::default(),
            h2: h2_upstream::H2Pool::default(),
            idle: room::IdleClients::default(),
            closing: std::cell::Cell::default(),
            memory,
            shed_in: std::cell::Cell::default(),
            stop,
            index,
            spread,
        }
    }

    /// The signal set when the worker stops.
    pub(super) fn stop(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }

    /// Whether a client connection may be kept open after this response: not while shutting
    /// down (the client learns it from `Connection: close` instead of a reset), nor while over
    /// `max_memory`.
    pub(super) fn keep_alive(&self) -> bool {
        !self.closing.get() && !self.memory.over()
    }

    /// Gives back what can be given when memory runs short: pooled backend connections
    /// (HTTP/1.1; shared HTTP/2 ones carry other requests' streams and stay), spare buffers,
    /// and once per episode of being over `max_memory` the idle client connections (not on
    /// every call: connections accepted since wait for their first request, to be told 503).
    pub(super) fn shed(&self) {
        let episode = self.memory.episode();
        if self.shed_in.replace(episode) != episode {
            self.idle.close_all();
        }
        self.conns.clear();
        self.buffers.clear();
    }

    /// An empty I/O buffer from this worker's spares (see [`buffers`]).
    pub(super) fn take_buffer(&self) -> Vec<u8> {
        self.buffers.take()
    }

    /// Marks a connection busy until the guard drops.
    pub(super) fn busy(&self) -> Busy<'_> {
        self.busy.set(self.busy.get() + 1);
        Busy(self)
    }

    /// Gives back a buffer from [`take_buffer`](Self::take_buffer) for the next request.
    pub(super) fn give_buffer(&self, buf: Vec<u8>) {
        self.buffers.give(buf);
    }
}

/// A connection counted as busy by its worker (see [`Worker::busy`]).
pub(super) struct Busy<'a>(&'a Worker);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.set(self.0.busy.get().saturating_sub(1));
    }
}

/// Serves a connection this worker accepted, here or, when another worker holds clearly fewer
/// connections, there (see [`super::spread`]).
fn place(
    worker: &Rc<Worker>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    frontend: Arc<Frontend>,
) {
    let to = worker.spread.target(worker.index);
    let counted = worker.spread.count(to);
    if to == worker.index {
        return serve_here(worker, stream, peer, frontend, counted);
    }
    // Deregistered from this worker's reactor; the other registers it with its own.
    let Ok(stream) = stream.into_std() else {
        return;
    };
    let handoff = Handoff {
        stream,
        peer,
        frontend,
        counted,
    };
    if let Err(back) = worker.spread.send(to, handoff) {
        // That worker has stopped: this one serves it after all.
        let Handoff {
            stream,
            peer,
            frontend,
            ..
        } = back;
        if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
            let counted = worker.spread.count(worker.index);
            serve_here(worker, stream, peer, frontend, counted);
        }
    }
}

/// Serves a connection on this worker, counted in its load.
fn serve_here(
    worker: &Rc<Worker>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    frontend: Arc<Frontend>,
    counted: Counted,
) {
    worker.idle.accepted();
    let worker = Rc::clone(worker);
    tokio::task::spawn_local(serve_connection(stream, peer, frontend, worker, counted));
}

/// One worker thread: accepts on every listener, serves the connections it accepted or was
/// handed (see [`super::spread`]), and on shutdown stops accepting and gives open
/// connections up to `grace` to finish.
pub(crate) fn run_worker(
    mut listeners: tokio::sync::mpsc::UnboundedReceiver<FrontendSocket>,
    seat: Seat,
    stop: watch::Receiver<bool>,
    grace: Duration,
    memory: Arc<memory::MemoryLimit>,
) {
    let Seat {
        index,
        spread,
        mut inbox,
    } = seat;
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        tracing::error!("cannot start a worker runtime");
        return;
    };
    let local = tokio::task::LocalSet::new();
    let turns = local.run_until(async move {
        let worker = Rc::new(Worker::new(memory, stop.clone(), index, spread));
        let accept_loop = |accept: FrontendSocket| {
            let FrontendSocket { socket, frontend } = accept;
            let mut own_stop = frontend.retirement();
            let Ok(listener) = tokio::net::TcpListener::from_std(socket) else { return };
            let (worker, mut stop) = (Rc::clone(&worker), stop.clone());
            tokio::task::spawn_local(async move {
                loop {
                    tokio::select! {
                        biased;
                        _ = stop.wait_for(|s| *s) => return,
                        _ = own_stop.wait_for(|s| *s) => return,
                        accepted = listener.accept() => match accepted {
                            Ok((stream, peer)) if !memory::admit(&frontend, &worker, peer) => {
                                drop(stream);
                            }
                            Ok((stream, peer)) => place(&worker, stream, peer, Arc::clone(&frontend)),
                            Err(e) if forward::is_local(&e) => {
                                frontend.reports[0].listener.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                // Out of descriptors: make room, and pause instead of spinning.
                                worker.idle.out_of_descriptors(&e);
                                worker.conns.clear();
                                tokio::time::sleep(room::ACCEPT_BACKOFF).await;
                            }
                            // The client gave up before it was accepted (ECONNABORTED…).
                            Err(_) => {
                                frontend.reports[0].listener.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        },
                    }
                }
            });
        };
        let sweeper = Rc::clone(&worker);
        tokio::task::spawn_local(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                sweeper.conns.sweep();
                sweeper.h2.sweep();
                sweeper.buffers.sweep();
                sweeper.idle.parked.expire(tokio::time::Instant::now());
                sweeper.idle.parked.unregister_long_parked();
            }
        });
        tokio::task::spawn_local(parked::ParkedClients::serve(Rc::clone(&worker)));
        // Connections other workers accepted for this one: a task of its own, so the loop
        // below is not polled for it on every turn.
        let receiver = Rc::clone(&worker);
        tokio::task::spawn_local(async move {
            while let Some(handoff) = inbox.recv().await {
                let Handoff { stream, peer, frontend, counted } = handoff;
                if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
                    serve_here(&receiver, stream, peer, frontend, counted);
                }
            }
        });
        let mut until_stop = stop.clone();
        let mut open_channel = true;
        loop {
            tokio::select! {
                _ = until_stop.wait_for(|s| *s) => break,
                accept = listeners.recv(), if open_channel => match accept {
                    Some(accept) => accept_loop(accept),
                    None => open_channel = false,
                },
            }
        }
        // Idle connections close now; busy ones answer with `Connection: close`.
        worker.closing.set(true);
        worker.idle.close_all();
        let deadline = tokio::time::Instant::now() + grace;
        while worker.busy.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    rt.block_on(crate::clock::Ticking(Box::pin(turns)));
}
