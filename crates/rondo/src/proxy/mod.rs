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

mod body;
mod chunked;
mod connpool;
mod forward;
mod h1;
mod h2;
mod head;
mod headers;
mod protocol;
mod respond;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::{Config, ListenerConfig};
use crate::upstream::Upstream;

/// A listener's routing table and settings, shared by every worker.
#[derive(Debug)]
pub(crate) struct Site {
    config: ListenerConfig,
    /// Index 0 is the listener's default upstream; routes point at the others.
    upstreams: Vec<Arc<Upstream>>,
    routes: Vec<Route>,
    /// What each upstream's requests report to, aligned with `upstreams`.
    reports: Vec<forward::Report>,
    /// Responses rondo gives before a request is routed (400, 408, …).
    unrouted: Arc<crate::admin::counters::ResponseCounts>,
    /// Each route's header rules, aligned with `upstreams` (index 0: none beyond the
    /// listener's own).
    route_headers: Vec<crate::header_rules::Headers>,
}

/// The access log and the counters, shared by every listener and kept across reloads.
#[derive(Debug, Clone)]
pub(crate) struct Observe {
    access_log: crate::access_log::AccessLog,
    metrics: Arc<crate::admin::counters::ProxyMetrics>,
}

#[derive(Debug)]
struct Route {
    host: Option<String>,
    path_prefix: Option<String>,
    upstream: usize,
}

impl Site {
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

/// A backend connection of the HTTP/2 path.
type UpstreamSender = hyper::client::conn::http1::SendRequest<h2::UpstreamBody>;

/// Per-thread state: idle backend connections and spare buffers.
#[derive(Default)]
pub(crate) struct Worker {
    conns: connpool::ConnPool,
    buffers: RefCell<Vec<Vec<u8>>>,
    /// Connections in the middle of a request (or holding HTTP/2 streams): what a graceful
    /// shutdown waits for. Idle keep-alive connections are simply closed.
    busy: std::cell::Cell<usize>,
    /// Backend connections of the HTTP/2 path (hyper HTTP/1.1 clients), by address.
    h2_upstreams: RefCell<std::collections::HashMap<SocketAddr, Vec<UpstreamSender>>>,
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
    fn take_buffer(&self) -> Vec<u8> {
        self.buffers
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(body::CHUNK))
    }

    /// A ready HTTP/2-path connection to `addr`; closed ones are dropped, busy ones kept.
    fn take_h2_upstream(&self, addr: SocketAddr) -> Option<UpstreamSender> {
        let mut all = self.h2_upstreams.borrow_mut();
        let list = all.get_mut(&addr)?;
        list.retain(|s| !s.is_closed());
        let ready = list.iter().position(|s| s.is_ready())?;
        Some(list.swap_remove(ready))
    }

    /// Keeps an HTTP/2-path connection for reuse, at most `max` per backend.
    fn put_h2_upstream(&self, addr: SocketAddr, sender: UpstreamSender, max: usize) {
        let mut all = self.h2_upstreams.borrow_mut();
        let list = all.entry(addr).or_default();
        if list.len() < max {
            list.push(sender);
        }
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

/// A connection counted as busy by its worker (see [`Worker::busy`]).
struct Busy<'a>(&'a Worker);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.set(self.0.busy.get().saturating_sub(1));
    }
}

/// A running proxy: its bound addresses, upstreams and the way to stop it.
#[derive(Debug)]
pub struct Running {
    listeners: parking_lot::Mutex<Vec<LiveListener>>,
    /// Hands new listeners to each worker thread.
    workers: Vec<tokio::sync::mpsc::UnboundedSender<Accept>>,
    upstreams: Vec<Arc<Upstream>>,
    /// The configuration in effect: what the last reload is compared with.
    applied: parking_lot::Mutex<Config>,
    observe: Observe,
    stop: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    admin_addr: SocketAddr,
}

impl Running {
    /// The address a listener is bound to (useful with port 0).
    pub fn addr(&self, listener: &str) -> Option<SocketAddr> {
        self.listeners
            .lock()
            .iter()
            .find(|l| l.name == listener)
            .map(|l| l.addr)
    }

    /// Every listener's name and bound address.
    pub fn addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listeners
            .lock()
            .iter()
            .map(|l| (l.name.clone(), l.addr))
            .collect()
    }

    /// Starts (or restarts, with new settings) a listener on every worker, reusing its
    /// socket when the bind address is unchanged so no connection is refused meanwhile, then
    /// stops the accept loops of the version it replaces.
    fn apply_listener(&self, l: &ListenerConfig) -> anyhow::Result<()> {
        let find = |name: &str| {
            self.upstream(name).cloned().with_context(|| {
                format!("listener `{}` uses upstream `{name}`, which is new: adding upstreams needs a restart", l.name)
            })
        };
        let site = Arc::new(site(l, find, &self.observe)?);
        let mut live = self.listeners.lock();
        let existing = live.iter().position(|x| x.name == l.name);
        let socket = match existing {
            Some(i) if live[i].bind == l.bind => live[i].socket.try_clone()?,
            _ => bind(l.bind)
                .with_context(|| format!("listener `{}`: cannot listen on {}", l.name, l.bind))?,
        };
        let (stop, _) = watch::channel(false);
        for worker in &self.workers {
            let accept = Accept {
                socket: socket.try_clone()?,
                site: Arc::clone(&site),
                stop: stop.subscribe(),
            };
            let _ = worker.send(accept);
        }
        if let Some(i) = existing {
            let _ = live.remove(i).stop.send(true);
        }
        live.push(LiveListener {
            name: l.name.clone(),
            bind: l.bind,
            addr: socket.local_addr()?,
            socket,
            stop,
        });
        Ok(())
    }

    /// Stops accepting on a listener; its open connections finish.
    fn remove_listener(&self, name: &str) {
        let mut live = self.listeners.lock();
        if let Some(i) = live.iter().position(|x| x.name == name) {
            let _ = live.remove(i).stop.send(true);
        }
    }

    /// An upstream by name.
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| u.name() == name)
    }

    /// Every upstream.
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// Applies a new, already validated configuration without dropping a request.
    ///
    /// Every upstream present in both configurations is updated in place
    /// ([`Upstream::reload`]): kept backends keep their health, breaker, counters, in-flight
    /// requests and the rotation's position; removed ones drain; new ones slow-start; the
    /// per-request settings (tries, timeouts, keep-alive, health checks…) are swapped.
    ///
    /// Listeners are started, restarted with new settings or stopped to match the new file.
    ///
    /// What needs a restart is refused and listed in [`Reloaded::refused`], and the old
    /// configuration of that part keeps serving: adding or removing upstreams (and a listener
    /// that would need a new one), `workers`, `admin`, `access_log`, `shutdown_grace`, and an
    /// upstream's `queue_size` and `priority_header`.
    pub fn reload(&self, new: &Config) -> Reloaded {
        let mut applied = self.applied.lock();
        let mut report = Reloaded::default();
        for l in &new.listeners {
            if applied.listener(&l.name) == Some(l) {
                continue;
            }
            match self.apply_listener(l) {
                Ok(()) => {
                    report.listeners.push(l.name.clone());
                    match applied.listeners.iter_mut().find(|a| a.name == l.name) {
                        Some(slot) => *slot = l.clone(),
                        None => applied.listeners.push(l.clone()),
                    }
                }
                Err(e) => report.refused.push(format!("{e:#}")),
            }
        }
        let gone: Vec<String> = applied
            .listeners
            .iter()
            .filter(|l| new.listener(&l.name).is_none())
            .map(|l| l.name.clone())
            .collect();
        for name in gone {
            self.remove_listener(&name);
            applied.listeners.retain(|l| l.name != name);
            report.listeners.push(name);
        }
        let mut refuse = |what: String| report.refused.push(what);
        for u in &applied.upstreams {
            if new.upstream(&u.name).is_none() {
                refuse(format!(
                    "upstream `{}` is gone: removing upstreams needs a restart; it keeps serving",
                    u.name
                ));
            }
        }
        let mut changed_upstreams = Vec::new();
        for u in &new.upstreams {
            let Some(live) = self.upstream(&u.name) else {
                refuse(format!(
                    "upstream `{}` is new: adding upstreams needs a restart",
                    u.name
                ));
                continue;
            };
            if applied.upstream(&u.name) == Some(u) {
                continue;
            }
            match live.reload(u.clone()) {
                Ok(ignored) => {
                    for key in ignored {
                        refuse(format!(
                            "upstream `{}`: changing `{key}` needs a restart",
                            u.name
                        ));
                    }
                    report.upstreams.push(u.name.clone());
                    changed_upstreams.push(live.config());
                }
                Err(e) => refuse(format!("upstream `{}`: {e}", u.name)),
            }
        }
        for (what, differs) in [
            ("workers", applied.workers != new.workers),
            ("admin", applied.admin != new.admin),
            ("access_log", applied.access_log != new.access_log),
            (
                "shutdown_grace",
                applied.shutdown_grace != new.shutdown_grace,
            ),
        ] {
            if differs {
                refuse(format!("changing `{what}` needs a restart"));
            }
        }
        for u in changed_upstreams {
            if let Some(slot) = applied.upstreams.iter_mut().find(|a| a.name == u.name) {
                *slot = (*u).clone();
            }
        }
        report
    }

    /// The address the admin API is bound to (useful with port 0).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Stops accepting, lets in-flight requests finish for up to `grace`, and waits for the
    /// workers to exit.
    pub fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let deadline = std::time::Instant::now() + grace + Duration::from_millis(500);
        for t in self.threads {
            // Workers enforce the grace period themselves; the join is bounded by it.
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// What [`Running::reload`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Upstreams whose changes were applied.
    pub upstreams: Vec<String>,
    /// Listeners started, changed or stopped.
    pub listeners: Vec<String>,
    /// Changes that need a restart, one sentence each; the old configuration of those parts
    /// keeps serving.
    pub refused: Vec<String>,
}

/// A listener as the running proxy keeps it: the socket (cloned for each worker), and the
/// signal that stops its accept loops.
#[derive(Debug)]
struct LiveListener {
    name: String,
    bind: SocketAddr,
    addr: SocketAddr,
    socket: std::net::TcpListener,
    stop: watch::Sender<bool>,
}

/// A listener handed to a worker: its own clone of the socket, the routing table, and the
/// listener's stop signal (the worker also stops with the whole proxy).
#[derive(Debug)]
struct Accept {
    socket: std::net::TcpListener,
    site: Arc<Site>,
    stop: watch::Receiver<bool>,
}

/// Builds a listener's routing table; `find` resolves upstream names.
fn site(
    l: &ListenerConfig,
    find: impl Fn(&str) -> anyhow::Result<Arc<Upstream>>,
    observe: &Observe,
) -> anyhow::Result<Site> {
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
    Ok(Site {
        config: l.clone(),
        upstreams,
        routes,
        reports,
        unrouted: counters.responses(""),
        route_headers,
    })
}

/// Binds every listener and starts the workers and timers. Errors (an address in use, an
/// invalid upstream) are reported before anything runs.
pub fn start(config: &Config) -> anyhow::Result<Running> {
    let clock = Clock::new();
    let mut upstreams = Vec::new();
    for u in &config.upstreams {
        let up =
            Upstream::new(u.clone(), clock).with_context(|| format!("upstream `{}`", u.name))?;
        upstreams.push(Arc::new(up));
    }
    let find = |name: &str| {
        upstreams
            .iter()
            .find(|u| u.name() == name)
            .cloned()
            .with_context(|| format!("no upstream named `{name}`"))
    };
    let observe = Observe {
        access_log: crate::access_log::AccessLog::open(&config.access_log)?,
        metrics: Arc::default(),
    };
    let mut listeners = Vec::new();
    let mut sites = Vec::new();
    for l in &config.listeners {
        sites.push(Arc::new(site(l, find, &observe)?));
        let socket = bind(l.bind)
            .with_context(|| format!("listener `{}`: cannot listen on {}", l.name, l.bind))?;
        let (stop, _) = watch::channel(false);
        listeners.push(LiveListener {
            name: l.name.clone(),
            bind: l.bind,
            addr: socket.local_addr()?,
            socket,
            stop,
        });
    }

    // The admin API: bound here so a taken port fails the start, served on the control thread.
    let admin_socket = bind(config.admin.listen)
        .with_context(|| format!("admin API: cannot listen on {}", config.admin.listen))?;
    let admin_addr = admin_socket.local_addr()?;
    let admin = Arc::new(
        crate::admin::Admin::new(
            upstreams.clone(),
            {
                let mut registry = crate::admin::metrics::registry(&upstreams);
                crate::admin::proxy_metrics::register(
                    &mut registry,
                    Arc::clone(&observe.metrics),
                    observe.access_log.clone(),
                );
                registry
            },
            config.admin.token.clone(),
            config.admin.listen,
        )
        .with_listeners(Arc::clone(&observe.metrics)),
    );

    let (stop, stop_rx) = watch::channel(false);
    let mut threads = Vec::new();
    let grace = config.shutdown_grace;
    let mut workers = Vec::new();
    for n in 0..config.workers.get() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for (l, site) in listeners.iter().zip(&sites) {
            let accept = Accept {
                socket: l.socket.try_clone()?,
                site: Arc::clone(site),
                stop: l.stop.subscribe(),
            };
            let _ = tx.send(accept);
        }
        workers.push(tx);
        let stop_rx = stop_rx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("rondo-worker-{n}"))
            .spawn(move || run_worker(rx, stop_rx, grace))?;
        threads.push(thread);
    }
    let timers: Vec<Arc<Upstream>> = upstreams.clone();
    let control_stop = stop_rx.clone();
    // SIGUSR1 is handled only when there is a file to reopen (its default action is to end
    // the process, which a stray signal to a rondo without a log file should still do).
    let reopen = matches!(
        config.access_log,
        crate::access_log::AccessLogConfig::File { .. }
    )
    .then(|| observe.access_log.clone());
    threads.push(
        std::thread::Builder::new()
            .name("rondo-control".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    tracing::error!("cannot start the control runtime");
                    return;
                };
                rt.block_on(async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    for u in timers {
                        let mut stop = control_stop.clone();
                        tasks.spawn(Arc::clone(&u).run_timers(async move {
                            let _ = stop.wait_for(|s| *s).await;
                        }));
                        let mut stop = control_stop.clone();
                        tasks.spawn(u.run_health_checks(async move {
                            let _ = stop.wait_for(|s| *s).await;
                        }));
                    }
                    match tokio::net::TcpListener::from_std(admin_socket) {
                        Ok(listener) => {
                            let mut stop = control_stop.clone();
                            tasks.spawn(crate::admin::serve(listener, admin, async move {
                                let _ = stop.wait_for(|s| *s).await;
                            }));
                        }
                        Err(e) => tracing::error!(error = %e, "cannot serve the admin API"),
                    }
                    if let Some(log) = reopen {
                        let mut stop = control_stop.clone();
                        tasks.spawn(async move {
                            tokio::select! {
                                reopening = crate::access_log::reopen_on_sigusr1(log) => {
                                    if let Err(e) = reopening {
                                        tracing::error!(error = %e, "cannot reopen the access log on SIGUSR1");
                                    }
                                }
                                _ = stop.wait_for(|s| *s) => {}
                            }
                        });
                    }
                    while tasks.join_next().await.is_some() {}
                });
            })?,
    );
    Ok(Running {
        listeners: parking_lot::Mutex::new(listeners),
        workers,
        upstreams,
        applied: parking_lot::Mutex::new(config.clone()),
        observe,
        stop,
        threads,
        admin_addr,
    })
}

/// Listen backlog: nginx's default on Linux is 511; the kernel caps it at `somaxconn`.
const BACKLOG: i32 = 1024;

fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
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
fn run_worker(
    mut listeners: tokio::sync::mpsc::UnboundedReceiver<Accept>,
    stop: watch::Receiver<bool>,
    grace: Duration,
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
        let worker = Rc::new(Worker::default());
        let accept_loop = |accept: Accept| {
            let Accept { socket, site, stop: mut own_stop } = accept;
            let Ok(listener) = tokio::net::TcpListener::from_std(socket) else { return };
            let (worker, mut stop) = (Rc::clone(&worker), stop.clone());
            let for_connections = stop.clone();
            tokio::task::spawn_local(async move {
                loop {
                    tokio::select! {
                        biased;
                        _ = stop.wait_for(|s| *s) => return,
                        _ = own_stop.wait_for(|s| *s) => return,
                        accepted = listener.accept() => {
                            let Ok((stream, peer)) = accepted else {
                                site.reports[0].listener.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                continue;
                            };
                            let open = site.reports[0].listener.connection();
                            let (site, worker, stop) = (Arc::clone(&site), Rc::clone(&worker), for_connections.clone());
                            tokio::task::spawn_local(async move {
                                h1::serve(stream, peer, site, worker, stop).await;
                                drop(open);
                            });
                        }
                    }
                }
            });
        };
        let sweeper = Rc::clone(&worker);
        tokio::task::spawn_local(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                sweeper.conns.sweep();
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
        let deadline = tokio::time::Instant::now() + grace;
        while worker.busy.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}
