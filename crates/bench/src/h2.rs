//! The HTTP/2 client (`--http2`, `--grpc-unary`): hyper's, over cleartext with prior
//! knowledge (h2c) or TLS with ALPN `h2`.
//!
//! HTTP/2 framing (HPACK, flow control, streams) is not worth writing again, and a load test
//! over HTTP/2 measures the server's multiplexing more than the client's parsing, so this path
//! uses hyper. Each connection task owns one HTTP/2 connection and has one stream open at a
//! time, so `-c` means the same thing (requests in flight) in both protocols. Unlike the
//! HTTP/1.1 path, hyper builds a request and a header map per request.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use super::tls::{Stream, Tls, connect};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use super::error::{ErrorKind, ErrorMessage, RequestError};
use super::grpc::grpc_status_in;
use super::h1::{Phase, Response};
use super::spec::Prepared;

/// A TCP stream that counts the bytes read from it, so `bytes_read` means the same as for
/// HTTP/1.1: everything received, framing included.
#[derive(Debug)]
struct Counting {
    inner: Stream,
    read: Arc<AtomicU64>,
}

impl AsyncRead for Counting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            self.read.fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }
}

impl AsyncWrite for Counting {
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

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The current connection: where requests go, and news of its end.
#[derive(Debug)]
struct Live {
    sender: SendRequest<Full<Bytes>>,
    /// Resolves when hyper's connection task has ended (its sender half is dropped then).
    ended: oneshot::Receiver<()>,
}

/// One HTTP/2 connection to the target, reconnecting as needed.
#[derive(Debug)]
pub(crate) struct H2Conn {
    addr: SocketAddr,
    /// TLS settings of an `https://` target.
    tls: Option<Tls>,
    live: Option<Live>,
    read: Arc<AtomicU64>,
    /// Whether the current request was handed to hyper (it may have reached the server).
    sending: bool,
    pub(crate) phase: Phase,
}

impl H2Conn {
    pub(crate) fn new(addr: SocketAddr, tls: Option<Tls>) -> Self {
        H2Conn {
            addr,
            tls,
            live: None,
            read: Arc::new(AtomicU64::new(0)),
            sending: false,
            phase: Phase::Exchanging,
        }
    }

    /// Bytes read from the network on this connection so far (all streams).
    pub(crate) fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Forgets the current connection (after a timeout or when the run ends mid-request).
    pub(crate) fn discard(&mut self) {
        self.live = None;
    }

    async fn connect(&mut self) -> Result<Live, RequestError> {
        self.phase = Phase::Connecting;
        let stream = connect(self.addr, self.tls.as_ref())
            .await
            .map_err(RequestError::connect)?;
        let io = TokioIo::new(Counting {
            inner: stream,
            read: Arc::clone(&self.read),
        });
        let (sender, connection) =
            http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| RequestError {
                    kind: ErrorKind::Connect,
                    message: ErrorMessage::Hyper(e),
                })?;
        // The connection future drives the socket; it ends when the sender is dropped or the
        // server goes away, and its error (if any) reaches us through `send_request`. Its end
        // is told through `ended` (see `exchange`).
        let (end, ended) = oneshot::channel();
        tokio::spawn(async move {
            let _ = connection.await;
            drop(end);
        });
        self.phase = Phase::Exchanging;
        Ok(Live { sender, ended })
    }

    pub(crate) async fn request(
        &mut self,
        prepared: &Prepared,
        key: Option<u32>,
        backend_value: &mut Vec<u8>,
    ) -> Result<Response, RequestError> {
        let mut resent = false;
        loop {
            let fresh = self.live.is_none();
            match self.exchange(prepared, key, backend_value).await {
                Ok(response) => return Ok(response),
                Err(err) => {
                    self.live = None;
                    // A request the server certainly did not process goes once more on a
                    // new connection, as on HTTP/1.1: one hyper never sent because the
                    // connection was closing, or one the server refused with REFUSED_STREAM.
                    // A stream ended by GOAWAY is not resent: h2 reports the same error for
                    // streams above the GOAWAY's last stream (unprocessed) and for streams
                    // below it that the server dropped when it closed (maybe processed), and
                    // a resend must not count a request twice at the server.
                    let unsent = matches!(&err.message, ErrorMessage::Hyper(e) if e.is_canceled() || refused(e))
                        || (err.kind == ErrorKind::Closed && !self.sending);
                    if unsent && !fresh && !resent {
                        resent = true;
                        continue;
                    }
                    return Err(err);
                }
            }
        }
    }

    async fn exchange(
        &mut self,
        prepared: &Prepared,
        key: Option<u32>,
        backend_value: &mut Vec<u8>,
    ) -> Result<Response, RequestError> {
        let mut live = match self.live.take() {
            Some(l) if !l.sender.is_closed() => l,
            _ => self.connect().await?,
        };
        self.sending = false;
        live.sender.ready().await.map_err(classify)?;
        let mut request = http::Request::new(Full::new(prepared.body.clone()));
        *request.method_mut() = prepared.method.clone();
        *request.uri_mut() = prepared.uri.clone();
        let headers = request.headers_mut();
        for (name, value) in &prepared.headers {
            headers.append(name.clone(), value.clone());
        }
        if let (Some(key), Some((name, _))) = (key, &prepared.keys) {
            headers.append(name.clone(), http::HeaderValue::from(key));
        }
        self.sending = true;
        let mut pending = std::pin::pin!(live.sender.send_request(request));
        let answered = tokio::select! {
            biased;
            response = &mut pending => Some(response),
            _ = &mut live.ended => None,
        };
        let response = match answered {
            Some(response) => {
                self.live = Some(live);
                response
            }
            None => {
                // hyper's connection task ended with this request perhaps still queued for
                // it. A queued request is cancelled when its queue is dropped, and that
                // happens only once every sender is gone: when the task ends on another
                // thread at the moment the request is queued, the request waits in the queue
                // for as long as a sender lives. Drop ours, then take the answer: a response
                // if the request had become a stream, "cancelled" (not sent) if it had not.
                drop(live);
                pending.await
            }
        }
        .map_err(classify)?;
        let status = response.status().as_u16();
        let mut has_backend = false;
        if let Some(name) = &prepared.backend_header
            && let Some(value) = response.headers().get(name)
        {
            backend_value.clear();
            backend_value.extend_from_slice(value.as_bytes());
            has_backend = true;
        }
        // A gRPC call ends with `grpc-status` in the trailers, or (an error answered at
        // once: "trailers-only") in the headers.
        let mut grpc_status = None;
        if prepared.grpc {
            grpc_status = grpc_status_in(response.headers());
        }
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(classify)?;
            if prepared.grpc
                && let Ok(trailers) = frame.into_trailers()
                && let Some(code) = grpc_status_in(&trailers)
            {
                grpc_status = Some(code);
            }
        }
        Ok(Response {
            status,
            has_backend,
            grpc_status,
        })
    }
}

/// Whether the server declined the stream without processing it: reset with
/// REFUSED_STREAM (RFC 9113, 8.7).
fn refused(err: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.is_remote()
                && h2.is_reset()
                && h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = s.source();
    }
    false
}

/// Classifies a hyper error: a connection or stream the server ended (closed, GOAWAY,
/// RST_STREAM) is `closed`, an I/O error by its kind, anything else (a protocol error on our
/// side or a malformed frame) `other`.
fn classify(err: hyper::Error) -> RequestError {
    let mut kind = if err.is_canceled() || err.is_closed() || err.is_incomplete_message() {
        ErrorKind::Closed
    } else if err.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Other
    };
    if kind == ErrorKind::Other {
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<io::Error>() {
                kind = ErrorKind::of_io(io);
                break;
            }
            if let Some(h2) = s.downcast_ref::<h2::Error>() {
                if let Some(io) = h2.get_io() {
                    kind = ErrorKind::of_io(io);
                } else if h2.is_remote() && (h2.is_go_away() || h2.is_reset()) {
                    kind = ErrorKind::Closed;
                }
                break;
            }
            source = s.source();
        }
    }
    RequestError {
        kind,
        message: ErrorMessage::Hyper(err),
    }
}
