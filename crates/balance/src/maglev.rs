//! Consistent hashing: Google's Maglev lookup table (Eisenbud et al., "Maglev: A Fast and
//! Reliable Software Network Load Balancer", NSDI 2016), weighted, with bounded loads
//! (Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing with Bounded Loads", SODA 2018).
//!
//! Why Maglev rather than a ring (Ketama): a pick is one multiplication and one table read
//! whatever the pool size, where a ring costs a binary search over `100 × n` points; and the
//! table spreads keys evenly (each backend owns its share of slots to within one slot) where
//! a ring needs many virtual nodes to get close.
//!
//! - **The table** has a prime number of slots, [`SLOTS_PER_BACKEND`] per backend or more, so
//!   one slot is well under 1% of a backend's share. Each backend walks its own permutation
//!   of the slots (an offset and a step drawn from a hash of its id) and claims the next
//!   free one in turn until the table is full. The table depends only on the backends' ids
//!   and weights, so every balancer with the same configuration builds the same table and
//!   sends a key to the same backend.
//! - **Weights**: a backend claims slots in proportion to its weight. Each round every
//!   backend earns `weight × n` credits and claims one slot per `sum(weights)` credits it
//!   holds (Envoy's weighted Maglev does the same with fractions), so after any number of
//!   rounds a backend holds its exact share of the slots to within one.
//! - **Availability does not rebuild the table.** It is built over every member of the tier
//!   (primaries, or backups when they serve) and reused while membership and weights are
//!   unchanged. A key whose slot names a backend that cannot take it (down, breaker open,
//!   ejected, draining, at its connection limit, over its bounded load, refused by the
//!   caller) goes to the key's *next choice*: the next slot of a probe sequence fixed by the
//!   key. So one failure moves exactly the keys of the failed backend, spread over the others
//!   in proportion to their weights, and they come back when it does. Removing a backend
//!   rebuilds the table; Maglev then moves about `1/n` of the keys (measured in the tests).
//! - **Bounded load**: with a factor `c > 1`, a backend whose in-flight requests already reach
//!   `ceil(c × (in_flight_total + 1) × weight / sum(weights))` is skipped to the key's next
//!   choice. No backend then carries more than `c` times its weighted share of the load, and
//!   a hot key spills over to its next choices instead of crushing one backend.

use std::sync::Arc;

use crate::fastmod::FastDiv;
use crate::rng::mix;

/// Table slots per member, at least. The Maglev paper sizes its table at 100 × backends or
/// more so that each backend's share is exact to within 1%; 128 keeps 10,000 backends in
/// 8 MiB.
pub const SLOTS_PER_BACKEND: u64 = 128;

/// Fewest slots in a table (Envoy's default table is 65,537 slots too): up to 512 backends
/// the size does not depend on the pool, and it must not change when a backend joins or
/// leaves, since a table of another size sends almost every key elsewhere.
pub const MIN_SLOTS: u64 = 65_536;

/// Probes of a key's sequence before a pick scans the members in order (every member then
/// gets its chance, so a pick never fails while one can take the request).
pub const PROBES: usize = 32;

/// A slot with no owner yet, while the table is filled.
const EMPTY: u32 = u32::MAX;

/// One member of a table: its index in the snapshot, the hash of its id, its reduced weight.
pub(crate) type TableMember = (u32, u64, u64);

/// The smallest prime at or above `n` (trial division: the table sizes are at most a few
/// million, whose square roots are a few thousand).
fn next_prime(n: u64) -> u64 {
    let is_prime = |p: u64| {
        p >= 2
            && (2..)
                .take_while(|d| d * d <= p)
                .all(|d| !p.is_multiple_of(d))
    };
    (n..).find(|&p| is_prime(p)).unwrap_or(n)
}

/// The number of slots of a table for `members` backends: the smallest prime at or above
/// [`SLOTS_PER_BACKEND`] × `members` rounded up to a power of two, and [`MIN_SLOTS`]. Sizes
/// go in powers of two so that the size (and with it every key's place) changes only when
/// a pool of more than 512 backends crosses a power of two, and is the same on every
/// balancer with the same members.
pub fn table_size(members: usize) -> u64 {
    let class = (members as u64).max(1).next_power_of_two();
    next_prime(class.saturating_mul(SLOTS_PER_BACKEND).max(MIN_SLOTS))
}

/// A stable 64-bit hash of a backend id (FNV-1a, then SplitMix's finaliser to spread the
/// bits): the same on every machine and every version of Rust, so a fleet agrees.
pub(crate) fn id_hash(id: &str) -> u64 {
    let fnv = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    mix(fnv)
}

/// A filled Maglev table.
#[derive(Debug)]
pub(crate) struct MaglevTable {
    /// What the table was built from, so an unchanged membership reuses it.
    members: Box<[TableMember]>,
    /// Owner (snapshot index) of each slot.
    slots: Box<[u32]>,
    len: FastDiv,
    /// `len - 1`: the range of a probe step.
    steps: FastDiv,
}

impl MaglevTable {
    /// Fills a table for `members` (not empty, weights positive).
    pub(crate) fn build(members: &[TableMember]) -> MaglevTable {
        let n = members.len() as u64;
        let m = table_size(members.len());
        let len = FastDiv::new(m);
        let steps = FastDiv::new(m - 1);
        // Each member's permutation: position and step, from two hashes of its id.
        let mut pos: Vec<u64> = members.iter().map(|&(_, h, _)| len.rem(h)).collect();
        let step: Vec<u64> = members
            .iter()
            .map(|&(_, h, _)| steps.rem(mix(h ^ 0x9e37_79b9_7f4a_7c15)) + 1)
            .collect();
        let total: u64 = members.iter().map(|&(_, _, w)| w).sum::<u64>().max(1);
        let mut credit = vec![0u64; members.len()];
        let mut slots = vec![EMPTY; m as usize];
        let mut filled = 0u64;
        'fill: loop {
            for (i, &(index, _, weight)) in members.iter().enumerate() {
                credit[i] += weight * n;
                while credit[i] >= total {
                    credit[i] -= total;
                    // The next free slot of this member's permutation; `m` is prime and the
                    // step is in 1..m, so the permutation visits every slot.
                    while slots[pos[i] as usize] != EMPTY {
                        pos[i] = advance(pos[i], step[i], m);
                    }
                    slots[pos[i] as usize] = index;
                    filled += 1;
                    if filled == m {
                        break 'fill;
                    }
                }
            }
        }
        MaglevTable {
            members: members.into(),
            slots: slots.into_boxed_slice(),
            len,
            steps,
        }
    }

    /// This table if it was built from exactly `members`, else a new one.
    pub(crate) fn reuse_or_build(
        previous: Option<&Arc<MaglevTable>>,
        members: &[TableMember],
    ) -> Arc<MaglevTable> {
        match previous {
            Some(t) if *t.members == *members => Arc::clone(t),
            _ => Arc::new(MaglevTable::build(members)),
        }
    }

    /// The members it was built from.
    pub(crate) fn members(&self) -> &[TableMember] {
        &self.members
    }

    /// Number of slots.
    pub(crate) fn len(&self) -> u64 {
        self.len.divisor()
    }

    /// Owner of each slot, for tests of the shares.
    #[cfg(test)]
    pub(crate) fn slots(&self) -> &[u32] {
        &self.slots
    }

    /// The key's probe sequence: the first slot, then slot + k × step (mod the prime size),
    /// which visits every slot once.
    #[inline]
    pub(crate) fn probes(&self, key: u64) -> Probes<'_> {
        Probes {
            table: self,
            slot: self.len.rem(key),
            step: 0,
            key,
        }
    }
}

/// `(pos + step) mod m` for `pos, step < m`.
#[inline]
fn advance(pos: u64, step: u64, m: u64) -> u64 {
    let next = pos + step;
    if next >= m { next - m } else { next }
}

/// The owners of a key's successive choices.
#[derive(Debug)]
pub(crate) struct Probes<'a> {
    table: &'a MaglevTable,
    slot: u64,
    /// 0 until the second choice is asked for: most picks need only the first.
    step: u64,
    key: u64,
}

impl Iterator for Probes<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        let owner = self.table.slots[self.slot as usize] as usize;
        if self.step == 0 {
            self.step = self.table.steps.rem(mix(self.key)) + 1;
        }
        self.slot = advance(self.slot, self.step, self.table.len());
        Some(owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(weights: &[u64]) -> Vec<TableMember> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| (i as u32, id_hash(&format!("b{i}")), w))
            .collect()
    }

    #[test]
    fn sizes_are_primes_that_grow_with_the_pool() {
        assert_eq!(table_size(1), 65_537);
        assert_eq!(table_size(4), 65_537);
        assert_eq!(table_size(512), 65_537);
        assert_eq!(table_size(513), table_size(1024));
        let big = table_size(10_000);
        assert!((2_097_152..2_097_300).contains(&big), "{big}");
        assert!(
            (2..)
                .take_while(|d| d * d <= big)
                .all(|d| !big.is_multiple_of(d))
        );
    }

    #[test]
    fn every_backend_holds_its_weighted_share_of_slots_to_within_one() {
        let weights = [1u64, 2, 3, 7, 1];
        let t = MaglevTable::build(&members(&weights));
        let total: u64 = weights.iter().sum();
        let mut count = vec![0u64; weights.len()];
        for &s in t.slots() {
            count[s as usize] += 1;
        }
        for (i, &w) in weights.iter().enumerate() {
            let ideal = t.len() as f64 * w as f64 / total as f64;
            assert!(
                (count[i] as f64 - ideal).abs() <= 1.0 + weights.len() as f64,
                "backend {i}: {} slots, ideal {ideal}",
                count[i]
            );
        }
    }

    #[test]
    fn probe_sequences_visit_every_backend() {
        let t = MaglevTable::build(&members(&[1, 1, 1, 1]));
        for key in [0u64, 1, 42, u64::MAX] {
            let seen: std::collections::HashSet<usize> = t.probes(key).take(200).collect();
            assert_eq!(seen.len(), 4, "key {key}");
        }
    }

    #[test]
    fn the_same_members_give_the_same_table() {
        let a = MaglevTable::build(&members(&[1, 2, 3]));
        let b = MaglevTable::build(&members(&[1, 2, 3]));
        assert_eq!(a.slots(), b.slots());
        let prev = Arc::new(a);
        let same = MaglevTable::reuse_or_build(Some(&prev), &members(&[1, 2, 3]));
        assert!(Arc::ptr_eq(&prev, &same));
        let other = MaglevTable::reuse_or_build(Some(&prev), &members(&[1, 2, 4]));
        assert!(!Arc::ptr_eq(&prev, &other));
    }
}
