//! One client connection speaking HTTP/1.1: read a request head, choose a backend, forward,
//! stream the answer back, and keep the connection for the next request.
//!
//! This file is the HTTP/1.1 wire: it sends one attempt and forwards one response
//! ([`Exchange`]); which backend, whether to retry and what it costs are decided in
//! [`super::forward`].
//!
//! Longer than ~500 lines because the HTTP/1.1 connection loop and its `Exchange` share the
//! connection's buffers and state; parsing (`head`), bodies (`body`, `chunked`) and the policy
//! (`forward`) are already elsewhere.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use balance::Backend;
use tokio::time::{Sleep, timeout_at};

use super::Frontend;
use super::Worker;
use super::affinity;
use super::body::{self, CopyError, Limits};
use super::connection::Admitted;
use super::dial::dial;
use super::forward::{self, Delivered, Exchange, Facts, Failure, Origin, RequestView, SendError};
use super::head::{self, Client, Framing, RequestInfo};
use super::headers;
use super::parked::{PARK_AFTER, ParkedConn};
use super::respond::{ErrorPage, send_error, send_page};
use super::room;
use super::room::Waited;
use super::stream::ClientIo;
use crate::clock;
use crate::config::UpstreamConfig;
use crate::counters::Source;
use crate::header_rules::{HeaderRules, Vars};
use crate::request_id::Id;
use crate::tls::BackendConn;
use crate::upstream::Upstream;

/// Room for the first read of a backend's response: a response of up to 32 KiB, head and
/// body, arrives in one read and leaves in one write (with 16 KiB, a 16 KiB body took two of
/// each). Only the pages a response fills are touched; the buffer is reused afterwards.
const RESPONSE_READ: usize = 2 * body::CHUNK;

/// What the connection does after a request.
enum Next {
    KeepAlive,
    Close,
    /// The connection opened with the HTTP/2 preface.
    Http2,
}

/// How a connection's task begins.
pub(crate) enum Start {
    /// Just accepted: the request head is awaited for `header_timeout`.
    New,
    /// Resumed from [`super::parked`]: the socket is readable now.
    Readable,
}

/// Serves one client connection until it closes, errs, idles out or the server shuts down.
/// A plain connection idle past [`PARK_AFTER`] is parked and its task ends (see
/// [`super::parked`]).
pub(crate) async fn serve<C: ClientIo + 'static>(
    mut stream: C,
    ip: String,
    admitted: Admitted,
    worker: std::rc::Rc<Worker>,
    start: Start,
) {
    let frontend = admitted.frontend();
    let mut pending: Vec<u8> = Vec::new();
    let mut first = matches!(start, Start::New);
    let mut wait = matches!(start, Start::New);
    // The connection's two timers, reset for each wait (see `clock::within`): between
    // requests, and for a backend's answer.
    let mut idle_timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
    let mut response_timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
    loop {
        if wait && pending.is_empty() && !stream.buffered() {
            let limit = if first {
                frontend.config.header_timeout
            } else {
                frontend.config.idle_timeout
            };
            let in_task = if first || !C::PARKS {
                limit
            } else {
                limit.min(PARK_AFTER)
            };
            // Idle connections do not watch for shutdown: the worker waits only for busy
            // ones, then drops the rest, so an idle connection costs no more than this wait.
            // They close early when descriptors run short (see `room`). Over TLS the wait is
            // on the TCP socket too, unless rustls already holds decrypted bytes.
            // A new connection's first readiness may come before its first bytes: a plain one
            // reads them into a buffer kept for the request (one system call where a peek
            // and the read were two); over TLS the bytes belong to rustls, so it peeks.
            let mut read_first = |tcp: &tokio::net::TcpStream| {
                let mut buf = worker.take_buffer();
                match room::read_now(tcp, &mut buf) {
                    Ok(n) if n > 0 => {
                        pending = buf;
                        true
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        worker.give_buffer(buf);
                        false
                    }
                    // The end of the stream or an error: the request's own read meets it again.
                    _ => {
                        worker.give_buffer(buf);
                        true
                    }
                }
            };
            let mut peek = room::has_input;
            let verify: Option<&mut dyn FnMut(&tokio::net::TcpStream) -> bool> = match first {
                false => None,
                true if C::PARKS => Some(&mut read_first),
                true => Some(&mut peek),
            };
            match worker
                .idle
                .wait_readable(stream.tcp(), in_task, verify, idle_timer.as_mut())
                .await
            {
                Waited::Readable => {}
                // A listener a reload replaced takes no more requests: the connection is
                // closed, not parked, unless its next request is already on its way.
                Waited::TimedOut if frontend.is_retired() => {
                    if !room::has_input(stream.tcp()) {
                        return;
                    }
                }
                Waited::TimedOut if in_task < limit => {
                    // Only plain sockets get here (`C::PARKS`), and they always convert.
                    if let Ok(stream) = stream.into_plain() {
                        worker.idle.parked.park(ParkedConn {
                            stream,
                            ip,
                            admitted,
                            until: clock::loop_now() + (limit - in_task),
                        });
                    }
                    return;
                }
                Waited::TimedOut | Waited::Close => return,
            }
        }
        first = false;
        wait = true;
        let _busy = worker.busy();
        let mut inbuf = if pending.is_empty() {
            worker.take_buffer()
        } else {
            std::mem::take(&mut pending)
        };
        // Boxed (built in its box, see `in_place`): the request's state machine is large and
        // only lives while a request is in progress, so an idle keep-alive connection holds
        // just this loop's few fields and its two timers. Kept in the task instead (session
        // 9), it saved about 1,000 instructions per request, and a fresh process's first
        // 1,000 idle connections cost 2,953 bytes each instead of 1,651
        // (`bench/idle-memory.sh`).
        let next = super::in_place::boxed(|| {
            request(
                &mut stream,
                &ip,
                frontend,
                &worker,
                &mut inbuf,
                response_timer.as_mut(),
            )
        })
        .await;
        if matches!(next, Next::Http2) {
            let ip: std::rc::Rc<str> = ip.into();
            // Only the bytes already read go along, in a buffer of their size: the worker's
            // 16 KiB buffer goes back to its pool instead of living as long as the HTTP/2
            // connection (4 KB of an idle one's 32, `PROTO=h2c bench/idle-memory.sh`).
            let prefix = inbuf.as_slice().to_vec();
            worker.give_buffer(inbuf);
            Box::pin(super::h2::serve(
                stream,
                prefix,
                ip,
                Arc::clone(frontend),
                std::rc::Rc::clone(&worker),
                worker.stop(),
                super::h2::Server::Http2,
            ))
            .await;
            return;
        }
        if inbuf.is_empty() {
            worker.give_buffer(inbuf);
        } else {
            pending = inbuf;
        }
        if matches!(next, Next::Close) || !keep_alive(&worker, frontend) {
            return;
        }
    }
}

/// Whether a client connection may be kept open after this response: not while the worker
/// says no (see [`Worker::keep_alive`]), nor once a reload has replaced the listener the
/// connection came in on (its next requests would be served under settings that no longer
/// apply; see [`Frontend::retire`]).
fn keep_alive(worker: &Worker, frontend: &Frontend) -> bool {
    worker.keep_alive() && !frontend.is_retired()
}

/// Counts and logs an answer rondo gave before the request had a route (400, 408, 431), as
/// nginx logs them: an operator looking for why clients get a 431 finds the lines. The
/// request line is logged as far as it came, when it is text.
fn log_unrouted(frontend: &Frontend, ip: &str, status: u16, bytes_sent: u64, received: &[u8]) {
    frontend.unrouted.record(status, Source::Proxy);
    let Some(log) = frontend.reports.first().map(|r| &r.access_log) else {
        return;
    };
    if !log.is_on() {
        return;
    }
    let line = received
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or_default();
    let mut parts = line.splitn(3, |&b| b == b' ').map(std::str::from_utf8);
    let mut next = || match parts.next() {
        Some(Ok(part)) if !part.is_empty() => part,
        _ => "-",
    };
    let (method, target, protocol) = (next(), next(), next());
    log.log(&crate::access_log::AccessRecord {
        client: ip,
        time: std::time::SystemTime::now(),
        method,
        target,
        protocol,
        status,
        bytes_sent,
        bytes_received: received.len() as u64,
        referer: None,
        user_agent: None,
        listener: &frontend.config.name,
        upstream: None,
        tried: crate::access_log::Tried::default(),
        attempts: 0,
        upstream_times: crate::access_log::UpstreamTimes::default(),
        total: Duration::ZERO,
        request_id: "-",
        tls_version: None,
    });
}

/// Reads one request head (bytes may already be in `inbuf`) and handles the request.
async fn request(
    stream: &mut impl ClientIo,
    ip: &str,
    frontend: &Frontend,
    worker: &Worker,
    inbuf: &mut Vec<u8>,
    timer: Pin<&mut Sleep>,
) -> Next {
    let config = &frontend.config;
    let client = Client {
        ip,
        tls: config.tls.is_some(),
        max_header_bytes: config.max_header_bytes,
        max_body_size: config.max_body_size,
    };
    let deadline = clock::loop_now() + config.header_timeout;
    let mut out = worker.take_buffer();
    let info = loop {
        out.clear();
        if inbuf.starts_with(super::h2::PREFACE) {
            worker.give_buffer(out);
            return Next::Http2;
        }
        let maybe_http2 = !inbuf.is_empty() && super::h2::PREFACE.starts_with(inbuf);
        let parsed = if maybe_http2 {
            Ok(None)
        } else {
            head::parse_request(
                inbuf,
                &client,
                |host, path| frontend.route(host, path),
                |u| head::Routed {
                    priority_header: frontend.upstreams[u].priority_header(),
                    name: frontend.upstreams[u].name(),
                },
                |u, request| affinity::read(&frontend.upstreams[u].config_ref(), request),
                &mut out,
            )
        };
        match parsed {
            Ok(Some(info)) => break info,
            Ok(None) => {}
            Err(e) => {
                let status = e.status();
                let sent =
                    send_error(stream, status, &e.to_string(), true, config.idle_timeout).await;
                log_unrouted(frontend, ip, status, sent, inbuf);
                worker.give_buffer(out);
                return Next::Close;
            }
        }
        let read = if inbuf.is_empty() && !stream.buffered() {
            // Between two requests the connection is idle, even when a stale readiness flag
            // brought it here: it closes when room is wanted (shutdown, descriptors running
            // short), unless the next request has just arrived.
            // Biased, the read first: when the request is already there, the room signal is
            // never polled, so it never joins (and leaves) its waiters' list.
            let wanted = tokio::select! {
                biased;
                read = timeout_at(deadline, body::read_some(stream, inbuf)) => Some(read),
                () = worker.idle.room_wanted() => None,
            };
            match wanted {
                Some(read) => read,
                None if room::has_input(stream.tcp()) => continue,
                None => {
                    worker.give_buffer(out);
                    return Next::Close;
                }
            }
        } else {
            timeout_at(deadline, body::read_some(stream, inbuf)).await
        };
        match read {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Ok(_)) | Ok(Err(_)) => {
                worker.give_buffer(out);
                return Next::Close;
            }
            Err(_) => {
                if !inbuf.is_empty() {
                    let detail = format!(
                        "the request head did not arrive within {:?}",
                        config.header_timeout
                    );
                    let sent = send_error(stream, 408, &detail, true, config.idle_timeout).await;
                    log_unrouted(frontend, ip, 408, sent, inbuf);
                }
                worker.give_buffer(out);
                return Next::Close;
            }
        }
    };
    inbuf.drain(..info.head_len);
    let id = headers::request_id(&mut out, info.sent_id);
    if worker.memory.over() {
        super::memory::refuse_request(frontend, worker, info.upstream);
        let page = super::memory::refused_page(id.as_str());
        send_page(stream, 503, &page, true, config.idle_timeout).await;
        worker.give_buffer(out);
        return Next::Close;
    }
    let rules = [
        &config.headers.request,
        &frontend.route_headers[info.upstream].request,
    ];
    if rules.iter().any(|r| !r.is_empty()) {
        let host = headers::host(&out).to_owned();
        let vars = Vars {
            remote_addr: ip,
            host: &host,
            request_id: id.as_str(),
        };
        headers::apply(&mut out, &rules, &vars);
    }
    let next = forward(
        stream, ip, frontend, worker, &info, &id, inbuf, &mut out, timer,
    )
    .await;
    worker.give_buffer(out);
    next
}

/// Forwards one request whose head is in `out` (to send) and whose body starts in `inbuf`.
#[allow(clippy::too_many_arguments)] // the connection's state, passed down once
async fn forward(
    client: &mut impl ClientIo,
    ip: &str,
    frontend: &Frontend,
    worker: &Worker,
    info: &RequestInfo,
    id: &Id,
    inbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    timer: Pin<&mut Sleep>,
) -> Next {
    let upstream: &Upstream = &frontend.upstreams[info.upstream];
    let idle = frontend.config.idle_timeout;
    let continue_sent = !(info.expect_continue && info.framing != Framing::Empty)
        || body::write_timed(client, b"HTTP/1.1 100 Continue\r\n\r\n", idle)
            .await
            .is_ok();
    if !continue_sent {
        return Next::Close;
    }
    // A body small enough is read whole before the first attempt, so a retry can resend it.
    let replayable = match info.framing {
        Framing::Empty => true,
        Framing::Length(n) if n <= upstream.config_ref().retry_body_limit as u64 => {
            while (inbuf.len() as u64) < n {
                match clock::timeout(idle, body::read_some(client, inbuf)).await {
                    Ok(Ok(read)) if read > 0 => {}
                    _ => return Next::Close,
                }
            }
            out.extend_from_slice(&inbuf[..n as usize]);
            inbuf.drain(..n as usize);
            true
        }
        _ => false,
    };
    let facts = Facts {
        idempotent: info.idempotent,
        replayable,
        priority: info.priority,
        affinity: info.affinity,
    };
    let report = &frontend.reports[info.upstream];
    let origin = Origin {
        client: ip,
        listener: &frontend.config.name,
        protocol: "HTTP/1.1",
        request_id: id.as_str(),
        report,
    };
    let mut exchange = H1Exchange {
        client,
        upstream,
        worker,
        frontend,
        idle,
        max_body: frontend.config.max_body_size,
        info,
        inbuf,
        out,
        replayable,
        pending: None,
        report,
        response_rules: [
            &frontend.config.headers.response,
            &frontend.route_headers[info.upstream].response,
        ],
        ip,
        request_id: id.as_str(),
        connect_time: std::cell::Cell::new(None),
        timer,
    };
    forward::forward(upstream, facts, origin, &mut exchange).await
}

/// One request on its way through the HTTP/1.1 wire.
struct H1Exchange<'a, C> {
    client: &'a mut C,
    /// Where upgraded connections are counted.
    upstream: &'a Upstream,
    worker: &'a Worker,
    /// The listener the request came in on.
    frontend: &'a Frontend,
    /// The client side's read/write timeout.
    idle: Duration,
    /// The listener's `max_body_size`, for a chunked body (a longer declared length was
    /// refused with the head).
    max_body: Option<u64>,
    info: &'a RequestInfo,
    /// Bytes read from the client past the head: the body's start, or the next request.
    inbuf: &'a mut Vec<u8>,
    /// The head to send, followed by the whole body when `replayable`.
    out: &'a [u8],
    replayable: bool,
    /// The response whose head [`Exchange::send`] read.
    pending: Option<Pending>,
    /// Where pool use is counted.
    report: &'a forward::Report,
    /// The listener's and the route's `response_headers`.
    response_rules: [&'a HeaderRules; 2],
    /// The client's IP and the request id, for the rules' variables.
    ip: &'a str,
    request_id: &'a str,
    /// The last attempt's time to a connection, for the access log.
    connect_time: std::cell::Cell<Option<Duration>>,
    /// The connection's timer for a backend's answer.
    timer: Pin<&'a mut Sleep>,
}

/// A response head read from a backend, with the connection it came on.
struct Pending {
    conn: BackendConn,
    addr: std::net::SocketAddr,
    /// The TLS setup the connection was opened with (`None`: plain), to pool it under.
    tls: Option<std::sync::Arc<crate::tls::UpstreamTls>>,
    /// Bytes read after the head.
    resp: Vec<u8>,
    /// The head to send the client.
    head_out: Vec<u8>,
    response: head::ResponseInfo,
}

impl<C: ClientIo> H1Exchange<'_, C> {
    /// A pooled connection to `backend` speaking `tls` (`true`), or a new one.
    async fn connection(
        &self,
        backend: &Backend,
        tls: Option<&std::sync::Arc<crate::tls::UpstreamTls>>,
        limit: Duration,
    ) -> Result<(BackendConn, bool), Failure> {
        let addr = backend.address();
        if let Some(conn) = self.worker.conns.take(addr, tls) {
            self.report
                .upstream
                .pool_reused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.connect_time.set(Some(Duration::ZERO));
            return Ok((conn, true));
        }
        // The limit covers the TLS handshake too: a backend that accepts and then stalls is
        // as unusable as one that does not accept.
        self.report
            .upstream
            .pool_opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let started = clock::loop_now();
        // Boxed: opening is the rare case, and its state (the TLS handshake's ~1.5 KB, the
        // timer, the wait on the upstream's state) would otherwise be part of every
        // request's state machine, which is copied whole when a request starts.
        let connect = BackendConn::connect(addr, tls.map(|t| &**t));
        let conn = Box::pin(dial(self.upstream, backend, limit, connect)).await?;
        self.connect_time.set(Some(clock::since(started)));
        Ok((conn, false))
    }
}

/// Why an attempt got no response head: what the read (or the wait for one) of the backend's
/// answer returned (`Some(Ok(_))`: the backend closed; `None`: the response timer, `limit`,
/// fired). `reused`: the attempt was on a pooled connection and nothing had arrived yet (see
/// [`Failure::no_response`]).
fn unanswered(
    addr: std::net::SocketAddr,
    read: Option<std::io::Result<usize>>,
    reused: bool,
    limit: Duration,
) -> Failure {
    match read {
        Some(Ok(_)) => {
            let detail = format!("{addr} closed the connection without a response");
            Failure::no_response(reused, detail)
        }
        Some(Err(e)) => {
            let detail = format!("reading the response from {addr} failed: {e}");
            Failure::no_response(reused, detail)
        }
        None => Failure::timed_out(addr, limit),
    }
}

impl<C: ClientIo> Exchange for H1Exchange<'_, C> {
    type Output = Next;

    async fn send(&mut self, backend: &Backend, cfg: &UpstreamConfig) -> Result<u16, SendError> {
        let addr = backend.address();
        let tls = self.upstream.tls();
        let (mut conn, reused) = self
            .connection(backend, tls.as_ref(), cfg.connect_timeout)
            .await
            .map_err(SendError::Backend)?;

        // Send the head with a buffered body, or the head and then the streamed body. A
        // backend may answer before it has read the whole body (a 413 from its own limit)
        // and close: the send fails, and the answer waiting in the socket is read and passed
        // on, as nginx and HAProxy do; only with no answer there does the attempt fail.
        let mut cut_short: Option<Failure> = None;
        let mut cut = |e: std::io::Error| {
            let failure = Failure::no_response(reused, format!("sending to {addr} failed: {e}"));
            if e.kind() == std::io::ErrorKind::TimedOut {
                // The backend neither reads nor closes: no answer is coming either.
                return Err(SendError::Backend(failure));
            }
            cut_short = Some(failure);
            Ok(())
        };
        if self.replayable {
            if let Err(e) = body::write_timed(&mut conn, self.out, cfg.response_timeout).await {
                cut(e)?;
            }
        } else {
            let limits = Limits {
                read: self.idle,
                write: cfg.response_timeout,
                max_body: self.max_body,
            };
            let copied = body::copy(
                self.info.framing,
                self.client,
                &mut conn,
                self.inbuf,
                0,
                limits,
                self.out,
            )
            .await;
            match copied {
                Ok(_) => {}
                Err(CopyError::Destination(e)) => cut(e)?,
                Err(CopyError::Source(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(SendError::Client {
                        status: Some(408),
                        detail: "the request body did not arrive in time",
                    });
                }
                Err(CopyError::Source(_)) => {
                    return Err(SendError::Client {
                        status: None,
                        detail: "the client closed the connection while sending its body",
                    });
                }
                Err(CopyError::Framing) => {
                    return Err(SendError::Client {
                        status: Some(400),
                        detail: "malformed chunked request body",
                    });
                }
                Err(CopyError::TooLarge) => {
                    return Err(SendError::Client {
                        status: Some(413),
                        detail: "request body too large",
                    });
                }
            }
        }

        // Wait for the response holding no buffer, then take them: the spare buffers are a
        // stack, so the ones taken now are those the last response just gave back, still in
        // the CPU's cache, instead of one per request in flight, cold by the time its response
        // is copied in (HAProxy takes its buffers the same way). A TLS stream may hold
        // decrypted bytes already, so only a plain socket is waited on.
        self.timer
            .as_mut()
            .reset(clock::loop_now() + cfg.response_timeout);
        let limit = cfg.response_timeout;
        if let BackendConn::Plain(tcp) = &conn {
            match clock::within(self.timer.as_mut(), tcp.readable()).await {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    let failed = unanswered(addr, Some(Err(e)), reused, limit);
                    return Err(SendError::Backend(cut_short.unwrap_or(failed)));
                }
                None => {
                    let failed = unanswered(addr, None, reused, limit);
                    return Err(SendError::Backend(cut_short.unwrap_or(failed)));
                }
            }
        }
        // Read the response head, skipping interim (1xx) responses.
        let mut resp = self.worker.take_buffer();
        body::make_room(&mut resp, RESPONSE_READ);
        let mut head_out = self.worker.take_buffer();
        let info = self.info;
        // After an early answer the client's body is partly unread and the backend's
        // connection broken: neither is kept.
        let keep_client =
            info.keep_alive && keep_alive(self.worker, self.frontend) && cut_short.is_none();
        let parsed = loop {
            head_out.clear();
            let client = head::ForClient {
                keep_alive: keep_client,
                http10: info.http10,
            };
            match head::parse_response(&resp, info.is_head, client, &mut head_out) {
                Ok(Some(r)) if (100..200).contains(&r.status) && r.status != 101 => {
                    resp.drain(..r.head_len);
                    continue;
                }
                Ok(Some(mut r)) => {
                    r.reusable &= cut_short.is_none();
                    break Ok(r);
                }
                Ok(None) => {}
                Err(e) => break Err(Failure::no_response(false, format!("{e} {addr}"))),
            }
            let nothing_yet = resp.is_empty();
            match clock::within(self.timer.as_mut(), body::read_some(&mut conn, &mut resp)).await {
                Some(Ok(n)) if n > 0 => {}
                read => {
                    let failed = unanswered(addr, read, reused && nothing_yet, limit);
                    break Err(cut_short.take().unwrap_or(failed));
                }
            }
        };
        match parsed {
            Ok(response) => {
                let status = response.status;
                self.pending = Some(Pending {
                    conn,
                    addr,
                    tls,
                    resp,
                    head_out,
                    response,
                });
                Ok(status)
            }
            Err(failure) => {
                self.worker.give_buffer(resp);
                self.worker.give_buffer(head_out);
                Err(SendError::Backend(failure))
            }
        }
    }

    async fn deliver(&mut self, cfg: &UpstreamConfig, set_cookie: Option<&str>) -> Delivered<Next> {
        let Some(Pending {
            mut conn,
            addr,
            tls,
            mut resp,
            mut head_out,
            response,
        }) = self.pending.take()
        else {
            return Delivered {
                output: Next::Close,
                backend_ok: true,
                bytes_sent: 0,
                verdict_in_body: false,
            };
        };
        if self.response_rules.iter().any(|r| !r.is_empty()) {
            let vars = Vars {
                remote_addr: self.ip,
                host: headers::host(self.out),
                request_id: self.request_id,
            };
            headers::apply(&mut head_out, &self.response_rules, &vars);
        }
        let (client, idle, worker) = (&mut *self.client, self.idle, self.worker);
        if let Some(cookie) = set_cookie
            && head_out.ends_with(b"\r\n\r\n")
        {
            head_out.truncate(head_out.len() - 2);
            head_out.extend_from_slice(b"set-cookie: ");
            head_out.extend_from_slice(cookie.as_bytes());
            head_out.extend_from_slice(b"\r\n\r\n");
        }
        let limits = Limits {
            read: cfg.response_timeout,
            write: idle,
            max_body: None,
        };
        // The body follows the backend's head in `resp`; it is written from there.
        let (from, head) = (response.head_len, &head_out);
        let copied = if response.dechunk {
            body::copy_dechunked(&mut conn, client, &mut resp, from, limits, head).await
        } else {
            body::copy(
                response.framing,
                &mut conn,
                client,
                &mut resp,
                from,
                limits,
                head,
            )
            .await
        };
        let (done, backend_ok, body_sent) = match copied {
            Ok(n) => (true, true, n),
            Err(CopyError::Destination(_)) => (false, true, 0),
            Err(CopyError::Source(_) | CopyError::Framing | CopyError::TooLarge) => {
                (false, false, 0)
            }
        };
        let bytes_sent = head_out.len() as u64 + body_sent;
        if done && response.status == 101 {
            // Switching protocols: from here the connection carries whatever the two ends speak;
            // bytes each side sent early go first.
            let early_ok = body::write_timed(client, &resp, idle).await.is_ok()
                && body::write_timed(&mut conn, self.inbuf, idle).await.is_ok();
            self.inbuf.clear();
            worker.give_buffer(resp);
            worker.give_buffer(head_out);
            if early_ok {
                self.upstream.recorder().upgraded();
                super::tunnel::relay(client, &mut conn, cfg.tunnel_timeout).await;
            }
            return Delivered {
                output: Next::Close,
                backend_ok,
                bytes_sent,
                verdict_in_body: false,
            };
        }
        if done && response.reusable && resp.is_empty() && cfg.keepalive > 0 {
            worker.conns.put(
                (addr, tls),
                conn,
                &self.report.upstream,
                cfg.keepalive,
                cfg.keepalive_timeout,
            );
        }
        worker.give_buffer(resp);
        worker.give_buffer(head_out);
        let output = if done && !response.close_client {
            Next::KeepAlive
        } else {
            Next::Close
        };
        Delivered {
            output,
            backend_ok,
            bytes_sent,
            verdict_in_body: false,
        }
    }

    fn discard(&mut self) {
        if let Some(p) = self.pending.take() {
            self.worker.give_buffer(p.resp);
            self.worker.give_buffer(p.head_out);
        }
    }

    async fn refuse(&mut self, status: Option<u16>, page: &ErrorPage<'_>) -> (Next, u64) {
        let Some(status) = status else {
            return (Next::Close, 0);
        };
        // The client's body may still be on the wire after a refused request (or be what
        // was malformed): the connection can be kept only when it was read whole.
        let close = !self.info.keep_alive
            || !keep_alive(self.worker, self.frontend)
            || !self.replayable
            || status < 500;
        let sent = send_page(self.client, status, page, close, self.idle).await;
        (if close { Next::Close } else { Next::KeepAlive }, sent)
    }

    fn connect_time(&self) -> Option<Duration> {
        self.connect_time.get()
    }

    fn request_view(&self) -> RequestView<'_> {
        let line = self.out.split(|&b| b == b'\r').next().unwrap_or_default();
        let mut parts = line.splitn(3, |&b| b == b' ');
        let mut next = || std::str::from_utf8(parts.next().unwrap_or_default()).unwrap_or("-");
        let text = |name| headers::value(self.out, name).and_then(|v| std::str::from_utf8(v).ok());
        RequestView {
            method: next(),
            target: next(),
            referer: text("referer"),
            user_agent: text("user-agent"),
        }
    }

    fn bytes_received(&self) -> u64 {
        let body = match self.info.framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        self.info.head_len as u64 + body
    }
}
