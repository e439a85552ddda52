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
use crate::admin::{Admin, metrics};
use crate::config::AdminConfig;
use crate::proxy;
use crate::upstream::UpstreamSet;

/// A running admin server.
#[derive(Debug)]
pub(super) struct AdminServer {
    state: Arc<ArcSwap<Admin>>,
    listen: SocketAddr,
    pub(super) addr: SocketAddr,
    upstreams: Arc<UpstreamSet>,
    /// When the balancer started, for the uptime it reports.
    started: Instant,
    /// Dropping it stops the server.
    stop: Stopper,
}

/// The state the admin API serves for `config`.
fn admin(config: &AdminConfig, upstreams: &Arc<UpstreamSet>, started: Instant) -> Arc<Admin> {
    Arc::new(Admin::new(
        Arc::clone(upstreams),
        metrics::registry(Arc::clone(upstreams)),
        config.token.clone(),
        config.listen,
        started,
    ))
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
    /// control thread.
    pub(super) fn start(
        control: &Control,
        config: &AdminConfig,
        upstreams: &Arc<UpstreamSet>,
        started: Instant,
    ) -> anyhow::Result<AdminServer> {
        let (socket, addr) = bind(config.listen)?;
        let state = Arc::new(ArcSwap::new(admin(config, upstreams, started)));
        let stop = control.serve_admin(socket, Arc::clone(&state));
        Ok(AdminServer {
            state,
            listen: config.listen,
            addr,
            upstreams: Arc::clone(upstreams),
            started,
            stop,
        })
    }

    /// Applies a changed `[admin]`: the new settings serve the next request; a new `listen`
    /// address is bound first (if it cannot be, nothing changes) and the old one closed.
    pub(super) fn reconfigure(
        &mut self,
        control: &Control,
        config: &AdminConfig,
    ) -> anyhow::Result<()> {
        let moved = if config.listen == self.listen {
            None
        } else {
            Some(bind(config.listen)?)
        };
        self.state
            .store(admin(config, &self.upstreams, self.started));
        if let Some((socket, addr)) = moved {
            // The old server stops accepting as its stopper drops.
            self.stop = control.serve_admin(socket, Arc::clone(&self.state));
            self.listen = config.listen;
            self.addr = addr;
        }
        Ok(())
    }
}
