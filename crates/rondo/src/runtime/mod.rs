//! Start-up and the life of a running balancer: worker threads, the control thread (timer and
//! health-check loops, the admin API), listeners handed to workers, configuration reload and
//! shutdown.
//!
//! This is the one place that wires the parts together, so each part stays ignorant of the
//! others: [`crate::proxy`] only accepts, parses and forwards; [`crate::upstream`] owns one
//! upstream's backends and loops; [`crate::admin`] reads and writes through the upstreams it is
//! given. The runtime builds the metrics registry and hands it to the admin server (as
//! linkerd2-proxy does), so nothing is global and the proxy never imports `admin`.
//!
//! One thing is not built here: each upstream's [`Recorder`](crate::upstream::recorder::Recorder)
//! (responses by status and latency, per backend) is created by [`Upstream::new`] with the
//! upstream it belongs to, because it lives exactly as long as that upstream — a reload that
//! keeps the upstream keeps its figures, one that removes it drops them — and the runtime
//! never needs it; the proxy records into it and the admin API reads it through the upstream.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`start`], [`Running`]: threads, addresses, shutdown |
//! | `control.rs` | the control thread: one tokio runtime for every timer loop and the admin API |
//! | `admin.rs` | the admin server, replaced whole when `[admin]` changes |
//! | `listeners.rs` | listeners as the runtime keeps them; starting, replacing, stopping them |
//! | `reload.rs` | [`Running::reload`]: applying a new configuration without dropping a request |

mod admin;
mod control;
mod listeners;
mod reload;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::Config;
use crate::proxy::{self, Frontend, FrontendSocket, Observe};
use crate::upstream::dns::Resolver;
use crate::upstream::etcd::Etcd;
use crate::upstream::{Upstream, UpstreamSet};

pub use reload::Reloaded;

use admin::AdminServer;
use control::{Control, Stopper};
use listeners::LiveListener;

/// A running balancer: its bound addresses, upstreams and the way to stop it.
#[derive(Debug)]
pub struct Running {
    listeners: parking_lot::Mutex<Vec<LiveListener>>,
    /// Hands new listeners to each worker thread.
    workers: Vec<tokio::sync::mpsc::UnboundedSender<FrontendSocket>>,
    /// The live upstreams, read by the admin API and metrics.
    upstreams: Arc<UpstreamSet>,
    /// What a reload changes, behind one lock so reloads apply one at a time.
    state: parking_lot::Mutex<State>,
    /// The control thread's runtime, where upstream loops and the admin server run.
    control: Control,
    clock: Clock,
    stop: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// The part of a running balancer a reload replaces.
#[derive(Debug)]
struct State {
    /// The configuration in effect: what the next reload is compared with.
    applied: Config,
    /// Each upstream's timer, health-check and DNS loops, by upstream name.
    loops: HashMap<String, Stopper>,
    admin: AdminServer,
    /// Resolves backend names (`None` when the system's resolver configuration is unusable
    /// and no backend is named).
    resolver: Option<Resolver>,
    /// The access log and the counters every listener reports to.
    observe: Observe,
    /// The etcd cluster upstreams with `discovery = "etcd"` read (`[discovery.etcd]`).
    etcd: Option<Arc<Etcd>>,
    /// Reopens the access log file on SIGUSR1 (ignores the signal without a file).
    reopen: Stopper,
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

    /// An upstream by name.
    pub fn upstream(&self, name: &str) -> Option<Arc<Upstream>> {
        self.upstreams.get(name)
    }

    /// Every upstream, in configuration order (upstreams added by a reload last).
    pub fn upstreams(&self) -> Vec<Arc<Upstream>> {
        self.upstreams.all().to_vec()
    }

    /// The address the admin API is bound to (useful with port 0); a reload may move it. With
    /// `[admin] enabled = false`, the configured address, where nothing listens (see
    /// [`Running::admin_enabled`]).
    pub fn admin_addr(&self) -> SocketAddr {
        self.state.lock().admin.addr
    }

    /// Whether the admin API runs (`[admin] enabled`).
    pub fn admin_enabled(&self) -> bool {
        self.state.lock().admin.enabled
    }

    /// Where reloads are recorded for `GET /api/v1/reload`.
    pub fn reloads(&self) -> Arc<crate::admin::reloads::Reloads> {
        Arc::clone(&self.state.lock().admin.reloads)
    }

    /// Runs `future` to completion on the calling thread, its timers, sockets and signals
    /// driven by the control thread's runtime (so the caller needs no runtime of its own).
    /// Must not be called from inside a runtime.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.control.block_on(future)
    }

    /// Stops accepting, lets in-flight requests finish for up to `grace`, and waits for the
    /// workers to exit.
    ///
    /// The listening sockets close at once (each worker drops its copy as its accept loop
    /// ends), as nginx and HAProxy unbind on a graceful stop: a client connecting during the
    /// grace period is refused and can go elsewhere, instead of being taken into a backlog
    /// nobody reads any more and reset when the process exits.
    pub fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        self.listeners.lock().clear();
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

/// Binds every listener and the admin API, then starts the control thread and the workers.
/// Errors (an address in use, an invalid upstream) are reported before any request is served.
pub fn start(config: &Config) -> anyhow::Result<Running> {
    let descriptors = proxy::room::raise_descriptor_limit();
    for l in &config.listeners {
        if let Some(max) = l.max_client_connections
            && max > proxy::room::max_connections_for(descriptors)
        {
            tracing::warn!(
                listener = l.name.as_str(),
                max_client_connections = max,
                open_file_limit = descriptors,
                "max_client_connections needs more descriptors than the open-file limit allows \
                 (two per connection plus 64): connections past it find no descriptor"
            );
        }
    }
    let clock = Clock::new();
    let started = tokio::time::Instant::now();
    let mut built = Vec::new();
    for u in &config.upstreams {
        let up =
            Upstream::new(u.clone(), clock).with_context(|| format!("upstream `{}`", u.name))?;
        up.set_tls(upstream_tls(u)?);
        built.push(Arc::new(up));
    }
    let find = |name: &str| {
        built
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
    for l in &config.listeners {
        let frontend = Arc::new(Frontend::new(l, find, &observe)?);
        listeners.push(LiveListener::bind(l, frontend)?);
    }
    let upstreams = Arc::new(UpstreamSet::new(built.clone()));

    // If anything below fails, dropping `stop` ends the threads already started.
    let (stop, stop_rx) = watch::channel(false);
    let (control, control_thread) = Control::start(stop_rx.clone())?;
    let mut threads = vec![control_thread];
    let etcd = config.etcd.as_ref().map(|c| Arc::new(Etcd::new(c)));
    if let Some(etcd) = &etcd {
        control.spawn_etcd(etcd, &upstreams);
    }
    let admin = AdminServer::start(
        &control,
        &config.admin,
        &upstreams,
        started,
        &observe,
        etcd.clone(),
    )?;
    let reopen = control.reopen_on_sigusr1(observe.access_log.clone());
    let resolver = match control.resolver(&config.resolver) {
        Ok(r) => Some(r),
        Err(e) if config.upstreams.iter().any(|u| !u.named.is_empty()) => return Err(e.into()),
        Err(e) => {
            tracing::warn!(error = %e, "backend names cannot be resolved");
            None
        }
    };
    let loops = built
        .iter()
        .map(|u| {
            let stopper = control.spawn_upstream(u, resolver.as_ref());
            (u.name().to_owned(), stopper)
        })
        .collect();
    let grace = config.shutdown_grace;
    let memory = proxy::memory::MemoryLimit::start(config.max_memory);
    let mut workers = Vec::new();
    let seats = proxy::Spread::seats(observe.metrics.worker_connections(config.workers.get()));
    for (n, seat) in seats.into_iter().enumerate() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for l in &listeners {
            let _ = tx.send(l.accept()?);
        }
        workers.push(tx);
        let (stop_rx, memory) = (stop_rx.clone(), Arc::clone(&memory));
        let thread = std::thread::Builder::new()
            .name(format!("rondo-worker-{n}"))
            .spawn(move || proxy::run_worker(rx, seat, stop_rx, grace, memory))?;
        threads.push(thread);
    }
    Ok(Running {
        listeners: parking_lot::Mutex::new(listeners),
        workers,
        upstreams,
        state: parking_lot::Mutex::new(State {
            applied: config.clone(),
            loops,
            admin,
            resolver,
            observe,
            reopen,
            etcd,
        }),
        control,
        clock,
        stop,
        threads,
    })
}

/// The TLS client of an upstream with `tls = { … }`: its CA and client certificate files
/// read now, so a reload picks up renewed files.
fn upstream_tls(
    u: &crate::config::UpstreamConfig,
) -> anyhow::Result<Option<crate::tls::UpstreamTls>> {
    let Some(tls) = &u.tls else { return Ok(None) };
    let (client, warnings) = crate::tls::UpstreamTls::new(tls, std::time::SystemTime::now())
        .with_context(|| format!("upstream `{}`", u.name))?;
    for warning in warnings {
        tracing::warn!(upstream = %u.name, "{warning}");
    }
    Ok(Some(client))
}
