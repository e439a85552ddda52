//! The round-robin family's schedule: one full cycle of picks, walked by a shared cursor.
//!
//! A schedule is built when a snapshot is built (membership, weight or availability changed)
//! and is then read-only, so a pick is one atomic `fetch_add` on the cursor plus one lookup.
//! Every cursor value is handed to exactly one caller, whatever the thread, so over any
//! `len` consecutive picks every backend receives exactly its share: one global order, not
//! one per worker as in nginx.
//!
//! Two representations:
//!
//! - **Table**: the cycle stored slot by slot (4 bytes a slot) when it has at most
//!   [`MAX_TABLE_SLOTS`] slots. This is the exact nginx sequence for `smooth-weighted`, the
//!   interleaved order for `weighted`, list order for `round-robin`.
//! - **Spread**: for longer cycles (10,000 backends with weights up to 1,000 make a cycle of
//!   ten million slots), an [`AliasTable`] walked bucket by bucket: consecutive picks visit
//!   the buckets in turn and each bucket's units are visited in a scrambled order. O(1) per
//!   pick, O(n) memory, exact shares over a cycle of `n × sum(weights)` picks, well mixed,
//!   but not nginx's order. Smooth schedules also switch to it when building the table would
//!   cost more than [`MAX_SMOOTH_BUILD_STEPS`] steps, since nginx's algorithm is O(n) a slot.

use crate::alias::AliasTable;
use crate::fastmod::FastDiv;

/// Longest cycle stored slot by slot: 65,536 slots are 256 KiB, built in well under a
/// millisecond for the interleaved order.
pub const MAX_TABLE_SLOTS: u64 = 1 << 16;

/// Upper bound on `slots × backends` when precomputing a smooth-weighted cycle (nginx's
/// algorithm visits every backend for every slot): 2^24 steps take a few milliseconds, and a
/// rebuild runs on the thread that observed the change.
pub const MAX_SMOOTH_BUILD_STEPS: u64 = 1 << 24;

/// Which order a schedule follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// Backends in list order; weights ignored.
    Listed,
    /// Classic interleaved weighted round robin: in round `r` (1-based) every backend whose
    /// weight is at least `r` gets one pick, in list order.
    Interleaved,
    /// nginx's smooth weighted round robin.
    Smooth,
}

/// One cycle of picks.
#[derive(Debug, Clone)]
pub(crate) enum Schedule {
    /// Every slot, precomputed.
    Table { slots: Box<[u32]>, len: FastDiv },
    /// Alias buckets walked in turn, for cycles too long to store.
    Spread {
        table: AliasTable,
        scramble: Scramble,
    },
}

/// A bijection on `0..capacity` (multiplication by a number coprime with it) so that the
/// units of a bucket are not visited owner-first, alias-last.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scramble {
    stride: u64,
    capacity: FastDiv,
}

impl Scramble {
    fn new(capacity: u64) -> Scramble {
        // Golden-ratio stride: successive multiples land far apart (Weyl sequence).
        let mut stride = ((capacity as f64) * 0.618_033_988_749_895) as u64;
        stride = stride.max(1);
        while crate::weight::gcd(stride, capacity) != 1 {
            stride += 1;
        }
        Scramble {
            stride,
            capacity: FastDiv::new(capacity),
        }
    }

    #[inline]
    fn apply(&self, x: u64) -> u64 {
        let x = self.capacity.rem(x);
        let cap = self.capacity.divisor();
        if cap <= u64::from(u32::MAX) {
            // Both factors are below 2^32, so the product fits.
            self.capacity.rem(x * self.stride)
        } else {
            ((u128::from(x) * u128::from(self.stride)) % u128::from(cap)) as u64
        }
    }
}

impl Schedule {
    /// Builds the schedule for backends `ids` with (reduced) weights `weights`.
    /// `ids` is not empty.
    pub(crate) fn build(order: Order, ids: &[u32], weights: &[u64]) -> Schedule {
        debug_assert!(!ids.is_empty());
        let n = ids.len() as u64;
        let ones;
        let weights = if order == Order::Listed {
            ones = vec![1u64; ids.len()];
            &ones[..]
        } else {
            weights
        };
        let total: u64 = weights.iter().sum();
        let fits = total <= MAX_TABLE_SLOTS
            && (order != Order::Smooth || total.saturating_mul(n) <= MAX_SMOOTH_BUILD_STEPS);
        if !fits {
            let table = AliasTable::new(ids, weights);
            let scramble = Scramble::new(table.capacity());
            return Schedule::Spread { table, scramble };
        }
        let slots = match order {
            Order::Listed => ids.to_vec(),
            Order::Interleaved => interleaved(ids, weights),
            Order::Smooth => smooth(ids, weights),
        };
        Schedule::Table {
            len: FastDiv::new(slots.len() as u64),
            slots: slots.into_boxed_slice(),
        }
    }

    /// The backend at cursor position `cursor`.
    #[inline]
    pub(crate) fn at(&self, cursor: u64) -> u32 {
        match self {
            Schedule::Table { slots, len } => slots[len.rem(cursor) as usize],
            Schedule::Spread { table, scramble } => {
                let (bucket, round) = table.split(cursor);
                table.unit(bucket, scramble.apply(round))
            }
        }
    }

    /// Picks in one full cycle: after this many consecutive cursor values every backend has
    /// received exactly its share.
    pub(crate) fn cycle_len(&self) -> u128 {
        match self {
            Schedule::Table { len, .. } => u128::from(len.divisor()),
            Schedule::Spread { table, .. } => table.units(),
        }
    }

    /// True when the schedule is stored slot by slot (the exact nginx/interleaved order).
    pub(crate) fn is_table(&self) -> bool {
        matches!(self, Schedule::Table { .. })
    }
}

/// Classic interleaved weighted round robin.
fn interleaved(ids: &[u32], weights: &[u64]) -> Vec<u32> {
    let max = weights.iter().copied().max().unwrap_or(0);
    let mut slots = Vec::with_capacity(weights.iter().sum::<u64>() as usize);
    for round in 1..=max {
        slots.extend(
            ids.iter()
                .zip(weights)
                .filter(|(_, w)| **w >= round)
                .map(|(id, _)| *id),
        );
    }
    slots
}

/// nginx's smooth weighted round robin (`ngx_http_upstream_get_peer`): every backend's
/// current weight grows by its weight, the largest (first on ties) is picked and loses the
/// total. The sequence is periodic with period `sum(weights)` and invariant under scaling
/// the weights, so reduced weights give nginx's sequence for the original ones.
fn smooth(ids: &[u32], weights: &[u64]) -> Vec<u32> {
    let total: i64 = weights.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; weights.len()];
    let mut slots = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        slots.push(ids[best]);
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(s: &Schedule, n: usize, from: u64) -> Vec<u64> {
        let mut c = vec![0u64; n];
        let len = u64::try_from(s.cycle_len()).unwrap();
        for k in from..from + len {
            c[s.at(k) as usize] += 1;
        }
        c
    }

    #[test]
    fn interleaved_visits_heavier_backends_in_later_rounds() {
        assert_eq!(
            interleaved(&[0, 1, 2], &[5, 1, 1]),
            vec![0, 1, 2, 0, 0, 0, 0]
        );
        assert_eq!(interleaved(&[0, 1, 2], &[1, 2, 3]), vec![0, 1, 2, 1, 2, 2]);
    }

    #[test]
    fn smooth_matches_nginx_for_the_classic_example() {
        assert_eq!(smooth(&[0, 1, 2], &[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn huge_cycles_spread_exact_shares_in_constant_memory() {
        let n = 10_000usize;
        let ids: Vec<u32> = (0..n as u32).collect();
        let weights: Vec<u64> = (0..n as u64).map(|i| 1 + (i * 7919) % 1000).collect();
        let s = Schedule::build(Order::Smooth, &ids, &weights);
        assert!(!s.is_table());
        // The cycle is n × sum(weights) picks; check the first `n` picks hit n distinct
        // buckets (mixing) and, on a smaller pool forced into spread mode, exact shares.
        let first: std::collections::HashSet<u32> = (0..n as u64).map(|c| s.at(c)).collect();
        assert!(
            first.len() > n / 2,
            "first round is well mixed: {}",
            first.len()
        );

        let big = [40_000u64, 30_000, 1];
        let s = Schedule::build(Order::Interleaved, &[0, 1, 2], &big);
        assert!(!s.is_table());
        let c = counts(&s, 3, 12_345);
        assert_eq!(c, big.iter().map(|w| w * 3).collect::<Vec<_>>());
    }

    #[test]
    fn mid_sized_spread_cycles_give_every_backend_exactly_its_share() {
        // 32 backends of unequal weights 2,000..2,500 (total about 72,000): too long a cycle
        // to store, short enough (32 × total picks) to walk whole in a test.
        let n = 32usize;
        let ids: Vec<u32> = (0..n as u32).collect();
        let weights: Vec<u64> = (0..n as u64).map(|i| 2_000 + (i * 7919) % 500).collect();
        let expected: Vec<u64> = weights.iter().map(|w| w * n as u64).collect();
        for (order, from) in [(Order::Interleaved, 0), (Order::Smooth, 987_654_321)] {
            let s = Schedule::build(order, &ids, &weights);
            assert!(!s.is_table(), "{order:?} is a spread schedule");
            assert_eq!(counts(&s, n, from), expected, "{order:?} from {from}");
        }
    }

    #[test]
    fn table_cycles_give_exact_shares_from_any_start() {
        let w = [2u64, 4, 6, 3];
        for order in [Order::Interleaved, Order::Smooth] {
            let s = Schedule::build(order, &[0, 1, 2, 3], &w);
            assert!(s.is_table());
            assert_eq!(counts(&s, 4, 7), w.to_vec());
        }
        let s = Schedule::build(Order::Listed, &[0, 1, 2, 3], &w);
        assert_eq!(counts(&s, 4, 3), vec![1, 1, 1, 1]);
    }
}
