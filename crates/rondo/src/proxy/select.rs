//! Choosing a backend for one attempt and handing it back: shared by the HTTP/1.1 and
//! HTTP/2 paths, so both wait in the same queue and report outcomes the same way.

use std::time::Duration;

use balance::{Lease, Mode, Outcome};
use tokio::time::{Instant, timeout_at};

use crate::upstream::{ActiveGuard, Upstream};

/// Backends one request remembers having tried, so its retries go elsewhere. A fixed array:
/// the request path allocates nothing; past this many attempts a backend may be tried again.
const MAX_TRIED: usize = 8;

/// Why a request gets no further attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoAttempt {
    /// Its `tries` are used up.
    Tries,
    /// The upstream's retry budget is spent.
    Budget,
    /// No backend is available (or every available one was tried).
    NoBackend,
    /// Every backend is at its connection limit and the queue gave no slot.
    AtLimit,
}

/// The attempts of one request, shared by the HTTP/1.1 and HTTP/2 paths: how many it may
/// still make, which backends it tried, and the retry it holds from the upstream's budget.
pub(crate) struct Attempts<'u> {
    upstream: &'u Upstream,
    tries: usize,
    made: usize,
    tried: [*const balance::Backend; MAX_TRIED],
    n_tried: usize,
    /// The budget's permit for the attempt in progress (none for the first).
    retry: Option<ActiveGuard<'u>>,
    /// A permit taken by [`Attempts::may_retry`] for the next attempt.
    reserved: Option<ActiveGuard<'u>>,
}

impl<'u> Attempts<'u> {
    /// A request on `upstream` that may make `tries` attempts.
    pub(crate) fn new(upstream: &'u Upstream, tries: usize) -> Attempts<'u> {
        Attempts {
            upstream,
            tries,
            made: 0,
            tried: [std::ptr::null(); MAX_TRIED],
            n_tried: 0,
            retry: None,
            reserved: None,
        }
    }

    /// Attempts made so far.
    pub(crate) fn made(&self) -> usize {
        self.made
    }

    /// True when another attempt may follow the current one: tries are left and the retry
    /// budget grants it (the permit is kept for that attempt). Ask before discarding a
    /// response that could be retried, so the last one is forwarded instead.
    pub(crate) fn may_retry(&mut self) -> bool {
        if self.made >= self.tries {
            return false;
        }
        if self.reserved.is_none() {
            self.reserved = self.upstream.try_retry();
        }
        self.reserved.is_some()
    }

    /// Starts the next attempt on a backend not tried yet.
    pub(crate) async fn next(&mut self, priority: i32) -> Result<Lease<'u>, NoAttempt> {
        if self.made > 0 {
            if !self.may_retry() {
                return Err(if self.made >= self.tries {
                    NoAttempt::Tries
                } else {
                    NoAttempt::Budget
                });
            }
            self.retry = self.reserved.take();
        }
        self.made += 1;
        let first = self.made == 1;
        let Some(lease) = pick(self.upstream, &self.tried[..self.n_tried], priority, first).await
        else {
            let limited = first && self.upstream.pool().snapshot().mode() != Mode::Empty;
            return Err(if limited {
                NoAttempt::AtLimit
            } else {
                NoAttempt::NoBackend
            });
        };
        if self.n_tried < MAX_TRIED {
            self.tried[self.n_tried] = std::sync::Arc::as_ptr(lease.backend());
            self.n_tried += 1;
        }
        Ok(lease)
    }
}

/// The error line for a request that got no (further) attempt: the last attempt's failure
/// when there was one, else why none was made.
pub(crate) fn no_attempt_detail(
    upstream: &str,
    why: NoAttempt,
    last: Option<(u16, String)>,
) -> (u16, String) {
    match (why, last) {
        (NoAttempt::Budget, Some((status, detail))) => {
            (status, format!("{detail} (retry budget exhausted)"))
        }
        (_, Some(last)) => last,
        (NoAttempt::AtLimit, None) => (
            503,
            format!("every backend of upstream `{upstream}` is at its connection limit"),
        ),
        (_, None) => (
            503,
            format!("no backend available in upstream `{upstream}`"),
        ),
    }
}

/// Ends a request on its backend and lets a queued request have the slot. `status` is what
/// the attempt produced (the backend's status, or the 502/504 the proxy made of a failure),
/// recorded with the latency for the admin API and metrics.
pub(crate) fn finish(
    upstream: &Upstream,
    lease: Lease<'_>,
    outcome: Outcome,
    latency: Duration,
    status: u16,
) {
    upstream
        .recorder()
        .record(lease.backend().id(), status, latency);
    lease.finish(outcome, latency, upstream.clock().now());
    upstream.queue().release();
}

/// Picks a backend not tried yet; on the first attempt, waits in the upstream's queue when
/// every backend is at its connection limit.
async fn pick<'u>(
    upstream: &'u Upstream,
    tried: &[*const balance::Backend],
    priority: i32,
    may_queue: bool,
) -> Option<Lease<'u>> {
    let accept = |b: &balance::Backend| !tried.contains(&(b as *const balance::Backend));
    if let Some(lease) = upstream.pool().pick(upstream.clock().now(), accept) {
        return Some(lease);
    }
    let config = upstream.config();
    let queue = &config.queue;
    if !may_queue || queue.size == 0 || upstream.pool().snapshot().mode() == Mode::Empty {
        return None;
    }
    let deadline = Instant::now() + queue.timeout;
    loop {
        let woken = upstream.queue().join(priority)?;
        if timeout_at(deadline, woken).await.is_err() {
            return None;
        }
        if let Some(lease) = upstream.pool().pick(upstream.clock().now(), accept) {
            return Some(lease);
        }
    }
}
