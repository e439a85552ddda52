//! An exact, integer alias table (Walker 1977, Vose 1991).
//!
//! `n` buckets of equal capacity `T` (the sum of the weights). Bucket `b` gives its first
//! `keep[b]` units to its owner and the rest to one alias. Every backend owns exactly
//! `weight × n` of the `n × T` units, so a uniform draw over the units is an exact weighted
//! draw in O(1), and a walk over all units in any order hands out exact shares.
//!
//! Two callers: the `random` picker draws a unit at random, and the round-robin family walks
//! the units with a cursor when a full schedule would be too long to store
//! ([`crate::schedule`]).

use crate::fastmod::FastDiv;
use crate::rng::below;

/// One bucket: units `0..keep` go to `owner`, units `keep..T` go to `alias`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    keep: u64,
    owner: u32,
    alias: u32,
}

/// The table. Built once per snapshot, then read-only.
#[derive(Debug, Clone)]
pub(crate) struct AliasTable {
    buckets: Box<[Bucket]>,
    /// Number of buckets.
    n: FastDiv,
    /// Capacity of each bucket: the sum of the weights.
    capacity: FastDiv,
}

impl AliasTable {
    /// Builds the table for `ids[i]` with weight `weights[i]` (`ids` and `weights` have the
    /// same, non-zero length; weights are positive).
    pub(crate) fn new(ids: &[u32], weights: &[u64]) -> AliasTable {
        debug_assert_eq!(ids.len(), weights.len());
        debug_assert!(!ids.is_empty());
        let n = ids.len() as u64;
        let total: u64 = weights.iter().sum::<u64>().max(1);
        // Each weight scaled by n, so that n buckets of capacity `total` hold them exactly.
        let mut left: Vec<u64> = weights.iter().map(|w| w * n).collect();
        let mut buckets: Vec<Bucket> = ids
            .iter()
            .map(|&id| Bucket {
                keep: total,
                owner: id,
                alias: id,
            })
            .collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..ids.len()).partition(|&i| left[i] < total);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            buckets[s].keep = left[s];
            buckets[s].alias = ids[l];
            left[l] -= total - left[s];
            if left[l] < total {
                large.pop();
                small.push(l);
            }
        }
        // Whatever is left is full (exactly `total`); integer arithmetic leaves no residue.
        AliasTable {
            buckets: buckets.into_boxed_slice(),
            n: FastDiv::new(n),
            capacity: FastDiv::new(total),
        }
    }

    /// Number of units in one full walk: buckets × capacity.
    pub(crate) fn units(&self) -> u128 {
        u128::from(self.n.divisor()) * u128::from(self.capacity.divisor())
    }

    /// The id owning unit `offset` of bucket `bucket`, both already reduced: `bucket` below
    /// the bucket count, `offset` below the capacity.
    #[inline]
    pub(crate) fn unit(&self, bucket: u64, offset: u64) -> u32 {
        let b = &self.buckets[bucket as usize];
        if offset < b.keep { b.owner } else { b.alias }
    }

    /// Splits a cursor into (bucket, round): consecutive cursors visit every bucket in turn.
    /// The bucket is below the bucket count.
    #[inline]
    pub(crate) fn split(&self, cursor: u64) -> (u64, u64) {
        let round = self.n.div(cursor);
        (cursor - round * self.n.divisor(), round)
    }

    /// The capacity of one bucket (the sum of the weights).
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity.divisor()
    }

    /// A weighted random draw from two independent random words, each mapped onto its range
    /// by one multiplication ([`below`]).
    #[inline]
    pub(crate) fn draw(&self, r1: u64, r2: u64) -> u32 {
        self.unit(
            below(r1, self.n.divisor()),
            below(r2, self.capacity.divisor()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(table: &AliasTable, n: usize) -> Vec<u64> {
        let mut count = vec![0u64; n];
        for b in 0..table.n.divisor() {
            for o in 0..table.capacity() {
                count[table.unit(b, o) as usize] += 1;
            }
        }
        count
    }

    #[test]
    fn every_backend_owns_exactly_its_weight_times_n_units() {
        for weights in [
            vec![1, 1, 1],
            vec![5, 1, 1],
            vec![2, 4, 6, 3],
            vec![100, 1, 1],
            vec![7],
        ] {
            let ids: Vec<u32> = (0..weights.len() as u32).collect();
            let t = AliasTable::new(&ids, &weights);
            let n = weights.len() as u64;
            let expect: Vec<u64> = weights.iter().map(|w| w * n).collect();
            assert_eq!(owners(&t, weights.len()), expect, "{weights:?}");
        }
    }
}
