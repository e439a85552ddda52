//! Choosing a backend for one attempt and handing it back: shared by the HTTP/1.1 and
//! HTTP/2 paths, so both wait in the same queue and report outcomes the same way.

use std::time::Duration;

use balance::{Lease, Mode, Outcome};
use tokio::time::{Instant, timeout_at};

use crate::upstream::Upstream;

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
pub(crate) async fn pick<'u>(
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
