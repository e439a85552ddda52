//! The HTTP proxy: listeners, worker threads, and the forwarding path.
//!
//! Workers are threads that each run a single-threaded tokio runtime (nginx's model: one
//! event loop per core, no work stealing, nothing shared on the request path but the
//! upstreams' lock-free snapshots). Each worker accepts from the same listening sockets and
//! keeps its own pool of idle backend connections and buffers, so taking either is a
//! `RefCell` borrow, never a lock. A separate control thread runs the timer loops.
//!
//! The HTTP/1.1 path is written directly on `httparse` and tokio sockets (see [`h1`]): a
//! request is parsed and rewritten in one pass, bodies stream through one buffer, and no
//! allocation happens per request once buffers are warm.
//!
//! Start-up, the control thread and reload live in [`crate::runtime`]: it binds the sockets
//! with [`bind`], builds each listener's [`Frontend`], starts [`run_worker`] threads and hands them
//! listeners as [`FrontendSocket`]s. This module only accepts, parses and forwards.

mod affinity;
mod body;
mod chunked;
mod connpool;
mod forward;
mod h1;
mod h2;
mod h2_preface;
mod h2_upstream;
mod head;
mod headers;
pub(crate) mod memory;
pub(crate) mod protocol;
mod redirect;
mod relay;
mod relay_body;
mod relay_head;
mod replay;
mod respond;
pub(crate) mod room;
mod stream;
mod tcp;
mod tunnel;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::config::{ListenerConfig, ListenerMode};
use crate::upstream::Upstream;

/// A listener as the workers serve it (HAProxy's "frontend"): its settings, routing table,
/// the upstreams it routes to with their counters, header rules, connection limit and TLS.
/// Built once per listener (and again on reload), shared by every worker.
#[derive(Debug)]
pub(crate) struct Frontend {
    config: ListenerConfig,
    /// Index 0 is the listener's default upstream; routes point at the others.
    upstreams: Vec<Arc<Upstream>>,
    routes: Vec<Route>,
    /// What each upstream's requests report to, aligned with `upstreams`.
    reports: Vec<forward::Report>,
    /// Responses rondo gives before a request is routed (400, 408, …).
    unrouted: Arc<crate::counters::ResponseCounts>,
    /// Each route's header rules, aligned with `upstreams` (index 0: none beyond the
    /// listener's own).
    route_headers: Vec<crate::header_rules::Headers>,
    /// Open client connections against `max_client_connections`.
    limit: room::ConnectionLimit,
    /// TLS termination, when the listener has `[listeners.tls]`.
    pub(crate) tls: Option<crate::tls::Terminator>,
}

/// The access log and the counters, shared by every listener and kept across reloads.
#[derive(Debug, Clone)]
pub(crate) struct Observe {
    pub(crate) access_log: crate::access_log::AccessLog,
    pub(crate) metrics: Arc<crate::counters::ProxyMetrics>,
}

#[derive(Debug)]
struct Route {
    host: Option<String>,
    path_prefix: Option<String>,
    upstream: usize,
}

impl Frontend {
    /// True when one of the listener's upstreams may speak HTTP/2 to its backends: its
    /// connections are then served by hyper, so HTTP/1.1 clients' requests can become
    /// HTTP/2 streams.
    fn speaks_http2_upstream(&self) -> bool {
        self.upstreams.iter().any(|u| {
            let cfg = u.config_ref();
            cfg.protocol.may_use_h2(cfg.tls.is_some())
        })
    }

    /// The upstream (index into `upstreams`) for a request: the first route whose host and
    /// path prefix match, else the default.
    fn route(&self, host: Option<&str>, path: &str) -> usize {
        if self.routes.is_empty() {
            return 0;
        }
        let host = host.map(|h| {
            h.rsplit_once(':')
                .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
                .map_or(h, |(h, _)| h)
        });
        self.routes
            .iter()
            .find(|r| {
                r.host
                    .as_deref()
                    .is_none_or(|want| host.is_some_and(|h| h.eq_ignore_ascii_case(want)))
                    && r.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
            })
            .map_or(0, |r| r.upstream)
    }
}

/// Per-thread state: idle backend connections and spare buffers.
pub(crate) struct Worker {
    conns: connpool::ConnPool,
    buffers: RefCell<Vec<Vec<u8>>>,
    /// Connections in the middle of a request (or holding HTTP/2 streams): what a graceful
    /// shutdown waits for. Idle keep-alive connections are simply closed.
    busy: std::cell::Cell<usize>,
    /// HTTP/1.1 backend connections of requests served by hyper, by address and TLS setup,
    /// each with the moment its `keepalive_timeout` runs out.
    h1_senders: RefCell<std::collections::HashMap<connpool::Key, Vec<IdleSender>>>,
    /// HTTP/2 backend connections, shared by the requests of this worker.
    h2: h2_upstream::H2Pool,
    /// Client connections waiting for a request, closed first when descriptors run short.
    idle: room::IdleClients,
    /// Set when the server is shutting down: responses say `Connection: close`.
    closing: std::cell::Cell<bool>,
    /// The process's `max_memory`, shared by every worker.
    memory: Arc<memory::MemoryLimit>,
    /// The last episode of being over `max_memory` whose idle connections this worker closed.
    shed_in: std::cell::Cell<u64>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("conns", &self.conns)
            .finish_non_exhaustive()
    }
}

/// Spare buffers kept per worker; more are freed.
const SPARE_BUFFERS: usize = 256;

impl Worker {
    /// A worker of its own, with the process's memory limit.
    fn new(memory: Arc<memory::MemoryLimit>) -> Worker {
        Worker {
            conns: connpool::ConnPool::default(),
            buffers: RefCell::default(),
            busy: std::cell::Cell::default(),
            h1_senders: RefCell::default(),
            h2: h2_upstream::H2Pool::default(),
            idle: room::IdleClients::default(),
            closing: std::cell::Cell::default(),
            memory,
            shed_in: std::cell::Cell::default(),
        }
    }

    /// Whether a client connection may be kept open after this response: not while shutting
    /// down (the client learns it from `Connection: close` instead of a reset), nor while over
    /// `max_memory`.
    fn keep_alive(&self) -> bool {
        !self.closing.get() && !self.memory.over()
    }

    /// Gives back what can be given when memory runs short: pooled backend connections
    /// (HTTP/1.1; shared HTTP/2 ones carry other requests' streams and stay), spare buffers,
    /// and once per episode of being over `max_memory` the idle client connections (not on
    /// every call: connections accepted since wait for their first request, to be told 503).
    fn shed(&self) {
        let episode = self.memory.episode();
        if self.shed_in.replace(episode) != episode {
            self.idle.close_all();
        }
        self.conns.clear();
        self.h1_senders.borrow_mut().clear();
        self.buffers.borrow_mut().clear();
    }

    fn take_buffer(&self) -> Vec<u8> {
        self.buffers
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(body::CHUNK))
    }

    /// A ready HTTP/1.1 connection (of requests served by hyper) for `key`; closed ones are
    /// dropped, busy ones kept.
    fn take_h1_sender(&self, key: connpool::Key) -> Option<relay::H1Sender> {
        let mut all = self.h1_senders.borrow_mut();
        let list = all.get_mut(&key)?;
        list.retain(|s| !s.sender.is_closed());
        let ready = list.iter().position(|s| s.sender.is_ready())?;
        Some(list.swap_remove(ready).sender)
    }

    /// Keeps an HTTP/1.1 connection (of requests served by hyper) for reuse, at most `max`
    /// per backend, for `keep_idle` (the upstream's `keepalive_timeout`).
    fn put_h1_sender(
        &self,
        key: connpool::Key,
        sender: relay::H1Sender,
        max: usize,
        keep_idle: Duration,
    ) {
        let mut all = self.h1_senders.borrow_mut();
        let list = all.entry(key).or_default();
        if list.len() < max {
            let until = tokio::time::Instant::now() + keep_idle;
            list.push(IdleSender { sender, until });
        }
    }

    /// Closes the hyper-path HTTP/1.1 connections idle past their `keepalive_timeout`, and
    /// forgets closed ones. Called once a second.
    fn sweep_h1_senders(&self) {
        let now = tokio::time::Instant::now();
        let mut all = self.h1_senders.borrow_mut();
        for list in all.values_mut() {
            list.retain(|s| !s.sender.is_closed() && s.until > now);
        }
        all.retain(|_, list| !list.is_empty());
    }

    /// Marks a connection busy until the guard drops.
    fn busy(&self) -> Busy<'_> {
        self.busy.set(self.busy.get() + 1);
        Busy(self)
    }

    fn give_buffer(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut spare = self.buffers.borrow_mut();
        if spare.len() < SPARE_BUFFERS && buf.capacity() <= 4 * body::CHUNK {
            spare.push(buf);
        }
    }
}

/// An idle HTTP/1.1 backend connection of the hyper path, kept until `until`.
struct IdleSender {
    sender: relay::H1Sender,
    until: tokio::time::Instant,
}

/// A connection counted as busy by its worker (see [`Worker::busy`]).
struct Busy<'a>(&'a Worker);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.set(self.0.busy.get().saturating_sub(1));
    }
}

/// What a worker needs to start accepting on one listener: its own clone of the listening
/// socket, the listener's [`Frontend`], and the listener's stop signal (the worker also stops
/// with the whole proxy).
#[derive(Debug)]
pub(crate) struct FrontendSocket {
    pub(crate) socket: std::net::TcpListener,
    pub(crate) frontend: Arc<Frontend>,
    pub(crate) stop: watch::Receiver<bool>,
}

impl Frontend {
    /// Builds a listener's routing table; `find` resolves upstream names (the caller decides
    /// which upstreams exist: the ones just built at start, or the live set on reload).
    pub(crate) fn new(
        l: &ListenerConfig,
        find: impl Fn(&str) -> anyhow::Result<Arc<Upstream>>,
        observe: &Observe,
    ) -> anyhow::Result<Frontend> {
        let mut upstreams = vec![find(&l.upstream)?];
        let mut routes = Vec::new();
        for r in &l.routes {
            upstreams.push(find(&r.upstream)?);
            routes.push(Route {
                host: r.host.clone(),
                path_prefix: r.path_prefix.clone(),
                upstream: upstreams.len() - 1,
            });
        }
        let tls = match &l.tls {
            None => None,
            Some(tls) => {
                let alpn = match l.mode {
                    ListenerMode::Http => crate::tls::Alpn::Http,
                    ListenerMode::Tcp => crate::tls::Alpn::None,
                };
                let (terminator, warnings) = crate::tls::Terminator::new(tls, alpn)
                    .with_context(|| format!("listener `{}`", l.name))?;
                for warning in warnings {
                    tracing::warn!(listener = %l.name, "{warning}");
                }
                Some(terminator)
            }
        };
        let counters = observe.metrics.listener(&l.name);
        let reports = upstreams
            .iter()
            .map(|u| forward::Report {
                access_log: observe.access_log.clone(),
                listener: Arc::clone(&counters),
                responses: counters.responses(u.name()),
                upstream: observe.metrics.upstream(u.name()),
            })
            .collect();
        let route_headers = std::iter::once(Default::default())
            .chain(l.routes.iter().map(|r| r.headers.clone()))
            .collect();
        Ok(Frontend {
            config: l.clone(),
            upstreams,
            routes,
            reports,
            unrouted: counters.responses(""),
            route_headers,
            limit: room::ConnectionLimit::new(l.max_client_connections),
            tls,
        })
    }
}

/// One accepted connection, counted against its listener while it lives (the task of every
/// client connection runs this).
///
/// Plain HTTP/1.1, the common case, runs inline in the connection's task; every other path
/// is boxed, so an idle keep-alive connection does not carry the size of the largest one
/// (a TLS handshake's or hyper's HTTP/2 server's state) in its task.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    frontend: Arc<Frontend>,
    worker: Rc<Worker>,
    stop: watch::Receiver<bool>,
) {
    let Some(_open) = admit(&frontend, &worker) else {
        return;
    };
    let _counted = frontend.reports[0].listener.connection();
    let _ = stream.set_nodelay(true);
    let plain_http1 = frontend.tls.is_none()
        && matches!(frontend.config.mode, ListenerMode::Http)
        && !frontend.config.redirect_https
        && !frontend.speaks_http2_upstream();
    let frontend = Arc::clone(&frontend);
    if plain_http1 {
        h1::serve(stream, peer, frontend, worker, stop).await;
    } else {
        Box::pin(serve_other(stream, peer, frontend, worker, stop)).await;
    }
}

/// A connection that is not plain HTTP/1.1: the TLS handshake when the listener terminates
/// TLS, then the TCP relay, HTTP/2 (negotiated by ALPN) or HTTP/1.1 (which also detects h2c).
async fn serve_other(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    frontend: Arc<Frontend>,
    worker: Rc<Worker>,
    stop: watch::Receiver<bool>,
) {
    let ip = || -> Rc<str> { peer.ip().to_canonical().to_string().into() };
    let Some(terminator) = &frontend.tls else {
        return match frontend.config.mode {
            ListenerMode::Tcp => tcp::serve(stream, peer, &frontend).await,
            ListenerMode::Http if frontend.config.redirect_https => {
                redirect::serve(stream, &frontend.config).await
            }
            ListenerMode::Http if frontend.speaks_http2_upstream() => {
                let server = h2::Server::Auto;
                h2::serve(stream, Vec::new(), ip(), frontend, worker, stop, server).await
            }
            ListenerMode::Http => h1::serve(stream, peer, frontend, worker, stop).await,
        };
    };
    // The handshake is part of the request head's time: a client that stalls in it is cut
    // off like a slow head.
    let limit = frontend.config.header_timeout;
    let tls = match tokio::time::timeout(limit, terminator.acceptor().accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(listener = %frontend.config.name, client = %peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    match frontend.config.mode {
        ListenerMode::Tcp => tcp::serve(tls, peer, &frontend).await,
        ListenerMode::Http if h2 => {
            let server = h2::Server::Http2;
            h2::serve(tls, Vec::new(), ip(), frontend, worker, stop, server).await;
        }
        ListenerMode::Http if frontend.speaks_http2_upstream() => {
            let server = h2::Server::Auto;
            h2::serve(tls, Vec::new(), ip(), frontend, worker, stop, server).await;
        }
        ListenerMode::Http => h1::serve(tls, peer, frontend, worker, stop).await,
    }
}

/// Counts a new client connection against its listener's limit; at the limit, a batch of
/// idle connections is closed to make room (the oldest first, see [`room`]), and when none
/// is idle the new one is refused (closed at once, counted, logged once per episode).
fn admit<'s>(frontend: &'s Frontend, worker: &Worker) -> Option<room::Open<'s>> {
    if let Some(open) = frontend.limit.open() {
        return Some(open);
    }
    if worker.idle.make_room() > 0 {
        return Some(frontend.limit.open_anyway());
    }
    frontend.limit.refuse();
    frontend.reports[0]
        .listener
        .refused
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if frontend.limit.refused().is_power_of_two() {
        tracing::warn!(
            listener = frontend.config.name.as_str(),
            max_client_connections = frontend.limit.max(),
            refused = frontend.limit.refused(),
            "connection refused: the listener is at max_client_connections and none is idle"
        );
    }
    None
}

/// Listen backlog: nginx's default on Linux is 511; the kernel caps it at `somaxconn`.
const BACKLOG: i32 = 1024;

/// A listening socket on `addr`, non-blocking, ready to be cloned for every worker.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// One worker thread: accepts on every listener, serves connections, and on shutdown stops
/// accepting and gives open connections up to `grace` to finish.
pub(crate) fn run_worker(
    mut listeners: tokio::sync::mpsc::UnboundedReceiver<FrontendSocket>,
    stop: watch::Receiver<bool>,
    grace: Duration,
    memory: Arc<memory::MemoryLimit>,
) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        tracing::error!("cannot start a worker runtime");
        return;
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let worker = Rc::new(Worker::new(memory));
        let accept_loop = |accept: FrontendSocket| {
            let FrontendSocket { socket, frontend, stop: mut own_stop } = accept;
            let Ok(listener) = tokio::net::TcpListener::from_std(socket) else { return };
            let (worker, mut stop) = (Rc::clone(&worker), stop.clone());
            let for_connections = stop.clone();
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
                            Ok((stream, peer)) => {
                                worker.idle.accepted();
                                let (frontend, worker, stop) = (Arc::clone(&frontend), Rc::clone(&worker), for_connections.clone());
                                tokio::task::spawn_local(serve_connection(stream, peer, frontend, worker, stop));
                            }
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
                sweeper.sweep_h1_senders();
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
}
