//! TCP mode (`mode = "tcp"` on a listener): each client connection is relayed byte for byte
//! to one backend of the listener's upstream, like HAProxy's `mode tcp` and nginx's `stream`
//! module. It is for protocols rondo does not parse (databases, MQTT, TLS passthrough).
//!
//! The connection goes through the same forwarding policy as an HTTP request
//! ([`super::forward`]): the same pickers, and a backend that refuses or times out the
//! connect is reported to its breaker and passive ejection and the next one is tried
//! (nothing was sent, so any connect failure may go elsewhere), up to the upstream's `tries`. A backend's `max_connections` bounds its open
//! connections, since the lease is held for the connection's life. Bytes both ways are
//! counted per backend, and a connection silent both ways for the upstream's
//! `tunnel_timeout` is closed ([`super::tunnel`]).

use std::net::SocketAddr;

use balance::Backend;

use super::dial::dial;
use super::forward::{self, Delivered, Exchange, Facts, Origin, RequestView, SendError};
use super::respond::ErrorPage;
use super::stream::Io;
use super::tunnel::relay;
use super::{Frontend, Worker};
use crate::config::UpstreamConfig;
use crate::tls::BackendConn;
use crate::upstream::Upstream;

/// Relays `client` (a plain or TLS stream) to a backend until both directions are closed.
/// The connection counts as busy on `worker` all along, so a graceful shutdown gives it
/// `shutdown_grace` to end, as nginx's `stream` module and HAProxy's soft stop do.
pub(crate) async fn serve<C: Io>(
    client: C,
    peer: SocketAddr,
    frontend: &Frontend,
    worker: &Worker,
) {
    let _busy = worker.busy();
    let upstream = &*frontend.upstreams[0];
    let ip = peer.ip().to_canonical().to_string();
    let origin = Origin {
        client: &ip,
        listener: &frontend.config.name,
        protocol: "TCP",
        request_id: "-",
        report: &frontend.reports[0],
    };
    // Nothing is sent before the connect succeeds: every connect failure may go elsewhere.
    // TCP carries no request to hash: connections follow the algorithm's cycle.
    let facts = Facts {
        idempotent: true,
        replayable: true,
        priority: 0,
        affinity: Default::default(),
    };
    let mut exchange = TcpExchange {
        client,
        upstream,
        backend: None,
    };
    forward::forward(upstream, facts, origin, &mut exchange).await;
}

/// One TCP-mode connection as the forwarding policy sees it: "send" is the connect, "deliver"
/// the relay.
struct TcpExchange<'a, C> {
    client: C,
    upstream: &'a Upstream,
    /// The connected backend and its id.
    backend: Option<(BackendConn, String)>,
}

/// The status a connected attempt reports: the connection is the "response".
const CONNECTED: u16 = 200;

impl<C: Io> Exchange for TcpExchange<'_, C> {
    type Output = ();

    async fn send(&mut self, backend: &Backend, cfg: &UpstreamConfig) -> Result<u16, SendError> {
        let tls = self.upstream.tls();
        let connect = BackendConn::connect(backend.address(), tls.as_deref());
        let conn = dial(self.upstream, backend, cfg.connect_timeout, connect)
            .await
            .map_err(SendError::Backend)?;
        self.backend = Some((conn, backend.id().to_owned()));
        Ok(CONNECTED)
    }

    async fn deliver(&mut self, cfg: &UpstreamConfig, _set_cookie: Option<&str>) -> Delivered<()> {
        // The backend accepted the connection: that is its success, whatever the two ends
        // then do with it (the latency the policy records is the connect time).
        let Some((mut conn, id)) = self.backend.take() else {
            return Delivered {
                output: (),
                backend_ok: true,
                bytes_sent: 0,
                verdict_in_body: false,
            };
        };
        self.upstream.recorder().upgraded();
        let relayed = relay(&mut self.client, &mut conn, cfg.tunnel_timeout).await;
        self.upstream
            .recorder()
            .backend(&id)
            .relayed(relayed.from_client, relayed.from_backend);
        Delivered {
            output: (),
            backend_ok: true,
            bytes_sent: relayed.from_backend,
            verdict_in_body: false,
        }
    }

    fn discard(&mut self) {
        self.backend = None;
    }

    async fn refuse(&mut self, _status: Option<u16>, _page: &ErrorPage<'_>) -> ((), u64) {
        // No backend took the connection: closing it is all a TCP client can be told.
        ((), 0)
    }

    fn request_view(&self) -> RequestView<'_> {
        RequestView {
            method: "TCP",
            target: "-",
            referer: None,
            user_agent: None,
        }
    }
}
