//! Opening a backend connection for an attempt, the same way on every protocol path: bounded
//! by `connect_timeout`, and given up as soon as the backend leaves rotation while others
//! still serve, so the request goes elsewhere at once instead of waiting for a handshake that
//! will not come.
//!
//! The case it is for: a backend process killed under load keeps its listening socket for a
//! moment while the kernel tears the process down (tens of milliseconds; longer for a large
//! one). The kernel still completes handshakes into its listen queue, and once the queue is
//! full it drops further SYNs; the client side sends a dropped SYN again only after a second.
//! By then the first failed request has taken the backend out (`max_fails`, the breaker or a
//! health check), and the requests behind those SYNs need not wait for the retransmission.

use std::future::Future;
use std::io;
use std::time::Duration;

use balance::Backend;
use tokio::time::timeout;

use super::forward::Failure;
use crate::upstream::Upstream;

/// Runs `connect` (the caller's connect to `backend`) for at most `limit`, abandoning it when
/// the backend leaves rotation meanwhile. Callers on the request path box the returned
/// future: opening is the rare case, and its state should not be part of every request's.
pub(crate) async fn dial<T>(
    upstream: &Upstream,
    backend: &Backend,
    limit: Duration,
    connect: impl Future<Output = io::Result<T>>,
) -> Result<T, Failure> {
    let addr = backend.address();
    tokio::select! {
        biased;
        opened = timeout(limit, connect) => match opened {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(Failure::connect(addr, &e)),
            Err(_) => Err(Failure::connect_timeout(addr, limit)),
        },
        () = upstream.left_rotation(backend) => Err(Failure::abandoned(addr)),
    }
}
