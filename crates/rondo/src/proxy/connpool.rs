//! Idle keep-alive connections to backends, one pool per worker thread, for every HTTP/1.1
//! request to a backend (those of HTTP/1.1 clients, [`super::h1`], and those hyper serves,
//! [`super::h1_upstream`]).
//!
//! Each worker keeps its own connections (as nginx's `keepalive` does per worker), so taking
//! and returning one is a `RefCell` borrow, never a lock. The most recently used connection is
//! taken first (it is the least likely to have been closed by the backend's idle timeout),
//! and a connection the backend has closed or written to while idle (the reactor already
//! marked it readable) is dropped instead of being used, so a request rarely meets a
//! connection that died while pooled.
//!
//! Connections are kept by backend address *and* TLS setup: a reload that turns an
//! upstream's TLS on or off (or changes its CA, client certificate or server name) never hands
//! a request a connection opened under the old setup. Each pooled TLS connection holds its
//! setup's `Arc`, so the key (the `Arc`'s address) cannot be reused while it is pooled.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rustc_hash::FxHashMap;
use tokio::net::TcpStream;

use crate::counters::UpstreamCounters;
use crate::tls::{BackendConn, UpstreamTls};
use tokio::time::Instant;

struct Idle {
    stream: BackendConn,
    /// The TLS setup it was opened with, kept alive while the connection is pooled (its
    /// address is part of the key).
    _tls: Option<Arc<UpstreamTls>>,
    /// When it stops being worth keeping (the upstream's `keepalive_timeout` after its last
    /// use).
    expires: Instant,
    /// Counts the connection in its upstream's idle gauge while it is pooled.
    _counted: Counted,
}

/// One connection in an upstream's `rondo_upstream_connections_idle` gauge, for as long as
/// this value lives: however a pooled connection leaves the pool (taken, expired, cleared),
/// the gauge follows.
struct Counted(Arc<UpstreamCounters>);

impl Counted {
    fn new(counters: &Arc<UpstreamCounters>) -> Self {
        counters.pool_idle.fetch_add(1, Ordering::Relaxed);
        Counted(Arc::clone(counters))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.pool_idle.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a pooled backend connection is found by, in both pools of the worker (this one, and
/// the HTTP/2 connections): the backend's address and the TLS setup it speaks (the setup's
/// address; 0 for plain TCP), so two upstreams that reach one address with different TLS
/// settings never share a connection.
pub(crate) type Key = (SocketAddr, usize);

/// The [`Key`] of connections to `addr` made with `tls`.
pub(crate) fn key(addr: SocketAddr, tls: Option<&Arc<UpstreamTls>>) -> Key {
    (addr, tls.map_or(0, |t| Arc::as_ptr(t) as usize))
}

/// The idle connections of one worker, by backend address and TLS setup (Fx-hashed: SipHash
/// was 0.7 % of a request's CPU, and the keys are the configuration's backends).
#[derive(Default)]
pub(crate) struct ConnPool {
    idle: RefCell<FxHashMap<Key, Vec<Idle>>>,
}

impl std::fmt::Debug for ConnPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.idle.borrow();
        f.debug_struct("ConnPool")
            .field("backends", &idle.len())
            .finish()
    }
}

/// True when the backend closed the connection or sent something unasked while it was idle.
/// tokio's readiness flag says so without a system call when it is clear (the common case);
/// when it is set, a peek confirms it: a response that ended on a read filling all its room
/// (a long body, read in rooms sized to what is left of it) leaves the flag set with nothing
/// to read, as tokio clears it only after a short read. Trusting the flag alone dropped
/// such connections: 0.006 new backend connections per request on 256 KiB responses.
fn went_stale(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    matches!(stream.poll_read_ready(&mut cx), Poll::Ready(_)) && super::room::has_input(stream)
}

impl ConnPool {
    /// An idle connection to `addr` speaking `tls` (`None`: plain TCP) that has not expired,
    /// if there is one.
    pub(crate) fn take(
        &self,
        addr: SocketAddr,
        tls: Option<&Arc<UpstreamTls>>,
    ) -> Option<BackendConn> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&key(addr, tls))?;
        let now = crate::clock::loop_now();
        while let Some(conn) = list.pop() {
            if now < conn.expires && !went_stale(conn.stream.tcp()) {
                return Some(conn.stream);
            }
        }
        None
    }

    /// Returns a connection to `addr` opened with `tls` after a complete exchange, to be
    /// kept for `max_age` and counted in `counters`' idle gauge; dropped if that backend
    /// already has `max` idle connections of this setup.
    pub(crate) fn put(
        &self,
        (addr, tls): (SocketAddr, Option<Arc<UpstreamTls>>),
        stream: BackendConn,
        counters: &Arc<UpstreamCounters>,
        max: usize,
        max_age: Duration,
    ) {
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(key(addr, tls.as_ref())).or_default();
        if list.len() < max {
            list.push(Idle {
                stream,
                _tls: tls,
                expires: crate::clock::loop_now() + max_age,
                _counted: Counted::new(counters),
            });
        }
    }

    /// Closes every idle connection: descriptors ran short, and a new connection when a
    /// request needs one costs less than refusing clients.
    pub(crate) fn clear(&self) {
        self.idle.borrow_mut().clear();
    }

    /// Closes connections that expired or were closed by their backend.
    pub(crate) fn sweep(&self) {
        let mut idle = self.idle.borrow_mut();
        let now = Instant::now();
        for list in idle.values_mut() {
            list.retain(|c| now < c.expires && !went_stale(c.stream.tcp()));
        }
        idle.retain(|_, list| !list.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::proxy::test_sockets::connected;

    /// `ours` after it read exactly what `backend` sent, into a buffer just that large: the
    /// readiness flag stays set with nothing left to read.
    async fn read_exactly_all(backend: &mut TcpStream, ours: &TcpStream) {
        backend.write_all(b"0123456789").await.unwrap();
        let mut buf = [0u8; 10];
        let mut got = 0;
        while got < buf.len() {
            ours.readable().await.unwrap();
            match ours.try_read(&mut buf[got..]) {
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[tokio::test]
    async fn a_connection_read_to_its_last_byte_is_not_stale_one_written_to_or_closed_is() {
        let (mut backend, ours) = connected().await;
        read_exactly_all(&mut backend, &ours).await;
        assert!(!went_stale(&ours), "nothing was sent after the response");
        assert!(!went_stale(&ours), "the peek leaves it as it was");

        backend.write_all(b"unasked").await.unwrap();
        ours.readable().await.unwrap();
        assert!(went_stale(&ours), "the backend sent bytes nobody asked for");

        let (mut backend, ours) = connected().await;
        read_exactly_all(&mut backend, &ours).await;
        drop(backend);
        ours.readable().await.unwrap();
        assert!(went_stale(&ours), "the backend closed it");
    }
}
