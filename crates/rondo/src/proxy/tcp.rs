//! TCP mode (`mode = "tcp"` on a listener): each client connection is relayed byte for byte
//! to one backend of the listener's upstream, like HAProxy's `mode tcp` and nginx's `stream`
//! module. It is for protocols rondo does not parse (databases, MQTT, TLS passthrough).
//!
//! The connection goes through the same forwarding policy as an HTTP request
//! ([`super::forward`]): the same pickers, and a backend that refuses or times out the
//! connect is reported to its breaker and passive ejection and the next one is tried
//! (nothing was sent, so any connect failure may go elsewhere), up to the upstream's `tries`. A backend's `max_connections` bounds its open
//! connections, since the lease is held for the connection's life. Bytes both ways are
//! counted per backend.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use balance::Backend;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::timeout;

use super::Frontend;
use super::forward::{self, Delivered, Exchange, Facts, Failure, Origin, RequestView, SendError};
use super::respond::ErrorPage;
use super::stream::Io;
use crate::config::UpstreamConfig;
use crate::tls::BackendConn;
use crate::upstream::Upstream;

/// Relays `client` (a plain or TLS stream) to a backend until both directions are closed.
pub(crate) async fn serve<C: Io>(client: C, peer: SocketAddr, frontend: &Frontend) {
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
        let addr = backend.address();
        let limit = cfg.connect_timeout;
        let tls = self.upstream.tls();
        match timeout(limit, BackendConn::connect(addr, tls.as_deref())).await {
            Ok(Ok(conn)) => {
                self.backend = Some((conn, backend.id().to_owned()));
                Ok(CONNECTED)
            }
            Ok(Err(e)) => Err(SendError::Backend(Failure::connect(addr, &e))),
            Err(_) => Err(SendError::Backend(Failure::connect_timeout(addr, limit))),
        }
    }

    async fn deliver(&mut self, _cfg: &UpstreamConfig, _set_cookie: Option<&str>) -> Delivered<()> {
        // The backend accepted the connection: that is its success, whatever the two ends
        // then do with it (the latency the policy records is the connect time).
        let Some((mut conn, id)) = self.backend.take() else {
            return Delivered {
                output: (),
                backend_ok: true,
                bytes_sent: 0,
            };
        };
        self.upstream.recorder().upgraded();
        let (sent, received) = (Cell::new(0), Cell::new(0));
        {
            let mut client = Counted::new(&mut self.client, &sent);
            let mut backend = Counted::new(&mut conn, &received);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
        }
        self.upstream
            .recorder()
            .backend(&id)
            .relayed(sent.get(), received.get());
        Delivered {
            output: (),
            backend_ok: true,
            bytes_sent: received.get(),
        }
    }

    fn discard(&mut self) {
        self.backend = None;
    }

    async fn refuse(&mut self, _status: Option<u16>, _page: &ErrorPage<'_>) {
        // No backend took the connection: closing it is all a TCP client can be told.
    }

    fn request_view(&self) -> RequestView<'_> {
        RequestView {
            method: "TCP",
            target: "-",
            referer: None,
            user_agent: None,
            bytes_received: 0,
        }
    }
}

/// A stream that counts the bytes read from it: wrapped around each end, it measures both
/// directions even when the relay ends in an error.
struct Counted<'a, S> {
    inner: S,
    read: &'a Cell<u64>,
}

impl<'a, S> Counted<'a, S> {
    fn new(inner: S, read: &'a Cell<u64>) -> Self {
        Counted { inner, read }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        self.read.set(self.read.get() + n);
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
