//! The admin server as the runtime keeps it, so a reload can give it a new token or move it to
//! a new address. The state it serves sits in one `ArcSwap` read per request: a new token
//! applies to the next request, on every connection. A new address starts a server there on the
//! same state, then the old one stops accepting; requests it already accepted finish.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::time::Instant;

use super::control::{Control, Stopper};
use crate::admin::reloads::Reloads;
use crate::admin::{Admin, metrics};
use crate::config::AdminConfig;
use crate::proxy::{self, Observe};
use crate::upstream::UpstreamSet;
use crate::upstream::etcd::Etcd;

/// A running admin server (or, with `[admin] enabled = false`, the state it would serve).
#[derive(Debug)]
pub(super) struct AdminServer {
    state: Arc<ArcSwap<Admin>>,
    listen: SocketAddr,
    pub(super) addr: SocketAddr,
    /// Whether anything listens on `addr`.
    pub(super) enabled: bool,
    upstreams: Arc<UpstreamSet>,
    /// When the balancer started, for the uptime it reports.
    started: Instant,
    /// How each reload ended, for `GET /api/v1/reload`; kept across admin changes.
    pub(super) reloads: Arc<Reloads>,
    /// The access log and the listeners' counters the metrics read.
    observe: Observe,
    /// Dropping it stops the server.
    stop: Option<Stopper>,
    /// Where changes to upstreams that read etcd are written.
    etcd: Option<Arc<Etcd>>,
}

/// The state the admin API serves for `config`.
fn admin(
    config: &AdminConfig,
    upstreams: &Arc<UpstreamSet>,
    started: Instant,
    reloads: &Arc<Reloads>,
    observe: &Observe,
    etcd: Option<&Arc<Etcd>>,
) -> Arc<Admin> {
    let mut registry = metrics::registry(Arc::clone(upstreams));
    if let Some(etcd) = etcd {
        metrics::register_etcd(&mut registry, Arc::clone(etcd));
    }
    crate::admin::proxy_metrics::register(
        &mut registry,
        Arc::clone(&observe.metrics),
        observe.access_log.clone(),
    );
    Arc::new(
        Admin::new(
            Arc::clone(upstreams),
            registry,
            config.token.clone(),
            config.listen,
            started,
            Arc::clone(reloads),
        )
        .with_listeners(Arc::clone(&observe.metrics))
        .with_etcd(etcd.cloned()),
    )
}

/// Binds the admin API's address.
fn bind(listen: SocketAddr) -> anyhow::Result<(std::net::TcpListener, SocketAddr)> {
    let socket =
        proxy::bind(listen).with_context(|| format!("admin API: cannot listen on {listen}"))?;
    let addr = socket.local_addr()?;
    Ok((socket, addr))
}

impl AdminServer {
    /// Binds `config.listen` and serves the admin API over the live `upstreams` on the
    /// control thread (nothing is bound with `[admin] enabled = false`).
    pub(super) fn start(
        control: &Control,
        config: &AdminConfig,
        upstreams: &Arc<UpstreamSet>,
        started: Instant,
        observe: &Observe,
        etcd: Option<Arc<Etcd>>,
    ) -> anyhow::Result<AdminServer> {
        let reloads = Arc::new(Reloads::default());
        let state = Arc::new(ArcSwap::new(admin(
            config,
            upstreams,
            started,
            &reloads,
            observe,
            etcd.as_ref(),
        )));
        let mut server = AdminServer {
            state,
            listen: config.listen,
            addr: config.listen,
            enabled: false,
            upstreams: Arc::clone(upstreams),
            started,
            reloads,
            observe: observe.clone(),
            stop: None,
            etcd,
        };
        if config.enabled {
            let (socket, addr) = bind(config.listen)?;
            server.serve(control, socket, addr);
        }
        Ok(server)
    }

    fn serve(&mut self, control: &Control, socket: std::net::TcpListener, addr: SocketAddr) {
        // The old server (if any) stops accepting as its stopper drops.
        self.stop = Some(control.serve_admin(socket, Arc::clone(&self.state)));
        self.addr = addr;
        self.enabled = true;
    }

    /// Applies a changed `[admin]`: the new settings serve the next request; a new `listen`
    /// address (or turning it on) is bound first (if it cannot be, nothing changes) and the
    /// old one closed; `enabled = false` stops the server.
    pub(super) fn reconfigure(
        &mut self,
        control: &Control,
        config: &AdminConfig,
    ) -> anyhow::Result<()> {
        let bound = if config.enabled && (!self.enabled || config.listen != self.listen) {
            Some(bind(config.listen)?)
        } else {
            None
        };
        self.state.store(admin(
            config,
            &self.upstreams,
            self.started,
            &self.reloads,
            &self.observe,
            self.etcd.as_ref(),
        ));
        self.listen = config.listen;
        match bound {
            Some((socket, addr)) => self.serve(control, socket, addr),
            None if !config.enabled => {
                self.stop = None;
                self.enabled = false;
                self.addr = config.listen;
            }
            None => {}
        }
        Ok(())
    }
}
