//! A listener as the workers serve it: its settings, its routing table (host and path
//! prefix to upstream), the counters each upstream's requests report to, its connection
//! limit and TLS. [`crate::runtime`] builds one per listener at start and on reload; every
//! worker shares it through an `Arc`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use tokio::sync::watch;

use super::{forward, room};
use crate::config::{ListenerConfig, ListenerMode};
use crate::upstream::Upstream;

/// A listener as the workers serve it (HAProxy's "frontend"): its settings, routing table,
/// the upstreams it routes to with their counters, header rules, connection limit and TLS.
/// Built once per listener (and again on reload), shared by every worker.
#[derive(Debug)]
pub(crate) struct Frontend {
    pub(super) config: ListenerConfig,
    /// Index 0 is the listener's default upstream; routes point at the others.
    pub(super) upstreams: Vec<Arc<Upstream>>,
    routes: Vec<Route>,
    /// What each upstream's requests report to, aligned with `upstreams`.
    pub(super) reports: Vec<forward::Report>,
    /// Responses rondo gives before a request is routed (400, 408, …).
    pub(super) unrouted: Arc<crate::counters::ResponseCounts>,
    /// Each route's header rules, aligned with `upstreams` (index 0: none beyond the
    /// listener's own).
    pub(super) route_headers: Vec<crate::header_rules::Headers>,
    /// Open client connections against `max_client_connections`.
    pub(super) limit: room::ConnectionLimit,
    /// TLS termination, when the listener has `[listeners.tls]`.
    pub(crate) tls: Option<crate::tls::Terminator>,
    /// Set once a reload replaced or removed this version of the listener (see
    /// [`Frontend::retire`]); read on every keep-alive decision, so an atomic, not the watch.
    retired: AtomicBool,
    /// The same, for what waits on it: the accept loops, HTTP/2 connections.
    retirement: watch::Sender<bool>,
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
    pub(super) fn speaks_http2_upstream(&self) -> bool {
        self.upstreams.iter().any(|u| {
            let cfg = u.config_ref();
            cfg.protocol.may_use_h2(cfg.tls.is_some())
        })
    }

    /// The upstream (index into `upstreams`) for a request: the first route whose host and
    /// path prefix match, else the default.
    pub(super) fn route(&self, host: Option<&str>, path: &str) -> usize {
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

/// What a worker needs to start accepting on one listener: its own clone of the listening
/// socket and the listener's [`Frontend`], whose retirement stops the accept loop (the
/// worker also stops with the whole proxy).
#[derive(Debug)]
pub(crate) struct FrontendSocket {
    pub(crate) socket: std::net::TcpListener,
    pub(crate) frontend: Arc<Frontend>,
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
            retired: AtomicBool::new(false),
            retirement: watch::channel(false).0,
        })
    }

    /// Ends this version of the listener, replaced or removed by a reload: its accept loops
    /// stop, and its open connections stop taking requests under settings that no longer
    /// apply, as nginx's old workers do. The request in progress finishes and its response
    /// says `Connection: close`; idle HTTP/1.1 connections close (parked ones at the worker's
    /// next one-second sweep, those waiting in their task when they would park, or after
    /// one more request already on its way, which is never lost); HTTP/2 connections get a
    /// GOAWAY and finish their open streams.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.retirement.send_replace(true);
    }

    /// Whether [`retire`](Self::retire) was called: connections close after their request.
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Changes to `true` when the listener is retired.
    pub(crate) fn retirement(&self) -> watch::Receiver<bool> {
        self.retirement.subscribe()
    }
}
