//! One accepted client connection: counted against its listener's limit (room is made by
//! closing idle connections, else it is refused), then handed to the path its listener and
//! the client speak — HTTP/1.1 inline, or boxed: the TLS handshake, the TCP relay, the
//! redirect to HTTPS, hyper's HTTP/2 server.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::watch;

use super::{Frontend, Worker, h1, h2, redirect, room, tcp};
use crate::config::ListenerMode;

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
    stop: watch::Receiver<bool>,
) {
    let Some(_open) = admit(&frontend, &worker) else {
        return;
    };
    let _counted = frontend.reports[0].listener.connection();
    let _ = stream.set_nodelay(true);
    let plain_http1 = frontend.tls.is_none()
        && matches!(frontend.config.mode, ListenerMode::Http)
        && !frontend.config.redirect_https
        && !frontend.speaks_http2_upstream();
    let frontend = Arc::clone(&frontend);
    if plain_http1 {
        h1::serve(stream, peer, frontend, worker, stop).await;
    } else {
        Box::pin(serve_other(stream, peer, frontend, worker, stop)).await;
    }
}

/// A connection that is not plain HTTP/1.1: the TLS handshake when the listener terminates
/// TLS, then the TCP relay, HTTP/2 (negotiated by ALPN) or HTTP/1.1 (which also detects h2c).
async fn serve_other(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    frontend: Arc<Frontend>,
    worker: Rc<Worker>,
    stop: watch::Receiver<bool>,
) {
    let ip = || -> Rc<str> { peer.ip().to_canonical().to_string().into() };
    let Some(terminator) = &frontend.tls else {
        return match frontend.config.mode {
            ListenerMode::Tcp => tcp::serve(stream, peer, &frontend).await,
            ListenerMode::Http if frontend.config.redirect_https => {
                redirect::serve(stream, &frontend.config).await
            }
            ListenerMode::Http if frontend.speaks_http2_upstream() => {
                let server = h2::Server::Auto;
                h2::serve(stream, Vec::new(), ip(), frontend, worker, stop, server).await
            }
            ListenerMode::Http => h1::serve(stream, peer, frontend, worker, stop).await,
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
        ListenerMode::Tcp => tcp::serve(tls, peer, &frontend).await,
        ListenerMode::Http if h2 => {
            let server = h2::Server::Http2;
            h2::serve(tls, Vec::new(), ip(), frontend, worker, stop, server).await;
        }
        ListenerMode::Http if frontend.speaks_http2_upstream() => {
            let server = h2::Server::Auto;
            h2::serve(tls, Vec::new(), ip(), frontend, worker, stop, server).await;
        }
        ListenerMode::Http => h1::serve(tls, peer, frontend, worker, stop).await,
    }
}

/// Counts a new client connection against its listener's limit; at the limit, a batch of
/// idle connections is closed to make room (the oldest first, see [`room`]), and when none
/// is idle the new one is refused (closed at once, counted, logged once per episode).
fn admit<'s>(frontend: &'s Frontend, worker: &Worker) -> Option<room::Open<'s>> {
    if let Some(open) = frontend.limit.open() {
        return Some(open);
    }
    if worker.idle.make_room() > 0 {
        return Some(frontend.limit.open_anyway());
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
