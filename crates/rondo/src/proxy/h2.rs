//! Client connections served by hyper: HTTP/2 (h2c with prior knowledge on the HTTP/1.1
//! port, or h2 by ALPN), and every connection of a listener that routes to an upstream
//! speaking HTTP/2 to its backends (hyper's automatic HTTP/1.1-or-HTTP/2 server then, so an
//! HTTP/1.1 client's request can become a stream to an HTTP/2 backend). Each request goes
//! through [`super::relay`], and from there through the forwarding policy like any other.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use super::stream::Io;
use super::{Frontend, Worker};

/// The client preface that opens every HTTP/2 connection (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

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
    let io = TokioIo::new(Rewind {
        prefix,
        pos: 0,
        inner: stream,
    });
    let header_timeout = frontend.config.header_timeout;
    let max_header_bytes = frontend.config.max_header_bytes;
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (frontend, worker, ip) = (Arc::clone(&frontend), Rc::clone(&worker), Rc::clone(&ip));
        async move { Ok::<_, Infallible>(super::relay::forward(req, &frontend, &worker, &ip).await) }
    });
    match server {
        Server::Http2 => {
            let conn = hyper::server::conn::http2::Builder::new(LocalExec)
                .timer(TokioTimer::new())
                .serve_connection(io, service);
            tokio::pin!(conn);
            tokio::select! {
                _ = &mut conn => {}
                _ = shutdown.wait_for(|stop| *stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        }
        Server::Auto => {
            let mut builder = hyper_util::server::conn::auto::Builder::new(LocalExec);
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(max_header_bytes.max(8192));
            builder.http2().timer(TokioTimer::new());
            let conn = builder.serve_connection(io, service);
            tokio::pin!(conn);
            tokio::select! {
                _ = &mut conn => {}
                _ = shutdown.wait_for(|stop| *stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        }
    }
}
