//! HTTP/2 over cleartext with prior knowledge (h2c), on the same port as HTTP/1.1.
//!
//! A connection that opens with the HTTP/2 preface is handed to hyper's HTTP/2 server, and
//! each stream is forwarded to a backend over HTTP/1.1 (as nginx and HAProxy do by
//! default), through the same backend choice, queue, retry budget and outcome reporting as
//! the HTTP/1.1 path. Backend connections for this path are hyper HTTP/1.1 client
//! connections kept per worker.
//!
//! Which backend, retries, the queue's priority and the access log are the forwarding
//! policy's ([`super::forward`]), the same as for HTTP/1.1: a stream whose request has no
//! body is replayable.
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
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use balance::Backend;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::stream::Io;
use tokio::sync::watch;
use tokio::time::timeout;

use super::affinity::{self, RequestParts};
use super::forward::{Delivered, Exchange, Facts, Failure, Origin, RequestView, SendError};
use super::protocol::{HOP_BY_HOP, is_idempotent};
use super::respond::ErrorPage;
use super::{Frontend, Worker};
use crate::config::UpstreamConfig;
use crate::header_rules::{HeaderRules, Vars};
use crate::upstream::Upstream;

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

/// Serves one HTTP/2 connection whose first bytes (`prefix`) are already read.
pub(crate) async fn serve<S: Io + 'static>(
    stream: S,
    prefix: Vec<u8>,
    ip: Rc<str>,
    frontend: Arc<Frontend>,
    worker: Rc<Worker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let io = TokioIo::new(Rewind {
        prefix,
        pos: 0,
        inner: stream,
    });
    let config = &frontend.config;
    let mut builder = hyper::server::conn::http2::Builder::new(LocalExec);
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESETS)
        .keep_alive_interval(PING_INTERVAL)
        .keep_alive_timeout(PING_TIMEOUT);
    let idle_timeout = config.idle_timeout;
    let streams = Rc::new(Streams::default());
    let counted = Rc::clone(&streams);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (frontend, worker, ip) = (Arc::clone(&frontend), Rc::clone(&worker), Rc::clone(&ip));
        let open = Streams::open(&counted);
        async move {
            let _open = open;
            Ok::<_, Infallible>(forward(req, &frontend, &worker, &ip).await)
        }
    });
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = &mut conn => return,
        _ = shutdown.wait_for(|stop| *stop) => {}
        () = streams.idle_for(idle_timeout) => {}
    }
    // GOAWAY: streams already open finish, no new ones start.
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
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

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The head to send a backend: the client's, minus hop-by-hop fields, with `Host` from the
/// `:authority` and the forwarding fields set.
fn upstream_head(
    req: &Request<Incoming>,
    ip: &str,
    tls: bool,
) -> (http::request::Parts, Option<String>) {
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
    let proto = if tls { "https" } else { "http" };
    set(&mut headers, "x-forwarded-proto", proto.to_owned());
    set(&mut headers, "via", via);
    if let Some(h) = &host {
        set(&mut headers, "x-forwarded-host", h.clone());
        set(&mut headers, "host", h.clone());
    }
    head.headers = headers;
    (head, host)
}

fn error(status: u16, page: &ErrorPage<'_>) -> Response<ClientBody> {
    let body = page.body(status);
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
    if let Some(id) = page
        .request_id
        .and_then(|id| HeaderValue::from_str(id).ok())
    {
        res.headers_mut().insert(crate::request_id::HEADER, id);
    }
    res
}

/// A ready pooled connection to `addr` (`true`), or a new one.
async fn connection(
    worker: &Worker,
    upstream: &Upstream,
    addr: SocketAddr,
    limit: Duration,
) -> Result<(SendRequest<UpstreamBody>, bool), Failure> {
    if let Some(sender) = worker.take_h2_upstream(addr) {
        return Ok((sender, true));
    }
    let tls = upstream.tls();
    let connect = crate::tls::BackendConn::connect(addr, tls.as_deref());
    let stream = match timeout(limit, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(Failure::connect(addr, &e)),
        Err(_) => return Err(Failure::connect_timeout(addr, limit)),
    };
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::no_response(false, format!("connecting to {addr} failed: {e}")))?;
    tokio::task::spawn_local(conn);
    Ok((sender, false))
}

/// Forwards one HTTP/2 stream through the forwarding policy.
async fn forward(
    req: Request<Incoming>,
    frontend: &Frontend,
    worker: &Worker,
    ip: &str,
) -> Response<ClientBody> {
    let (mut head, host) = upstream_head(&req, ip, frontend.config.tls.is_some());
    let index = frontend.route(host.as_deref(), req.uri().path());
    let upstream = Arc::clone(&frontend.upstreams[index]);
    let id = super::headers::request_id_in_map(&mut head.headers);
    let bare_host = host
        .as_deref()
        .map_or("", |h| h.rsplit_once(':').map_or(h, |(h, _)| h));
    let vars = Vars {
        remote_addr: ip,
        host: bare_host,
        request_id: id.as_str(),
    };
    let request_rules = [
        &frontend.config.headers.request,
        &frontend.route_headers[index].request,
    ];
    super::headers::apply_to_map(&mut head.headers, &request_rules, &vars);
    let idempotent = is_idempotent(req.method().as_str());
    let priority = req
        .headers()
        .get(upstream.priority_header())
        .and_then(|v| v.to_str().ok()?.trim().parse().ok())
        .unwrap_or(0);
    let replayable = hyper::body::Body::is_end_stream(req.body());
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let request = RequestParts {
        client: ip,
        target: target.as_bytes(),
        headers: req.headers(),
    };
    let facts = Facts {
        idempotent,
        replayable,
        priority,
        affinity: affinity::read(&upstream.config_ref(), &request),
    };
    let origin = Origin {
        client: ip,
        listener: &frontend.config.name,
        protocol: "HTTP/2.0",
        request_id: id.as_str(),
        report: &frontend.reports[index],
    };
    let mut exchange = H2Exchange {
        worker,
        upstream: &upstream,
        head,
        body: Some(req.into_body()),
        replayable,
        pending: None,
        response_rules: [
            &frontend.config.headers.response,
            &frontend.route_headers[index].response,
        ],
        vars,
    };
    super::forward::forward(&upstream, facts, origin, &mut exchange).await
}

/// One HTTP/2 stream on its way to a backend (over HTTP/1.1).
struct H2Exchange<'a> {
    worker: &'a Worker,
    /// Where new backend connections get their TLS settings.
    upstream: &'a Upstream,
    /// The head to send (rewritten for the backend).
    head: http::request::Parts,
    /// The client's body, until an attempt takes it (only a replayable request has none).
    body: Option<Incoming>,
    replayable: bool,
    /// The response [`Exchange::send`] received, and its connection for the pool.
    pending: Option<(Response<Incoming>, SendRequest<UpstreamBody>, SocketAddr)>,
    /// The listener's and the route's `response_headers`, and their variables.
    response_rules: [&'a HeaderRules; 2],
    vars: Vars<'a>,
}

impl Exchange for H2Exchange<'_> {
    type Output = Response<ClientBody>;

    async fn send(&mut self, backend: &Backend, cfg: &UpstreamConfig) -> Result<u16, SendError> {
        let addr = backend.address();
        let (mut sender, reused) =
            connection(self.worker, self.upstream, addr, cfg.connect_timeout)
                .await
                .map_err(SendError::Backend)?;
        let upstream_body: UpstreamBody = match (self.replayable, self.body.take()) {
            (true, _) => Empty::new().map_err(|never| match never {}).boxed_unsync(),
            (false, Some(b)) => b.boxed_unsync(),
            (false, None) => {
                let detail = "the request body was already sent to another backend".to_owned();
                return Err(SendError::Backend(Failure::no_response(false, detail)));
            }
        };
        let request = Request::from_parts(self.head.clone(), upstream_body);
        match timeout(cfg.response_timeout, sender.send_request(request)).await {
            Ok(Ok(res)) => {
                let status = res.status().as_u16();
                self.pending = Some((res, sender, addr));
                Ok(status)
            }
            Ok(Err(e)) => {
                let detail = format!("exchange with {addr} failed: {e}");
                Err(SendError::Backend(Failure::no_response(reused, detail)))
            }
            Err(_) => Err(SendError::Backend(Failure::timed_out(
                addr,
                cfg.response_timeout,
            ))),
        }
    }

    async fn deliver(
        &mut self,
        cfg: &UpstreamConfig,
        set_cookie: Option<&str>,
    ) -> Delivered<Self::Output> {
        let Some((mut res, sender, addr)) = self.pending.take() else {
            return Delivered {
                output: error(
                    502,
                    &ErrorPage {
                        request_id: Some(self.vars.request_id),
                        ..ErrorPage::default()
                    },
                ),
                backend_ok: false,
                bytes_sent: 0,
            };
        };
        self.worker.put_h2_upstream(addr, sender, cfg.keepalive);
        strip_hop_by_hop(res.headers_mut());
        super::headers::apply_to_map(res.headers_mut(), &self.response_rules, &self.vars);
        if let Some(value) = set_cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
            res.headers_mut().append(header::SET_COOKIE, value);
        }
        Delivered {
            output: res.map(Either::Left),
            backend_ok: true,
            // hyper streams the body; its size is not known here.
            bytes_sent: 0,
        }
    }

    fn discard(&mut self) {
        self.pending = None;
    }

    async fn refuse(&mut self, status: Option<u16>, page: &ErrorPage<'_>) -> Self::Output {
        error(status.unwrap_or(400), page)
    }

    fn request_view(&self) -> RequestView<'_> {
        let text =
            |name: header::HeaderName| self.head.headers.get(name).and_then(|v| v.to_str().ok());
        RequestView {
            method: self.head.method.as_str(),
            target: self.head.uri.path_and_query().map_or("/", |p| p.as_str()),
            referer: text(header::REFERER),
            user_agent: text(header::USER_AGENT),
            bytes_received: 0,
        }
    }
}
