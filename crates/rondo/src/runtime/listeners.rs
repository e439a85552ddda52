//! Listeners as the runtime keeps them: the bound socket (cloned for each worker) and the
//! frontend whose retirement stops its accept loops and winds its connections down, so a
//! reload can start, replace or stop one listener while the others keep accepting.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::Running;
use crate::config::{ListenerConfig, ListenerMode};
use crate::proxy::{self, Frontend, FrontendSocket, Observe};
use crate::upstream::Upstream;

/// A listener the workers accept on.
#[derive(Debug)]
pub(super) struct LiveListener {
    pub(super) name: String,
    bind: SocketAddr,
    pub(super) addr: SocketAddr,
    socket: std::net::TcpListener,
    frontend: Arc<Frontend>,
}

impl LiveListener {
    /// Binds a new socket for `l`.
    pub(super) fn bind(
        l: &ListenerConfig,
        frontend: Arc<Frontend>,
    ) -> anyhow::Result<LiveListener> {
        let socket = proxy::bind(l.bind)
            .with_context(|| format!("listener `{}`: cannot listen on {}", l.name, l.bind))?;
        Self::on(l, socket, frontend)
    }

    /// A listener on `socket`, new or kept from the version a reload replaces (which may
    /// have changed its mode, hence the accept option set every time).
    fn on(
        l: &ListenerConfig,
        socket: std::net::TcpListener,
        frontend: Arc<Frontend>,
    ) -> anyhow::Result<LiveListener> {
        proxy::defer_accept(&socket, accept_hold(l.mode, l.tls.is_some()))
            .with_context(|| format!("listener `{}`: cannot set TCP_DEFER_ACCEPT", l.name))?;
        Ok(LiveListener {
            name: l.name.clone(),
            bind: l.bind,
            addr: socket.local_addr()?,
            socket,
            frontend,
        })
    }

    /// What one worker needs to accept on this listener.
    pub(super) fn accept(&self) -> std::io::Result<FrontendSocket> {
        Ok(FrontendSocket {
            socket: self.socket.try_clone()?,
            frontend: Arc::clone(&self.frontend),
        })
    }

    /// Stops its accept loops; open connections finish their request and close (see
    /// [`Frontend::retire`]).
    fn stop(self) {
        self.frontend.retire();
    }
}

/// How long the kernel may hold a new connection for its first bytes: where the client
/// speaks first (HTTP, a TLS handshake), [`proxy::DEFER_ACCEPT`]; not at all in plain TCP
/// mode, whose protocol may start with the server.
fn accept_hold(mode: ListenerMode, tls: bool) -> Duration {
    let client_speaks_first = matches!(mode, ListenerMode::Http) || tls;
    if client_speaks_first {
        proxy::DEFER_ACCEPT
    } else {
        Duration::ZERO
    }
}

impl Running {
    /// Re-reads an unchanged listener's certificate files: new handshakes use them, open
    /// connections keep theirs. A bad file is reported and the current certificates stay.
    pub(super) fn reload_certificates(&self, l: &ListenerConfig) -> anyhow::Result<()> {
        let Some(tls) = &l.tls else { return Ok(()) };
        let frontend = self
            .listeners
            .lock()
            .iter()
            .find(|x| x.name == l.name)
            .map(|x| Arc::clone(&x.frontend));
        let Some(terminator) = frontend.as_ref().and_then(|s| s.tls.as_ref()) else {
            return Ok(());
        };
        let warnings = terminator.reload(tls).with_context(|| {
            format!(
                "listener `{}`: certificates not reloaded, the current ones keep serving",
                l.name
            )
        })?;
        for warning in warnings {
            tracing::warn!(listener = %l.name, "{warning}");
        }
        Ok(())
    }

    /// Starts (or restarts, with new settings) a listener on every worker, reusing its
    /// socket when the bind address is unchanged so no connection is refused meanwhile, then
    /// stops the accept loops of the version it replaces. `upstreams` are the live ones the
    /// listener may route to.
    pub(super) fn apply_listener(
        &self,
        l: &ListenerConfig,
        upstreams: &[Arc<Upstream>],
        observe: &Observe,
    ) -> anyhow::Result<()> {
        let find = |name: &str| {
            upstreams
                .iter()
                .find(|u| u.name() == name)
                .cloned()
                .with_context(|| {
                    format!(
                        "listener `{}` uses upstream `{name}`, which is not running",
                        l.name
                    )
                })
        };
        let frontend = Arc::new(Frontend::new(l, find, observe)?);
        let mut live = self.listeners.lock();
        let existing = live.iter().position(|x| x.name == l.name);
        let listener = match existing {
            Some(i) if live[i].bind == l.bind => {
                LiveListener::on(l, live[i].socket.try_clone()?, frontend)?
            }
            _ => LiveListener::bind(l, frontend)?,
        };
        for worker in &self.workers {
            let _ = worker.send(listener.accept()?);
        }
        if let Some(i) = existing {
            live.remove(i).stop();
        }
        live.push(listener);
        Ok(())
    }

    /// Stops accepting on a listener; its open connections finish their request and close.
    pub(super) fn remove_listener(&self, name: &str) {
        let mut live = self.listeners.lock();
        if let Some(i) = live.iter().position(|x| x.name == name) {
            live.remove(i).stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepting_waits_for_the_first_bytes_unless_the_server_may_speak_first() {
        assert_eq!(accept_hold(ListenerMode::Http, false), proxy::DEFER_ACCEPT);
        assert_eq!(accept_hold(ListenerMode::Http, true), proxy::DEFER_ACCEPT);
        assert_eq!(accept_hold(ListenerMode::Tcp, true), proxy::DEFER_ACCEPT);
        assert_eq!(accept_hold(ListenerMode::Tcp, false), Duration::ZERO);
    }
}
