//! The control thread: one single-threaded tokio runtime that runs every upstream's timer and
//! health-check loops and the admin API, away from the workers so none of it can delay a
//! proxied request.
//!
//! The runtime is built on the starting thread and its handle kept, so loops can be started
//! (an upstream added by a reload) and stopped (one removed) while it runs.

use std::sync::Arc;

use tokio::sync::watch;

use crate::admin::Admin;
use crate::upstream::Upstream;

/// A handle to the control thread's runtime.
#[derive(Debug)]
pub(super) struct Control {
    handle: tokio::runtime::Handle,
    /// The whole balancer's stop signal: every loop ends with it.
    stop: watch::Receiver<bool>,
}

/// Keeps an upstream's loops running; dropping it stops them (the upstream was removed).
#[derive(Debug)]
pub(super) struct UpstreamTasks {
    _stop: watch::Sender<bool>,
}

/// Resolves when `stop` says so or its sender is gone.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

impl Control {
    /// Starts the control thread; it runs until `stop` turns true.
    pub(super) fn start(
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<(Control, std::thread::JoinHandle<()>)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let until = stop.clone();
        let thread = std::thread::Builder::new()
            .name("rondo-control".into())
            .spawn(move || rt.block_on(stopped(until)))?;
        Ok((Control { handle, stop }, thread))
    }

    /// Serves the admin API on `socket` until the balancer stops.
    pub(super) fn serve_admin(&self, socket: std::net::TcpListener, admin: Arc<Admin>) {
        let stop = self.stop.clone();
        self.handle.spawn(async move {
            match tokio::net::TcpListener::from_std(socket) {
                Ok(listener) => crate::admin::serve(listener, admin, stopped(stop)).await,
                Err(e) => tracing::error!(error = %e, "cannot serve the admin API"),
            }
        });
    }

    /// Starts an upstream's timer and health-check loops; they run until the balancer stops
    /// or the returned handle is dropped.
    pub(super) fn spawn_upstream(&self, upstream: &Arc<Upstream>) -> UpstreamTasks {
        let (own, own_rx) = watch::channel(false);
        let until = |mut all: watch::Receiver<bool>, mut own: watch::Receiver<bool>| async move {
            tokio::select! {
                _ = all.wait_for(|s| *s) => {}
                _ = own.wait_for(|s| *s) => {}
            }
        };
        self.handle
            .spawn(Arc::clone(upstream).run_timers(until(self.stop.clone(), own_rx.clone())));
        self.handle
            .spawn(Arc::clone(upstream).run_health_checks(until(self.stop.clone(), own_rx)));
        UpstreamTasks { _stop: own }
    }
}
