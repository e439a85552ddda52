//! One client connection speaking HTTP/1.1: read a request head, choose a backend, forward,
//! stream the answer back, and keep the connection for the next request.
//!
//! Failover follows one rule (DESIGN.md, "Errors and bad input"): a request that never
//! reached a backend (connect refused or timed out) is retried on another; an idempotent
//! request whose body can be replayed is also retried on a configured status or a response
//! timeout; anything that may have reached a backend and is not idempotent is never sent
//! twice. Retries also need the upstream's retry budget.

use std::sync::Arc;
use std::time::Duration;

use balance::{Lease, Outcome};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, timeout, timeout_at};

use super::Site;
use super::Worker;
use super::body::{self, CopyError, Limits};
use super::head::{self, Client, Framing, RequestInfo};
use super::respond::{ErrorPage, send_error, send_page};
use super::select::{Attempts, NoAttempt, finish, no_attempt_detail};
use crate::config::UpstreamConfig;
use crate::upstream::Upstream;

/// What the connection does after a request.
enum Next {
    KeepAlive,
    Close,
    /// The connection opened with the HTTP/2 preface.
    Http2,
}

/// Serves one client connection until it closes, errs, idles out or the server shuts down.
pub(crate) async fn serve(
    mut stream: TcpStream,
    peer: std::net::SocketAddr,
    site: Arc<Site>,
    worker: std::rc::Rc<Worker>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let ip = peer.ip().to_canonical().to_string();
    let mut pending: Vec<u8> = Vec::new();
    let mut first = true;
    loop {
        if pending.is_empty() {
            let wait = if first {
                site.config.header_timeout
            } else {
                site.config.idle_timeout
            };
            // Idle connections do not watch for shutdown: the worker waits only for busy
            // ones, then drops the rest, so an idle connection costs no more than this wait.
            if !matches!(timeout(wait, stream.readable()).await, Ok(Ok(()))) {
                return;
            }
        }
        first = false;
        let _busy = worker.busy();
        let mut inbuf = if pending.is_empty() {
            worker.take_buffer()
        } else {
            std::mem::take(&mut pending)
        };
        // Boxed: the request's state machine is large and only lives while a request is in
        // progress, so an idle keep-alive connection holds just this loop's few fields.
        let next = Box::pin(request(&mut stream, &ip, &site, &worker, &mut inbuf)).await;
        if matches!(next, Next::Http2) {
            let ip: std::rc::Rc<str> = ip.into();
            Box::pin(super::h2::serve(
                stream,
                inbuf,
                ip,
                site,
                std::rc::Rc::clone(&worker),
                shutdown,
            ))
            .await;
            return;
        }
        if inbuf.is_empty() {
            worker.give_buffer(inbuf);
        } else {
            pending = inbuf;
        }
        if matches!(next, Next::Close) || *shutdown.borrow() {
            return;
        }
    }
}

/// Reads one request head (bytes may already be in `inbuf`) and handles the request.
async fn request(
    stream: &mut TcpStream,
    ip: &str,
    site: &Site,
    worker: &Worker,
    inbuf: &mut Vec<u8>,
) -> Next {
    let config = &site.config;
    let client = Client {
        ip,
        max_header_bytes: config.max_header_bytes,
        max_body_size: config.max_body_size,
    };
    let deadline = Instant::now() + config.header_timeout;
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
                |host, path| site.route(host, path),
                |u| site.upstreams[u].priority_header(),
                &mut out,
            )
        };
        match parsed {
            Ok(Some(info)) => break info,
            Ok(None) => {}
            Err(e) => {
                send_error(
                    stream,
                    e.status(),
                    &e.to_string(),
                    true,
                    config.idle_timeout,
                )
                .await;
                worker.give_buffer(out);
                return Next::Close;
            }
        }
        let read = timeout_at(deadline, body::read_some(stream, inbuf)).await;
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
                    send_error(stream, 408, &detail, true, config.idle_timeout).await;
                }
                worker.give_buffer(out);
                return Next::Close;
            }
        }
    };
    inbuf.drain(..info.head_len);
    let upstream = &site.upstreams[info.upstream];
    let next = forward(stream, site, worker, upstream, &info, inbuf, &mut out).await;
    worker.give_buffer(out);
    next
}

/// Forwards one request whose head is in `out` (to send) and whose body starts in `inbuf`.
async fn forward(
    client: &mut TcpStream,
    site: &Site,
    worker: &Worker,
    upstream: &Upstream,
    info: &RequestInfo,
    inbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Next {
    let started = Instant::now();
    let cfg = upstream.settings();
    let idle = site.config.idle_timeout;
    let _active = upstream.begin();

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
        Framing::Length(n) if n <= cfg.retry_body_limit as u64 => {
            while (inbuf.len() as u64) < n {
                match timeout(idle, body::read_some(client, inbuf)).await {
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

    let mut attempts = Attempts::new(upstream, cfg.tries.get() as usize);
    // Built only when an attempt fails, so a successful request formats nothing.
    let mut last: Option<(u16, String)> = None;
    let why = loop {
        let lease = match attempts.next(info.priority).await {
            Ok(lease) => lease,
            Err(why) => break why,
        };
        let attempt = attempt_once(
            client,
            site,
            worker,
            &cfg,
            info,
            &lease,
            inbuf,
            out,
            replayable,
            &mut attempts,
        );
        match attempt.await {
            Attempt::Done {
                next,
                outcome,
                latency,
                status,
            } => {
                if site.access_log {
                    let id = lease.backend().id();
                    log_access(client, out, &cfg.name, id, status, attempts.made(), started);
                }
                finish(upstream, lease, outcome, latency, status);
                return next;
            }
            Attempt::Failed {
                outcome,
                latency,
                status,
                detail,
                retry,
            } => {
                let id = lease.backend().id().to_owned();
                finish(upstream, lease, outcome, latency, status);
                last = Some((status, format!("{detail} (backend {id})")));
                if !retry {
                    break NoAttempt::Tries;
                }
            }
            Attempt::Abort => return Next::Close,
        }
    };
    let (status, detail) = no_attempt_detail(&cfg.name, why, last);
    let close = !info.keep_alive || !replayable;
    let page = ErrorPage {
        upstream: Some(&cfg.name),
        ..ErrorPage::default()
    };
    send_page(client, status, &page, close, idle).await;
    if site.access_log {
        log_access(
            client,
            out,
            &cfg.name,
            "-",
            status,
            attempts.made(),
            started,
        );
    }
    tracing::warn!(upstream = cfg.name.as_str(), status, "{detail}");
    if close { Next::Close } else { Next::KeepAlive }
}

/// One access-log line: client, method, path, status, backend, attempts, duration. Method and
/// path are read back from the forwarded head, which starts with the request line.
fn log_access(
    client: &TcpStream,
    head: &[u8],
    upstream: &str,
    backend: &str,
    status: u16,
    attempts: usize,
    started: Instant,
) {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.splitn(3, |&b| b == b' ');
    let method = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let peer = client
        .peer_addr()
        .map(|a| a.ip().to_canonical().to_string())
        .unwrap_or_default();
    tracing::info!(
        target: "rondo::access",
        client = peer.as_str(),
        method = &*method,
        path = &*path,
        status,
        upstream,
        backend,
        attempts,
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
    );
}

/// The result of one attempt on one backend.
enum Attempt {
    /// A response went to the client.
    Done {
        next: Next,
        outcome: Outcome,
        latency: Duration,
        status: u16,
    },
    /// Nothing went to the client; another backend may be tried if `retry`.
    Failed {
        outcome: Outcome,
        latency: Duration,
        status: u16,
        detail: String,
        retry: bool,
    },
    /// The client connection broke; nothing more can be sent.
    Abort,
}

#[allow(clippy::too_many_arguments)]
async fn attempt_once(
    client: &mut TcpStream,
    site: &Site,
    worker: &Worker,
    cfg: &UpstreamConfig,
    info: &RequestInfo,
    lease: &Lease<'_>,
    inbuf: &mut Vec<u8>,
    out: &[u8],
    replayable: bool,
    attempts: &mut Attempts<'_>,
) -> Attempt {
    let addr = lease.backend().address();
    let idle = site.config.idle_timeout;
    let start = Instant::now();
    let may_retry = |reached: bool| !reached || (info.idempotent && replayable);

    let mut conn = match worker.conns.take(addr) {
        Some(c) => c,
        None => match timeout(cfg.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(c)) => {
                let _ = c.set_nodelay(true);
                c
            }
            Ok(Err(e)) => {
                return Attempt::Failed {
                    outcome: Outcome::TransportError,
                    latency: start.elapsed(),
                    status: 502,
                    detail: format!("connecting to {addr} failed: {e}"),
                    retry: may_retry(false),
                };
            }
            Err(_) => {
                return Attempt::Failed {
                    outcome: Outcome::TransportError,
                    latency: start.elapsed(),
                    status: 504,
                    detail: format!(
                        "connecting to {addr} timed out after {:?}",
                        cfg.connect_timeout
                    ),
                    retry: may_retry(false),
                };
            }
        },
    };

    // Send the head with a buffered body, or the head and then the streamed body.
    let sent = if replayable {
        body::write_timed(&mut conn, out, cfg.response_timeout)
            .await
            .map_err(|e| format!("sending to {addr} failed: {e}"))
    } else {
        let limits = Limits {
            read: idle,
            write: cfg.response_timeout,
        };
        match body::copy(info.framing, client, &mut conn, inbuf, limits, out).await {
            Ok(_) => Ok(()),
            Err(CopyError::Destination(e)) => Err(format!("sending to {addr} failed: {e}")),
            Err(CopyError::Source(_)) | Err(CopyError::Framing) => return Attempt::Abort,
        }
    };
    if let Err(detail) = sent {
        return Attempt::Failed {
            outcome: Outcome::TransportError,
            latency: start.elapsed(),
            status: 502,
            detail,
            retry: may_retry(true),
        };
    }

    // Read the response head, skipping interim (1xx) responses.
    let mut resp = worker.take_buffer();
    let mut head_out = worker.take_buffer();
    let deadline = start + cfg.response_timeout;
    let parsed = loop {
        head_out.clear();
        match head::parse_response(&resp, info.is_head, info.keep_alive, &mut head_out) {
            Ok(Some(r)) if (100..200).contains(&r.status) && r.status != 101 => {
                resp.drain(..r.head_len);
                continue;
            }
            Ok(Some(r)) => break Ok(r),
            Ok(None) => {}
            Err(e) => break Err((502, format!("{e} {addr}"))),
        }
        match timeout_at(deadline, body::read_some(&mut conn, &mut resp)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Ok(_)) => {
                break Err((
                    502,
                    format!("{addr} closed the connection without a response"),
                ));
            }
            Ok(Err(e)) => {
                break Err((502, format!("reading the response from {addr} failed: {e}")));
            }
            Err(_) => {
                break Err((
                    504,
                    format!("{addr} did not answer within {:?}", cfg.response_timeout),
                ));
            }
        }
    };
    let latency = start.elapsed();
    let response = match parsed {
        Ok(r) => r,
        Err((status, detail)) => {
            worker.give_buffer(resp);
            worker.give_buffer(head_out);
            return Attempt::Failed {
                outcome: Outcome::TransportError,
                latency,
                status,
                detail,
                retry: may_retry(true),
            };
        }
    };
    let outcome = if response.status >= 500 {
        Outcome::ServerError
    } else {
        Outcome::Success
    };
    // Retried only if another attempt is really possible: the last one's answer goes to
    // the client as it is.
    if cfg.retry_on_status.contains(&response.status) && may_retry(true) && attempts.may_retry() {
        worker.give_buffer(resp);
        worker.give_buffer(head_out);
        return Attempt::Failed {
            outcome,
            latency,
            status: response.status,
            detail: format!("{addr} answered {}", response.status),
            retry: true,
        };
    }

    // Forward the response.
    resp.drain(..response.head_len);
    let limits = Limits {
        read: cfg.response_timeout,
        write: idle,
    };
    let mut done = true;
    let mut backend_ok = true;
    match body::copy(
        response.framing,
        &mut conn,
        client,
        &mut resp,
        limits,
        &head_out,
    )
    .await
    {
        Ok(_) => {}
        Err(CopyError::Destination(_)) => done = false,
        Err(CopyError::Source(_)) | Err(CopyError::Framing) => {
            done = false;
            backend_ok = false;
        }
    }
    let status = response.status;
    let outcome = if backend_ok {
        outcome
    } else {
        Outcome::TransportError
    };
    if done && status == 101 {
        // Switching protocols: from here the connection carries whatever the two ends speak;
        // bytes each side sent early go first.
        let early_ok = body::write_timed(client, &resp, idle).await.is_ok()
            && body::write_timed(&mut conn, inbuf, idle).await.is_ok();
        inbuf.clear();
        worker.give_buffer(resp);
        worker.give_buffer(head_out);
        if early_ok {
            let _ = tokio::io::copy_bidirectional(client, &mut conn).await;
        }
        return Attempt::Done {
            next: Next::Close,
            outcome,
            latency,
            status,
        };
    }
    if done && response.reusable && resp.is_empty() && cfg.keepalive > 0 {
        worker
            .conns
            .put(addr, conn, cfg.keepalive, cfg.keepalive_timeout);
    }
    worker.give_buffer(resp);
    worker.give_buffer(head_out);
    let next = if done && !response.close_client {
        Next::KeepAlive
    } else {
        Next::Close
    };
    Attempt::Done {
        next,
        outcome,
        latency,
        status,
    }
}
