//! One request from a client connection served by hyper (HTTP/2, or HTTP/1.1 on a listener
//! whose upstreams speak HTTP/2) to a backend, over HTTP/1.1 or HTTP/2 as the upstream's
//! `protocol` says. Which backend, retries, the queue's priority and the access log are the
//! forwarding policy's ([`super::forward`]); this file only sends one attempt and forwards
//! one response ([`Exchange`]). An HTTP/1.1 attempt is written and read by
//! [`super::h1_upstream`], over the worker's pool of HTTP/1.1 backend connections; an HTTP/2
//! one is a stream on a connection of [`super::h2_upstream`].
//!
//! The request body is a [`Replay`]: streamed as it arrives and kept up to
//! `retry_body_limit`, so a failed attempt can be replayed on another backend. gRPC calls
//! (`content-type: application/grpc`) are judged by `grpc-status`: from the head when the
//! backend answers with a status alone, else from the trailers that end the body (the
//! request's outcome is deferred until then, see [`LateVerdict`]); retried on `grpc_retry_on` when their method is listed in
//! `grpc_idempotent`, bounded by their `grpc-timeout`, and get gRPC errors from rondo.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use balance::{Backend, Deferred};
use http::header::{self, HeaderValue};
use http_body_util::Either;
use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use tokio::time::{Instant, timeout};

use super::affinity::{self, RequestParts};
use super::connpool;
use super::dial::dial;
use super::forward::{
    Delivered, Exchange, Facts, Failure, Origin, RequestView, SendError, Verdict,
};
use super::h1_upstream::{self, Home, ResponseBody};
use super::h2_upstream::{self, H2Sender, OpenError, Stream};
use super::protocol::is_idempotent;
use super::relay_body::{FromBackend, LateVerdict, Tracked};
use super::relay_head::{Own, error, request_host, strip_hop_by_hop, to_http2, upstream_head};
use super::replay::Replay;
use super::respond::ErrorPage;
use super::{Frontend, Worker};
use crate::config::{UpstreamConfig, UpstreamProtocol};
use crate::header_rules::{HeaderRules, Vars};
use crate::tls::{BackendAlpn, BackendConn, UpstreamTls};
use crate::upstream::Upstream;

/// Body of a response to the client: the backend's, or rondo's own.
pub(crate) type ClientBody = Either<Tracked, Own>;

/// The trailers of a gRPC response, declared to an HTTP/1.1 client so they are forwarded.
const GRPC_TRAILERS: &str = "grpc-status, grpc-message, grpc-status-details-bin";

/// The connection an attempt goes out on.
enum Sender {
    H1(BackendConn),
    H2(H2Sender, Stream),
}

/// Forwards one request through the forwarding policy.
pub(crate) async fn forward(
    req: Request<Incoming>,
    frontend: &Frontend,
    worker: &Rc<Worker>,
    ip: &str,
) -> Response<ClientBody> {
    let host = request_host(&req);
    let version = req.version();
    let index = frontend.route(host.as_deref(), req.uri().path());
    let upstream = Arc::clone(&frontend.upstreams[index]);
    let cfg = upstream.config_ref();
    // What the policy needs from the client's head, read before the head is taken apart.
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| crate::grpc::is_grpc(v.as_bytes()));
    let idempotent = if grpc {
        cfg.grpc.is_idempotent(req.uri().path())
    } else {
        is_idempotent(req.method().as_str())
    };
    // A gRPC deadline bounds every attempt; a malformed one is ignored, as gRPC servers do.
    let deadline = grpc
        .then(|| req.headers().get(crate::grpc::TIMEOUT))
        .flatten()
        .and_then(|v| crate::grpc::parse_timeout(v.as_bytes()))
        .map(|t| Instant::now() + t);
    let priority = upstream
        .priority_name()
        .and_then(|name| req.headers().get(name))
        .and_then(|v| v.to_str().ok()?.trim().parse().ok())
        .unwrap_or(0);
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let request = RequestParts {
        client: ip,
        target: target.as_bytes(),
        headers: req.headers(),
    };
    let facts = Facts {
        idempotent,
        replayable: true,
        priority,
        affinity: affinity::read(&cfg, &request),
    };
    let (client, body) = req.into_parts();
    let tls = frontend.config.tls.is_some();
    let (mut head, trailers) = upstream_head(client, host.as_deref(), upstream.name(), ip, tls);
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
    if worker.memory.over() {
        super::memory::refuse_request(frontend, worker, index);
        let mut res = error(503, &super::memory::refused_page(id.as_str()), grpc);
        if version != http::Version::HTTP_2 {
            let close = HeaderValue::from_static("close");
            res.headers_mut().insert(header::CONNECTION, close);
        }
        return res;
    }
    let origin = Origin {
        client: ip,
        listener: &frontend.config.name,
        protocol: match version {
            http::Version::HTTP_2 => "HTTP/2.0",
            _ => "HTTP/1.1",
        },
        request_id: id.as_str(),
        report: &frontend.reports[index],
    };
    // A declared length past `max_body_size` is refused before any backend sees it; a
    // body without one is cut when it grows past it (see `Replay`).
    let max_body = frontend.config.max_body_size;
    if max_body.is_some_and(|max| body.size_hint().lower() > max) {
        let page = ErrorPage {
            detail: Some("request body too large"),
            upstream: None,
            request_id: Some(id.as_str()),
        };
        frontend.reports[index]
            .responses
            .record(413, crate::counters::Source::Proxy);
        return error(413, &page, grpc);
    }
    let body = Replay::new(Some(body), cfg.retry_body_limit, max_body);
    drop(cfg);
    let mut exchange = RelayExchange {
        worker,
        upstream: &upstream,
        report: &frontend.reports[index],
        head,
        trailers,
        client_http1: version != http::Version::HTTP_2,
        body,
        grpc,
        deadline,
        pending: None,
        response_rules: [
            &frontend.config.headers.response,
            &frontend.route_headers[index].response,
        ],
        vars,
        connect_time: None,
        late: None,
    };
    super::forward::forward(&upstream, facts, origin, &mut exchange).await
}

/// A response head received, with what it came on.
struct Pending {
    /// Its body holds an HTTP/1.1 connection until it ends (then the connection goes back to
    /// the pool).
    response: Response<FromBackend>,
    /// An HTTP/2 stream stays counted until the body ends.
    stream: Option<Stream>,
    /// The `grpc-status` of a gRPC response that carried it in its head (no body follows).
    grpc_status: Option<u8>,
}

/// One request on its way to a backend.
struct RelayExchange<'a> {
    /// Also where an HTTP/1.1 connection goes back once its response body ends.
    worker: &'a Rc<Worker>,
    /// Where new backend connections get their TLS settings and protocol.
    upstream: &'a Arc<Upstream>,
    /// Where pool use is counted.
    report: &'a super::forward::Report,
    /// The head to send (rewritten for the backend, as HTTP/1.1).
    head: http::request::Parts,
    /// The client sent `te: trailers`.
    trailers: bool,
    /// The client speaks HTTP/1.1: trailers reach it only when the response head names
    /// them (`Trailer`), which an HTTP/2 backend does not do.
    client_http1: bool,
    body: Replay,
    /// A gRPC call.
    grpc: bool,
    /// The call's `grpc-timeout`, as a deadline.
    deadline: Option<Instant>,
    pending: Option<Pending>,
    /// The listener's and the route's `response_headers`, and their variables.
    response_rules: [&'a HeaderRules; 2],
    vars: Vars<'a>,
    connect_time: Option<Duration>,
    /// The delivered gRPC call's verdict, waiting for the request from the policy.
    late: Option<Rc<LateVerdict>>,
}

impl RelayExchange<'_> {
    /// A connection for the next attempt to `addr` speaking `tls` (the attempt's one reading
    /// of the upstream's setup; `key` is made from it): a stream on a shared HTTP/2
    /// connection, a pooled HTTP/1.1 connection, or a new one (HTTP/2 when the upstream's
    /// protocol says so, or ALPN chose it). `true` when it was already open.
    async fn connection(
        &mut self,
        backend: &Backend,
        key: connpool::Key,
        tls: Option<&Arc<UpstreamTls>>,
        cfg: &UpstreamConfig,
    ) -> Result<(Sender, bool), Failure> {
        let addr = backend.address();
        let counters = &self.report.upstream;
        let count = |c: &std::sync::atomic::AtomicU64| {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        let h2_pool = &self.worker.h2;
        let may_h2 = cfg.protocol.may_use_h2(tls.is_some());
        if may_h2 {
            // A stream on a connection with room; else, while another request opens a
            // connection to this backend, wait for it (its SETTINGS say how many streams it
            // takes) and look again: one connection opens at a time, so a burst on a cold
            // pool opens what the backend's limit needs, never one connection per request.
            let deadline = Instant::now() + cfg.connect_timeout;
            loop {
                if let Some((sender, stream)) = h2_pool.claim(key, cfg.h2.max_connections) {
                    count(&counters.pool_reused);
                    self.connect_time = Some(Duration::ZERO);
                    return Ok((Sender::H2(sender, stream), true));
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || !h2_pool.wait_for_opening(key, left).await {
                    break;
                }
            }
        }
        if cfg.protocol != UpstreamProtocol::H2c
            && cfg.protocol != UpstreamProtocol::H2
            && let Some(conn) = self.worker.conns.take(addr, tls)
        {
            count(&counters.pool_reused);
            self.connect_time = Some(Duration::ZERO);
            return Ok((Sender::H1(conn), true));
        }
        count(&counters.pool_opened);
        // Requests that find no room meanwhile wait for this connection.
        let _opening = may_h2.then(|| h2_pool.opening(key));
        let started = Instant::now();
        let alpn = match (cfg.protocol, tls.is_some()) {
            (UpstreamProtocol::H2, _) => BackendAlpn::H2,
            (UpstreamProtocol::Auto, true) => BackendAlpn::Auto,
            _ => BackendAlpn::None,
        };
        let limit = cfg.connect_timeout;
        // Boxed, as opening is the rare case (see `h1::H1Exchange::connection`).
        let connect = BackendConn::connect_alpn(addr, tls.map(|t| &**t), alpn);
        let conn = Box::pin(dial(self.upstream, backend, limit, connect)).await?;
        let h2 = match cfg.protocol {
            UpstreamProtocol::H2c => true,
            UpstreamProtocol::H2 if !conn.selected_h2() => {
                let detail = format!("{addr} did not select HTTP/2 (h2) by ALPN");
                return Err(Failure {
                    status: 502,
                    ..Failure::connect(addr, &std::io::Error::other(detail))
                });
            }
            _ => conn.selected_h2(),
        };
        let sender = if h2 {
            let wait = limit.saturating_sub(started.elapsed());
            let recorder = self.upstream.recorder().backend(backend.id());
            let (sender, stream) = Box::pin(self.worker.h2.open(
                key,
                conn,
                cfg.h2,
                wait,
                cfg.keepalive_timeout,
                recorder,
            ))
            .await
            .map_err(|e| match e {
                OpenError::Handshake(e) => {
                    Failure::no_response(false, format!("connecting to {addr} failed: {e}"))
                }
                no_settings => Failure {
                    status: 502,
                    ..Failure::connect(addr, &std::io::Error::other(no_settings))
                },
            })?;
            Sender::H2(sender, stream)
        } else {
            Sender::H1(conn)
        };
        self.connect_time = Some(started.elapsed());
        Ok((sender, false))
    }

    /// Sends the request on an HTTP/1.1 connection opened with `tls` and reads the response
    /// head within `limit`; the response's body keeps `conn` until it ends, then pools it
    /// under `tls`.
    async fn send_h1(
        &self,
        mut conn: BackendConn,
        tls: Option<Arc<UpstreamTls>>,
        reused: bool,
        addr: std::net::SocketAddr,
        limit: Duration,
        cfg: &UpstreamConfig,
    ) -> Result<Response<FromBackend>, SendError> {
        let mut out = self.worker.take_buffer();
        let mut buf = self.worker.take_buffer();
        let is_head = self.head.method == http::Method::HEAD;
        // A backend may answer before it has read the whole body (a 413 from its own limit)
        // and close: the send fails, and the answer waiting in the socket is read and passed
        // on, as on the HTTP/1.1 path; only with no answer there does the attempt fail.
        let exchange = async {
            let sent =
                h1_upstream::send_request(&mut conn, &self.head, self.body.attempt(), &mut out)
                    .await;
            let cut_short = match sent {
                Ok(()) => None,
                Err(h1_upstream::Failed::Write(e)) => Some(e),
                Err(other) => return Err(other),
            };
            match h1_upstream::read_response(&mut conn, &mut buf, is_head).await {
                Ok((mut info, parts)) => {
                    // The connection is broken, the body partly unsent: never pooled.
                    info.reusable &= cut_short.is_none();
                    Ok((info, parts))
                }
                Err(failed) => Err(cut_short.map_or(failed, h1_upstream::Failed::Write)),
            }
        };
        let answered = timeout(limit, exchange).await;
        self.worker.give_buffer(out);
        let (info, parts) = match answered {
            Ok(Ok(answer)) => answer,
            Ok(Err(failed)) => {
                self.worker.give_buffer(buf);
                return Err(h1_failure(failed, addr, reused));
            }
            Err(_) => {
                self.worker.give_buffer(buf);
                return Err(SendError::Backend(Failure::timed_out(addr, limit)));
            }
        };
        let rest = h1_upstream::after_head(self.worker, buf, info.head_len);
        let home = Home {
            worker: Rc::clone(self.worker),
            addr,
            tls,
            counters: Arc::clone(&self.report.upstream),
            keepalive: cfg.keepalive,
            keepalive_timeout: cfg.keepalive_timeout,
        };
        let body = ResponseBody::new(conn, rest, &info, home, cfg.response_timeout);
        Ok(Response::from_parts(parts, FromBackend::H1(body)))
    }

    /// The time the next attempt may wait for a response head: the upstream's
    /// `response_timeout`, or less when the call's deadline comes first.
    fn response_limit(&self, cfg: &UpstreamConfig) -> Duration {
        match self.deadline {
            Some(d) => cfg
                .response_timeout
                .min(d.saturating_duration_since(Instant::now())),
            None => cfg.response_timeout,
        }
    }

    /// One attempt of [`Exchange::send`].
    async fn attempt(&mut self, backend: &Backend, cfg: &UpstreamConfig) -> Result<u16, SendError> {
        let addr = backend.address();
        let limit = self.response_limit(cfg);
        if limit.is_zero() {
            return Err(SendError::Backend(Failure::timed_out(addr, limit)));
        }
        // Read once: the connection is opened, pooled and found under the same TLS setup even
        // when a reload changes it meanwhile.
        let tls = self.upstream.tls();
        let key = connpool::key(addr, tls.as_ref());
        let (sender, reused) = self
            .connection(backend, key, tls.as_ref(), cfg)
            .await
            .map_err(SendError::Backend)?;
        if !self.body.can_replay() {
            let detail = "the request body was already sent to another backend".to_owned();
            return Err(SendError::Backend(Failure::no_response(false, detail)));
        }
        let (response, stream) = match sender {
            Sender::H2(mut sender, stream) => {
                let mut head = self.head.clone();
                to_http2(&mut head, tls.is_some(), addr, self.trailers);
                let request = Request::from_parts(head, self.body.attempt());
                match timeout(limit, sender.send_request(request)).await {
                    Ok(Ok(response)) => (response.map(FromBackend::H2), Some(stream)),
                    Ok(Err(e)) if h2_upstream::refused(&e) => {
                        let detail = format!("{addr} refused the request unprocessed: {e}");
                        return Err(SendError::Backend(Failure::refused(detail)));
                    }
                    Ok(Err(e)) => {
                        let detail = format!("exchange with {addr} failed: {e}");
                        return Err(SendError::Backend(Failure::no_response(reused, detail)));
                    }
                    Err(_) => return Err(SendError::Backend(Failure::timed_out(addr, limit))),
                }
            }
            Sender::H1(conn) => {
                let sent = self.send_h1(conn, tls, reused, addr, limit, cfg).await?;
                (sent, None)
            }
        };
        let status = response.status().as_u16();
        let grpc_status = if self.grpc {
            crate::grpc::parse_status(
                response
                    .headers()
                    .get(crate::grpc::STATUS)
                    .map(HeaderValue::as_bytes),
            )
        } else {
            None
        };
        self.pending = Some(Pending {
            response,
            stream,
            grpc_status,
        });
        Ok(status)
    }
}

/// What an HTTP/1.1 attempt's failure means to the forwarding policy (`reused`: it went out
/// on a pooled connection, see [`Failure::no_response`]).
fn h1_failure(failed: h1_upstream::Failed, addr: std::net::SocketAddr, reused: bool) -> SendError {
    use h1_upstream::Failed;
    let failure = match failed {
        Failed::ClientBody => {
            return SendError::Client {
                status: None,
                detail: "the client's request body broke off",
            };
        }
        Failed::Write(e) => Failure::no_response(reused, format!("sending to {addr} failed: {e}")),
        Failed::BadHead => {
            Failure::no_response(false, format!("invalid response head from backend {addr}"))
        }
        Failed::Closed(None, nothing_yet) => Failure::no_response(
            reused && nothing_yet,
            format!("{addr} closed the connection without a response"),
        ),
        Failed::Closed(Some(e), nothing_yet) => Failure::no_response(
            reused && nothing_yet,
            format!("reading the response from {addr} failed: {e}"),
        ),
    };
    SendError::Backend(failure)
}

impl Exchange for RelayExchange<'_> {
    type Output = Response<ClientBody>;

    async fn send(&mut self, backend: &Backend, cfg: &UpstreamConfig) -> Result<u16, SendError> {
        let sent = self.attempt(backend, cfg).await;
        // A body that grew past `max_body_size` failed the attempt: the client's doing.
        if sent.is_err() && self.body.too_large() {
            return Err(SendError::Client {
                status: Some(413),
                detail: "request body too large",
            });
        }
        sent
    }

    fn verdict(&self, status: u16, cfg: &UpstreamConfig) -> Verdict {
        match self.pending.as_ref().and_then(|p| p.grpc_status) {
            Some(code) => Verdict {
                outcome: crate::grpc::outcome_of(Some(code)),
                retry: cfg.grpc.retry_on.contains(&code),
            },
            None => Verdict {
                outcome: super::protocol::outcome_of(status),
                retry: cfg.retry_on_status.contains(&status),
            },
        }
    }

    fn can_replay(&self) -> bool {
        self.body.can_replay()
    }

    async fn deliver(
        &mut self,
        _cfg: &UpstreamConfig,
        set_cookie: Option<&str>,
    ) -> Delivered<Self::Output> {
        let Some(Pending {
            mut response,
            stream,
            grpc_status,
        }) = self.pending.take()
        else {
            let page = ErrorPage {
                request_id: Some(self.vars.request_id),
                ..ErrorPage::default()
            };
            return Delivered {
                output: error(502, &page, self.grpc),
                backend_ok: false,
                bytes_sent: 0,
                verdict_in_body: false,
            };
        };
        strip_hop_by_hop(response.headers_mut());
        super::headers::apply_to_map(response.headers_mut(), &self.response_rules, &self.vars);
        if let Some(value) = set_cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
        // An HTTP/1.1 backend's values were copied out of the read buffer as they were parsed.
        if !self.client_http1 && matches!(response.body(), FromBackend::H2(_)) {
            super::relay_head::own_values(response.headers_mut());
        }
        if self.grpc && self.client_http1 && self.trailers {
            response
                .headers_mut()
                .insert(header::TRAILER, HeaderValue::from_static(GRPC_TRAILERS));
        }
        // hyper streams the body after this returns: its size is known here only when the
        // backend declared it (Content-Length, or an empty body); a streamed one logs 0.
        let bytes_sent = response.body().size_hint().exact().unwrap_or(0);
        // A gRPC call without its status in the head says how it went in its trailers.
        let verdict = (self.grpc && grpc_status.is_none())
            .then(|| Rc::new(LateVerdict::new(Arc::clone(self.upstream))));
        self.late = verdict.clone();
        let verdict_in_body = verdict.is_some();
        let output = response.map(|body| Either::Left(Tracked::new(body, stream, verdict.clone())));
        Delivered {
            output,
            backend_ok: true,
            bytes_sent,
            verdict_in_body,
        }
    }

    fn judge_later(&mut self, deferred: Deferred) {
        if let Some(verdict) = self.late.take() {
            verdict.hand_over(deferred);
        }
    }

    fn discard(&mut self) {
        self.pending = None;
    }

    async fn refuse(&mut self, status: Option<u16>, page: &ErrorPage<'_>) -> (Self::Output, u64) {
        let response = error(status.unwrap_or(400), page, self.grpc);
        // The body, as for a delivered response (the head is HPACK-coded or hyper's).
        let bytes_sent = response.body().size_hint().exact().unwrap_or(0);
        (response, bytes_sent)
    }

    fn connect_time(&self) -> Option<Duration> {
        self.connect_time
    }

    fn request_view(&self) -> RequestView<'_> {
        let text =
            |name: header::HeaderName| self.head.headers.get(name).and_then(|v| v.to_str().ok());
        RequestView {
            method: self.head.method.as_str(),
            target: self.head.uri.path_and_query().map_or("/", |p| p.as_str()),
            referer: text(header::REFERER),
            user_agent: text(header::USER_AGENT),
        }
    }
}
