//! One accepted client connection: counted against its listener's limit (room is made by
//! closing idle connections, else it is refused), then handed to the path its listener and
//! the client speak — HTTP/1.1 inline, or boxed: the TLS handshake, the TCP relay, the
//! redirect to HTTPS, hyper's HTTP/2 server.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use super::parked::ParkedConn;
use super::spread::Counted;
use super::{Frontend, Worker, h1, h2, redirect, tcp};
use crate::config::ListenerMode;
use crate::counters::ConnectionGuard;

/// One accepted connection, counted against its listener while it lives (the task of every
/// client connection runs this).
///
/// Plain HTTP/1.1, the common case, runs inline in the connection's task; every other path
/// is boxed, so an idle keep-alive connection does not carry the size of the largest one
/// (a TLS handshake's or hyper's HTTP/2 server's state) in its task.
pub(super) async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    frontend: Arc<Frontend>,
    worker: Rc<Worker>,
    load: Counted,
) {
    let Some(admitted) = admit(frontend, &worker, load) else {
        return;
    };
    let frontend = admitted.frontend();
    let plain_http1 = frontend.tls.is_none()
        && matches!(frontend.config.mode, ListenerMode::Http)
        && !frontend.config.redirect_https
        && !frontend.speaks_http2_upstream();
    if plain_http1 {
        h1::serve(stream, client_ip(peer), admitted, worker, h1::Start::New).await;
    } else {
        Box::pin(serve_other(stream, peer, admitted, worker)).await;
    }
}

/// Serves a parked connection again: its client's next request has arrived (or the client
/// closed), see [`super::parked`].
pub(super) async fn resume(conn: ParkedConn, worker: Rc<Worker>) {
    let ParkedConn {
        stream,
        ip,
        admitted,
        ..
    } = conn;
    h1::serve(stream, ip, admitted, worker, h1::Start::Readable).await;
}

/// The client's address as logs and headers show it (an IPv4 client of an IPv6 socket as
/// IPv4).
fn client_ip(peer: SocketAddr) -> String {
    peer.ip().to_canonical().to_string()
}

/// A client connection admitted by its listener: counted against `max_client_connections`
/// and in the listener's open connections until dropped. It owns what it needs, so a
/// connection can wait parked without its task and keep its place.
#[derive(Debug)]
pub(super) struct Admitted {
    frontend: Arc<Frontend>,
    _counted: ConnectionGuard,
    /// Counts it in its worker's load (see [`super::spread`]).
    _load: Counted,
}

impl Admitted {
    /// A connection already counted against `frontend`'s limit, now counted in its open
    /// connections too.
    fn counted(frontend: Arc<Frontend>, load: Counted) -> Admitted {
        let _counted = frontend.reports[0].listener.connection();
        Admitted {
            frontend,
            _counted,
            _load: load,
        }
    }

    /// The listener the connection came in on.
    pub(super) fn frontend(&self) -> &Arc<Frontend> {
        &self.frontend
    }
}

#[cfg(test)]
impl Admitted {
    /// A connection admitted by `frontend` without a worker (unit tests).
    pub(super) fn new_for_test(frontend: Arc<Frontend>) -> Admitted {
        frontend.limit.open_anyway();
        Admitted::counted(frontend, Counted::alone())
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.frontend.limit.close();
    }
}

/// A connection that is not plain HTTP/1.1: the TLS handshake when the listener terminates
/// TLS, then the TCP relay, HTTP/2 (negotiated by ALPN) or HTTP/1.1 (which also detects h2c).
async fn serve_other(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    admitted: Admitted,
    worker: Rc<Worker>,
) {
    let frontend = Arc::clone(admitted.frontend());
    let stop = worker.stop();
    let ip = || -> Rc<str> { client_ip(peer).into() };
    let Some(terminator) = &frontend.tls else {
        return match frontend.config.mode {
            ListenerMode::Tcp => tcp::serve(stream, peer, &frontend, &worker).await,
            ListenerMode::Http if frontend.config.redirect_https => {
                redirect::serve(stream, &frontend.config).await
            }
            ListenerMode::Http if frontend.speaks_http2_upstream() => {
                let server = h2::Server::Auto;
                h2::serve(stream, Vec::new(), ip(), frontend, worker, stop, server).await
            }
            ListenerMode::Http => {
                h1::serve(stream, client_ip(peer), admitted, worker, h1::Start::New).await
            }
        };
    };
    // The handshake is part of the request head's time: a client that stalls in it is cut
    // off like a slow head.
    let limit = frontend.config.header_timeout;
    let tls = match tokio::time::timeout(limit, terminator.acceptor().accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(listener = %frontend.config.name, client = %peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    match frontend.config.mode {
        ListenerMode::Tcp => tcp::serve(tls, peer, &frontend, &worker).await,
        ListenerMode::Http if h2 => {
            let server = h2::Server::Http2;
            h2::serve(tls, Vec::new(), ip(), frontend, worker, stop, server).await;
        }
        ListenerMode::Http if frontend.speaks_http2_upstream() => {
            let server = h2::Server::Auto;
            h2::serve(tls, Vec::new(), ip(), frontend, worker, stop, server).await;
        }
        ListenerMode::Http => {
            h1::serve(tls, client_ip(peer), admitted, worker, h1::Start::New).await
        }
    }
}

/// Counts a new client connection against its listener's limit; at the limit, a batch of
/// idle connections is closed to make room (the oldest first, see [`room`]), and when none
/// is idle the new one is refused (closed at once, counted, logged once per episode).
fn admit(frontend: Arc<Frontend>, worker: &Worker, load: Counted) -> Option<Admitted> {
    if frontend.limit.open() {
        return Some(Admitted::counted(frontend, load));
    }
    if worker.idle.make_room() > 0 {
        frontend.limit.open_anyway();
        return Some(Admitted::counted(frontend, load));
    }
    frontend.limit.refuse();
    frontend.reports[0]
        .listener
        .refused
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if frontend.limit.refused().is_power_of_two() {
        tracing::warn!(
            listener = frontend.config.name.as_str(),
            max_client_connections = frontend.limit.max(),
            refused = frontend.limit.refused(),
            "connection refused: the listener is at max_client_connections and none is idle"
        );
    }
    None
}
