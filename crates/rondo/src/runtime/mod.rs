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
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`start`], [`Running`]: threads, addresses, shutdown |
//! | `control.rs` | the control thread: one tokio runtime for every timer loop and the admin API |
//! | `listeners.rs` | listeners as the runtime keeps them; starting, replacing, stopping them |
//! | `reload.rs` | [`Running::reload`]: applying a new configuration without dropping a request |

mod control;
mod listeners;
mod reload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::Config;
use crate::proxy::{self, Accept, Site};
use crate::upstream::Upstream;

pub use reload::Reloaded;

use control::{Control, UpstreamTasks};
use listeners::LiveListener;

/// A running balancer: its bound addresses, upstreams and the way to stop it.
#[derive(Debug)]
pub struct Running {
    listeners: parking_lot::Mutex<Vec<LiveListener>>,
    /// Hands new listeners to each worker thread.
    workers: Vec<tokio::sync::mpsc::UnboundedSender<Accept>>,
    /// The live upstreams, each with the handle that stops its loops on the control thread.
    upstreams: parking_lot::Mutex<Vec<(Arc<Upstream>, UpstreamTasks)>>,
    /// The configuration in effect: what the last reload is compared with.
    applied: parking_lot::Mutex<Config>,
    stop: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    admin_addr: SocketAddr,
    /// False with `[admin] enabled = false`: nothing listens on `admin_addr`.
    admin_enabled: bool,
    reloads: Arc<crate::admin::reloads::Reloads>,
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
        self.upstreams
            .lock()
            .iter()
            .find(|(u, _)| u.name() == name)
            .map(|(u, _)| Arc::clone(u))
    }

    /// Every upstream, in configuration order.
    pub fn upstreams(&self) -> Vec<Arc<Upstream>> {
        self.upstreams
            .lock()
            .iter()
            .map(|(u, _)| Arc::clone(u))
            .collect()
    }

    /// The address the admin API is bound to (useful with port 0); with `[admin] enabled =
    /// false`, the configured address, where nothing listens (see [`Running::admin_enabled`]).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Whether the admin API runs (`[admin] enabled`).
    pub fn admin_enabled(&self) -> bool {
        self.admin_enabled
    }

    /// Where reloads are recorded for `GET /api/v1/reload`.
    pub fn reloads(&self) -> &crate::admin::reloads::Reloads {
        &self.reloads
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

/// Binds every listener and the admin API, then starts the workers and the control thread.
/// Errors (an address in use, an invalid upstream) are reported before anything runs.
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
    let mut upstreams = Vec::new();
    for u in &config.upstreams {
        let up =
            Upstream::new(u.clone(), clock).with_context(|| format!("upstream `{}`", u.name))?;
        up.set_tls(upstream_tls(u)?);
        upstreams.push(Arc::new(up));
    }
    let find = |name: &str| {
        upstreams
            .iter()
            .find(|u| u.name() == name)
            .cloned()
            .with_context(|| format!("no upstream named `{name}`"))
    };
    let mut listeners = Vec::new();
    for l in &config.listeners {
        let site = Arc::new(Site::new(l, find, config.access_log)?);
        listeners.push(LiveListener::bind(l, site)?);
    }

    // The admin API: bound here so a taken port fails the start, served on the control thread.
    let admin_socket = match config.admin.enabled {
        true => Some(
            proxy::bind(config.admin.listen)
                .with_context(|| format!("admin API: cannot listen on {}", config.admin.listen))?,
        ),
        false => None,
    };
    let admin_addr = match &admin_socket {
        Some(socket) => socket.local_addr()?,
        None => config.admin.listen,
    };
    let admin = Arc::new(crate::admin::Admin::new(
        upstreams.clone(),
        crate::admin::metrics::registry(&upstreams),
        config.admin.token.clone(),
        config.admin.listen,
    ));
    let reloads = Arc::clone(admin.reloads());

    let (stop, stop_rx) = watch::channel(false);
    let mut threads = Vec::new();
    let grace = config.shutdown_grace;
    let mut workers = Vec::new();
    for n in 0..config.workers.get() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for l in &listeners {
            let _ = tx.send(l.accept()?);
        }
        workers.push(tx);
        let stop_rx = stop_rx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("rondo-worker-{n}"))
            .spawn(move || proxy::run_worker(rx, stop_rx, grace))?;
        threads.push(thread);
    }
    let (control, thread) = Control::start(stop_rx)?;
    threads.push(thread);
    if let Some(socket) = admin_socket {
        control.serve_admin(socket, admin);
    }
    let upstreams = upstreams
        .into_iter()
        .map(|u| {
            let tasks = control.spawn_upstream(&u);
            (u, tasks)
        })
        .collect();
    Ok(Running {
        listeners: parking_lot::Mutex::new(listeners),
        workers,
        upstreams: parking_lot::Mutex::new(upstreams),
        applied: parking_lot::Mutex::new(config.clone()),
        stop,
        threads,
        admin_addr,
        admin_enabled: config.admin.enabled,
        reloads,
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
