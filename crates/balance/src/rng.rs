//! A lock-free shared random number generator for the `random` and `p2c` pickers.
//!
//! SplitMix64 (Steele, Lea and Flood, 2014) is a Weyl sequence passed through a mixing
//! function, so its whole state is one counter, stepped with a plain load and store rather
//! than a locked `fetch_add` (2–5 ns on this project's machines, most of a round-robin
//! pick): two threads that step it at the same instant may draw the same number once, which
//! costs a pick nothing, as picks need uniformity, not uniqueness or secrecy. No lock and no
//! thread-local state; seeded by the caller, so a single-threaded sequence (every test's) is
//! fixed.

use std::sync::atomic::{AtomicU64, Ordering};

/// The golden-ratio increment of SplitMix64.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// A shared SplitMix64 generator.
#[derive(Debug)]
pub(crate) struct SharedRng {
    state: AtomicU64,
}

/// SplitMix64's output function.
#[inline]
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SharedRng {
    /// A generator whose sequence is fixed by `seed`.
    pub(crate) fn new(seed: u64) -> SharedRng {
        SharedRng {
            state: AtomicU64::new(seed),
        }
    }

    /// Two independent 64-bit random words from one step.
    #[inline]
    pub(crate) fn next_pair(&self) -> (u64, u64) {
        let x = self.state.load(Ordering::Relaxed).wrapping_add(GAMMA);
        self.state.store(x, Ordering::Relaxed);
        (mix(x), mix(x ^ 0x6a09_e667_f3bc_c909))
    }
}

/// `r` mapped uniformly onto `0..n` without division (Lemire's multiply-shift).
#[inline]
pub(crate) fn below(r: u64, n: u64) -> u64 {
    ((u128::from(r) * u128::from(n)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_values_spread() {
        let (a, b) = (SharedRng::new(7), SharedRng::new(7));
        for _ in 0..10 {
            assert_eq!(a.next_pair(), b.next_pair());
        }
        let mut hits = [0u32; 4];
        for _ in 0..4000 {
            hits[below(a.next_pair().0, 4) as usize] += 1;
        }
        assert!(hits.iter().all(|&h| (800..1200).contains(&h)), "{hits:?}");
    }
}
