//! The control thread: one single-threaded tokio runtime that runs every upstream's timer and
//! health-check loops and the admin API, away from the workers so none of it can delay a
//! proxied request.
//!
//! The runtime is built on the starting thread and its handle kept, so loops can be started
//! (an upstream added by a reload) and stopped (one removed, the admin server replaced) while
//! it runs. Each started task ends with the whole balancer or when its [`Stopper`] drops.

use std::sync::Arc;

use tokio::sync::watch;

use crate::admin::Admin;
use crate::config::ResolverConfig;
use crate::upstream::dns::{Resolver, ResolverError};
use crate::upstream::etcd::Etcd;
use crate::upstream::{Upstream, UpstreamSet};

/// A handle to the control thread's runtime.
#[derive(Debug)]
pub(super) struct Control {
    handle: tokio::runtime::Handle,
    /// The whole balancer's stop signal: every task ends with it.
    stop: watch::Receiver<bool>,
}

/// Keeps tasks started on the control thread running; dropping it stops them.
#[derive(Debug)]
pub(super) struct Stopper {
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

    /// Runs `future` on the calling thread in this runtime's context; the control thread
    /// drives its timers and I/O.
    pub(super) fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.handle.block_on(future)
    }

    /// A stop signal for a group of tasks: the [`Stopper`] and what the tasks watch.
    fn group() -> (Stopper, watch::Receiver<bool>) {
        let (own, own_rx) = watch::channel(false);
        (Stopper { _stop: own }, own_rx)
    }

    /// Resolves when the balancer stops or the group's [`Stopper`] drops.
    fn until(&self, own: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
        let (all, own) = (self.stop.clone(), own.clone());
        async move {
            tokio::select! {
                () = stopped(all) => {}
                () = stopped(own) => {}
            }
        }
    }

    /// Builds the DNS resolver in the control runtime's context (where its lookups run).
    pub(super) fn resolver(&self, config: &ResolverConfig) -> Result<Resolver, ResolverError> {
        let _context = self.handle.enter();
        Resolver::new(config)
    }

    /// Serves the admin API on `socket` until the balancer stops or the returned handle drops.
    pub(super) fn serve_admin(
        &self,
        socket: std::net::TcpListener,
        admin: Arc<arc_swap::ArcSwap<Admin>>,
    ) -> Stopper {
        let (stopper, own) = Self::group();
        let until = self.until(&own);
        self.handle.spawn(async move {
            match tokio::net::TcpListener::from_std(socket) {
                Ok(listener) => crate::admin::serve(listener, admin, until).await,
                Err(e) => tracing::error!(error = %e, "cannot serve the admin API"),
            }
        });
        stopper
    }

    /// Reopens the access log file on SIGUSR1 (logrotate's `postrotate`), or ignores the
    /// signal without a file, until the balancer stops or the returned handle drops (a
    /// reload replaced the log). The handler is installed before this returns, so no
    /// SIGUSR1 sent once start-up is over meets the signal's default action (exit).
    pub(super) fn reopen_on_sigusr1(&self, log: crate::access_log::AccessLog) -> Stopper {
        use tokio::signal::unix::{SignalKind, signal};
        let (stopper, own) = Self::group();
        let until = self.until(&own);
        let usr1 = {
            let _context = self.handle.enter();
            signal(SignalKind::user_defined1())
        };
        match usr1 {
            Ok(usr1) => {
                self.handle.spawn(async move {
                    tokio::select! {
                        () = crate::access_log::reopen_on_sigusr1(log, usr1) => {}
                        () = until => {}
                    }
                });
            }
            Err(e) => tracing::error!(error = %e, "cannot handle SIGUSR1 (access log reopening)"),
        }
        stopper
    }

    /// Reads and watches etcd for the upstreams of `upstreams` that use it, until the
    /// balancer stops.
    pub(super) fn spawn_etcd(&self, etcd: &Arc<Etcd>, upstreams: &Arc<UpstreamSet>) {
        self.handle
            .spawn(Arc::clone(etcd).run(Arc::clone(upstreams), stopped(self.stop.clone())));
    }

    /// Starts an upstream's timer, health-check and (with a resolver) DNS loops; they run
    /// until the balancer stops or the returned handle drops (the upstream was removed).
    pub(super) fn spawn_upstream(
        &self,
        upstream: &Arc<Upstream>,
        resolver: Option<&Resolver>,
    ) -> Stopper {
        let (stopper, own) = Self::group();
        if let Some(resolver) = resolver {
            self.handle
                .spawn(Arc::clone(upstream).run_dns(resolver.clone(), self.until(&own)));
        }
        self.handle
            .spawn(Arc::clone(upstream).run_timers(self.until(&own)));
        self.handle
            .spawn(Arc::clone(upstream).run_history(self.until(&own)));
        self.handle
            .spawn(Arc::clone(upstream).run_health_checks(self.until(&own)));
        stopper
    }
}
