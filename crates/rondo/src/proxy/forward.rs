//! The forwarding policy, written once for every protocol: which backend each attempt goes
//! to, whether a failed attempt is tried again elsewhere, what an attempt costs, what it
//! tells the backend's state, what the client gets when nothing worked, and the access log.
//!
//! A protocol path (HTTP/1.1 in `h1`, HTTP/2 in `h2`) only implements [`Exchange`]: "send
//! this request to that backend and tell me how far it got", then "forward that response".
//! Everything that decides lives here.
//!
//! # The retry rule (DESIGN.md, "Forwarding policy")
//!
//! | how the attempt failed | retried on another backend when | costs | counts against the backend |
//! |---|---|---|---|
//! | not sent: connect refused, connect timeout | always (nothing reached a backend) | a try | yes |
//! | not sent: still connecting when its backend left rotation while others serve | always | nothing | no |
//! | refused unprocessed: HTTP/2 REFUSED_STREAM, left out by a GOAWAY | always | nothing | no |
//! | no response byte, on a **reused** pooled connection | idempotent and body replayable | nothing | no |
//! | no response byte, on a new connection | idempotent and body replayable | a try and the budget | yes |
//! | response timeout | idempotent and body replayable | a try and the budget | yes |
//! | either of the two above, when it took its backend out while others still serve | idempotent and body replayable | a try | yes |
//! | a status in `retry_on_status` | idempotent, replayable, and another attempt possible | a try and the budget | 5xx: yes |
//! | the same, from a backend already out of rotation while others still serve | the same | a try | 5xx: yes |
//! | a local error: no descriptor, no port, no memory | never (503, `Retry-After`) | — | no |
//!
//! A reused keep-alive connection that fails before any response byte costs neither a try
//! nor the retry budget: the backend closed it while it sat idle, or crashed with requests
//! in flight, and the next backend will answer (nginx's rule in `ngx_http_upstream.c`, which
//! does not count a cached connection's error as a try). Such a failure does not count
//! against the backend either: a keep-alive race says nothing about its health, and a crash
//! is seen at once by the next connect, which is refused. Free attempts are bounded by
//! [`MAX_TRIED`], so a request never loops.
//!
//! The retry budget (Envoy's model) limits what it is for: retry storms against backends
//! that are slow or answering 5xx. A connect that was refused cost the backend nothing, so
//! its retry spends a try but not the budget. Nor does the retry of a timeout (or a
//! connection that died without an answer) whose failure took its backend out of rotation
//! (ejected, breaker open) while the upstream still has primaries that serve: one backend
//! hung, not the upstream overloaded. Its requests in flight time out together, a burst
//! larger than the budget when many clients were on it, and each goes once to a healthy
//! backend; nothing new reaches the hung one, so the burst cannot repeat (nginx and HAProxy
//! retry every timed-out GET). When every backend is slow, the pool falls into panic or has
//! nothing left, and the budget applies again.
//!
//! This file is longer than the ~500 lines the layout aims for on purpose: it is the one place
//! the forwarding policy lives (the structure issue asked for exactly that), and splitting the
//! attempt loop from its retry table would put the decision back in two files.

use std::time::Duration;

use balance::{Backend, Deferred, Lease, Mode, Outcome};
use tokio::time::{Instant, timeout_at};

use super::affinity::{self, Affinity};
use super::protocol::outcome_of;
use super::respond::ErrorPage;
use crate::access_log::{AccessLog, AccessRecord, Tried, UpstreamTimes};
use crate::clock;
use crate::config::UpstreamConfig;
use crate::counters::{ListenerCounters, ResponseCounts, RetryReason, Source, UpstreamCounters};
use crate::upstream::{ActiveGuard, Upstream};

/// Backends one request remembers having tried, so its retries go elsewhere; also the bound
/// on attempts that cost no try. A fixed array: the request path allocates nothing.
pub(crate) const MAX_TRIED: usize = 8;

/// What the policy needs to know about a request to decide on retries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts {
    /// Safe to send twice (see [`super::protocol::is_idempotent`]).
    pub(crate) idempotent: bool,
    /// The body (if any) is held whole and can be sent again.
    pub(crate) replayable: bool,
    /// Order in the upstream's wait queue; 0 when the request carries none.
    pub(crate) priority: i32,
    /// Its hash key and sticky cookie: where the first attempt should go.
    pub(crate) affinity: Affinity,
}

/// How far a failed attempt got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Nothing reached the backend: the connection was refused or did not open in time.
    NotSent,
    /// The request was (maybe partly) sent and no response byte came back: reset, closed.
    NoResponse,
    /// The backend did not answer within the response timeout.
    TimedOut,
    /// The backend left rotation (health, breaker, ejection) while others still serve and
    /// the connection to it was still opening: given up (see [`super::dial`]). Nothing was
    /// sent, so it goes elsewhere whatever the request, at no cost, and it is not counted
    /// against the backend: what took the backend out was.
    Abandoned,
    /// The backend turned the request down without processing it: an HTTP/2 stream refused
    /// (REFUSED_STREAM) or left out by a graceful GOAWAY, or a shared connection that closed
    /// before the request was written. Safe to send elsewhere whatever the method, and no
    /// sign of ill health (a backend that is shutting down or at its stream limit).
    Refused,
}

/// A failed attempt, as the protocol path reports it.
#[derive(Debug)]
pub(crate) struct Failure {
    /// How far it got.
    pub(crate) stage: Stage,
    /// The connection came from the idle pool (see the module's table).
    pub(crate) reused: bool,
    /// Our side failed (no descriptor, no ephemeral port, no memory): not the backend's
    /// fault, so it is not counted against it and not retried.
    pub(crate) local: bool,
    /// What the client gets if this is the last attempt: 502, or 504 for a timeout.
    pub(crate) status: u16,
    /// For the log, never for the client.
    pub(crate) detail: String,
}

impl Failure {
    /// A connection that could not be opened: `local` when our side ran out of something.
    pub(crate) fn connect(addr: std::net::SocketAddr, error: &std::io::Error) -> Failure {
        let local = is_local(error);
        Failure {
            stage: Stage::NotSent,
            reused: false,
            local,
            status: if local { 503 } else { 502 },
            detail: format!("connecting to {addr} failed: {error}"),
        }
    }

    /// A connection that did not open within `limit`.
    pub(crate) fn connect_timeout(addr: std::net::SocketAddr, limit: Duration) -> Failure {
        Failure {
            stage: Stage::NotSent,
            reused: false,
            local: false,
            status: 504,
            detail: format!("connecting to {addr} timed out after {limit:?}"),
        }
    }

    /// A connect given up because its backend left rotation (see [`Stage::Abandoned`]).
    pub(crate) fn abandoned(addr: std::net::SocketAddr) -> Failure {
        Failure {
            stage: Stage::Abandoned,
            reused: false,
            local: false,
            status: 502,
            detail: format!("gave up connecting to {addr}: it left rotation meanwhile"),
        }
    }

    /// A backend that did not answer within `limit`.
    pub(crate) fn timed_out(addr: std::net::SocketAddr, limit: Duration) -> Failure {
        Failure {
            stage: Stage::TimedOut,
            reused: false,
            local: false,
            status: 504,
            detail: format!("{addr} did not answer within {limit:?}"),
        }
    }

    /// A request the backend turned down unprocessed (see [`Stage::Refused`]).
    pub(crate) fn refused(detail: String) -> Failure {
        Failure {
            stage: Stage::Refused,
            reused: true,
            local: false,
            status: 502,
            detail,
        }
    }

    /// A request sent (maybe partly) with no response byte back.
    pub(crate) fn no_response(reused: bool, detail: String) -> Failure {
        Failure {
            stage: Stage::NoResponse,
            reused,
            local: false,
            status: 502,
            detail,
        }
    }
}

/// True for errors that say this process or machine ran out of something, not that the
/// backend failed: descriptors, ephemeral ports, buffer memory.
pub(crate) fn is_local(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

/// Why an attempt ended without a response from the backend that reached the client.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The backend side failed.
    Backend(Failure),
    /// The client side failed while its body was being sent: it broke the connection
    /// (`status` is `None`, nothing can be sent), or its body was malformed or too slow
    /// (`status` is what it gets). Not the backend's fault.
    Client {
        status: Option<u16>,
        detail: &'static str,
    },
}

/// A response that went (or is going) to the client.
#[derive(Debug)]
pub(crate) struct Delivered<T> {
    /// What the protocol path returns to its caller.
    pub(crate) output: T,
    /// False when the backend failed in the middle of the body: it counts against it.
    pub(crate) backend_ok: bool,
    /// Bytes written to the client (head and body) as far as the protocol path knows.
    pub(crate) bytes_sent: u64,
    /// The response's outcome is known only at the end of its body (a gRPC status in the
    /// trailers): the policy hands the request over with [`Exchange::judge_later`].
    pub(crate) verdict_in_body: bool,
}

/// What the access log records of the request itself.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RequestView<'a> {
    /// The method.
    pub(crate) method: &'a str,
    /// The request target.
    pub(crate) target: &'a str,
    /// The `Referer` header.
    pub(crate) referer: Option<&'a str>,
    /// The `User-Agent` header.
    pub(crate) user_agent: Option<&'a str>,
}

/// One protocol's way of sending a request to a backend. The policy calls `send`; on a
/// status it either calls `deliver` (the response goes to the client) or `discard` (another
/// backend will be tried); when no attempt produced a response it calls `refuse`.
pub(crate) trait Exchange {
    /// What a finished request returns to the protocol path.
    type Output;

    /// Sends the request to `backend` and reads the response head; returns its status.
    async fn send(&mut self, backend: &Backend, cfg: &UpstreamConfig) -> Result<u16, SendError>;

    /// Forwards the response whose head [`Exchange::send`] read, with a `Set-Cookie` header
    /// of this value added when `set_cookie` is given (a sticky upstream).
    async fn deliver(
        &mut self,
        cfg: &UpstreamConfig,
        set_cookie: Option<&str>,
    ) -> Delivered<Self::Output>;

    /// Drops the response whose head [`Exchange::send`] read.
    fn discard(&mut self);

    /// Answers the client with rondo's own `status` (`None`: the client is gone, answer
    /// nothing) and this page (a 5xx page never shows the detail, see [`ErrorPage`]);
    /// returns the output and the bytes sent for the access log, counted as for a delivered
    /// response ([`Delivered::bytes_sent`]).
    async fn refuse(&mut self, status: Option<u16>, page: &ErrorPage<'_>) -> (Self::Output, u64);

    /// The request as the access log records it (asked only when the log is on: it may
    /// search the head).
    fn request_view(&self) -> RequestView<'_>;

    /// Bytes read from the client for this request (head and body read so far), for the
    /// listener's byte counter; `0` where the protocol path does not count them.
    fn bytes_received(&self) -> u64 {
        0
    }

    /// How long the last attempt took to get a backend connection (zero for a pooled one),
    /// when the protocol path measures it.
    fn connect_time(&self) -> Option<Duration> {
        None
    }

    /// Whether the request body can still be sent whole to another backend (a body
    /// streamed past the replay limit cannot). [`Facts::replayable`] is what was known
    /// before the first attempt; this is asked each time a retry is considered.
    fn can_replay(&self) -> bool {
        true
    }

    /// Takes a delivered request whose outcome its response body will tell
    /// ([`Delivered::verdict_in_body`]); the exchange judges it with [`balance::Pool::judge`]
    /// when the body ends. Dropped unjudged, it counts neither way.
    fn judge_later(&mut self, deferred: Deferred) {
        drop(deferred);
    }

    /// What the response whose head [`Exchange::send`] read says about the backend, and
    /// whether it may be retried: by its HTTP status, unless the protocol knows better (a
    /// gRPC call's `grpc-status`).
    fn verdict(&self, status: u16, cfg: &UpstreamConfig) -> Verdict {
        Verdict {
            outcome: outcome_of(status),
            retry: cfg.retry_on_status.contains(&status),
        }
    }
}

/// What a response says, for the backend's state and for the retry rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Success or failure, for the breaker and ejection.
    pub(crate) outcome: Outcome,
    /// The answer asks for another backend (`retry_on_status`, `grpc_retry_on`), when the
    /// request may be sent twice.
    pub(crate) retry: bool,
}

/// Where the request came from, for the access log, the metrics and error pages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin<'a> {
    /// The client's IP.
    pub(crate) client: &'a str,
    /// The listener's name.
    pub(crate) listener: &'a str,
    /// "HTTP/1.1" or "HTTP/2.0".
    pub(crate) protocol: &'static str,
    /// The request's id (forwarded, logged, shown in error pages).
    pub(crate) request_id: &'a str,
    /// Where the request reports what happened.
    pub(crate) report: &'a Report,
}

/// What one listener's route reports to: the access log and its counters. Built with the
/// listener (handles are taken once, not per request).
#[derive(Debug)]
pub(crate) struct Report {
    /// The access log.
    pub(crate) access_log: AccessLog,
    /// The listener's connection and byte counters.
    pub(crate) listener: std::sync::Arc<ListenerCounters>,
    /// Responses of this listener through this route's upstream.
    pub(crate) responses: std::sync::Arc<ResponseCounts>,
    /// The upstream's retry and pool counters.
    pub(crate) upstream: std::sync::Arc<UpstreamCounters>,
}

/// What made an attempt fail, as the retry that follows it is counted.
fn retry_reason(stage: Stage) -> RetryReason {
    match stage {
        Stage::NotSent | Stage::Abandoned | Stage::Refused => RetryReason::Connect,
        Stage::NoResponse => RetryReason::Reset,
        Stage::TimedOut => RetryReason::Timeout,
    }
}

/// What an attempt costs the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cost {
    /// Nothing: a reused connection's failure before any response byte.
    Free,
    /// One of the request's `tries`.
    Try,
    /// A try and a place in the upstream's retry budget.
    TryAndBudget,
}

/// Why a request gets no further attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoAttempt {
    /// The failure is not one that may be retried.
    NotRetryable,
    /// Its `tries` are used up.
    Tries,
    /// The upstream's retry budget is spent.
    Budget,
    /// No backend is available (or every available one was tried).
    NoBackend,
    /// Every backend is at its connection limit and the queue gave no slot.
    AtLimit,
}

/// The attempts of one request: how many tries it used, which backends it tried, and the
/// retry it holds from the upstream's budget.
struct Attempts<'u> {
    upstream: &'u Upstream,
    tries: usize,
    /// Attempts that cost a try.
    counted: usize,
    /// Attempts made (picked a backend).
    made: usize,
    tried: [*const Backend; MAX_TRIED],
    n_tried: usize,
    /// The budget's permit for the attempt in progress.
    retry: Option<ActiveGuard<'u>>,
    /// A permit taken by [`Attempts::allow`] for the next attempt.
    reserved: Option<ActiveGuard<'u>>,
}

impl<'u> Attempts<'u> {
    fn new(upstream: &'u Upstream, tries: usize) -> Attempts<'u> {
        Attempts {
            upstream,
            tries,
            counted: 0,
            made: 0,
            tried: [std::ptr::null(); MAX_TRIED],
            n_tried: 0,
            retry: None,
            reserved: None,
        }
    }

    /// Whether a further attempt of this cost may follow. A budget permit, when one is
    /// needed, is taken now and kept for that attempt: ask before discarding a response that
    /// could be retried, so the last one is forwarded instead.
    fn allow(&mut self, cost: Cost) -> Result<(), NoAttempt> {
        match self.effective(cost) {
            Cost::Free => Ok(()),
            _ if self.counted >= self.tries => Err(NoAttempt::Tries),
            Cost::Try => Ok(()),
            Cost::TryAndBudget => {
                if self.reserved.is_none() {
                    self.reserved = self.upstream.try_retry();
                }
                if self.reserved.is_some() {
                    Ok(())
                } else {
                    Err(NoAttempt::Budget)
                }
            }
        }
    }

    /// Lets `backend`, the one the last attempt went to, be picked again.
    fn untry(&mut self, backend: &std::sync::Arc<Backend>) {
        if let Some(n) = self.n_tried.checked_sub(1)
            && self.tried[n] == std::sync::Arc::as_ptr(backend)
        {
            self.n_tried = n;
        }
    }

    /// True when a backend this request has not tried could take a retry (see
    /// [`balance::Snapshot::any_candidate`]). O(n), asked only before a response is
    /// discarded for a retry.
    fn another_to_try(&self) -> bool {
        let tried = &self.tried[..self.n_tried];
        let snap = self.upstream.pool().snapshot();
        snap.any_candidate(|b| !tried.contains(&(b as *const Backend)))
    }

    /// A free attempt past [`MAX_TRIED`] attempts costs a try: free attempts are bounded.
    fn effective(&self, cost: Cost) -> Cost {
        if cost == Cost::Free && self.made >= MAX_TRIED {
            Cost::Try
        } else {
            cost
        }
    }

    /// Starts an attempt of this cost on a backend not tried yet (on the first attempt,
    /// waiting in the upstream's queue when every backend is at its connection limit).
    async fn next(
        &mut self,
        cost: Cost,
        facts: &Facts,
        cfg: &UpstreamConfig,
    ) -> Result<Lease<'u>, NoAttempt> {
        let first = self.made == 0;
        let cost = self.effective(cost);
        if !first {
            self.allow(cost)?;
            self.retry = self.reserved.take();
        }
        let tried = &self.tried[..self.n_tried];
        let Some(lease) = pick(self.upstream, cfg, tried, facts, first).await else {
            let limited = first && self.upstream.pool().snapshot().mode() != Mode::Empty;
            return Err(if limited {
                NoAttempt::AtLimit
            } else {
                NoAttempt::NoBackend
            });
        };
        self.made += 1;
        if first || cost != Cost::Free {
            self.counted += 1;
        }
        if !first {
            self.upstream.recorder().retried();
        }
        if self.n_tried < MAX_TRIED {
            self.tried[self.n_tried] = std::sync::Arc::as_ptr(lease.backend());
            self.n_tried += 1;
        }
        Ok(lease)
    }
}

/// The cost of trying again after `failure`, or `None` when it must not be retried.
fn retry_cost(failure: &Failure, facts: Facts) -> Option<Cost> {
    let resendable = facts.idempotent && facts.replayable;
    match failure.stage {
        _ if failure.local => None,
        Stage::NotSent => Some(Cost::Try),
        Stage::Abandoned => Some(Cost::Free),
        Stage::Refused if facts.replayable => Some(Cost::Free),
        Stage::Refused => None,
        Stage::NoResponse | Stage::TimedOut if !resendable => None,
        Stage::NoResponse if failure.reused => Some(Cost::Free),
        Stage::NoResponse | Stage::TimedOut => Some(Cost::TryAndBudget),
    }
}

/// The cost of a retry after a failure that took `failed` out of rotation (or came from it
/// once it was out) while the upstream still serves from its primaries: a try, not the
/// budget (see the module's table).
fn spare_budget(cost: Cost, failed: &Backend, upstream: &Upstream) -> Cost {
    if cost == Cost::TryAndBudget && upstream.is_out_while_others_serve(failed) {
        Cost::Try
    } else {
        cost
    }
}

/// What the backend's state learns from a failure: nothing for a reused connection's
/// failure before any response byte and for a local error (see the module's table).
fn counts_against_backend(failure: &Failure) -> bool {
    !(failure.local
        || failure.stage == Stage::Refused
        || failure.stage == Stage::Abandoned
        || (failure.reused && failure.stage == Stage::NoResponse))
}

/// Forwards one request through `exchange`: picks, sends, retries by the rule above,
/// reports every outcome to the upstream, answers the client when nothing worked, and
/// writes the access line.
pub(crate) async fn forward<E: Exchange>(
    upstream: &Upstream,
    facts: Facts,
    origin: Origin<'_>,
    exchange: &mut E,
) -> E::Output {
    let started = clock::loop_now();
    let cfg = upstream.config_ref();
    if cfg.hash_key.is_some() && facts.affinity.key.is_none() {
        upstream.recorder().unkeyed();
    }
    let _active = upstream.begin();
    let mut attempts = Attempts::new(upstream, cfg.tries.get() as usize);
    let mut cost = Cost::Try;
    // Built only when an attempt fails, so a successful request formats nothing.
    let mut last: Option<(u16, String)> = None;
    let mut tried: Option<String> = None;
    let mut retrying: Option<RetryReason> = None;
    let mut times = UpstreamTimes::default();
    let report = origin.report;
    let why = loop {
        let lease = match attempts.next(cost, &facts, &cfg).await {
            Ok(lease) => lease,
            Err(why) => break why,
        };
        if let Some(reason) = retrying.take() {
            report.upstream.retry(reason);
        }
        let start = clock::loop_now();
        match exchange.send(lease.backend(), &cfg).await {
            Ok(status) => {
                let latency = clock::since(start);
                times = UpstreamTimes {
                    connect: exchange.connect_time(),
                    header: Some(latency),
                    response: None,
                };
                let Verdict { outcome, retry } = exchange.verdict(status, &cfg);
                // The answers a failing backend gives to the requests it had in flight when
                // its breaker opened are retried like its timeouts: nothing new reaches it.
                // With no other backend to try, the backend's own answer goes to the client
                // (its body and headers: a maintenance page, a `Retry-After`), as nginx
                // passes on the last answer, instead of rondo's page.
                let retry = (retry
                    && facts.idempotent
                    && facts.replayable
                    && exchange.can_replay()
                    && attempts.another_to_try())
                .then(|| spare_budget(Cost::TryAndBudget, lease.backend(), upstream))
                .filter(|&next| attempts.allow(next).is_ok());
                if let Some(next) = retry {
                    exchange.discard();
                    note_tried(&mut tried, lease.backend().id());
                    last = Some((
                        status,
                        format!("{} answered {status}", lease.backend().id()),
                    ));
                    finish(upstream, lease, outcome, latency, status);
                    cost = next;
                    retrying = Some(RetryReason::Status);
                    continue;
                }
                // Counted before the answer goes out, so whatever the client reads next
                // (stats, metrics) includes it.
                upstream
                    .recorder()
                    .record(lease.backend().id(), status, latency);
                report.responses.record(status, Source::Backend);
                let cookie = affinity::set_cookie(&cfg, facts.affinity, lease.backend());
                let delivered = exchange.deliver(&cfg, cookie.as_deref()).await;
                times.response = Some(clock::since(start));
                let outcome = if delivered.backend_ok {
                    outcome
                } else {
                    Outcome::TransportError
                };
                report
                    .listener
                    .bytes_out
                    .fetch_add(delivered.bytes_sent, std::sync::atomic::Ordering::Relaxed);
                let backend = std::sync::Arc::clone(lease.backend());
                if delivered.verdict_in_body && outcome == Outcome::Success {
                    exchange.judge_later(lease.defer(latency));
                    upstream.queue().release();
                } else {
                    settle(upstream, lease, outcome, latency);
                }
                let ended = Ended {
                    upstream: &cfg.name,
                    tried: tried.as_deref(),
                    last: Some(backend.id()),
                    status,
                    attempts: attempts.made,
                    started,
                    times,
                    bytes_sent: delivered.bytes_sent,
                };
                account(exchange, origin, &ended);
                return delivered.output;
            }
            Err(SendError::Client { status, detail }) => {
                abandon(upstream, lease);
                if let Some(status) = status {
                    tracing::info!(
                        upstream = cfg.name.as_str(),
                        status,
                        request_id = origin.request_id,
                        "{detail}"
                    );
                    report.responses.record(status, Source::Proxy);
                }
                let page = ErrorPage {
                    detail: Some(detail),
                    upstream: Some(&cfg.name),
                    request_id: Some(origin.request_id),
                };
                let (output, bytes_sent) = exchange.refuse(status, &page).await;
                let ended = Ended {
                    upstream: &cfg.name,
                    tried: tried.as_deref(),
                    last: None,
                    // nginx's 499 in the log for a client gone before its answer.
                    status: status.unwrap_or(CLIENT_CLOSED),
                    attempts: attempts.made,
                    started,
                    times,
                    bytes_sent,
                };
                account(exchange, origin, &ended);
                return output;
            }
            Err(SendError::Backend(failure)) => {
                let id = lease.backend().id().to_owned();
                let failed = std::sync::Arc::clone(lease.backend());
                if counts_against_backend(&failure) {
                    let latency = clock::since(start);
                    finish(
                        upstream,
                        lease,
                        Outcome::TransportError,
                        latency,
                        failure.status,
                    );
                } else {
                    abandon(upstream, lease);
                }
                if failure.local {
                    upstream.recorder().local_error();
                }
                note_tried(&mut tried, &id);
                let facts = Facts {
                    replayable: facts.replayable && exchange.can_replay(),
                    ..facts
                };
                let next = retry_cost(&failure, facts).map(|c| spare_budget(c, &failed, upstream));
                if next.is_some()
                    && failure.reused
                    && failure.stage == Stage::NoResponse
                    && !attempts.another_to_try()
                {
                    // A pooled connection the backend closed as it was reused (its keep-alive
                    // timeout racing the request) says nothing about the backend: with no
                    // other to go to, it is tried again on another connection, as nginx
                    // retries a lone server. (With others, the retry goes to one of them.)
                    attempts.untry(&failed);
                }
                last = Some((failure.status, format!("{} (backend {id})", failure.detail)));
                retrying = Some(retry_reason(failure.stage));
                match next {
                    Some(c) => cost = c,
                    None => break NoAttempt::NotRetryable,
                }
            }
        }
    };
    let (status, detail) = no_attempt_detail(upstream, why, last);
    tracing::warn!(
        upstream = cfg.name.as_str(),
        status,
        backends = tried.as_deref().unwrap_or("-"),
        request_id = origin.request_id,
        "{detail}"
    );
    let page = ErrorPage {
        detail: None,
        upstream: Some(&cfg.name),
        request_id: Some(origin.request_id),
    };
    let (output, bytes_sent) = exchange.refuse(Some(status), &page).await;
    report.responses.record(status, Source::Proxy);
    let ended = Ended {
        upstream: &cfg.name,
        tried: tried.as_deref(),
        last: None,
        status,
        attempts: attempts.made,
        started,
        times,
        bytes_sent,
    };
    account(exchange, origin, &ended);
    output
}

/// The status the access log gives a request whose client left before it was answered
/// (nginx's 499); never sent.
const CLIENT_CLOSED: u16 = 499;

/// How a request ended, for the access log.
struct Ended<'a> {
    upstream: &'a str,
    /// Backends that failed or were discarded, comma-separated.
    tried: Option<&'a str>,
    /// The backend whose answer reached the client.
    last: Option<&'a str>,
    status: u16,
    attempts: usize,
    started: Instant,
    times: UpstreamTimes,
    bytes_sent: u64,
}

/// Counts what the client sent and writes the access line.
fn account<E: Exchange>(exchange: &E, origin: Origin<'_>, ended: &Ended<'_>) {
    let report = origin.report;
    let bytes_received = exchange.bytes_received();
    report
        .listener
        .bytes_in
        .fetch_add(bytes_received, std::sync::atomic::Ordering::Relaxed);
    if !report.access_log.is_on() {
        return;
    }
    let view = exchange.request_view();
    let mut tried = Tried::default();
    for id in ended
        .tried
        .into_iter()
        .flat_map(|t| t.split(','))
        .chain(ended.last)
    {
        tried.push(id);
    }
    let total = clock::since(ended.started);
    report.access_log.log(&AccessRecord {
        client: origin.client,
        time: {
            let now = std::time::SystemTime::now();
            now.checked_sub(total).unwrap_or(now)
        },
        method: view.method,
        target: view.target,
        protocol: origin.protocol,
        status: ended.status,
        bytes_sent: ended.bytes_sent,
        bytes_received,
        referer: view.referer,
        user_agent: view.user_agent,
        listener: origin.listener,
        upstream: Some(ended.upstream),
        tried,
        attempts: u32::try_from(ended.attempts).unwrap_or(u32::MAX),
        upstream_times: ended.times,
        total,
        request_id: origin.request_id,
        tls_version: None,
    });
}

/// Adds a backend to the comma-separated list of those a request tried.
fn note_tried(tried: &mut Option<String>, id: &str) {
    match tried {
        Some(t) => {
            t.push(',');
            t.push_str(id);
        }
        None => *tried = Some(id.to_owned()),
    }
}

/// The error line for a request that got no (further) attempt: the last attempt's failure
/// when there was one, else why none was made (with the failed health check, when that is
/// what keeps every backend out).
fn no_attempt_detail(
    upstream: &Upstream,
    why: NoAttempt,
    last: Option<(u16, String)>,
) -> (u16, String) {
    let name = upstream.name();
    match (why, last) {
        (NoAttempt::Budget, Some((status, detail))) => {
            (status, format!("{detail} (retry budget exhausted)"))
        }
        (_, Some(last)) => last,
        (NoAttempt::AtLimit, None) => (
            503,
            format!("every backend of upstream `{name}` is at its connection limit"),
        ),
        (_, None) => (
            503,
            match upstream.down_by_checks() {
                Some(why) => format!("no backend available in upstream `{name}`: {why}"),
                None => format!("no backend available in upstream `{name}`"),
            },
        ),
    }
}

/// Ends a request on its backend and lets a queued request have the slot. `status` is what
/// the attempt produced (the backend's status, or the 502/504 the proxy made of a failure),
/// recorded with the latency for the admin API and metrics.
fn finish(upstream: &Upstream, lease: Lease<'_>, outcome: Outcome, latency: Duration, status: u16) {
    upstream
        .recorder()
        .record(lease.backend().id(), status, latency);
    settle(upstream, lease, outcome, latency);
}

/// [`finish`] for an attempt already recorded: reports the outcome to the backend's state
/// and lets a queued request have the slot.
fn settle(upstream: &Upstream, lease: Lease<'_>, outcome: Outcome, latency: Duration) {
    lease.finish(outcome, latency, upstream.clock().now());
    upstream.queue().release();
}

/// Ends a request on its backend without an outcome (the backend did nothing wrong) and lets
/// a queued request have the slot.
fn abandon(upstream: &Upstream, lease: Lease<'_>) {
    drop(lease);
    upstream.queue().release();
}

/// Picks a backend not tried yet; on the first attempt, waits in the upstream's queue when
/// every backend is at its connection limit; on a retry with every serving backend tried,
/// takes an available backup.
async fn pick<'u>(
    upstream: &'u Upstream,
    cfg: &UpstreamConfig,
    tried: &[*const Backend],
    facts: &Facts,
    may_queue: bool,
) -> Option<Lease<'u>> {
    let accept = |b: &Backend| !tried.contains(&(b as *const Backend));
    let pick = || {
        let now = upstream.clock().now();
        affinity::pick(upstream.pool(), now, cfg, facts.affinity, accept)
    };
    if let Some(lease) = pick() {
        return Some(lease);
    }
    if !may_queue {
        // A retry with no primary left to try goes to a backup, as nginx's does.
        return upstream.pool().pick_backup(upstream.clock().now(), accept);
    }
    let queue = &cfg.queue;
    if queue.size == 0 || upstream.pool().snapshot().mode() == Mode::Empty {
        return None;
    }
    let deadline = clock::loop_now() + queue.timeout;
    loop {
        let woken = upstream.queue().join(facts.priority)?;
        if timeout_at(deadline, woken).await.is_err() {
            return None;
        }
        if let Some(lease) = pick() {
            return Some(lease);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(stage: Stage, reused: bool, local: bool) -> Failure {
        Failure {
            stage,
            reused,
            local,
            status: 502,
            detail: String::new(),
        }
    }

    const GET: Facts = Facts {
        idempotent: true,
        replayable: true,
        priority: 0,
        affinity: Affinity {
            key: None,
            sticky: None,
        },
    };
    const POST: Facts = Facts {
        idempotent: false,
        ..GET
    };

    #[test]
    fn the_retry_rule_follows_the_table() {
        use Stage::*;
        let cases = [
            // stage, reused, local, facts, expected cost
            (NotSent, false, false, GET, Some(Cost::Try)),
            (NotSent, false, false, POST, Some(Cost::Try)),
            (NoResponse, true, false, GET, Some(Cost::Free)),
            (NoResponse, true, false, POST, None),
            (NoResponse, false, false, GET, Some(Cost::TryAndBudget)),
            (NoResponse, false, false, POST, None),
            (TimedOut, true, false, GET, Some(Cost::TryAndBudget)),
            (TimedOut, false, false, POST, None),
            (NotSent, false, true, GET, None),
            (Refused, true, false, GET, Some(Cost::Free)),
            (Refused, true, false, POST, Some(Cost::Free)),
            (Abandoned, false, false, GET, Some(Cost::Free)),
            (Abandoned, false, false, POST, Some(Cost::Free)),
        ];
        for (stage, reused, local, facts, want) in cases {
            let f = failure(stage, reused, local);
            assert_eq!(
                retry_cost(&f, facts),
                want,
                "{stage:?} reused={reused} local={local}"
            );
        }
        let unreplayable = Facts {
            replayable: false,
            ..GET
        };
        assert_eq!(
            retry_cost(&failure(NoResponse, true, false), unreplayable),
            None
        );
        assert_eq!(
            retry_cost(&failure(NotSent, false, false), unreplayable),
            Some(Cost::Try)
        );
        assert_eq!(
            retry_cost(&failure(Abandoned, false, false), unreplayable),
            Some(Cost::Free)
        );
    }

    #[test]
    fn only_failures_the_backend_caused_count_against_it() {
        assert!(counts_against_backend(&failure(
            Stage::NotSent,
            false,
            false
        )));
        assert!(counts_against_backend(&failure(
            Stage::NoResponse,
            false,
            false
        )));
        assert!(counts_against_backend(&failure(
            Stage::TimedOut,
            true,
            false
        )));
        assert!(!counts_against_backend(&failure(
            Stage::NoResponse,
            true,
            false
        )));
        assert!(!counts_against_backend(&failure(
            Stage::NotSent,
            false,
            true
        )));
        assert!(!counts_against_backend(&failure(
            Stage::Refused,
            true,
            false
        )));
        assert!(!counts_against_backend(&failure(
            Stage::Abandoned,
            false,
            false
        )));
    }

    #[test]
    fn running_out_of_descriptors_or_ports_is_local() {
        for code in [
            libc::EMFILE,
            libc::ENFILE,
            libc::EADDRNOTAVAIL,
            libc::ENOBUFS,
        ] {
            assert!(is_local(&std::io::Error::from_raw_os_error(code)));
        }
        assert!(!is_local(&std::io::Error::from_raw_os_error(
            libc::ECONNREFUSED
        )));
    }
}
