//! HTTP/2 over cleartext with prior knowledge (h2c), on the same port as HTTP/1.1.
//!
//! A connection that opens with the HTTP/2 preface is handed to hyper's HTTP/2 server, and
//! each stream is forwarded to a backend over HTTP/1.1 (as nginx and HAProxy do by
//! default), through the same backend choice, queue, retry budget and outcome reporting as
//! the HTTP/1.1 path. Backend connections for this path are hyper HTTP/1.1 client
//! connections kept per worker.
//!
//! Retries: a stream whose request has no body and an idempotent method is replayable;
//! anything else is retried only when it never reached a backend (connect failed).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use balance::Outcome;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, timeout};

use super::select::{Attempts, NoAttempt, finish, no_attempt_detail};
use super::{Site, Worker};

/// The client preface that opens every HTTP/2 connection (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Body of a request sent to a backend: the client's stream, or nothing.
pub(crate) type UpstreamBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// Body of a response to the client: the backend's, or rondo's own error text.
type ClientBody = Either<Incoming, Full<Bytes>>;

/// Spawns hyper's per-stream tasks on the worker's own thread.
#[derive(Debug, Clone, Copy)]
struct LocalExec;

impl<F: Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// A socket whose first bytes were already read: they are replayed before the socket.
struct Rewind {
    prefix: Vec<u8>,
    pos: usize,
    inner: TcpStream,
}

impl AsyncRead for Rewind {
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

impl AsyncWrite for Rewind {
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

/// Serves one HTTP/2 connection whose first bytes (`prefix`) are already read.
pub(crate) async fn serve(
    stream: TcpStream,
    prefix: Vec<u8>,
    ip: Rc<str>,
    site: Arc<Site>,
    worker: Rc<Worker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let io = TokioIo::new(Rewind {
        prefix,
        pos: 0,
        inner: stream,
    });
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (site, worker, ip) = (Arc::clone(&site), Rc::clone(&worker), Rc::clone(&ip));
        async move { Ok::<_, Infallible>(forward(req, &site, &worker, &ip).await) }
    });
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

/// Connection-specific fields, which HTTP/2 forbids and HTTP/1.1 proxies drop.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The head to send a backend: the client's, minus hop-by-hop fields, with `Host` from the
/// `:authority` and the forwarding fields set.
fn upstream_head(req: &Request<Incoming>, ip: &str) -> (http::request::Parts, Option<String>) {
    let mut head = Request::builder()
        .method(req.method().clone())
        .uri(req.uri().path_and_query().map_or("/", |p| p.as_str()))
        .body(())
        .map(|r| r.into_parts().0)
        .unwrap_or_else(|_| Request::new(()).into_parts().0);
    let mut headers = req.headers().clone();
    strip_hop_by_hop(&mut headers);
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        });
    let set = |headers: &mut HeaderMap, name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    let prior = |headers: &HeaderMap, name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let xff =
        prior(&headers, "x-forwarded-for").map_or_else(|| ip.to_owned(), |p| format!("{p}, {ip}"));
    let via = prior(&headers, "via")
        .map_or_else(|| "2.0 rondo".to_owned(), |p| format!("{p}, 2.0 rondo"));
    set(&mut headers, "x-forwarded-for", xff);
    set(&mut headers, "x-forwarded-proto", "http".to_owned());
    set(&mut headers, "via", via);
    if let Some(h) = &host {
        set(&mut headers, "x-forwarded-host", h.clone());
        set(&mut headers, "host", h.clone());
    }
    head.headers = headers;
    (head, host)
}

fn error(status: u16, detail: &str) -> Response<ClientBody> {
    let body = super::respond::error_body(status, detail);
    let mut res = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *res.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == 503 {
        res.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(super::respond::RETRY_AFTER_SECS),
        );
    }
    res
}

/// A ready pooled connection to `addr`, or a new one.
async fn connection(
    worker: &Worker,
    addr: SocketAddr,
    limit: Duration,
) -> Result<SendRequest<UpstreamBody>, String> {
    if let Some(sender) = worker.take_h2_upstream(addr) {
        return Ok(sender);
    }
    let stream = match timeout(limit, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("connecting to {addr} failed: {e}")),
        Err(_) => return Err(format!("connecting to {addr} timed out after {limit:?}")),
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("connecting to {addr} failed: {e}"))?;
    tokio::task::spawn_local(conn);
    Ok(sender)
}

/// Forwards one HTTP/2 stream.
async fn forward(
    req: Request<Incoming>,
    site: &Site,
    worker: &Worker,
    ip: &str,
) -> Response<ClientBody> {
    let (head, host) = upstream_head(&req, ip);
    let upstream = Arc::clone(&site.upstreams[site.route(host.as_deref(), req.uri().path())]);
    let cfg = upstream.settings();
    let _active = upstream.begin();
    let idempotent = matches!(
        req.method().as_str(),
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    );
    let replayable = idempotent && hyper::body::Body::is_end_stream(req.body());
    let mut body = Some(req.into_body());
    let mut attempts = Attempts::new(&upstream, cfg.tries.get() as usize);
    let mut last: Option<(u16, String)> = None;
    let why = loop {
        let lease = match attempts.next(0).await {
            Ok(lease) => lease,
            Err(why) => break why,
        };
        let addr = lease.backend().address();
        let start = Instant::now();
        let mut sender = match connection(worker, addr, cfg.connect_timeout).await {
            Ok(s) => s,
            Err(e) => {
                finish(
                    &upstream,
                    lease,
                    Outcome::TransportError,
                    start.elapsed(),
                    502,
                );
                last = Some((502, e));
                continue;
            }
        };
        let upstream_body: UpstreamBody = match (replayable, body.take()) {
            (true, _) => Empty::new().map_err(|never| match never {}).boxed_unsync(),
            (false, Some(b)) => b.boxed_unsync(),
            (false, None) => break NoAttempt::Tries,
        };
        let request = Request::from_parts(head.clone(), upstream_body);
        let sent = timeout(cfg.response_timeout, sender.send_request(request)).await;
        let latency = start.elapsed();
        match sent {
            Ok(Ok(mut res)) => {
                let code = res.status().as_u16();
                let outcome = if code >= 500 {
                    Outcome::ServerError
                } else {
                    Outcome::Success
                };
                worker.put_h2_upstream(addr, sender, cfg.keepalive);
                finish(&upstream, lease, outcome, latency, code);
                // Retried only if another attempt is really possible: the last answer goes
                // to the client as it is.
                if replayable && cfg.retry_on_status.contains(&code) && attempts.may_retry() {
                    last = Some((code, format!("{addr} answered {code}")));
                    continue;
                }
                strip_hop_by_hop(res.headers_mut());
                return res.map(Either::Left);
            }
            Ok(Err(e)) => {
                finish(&upstream, lease, Outcome::TransportError, latency, 502);
                last = Some((502, format!("exchange with {addr} failed: {e}")));
            }
            Err(_) => {
                finish(&upstream, lease, Outcome::TransportError, latency, 504);
                let detail = format!("{addr} did not answer within {:?}", cfg.response_timeout);
                last = Some((504, detail));
            }
        }
        if !replayable {
            break NoAttempt::Tries;
        }
    };
    let (status, detail) = no_attempt_detail(&cfg.name, why, last);
    error(status, &detail)
}
