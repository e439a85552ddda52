//! Helpers shared by the integration tests of the balance crate.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]

use balance::{BackendSpec, Lease, Pool, Timestamp, Weight};

/// `n` backends on ports 9000.. with the given integer weights; ids "b0", "b1", ...
pub fn specs(weights: &[u32]) -> Vec<BackendSpec> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            BackendSpec::new(format!("127.0.0.1:{}", 9000 + i).parse().unwrap())
                .weight(Weight::from_integer(w).unwrap())
                .id(format!("b{i}"))
        })
        .collect()
}

/// Index (by port) of a lease's backend.
pub fn index(lease: &Lease<'_>) -> usize {
    usize::from(lease.backend().address().port() - 9000)
}

/// Picks `n` times at `now`, finishing each at once as a success, and counts per index.
pub fn count_picks(pool: &Pool, backends: usize, n: usize, now: Timestamp) -> Vec<u64> {
    let mut counts = vec![0u64; backends];
    for _ in 0..n {
        let lease = pool.pick(now, |_| true).expect("a backend is available");
        counts[index(&lease)] += 1;
        drop(lease);
    }
    counts
}

pub fn secs(s: u64) -> Timestamp {
    Timestamp::from_nanos(s * 1_000_000_000)
}
