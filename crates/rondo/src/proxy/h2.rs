//! Client connections served by hyper: HTTP/2 (h2c with prior knowledge on the HTTP/1.1
//! port, or h2 by ALPN), and every connection of a listener that routes to an upstream
//! speaking HTTP/2 to its backends (hyper's automatic HTTP/1.1-or-HTTP/2 server then, so an
//! HTTP/1.1 client's request can become a stream to an HTTP/2 backend). Each request goes
//! through [`super::relay`], and from there through the forwarding policy like any other.
//!
//! hyper's server limits are set here explicitly rather than left to its defaults, each
//! against one abuse (docs/reliability.md has the tests):
//!
//! | limit | value | against |
//! |---|---|---|
//! | concurrent streams | listener's `http2_max_concurrent_streams` (128) | one connection holding a worker's worth of backend requests |
//! | header list size | listener's `max_header_bytes` (16 KiB), as for HTTP/1.1 | huge heads; also bounds the CONTINUATION frames buffered for one head (h2 closes the connection with `ENHANCE_YOUR_CALM` past it) |
//! | resets of streams not yet served | [`MAX_PENDING_ACCEPT_RESETS`] | rapid reset (CVE-2023-44487): open and cancel streams faster than they are served |
//! | streams reset for protocol errors | [`MAX_LOCAL_ERROR_RESETS`] | a client that makes the server generate resets |
//! | keep-alive PING | every [`PING_INTERVAL`] of silence, answered within [`PING_TIMEOUT`] | dead peers holding streams |
//! | idle connection | listener's `idle_timeout`, then GOAWAY | idle connections holding descriptors |

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use super::stream::Io;
use super::{Frontend, Worker};

/// The client preface that opens every HTTP/2 connection (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Streams a client may reset before rondo accepted them, per connection, before the
/// connection is closed with GOAWAY `ENHANCE_YOUR_CALM`: the value h2 chose when it fixed the
/// rapid-reset attack, kept because a real client cancels streams it already sent, rarely
/// ones still queued.
const MAX_PENDING_ACCEPT_RESETS: usize = 20;

/// Streams rondo may reset because the client broke the protocol, per connection, before it
/// is closed with GOAWAY `ENHANCE_YOUR_CALM`. A well-behaved client causes none; 128 (h2's
/// default is 1024) still forgives a buggy one a few, and stops one that makes the server do
/// the work of a reset per frame.
const MAX_LOCAL_ERROR_RESETS: usize = 128;

/// A connection silent this long gets a PING (hyper sends none by default), so a peer that
/// vanished without a FIN does not hold its streams and descriptor until `idle_timeout`.
const PING_INTERVAL: Duration = Duration::from_secs(30);

/// How long the PING's answer may take before the connection is closed (hyper's default).
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Spawns hyper's per-connection and per-stream tasks on the worker's own thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalExec;

impl<F: Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// A socket whose first bytes were already read: they are replayed before the socket.
struct Rewind<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: Io> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                // Replayed: the connection may live for hours, the prefix need not.
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: Io> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    // Passed through, not left to the defaults (which write one slice per call): h2 writes a
    // DATA frame's 9-byte head and its payload as two slices, and hyper's HTTP/1.1 server
    // queues a head and a body; without these each became two writes, and the frame's head
    // a TCP segment of its own.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Which of hyper's servers reads the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Server {
    /// HTTP/2 only (the preface was seen, or ALPN chose h2).
    Http2,
    /// HTTP/1.1, or HTTP/2 when the connection opens with the preface.
    Auto,
}

/// Serves one client connection with hyper, its first bytes (`prefix`) already read.
pub(crate) async fn serve<S: Io + 'static>(
    stream: S,
    prefix: Vec<u8>,
    ip: Rc<str>,
    frontend: Arc<Frontend>,
    worker: Rc<Worker>,
    mut shutdown: watch::Receiver<bool>,
    server: Server,
) {
    // A reload that replaces the listener sends GOAWAY too: the streams open finish, new ones
    // go to a new connection, served under the new settings.
    let mut retirement = frontend.retirement();
    let io = TokioIo::new(Rewind {
        prefix,
        pos: 0,
        inner: stream,
    });
    let config = &frontend.config;
    let (header_timeout, max_header_bytes) = (config.header_timeout, config.max_header_bytes);
    let (max_streams, idle_timeout) = (config.http2_max_concurrent_streams, config.idle_timeout);
    // Busy for the connection's whole life, as the worker counts an HTTP/1.1 connection busy
    // through a request: a graceful shutdown (GOAWAY, or hyper's own for HTTP/1.1 clients of
    // a listener in front of HTTP/2 backends) waits for the streams in flight and their
    // bodies, and an idle connection closes at once.
    let holder = Rc::clone(&worker);
    let _busy = holder.busy();
    let streams = Rc::new(Streams::default());
    let counted = Rc::clone(&streams);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (frontend, worker, ip) = (Arc::clone(&frontend), Rc::clone(&worker), Rc::clone(&ip));
        let open = Streams::open(&counted);
        // Boxed: the stream's future holds the whole forwarding state (kilobytes), and hyper
        // moves it into the stream's task and again into the task's cell; a box moves as a
        // pointer. Built in its box (see `in_place`), not copied into it.
        super::in_place::boxed(|| async move {
            let _open = open;
            Ok::<_, Infallible>(super::relay::forward(req, &frontend, &worker, &ip).await)
        })
    });
    // hyper's HTTP/2 limits, the same whether the connection is HTTP/2 only or detected (two
    // builder types with the same methods, hence a macro rather than a function).
    macro_rules! http2_limits {
        ($h2:expr) => {
            $h2.timer(TokioTimer::new())
                .max_concurrent_streams(max_streams)
                .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX))
                .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
                .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESETS)
                .keep_alive_interval(PING_INTERVAL)
                .keep_alive_timeout(PING_TIMEOUT)
        };
    }
    // Serves until the connection ends; at shutdown, when the listener is retired, or after
    // `idle_timeout` without a stream, GOAWAY: streams already open finish, no new ones start.
    macro_rules! serve_then_drain {
        ($conn:expr) => {{
            let conn = $conn;
            tokio::pin!(conn);
            tokio::select! {
                _ = &mut conn => return,
                _ = shutdown.wait_for(|stop| *stop) => {}
                _ = retirement.wait_for(|retired| *retired) => {}
                () = streams.idle_for(idle_timeout) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }};
    }
    match server {
        Server::Http2 => {
            let mut builder = hyper::server::conn::http2::Builder::new(LocalExec);
            http2_limits!(builder);
            serve_then_drain!(builder.serve_connection(io, service));
        }
        Server::Auto => {
            let mut builder = hyper_util::server::conn::auto::Builder::new(LocalExec);
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(max_header_bytes.max(8192));
            http2_limits!(builder.http2());
            serve_then_drain!(builder.serve_connection(io, service));
        }
    }
}

/// A connection's streams being served, to tell when it is idle.
#[derive(Debug, Default)]
struct Streams {
    open: std::cell::Cell<usize>,
    /// Streams started or ended so far.
    changes: std::cell::Cell<u64>,
}

/// One stream counted as open until dropped.
struct OpenStream(Rc<Streams>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get().saturating_sub(1));
        self.0.changes.set(self.0.changes.get() + 1);
    }
}

impl Streams {
    fn open(this: &Rc<Streams>) -> OpenStream {
        this.open.set(this.open.get() + 1);
        this.changes.set(this.changes.get() + 1);
        OpenStream(Rc::clone(this))
    }

    /// Returns once no stream was open, started or ended for `limit` (checked every `limit`,
    /// so an idle connection lasts between one and two `limit`s).
    async fn idle_for(&self, limit: Duration) {
        loop {
            let seen = self.changes.get();
            tokio::time::sleep(limit).await;
            if self.open.get() == 0 && self.changes.get() == seen {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::proxy::test_sockets::connected;

    #[tokio::test]
    async fn a_replayed_socket_writes_every_slice_of_a_vectored_write_in_one_call() {
        let (mut client, server) = connected().await;
        let mut rewound = Rewind {
            prefix: b"PRI".to_vec(),
            pos: 0,
            inner: server,
        };
        assert!(rewound.is_write_vectored());
        // A DATA frame's head and its payload, as h2 hands them over.
        let (head, payload) = ([0u8, 0, 5, 0, 1, 0, 0, 0, 1], *b"hello");
        let slices = [IoSlice::new(&head), IoSlice::new(&payload)];
        let written = rewound.write_vectored(&slices).await.unwrap();
        assert_eq!(written, head.len() + payload.len());
        let mut arrived = [0u8; 14];
        client.read_exact(&mut arrived).await.unwrap();
        assert_eq!(arrived[..9], head);
        assert_eq!(arrived[9..], payload);
        // The replayed prefix still comes first on the read side.
        client.write_all(b" more").await.unwrap();
        let mut read = [0u8; 8];
        rewound.read_exact(&mut read).await.unwrap();
        assert_eq!(&read, b"PRI more");
    }
}
