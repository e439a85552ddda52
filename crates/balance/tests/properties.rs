//! Invariants of every picker, checked on random weights and random availability.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use balance::{Algorithm, Pool, PoolConfig, Timestamp};
use common::{count_picks, index, specs};
use proptest::prelude::*;

const CYCLIC: [Algorithm; 3] = [
    Algorithm::RoundRobin,
    Algorithm::Weighted,
    Algorithm::SmoothWeighted,
];

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A pool with `weights`, where backends with `down[i]` are drained before picking, and the
/// cursor advanced by `skip` picks so cycles are checked from an arbitrary position.
fn pool_with(algorithm: Algorithm, weights: &[u32], down: &[bool], skip: usize) -> Pool {
    let config = PoolConfig {
        algorithm,
        seed: 42,
        ..PoolConfig::default()
    };
    let pool = Pool::new(config, &specs(weights), Timestamp::ZERO).unwrap();
    for _ in 0..skip {
        drop(pool.pick(Timestamp::ZERO, |_| true));
    }
    for (i, _) in down.iter().enumerate().filter(|(_, d)| **d) {
        pool.drain(&format!("b{i}"), Timestamp::ZERO).unwrap();
    }
    pool
}

fn weights_and_mask() -> impl Strategy<Value = (Vec<u32>, Vec<bool>)> {
    (1usize..9).prop_flat_map(|n| {
        (
            prop::collection::vec(1u32..20, n),
            prop::collection::vec(any::<bool>(), n),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_full_cycle_gives_each_available_backend_exactly_its_share(
        (weights, down) in weights_and_mask(), skip in 0usize..50, cycles in 1usize..3
    ) {
        for algorithm in CYCLIC {
            let pool = pool_with(algorithm, &weights, &down, skip);
            let avail: Vec<usize> = (0..weights.len()).filter(|&i| !down[i]).collect();
            if avail.is_empty() {
                prop_assert!(pool.pick(Timestamp::ZERO, |_| true).is_none());
                continue;
            }
            let share = |i: usize| -> u64 {
                if algorithm == Algorithm::RoundRobin { 1 } else { u64::from(weights[i]) }
            };
            let g = avail.iter().map(|&i| share(i)).fold(0, gcd);
            let len = pool.snapshot().picker().cycle_len().unwrap() as usize;
            prop_assert_eq!(len as u64, avail.iter().map(|&i| share(i) / g).sum::<u64>());
            let counts = count_picks(&pool, weights.len(), len * cycles, Timestamp::ZERO);
            for i in 0..weights.len() {
                let expect = if down[i] { 0 } else { share(i) / g * cycles as u64 };
                prop_assert_eq!(counts[i], expect, "{:?} backend {} of {:?} down {:?}", algorithm, i, weights, down);
            }
        }
    }

    #[test]
    fn no_picker_returns_an_unavailable_or_refused_backend_while_another_qualifies(
        (weights, down) in weights_and_mask(), refuse in prop::collection::vec(any::<bool>(), 8)
    ) {
        for algorithm in Algorithm::ALL {
            let pool = pool_with(algorithm, &weights, &down, 0);
            let qualifies = |i: usize| !down[i] && !refuse[i];
            let any = (0..weights.len()).any(qualifies);
            for _ in 0..20 {
                let lease = pool.pick(Timestamp::ZERO, |b| !refuse[usize::from(b.address().port() - 9000)]);
                match lease {
                    Some(l) => prop_assert!(qualifies(index(&l)), "{:?} picked {}", algorithm, index(&l)),
                    None => prop_assert!(!any, "{:?} found nothing although a backend qualifies", algorithm),
                }
            }
        }
    }

    #[test]
    fn refusing_a_backend_keeps_exact_proportions_among_the_others(
        weights in prop::collection::vec(1u32..10, 2..6), refused in 0usize..6
    ) {
        let refused = refused % weights.len();
        for algorithm in [Algorithm::Weighted, Algorithm::SmoothWeighted] {
            let pool = pool_with(algorithm, &weights, &vec![false; weights.len()], 0);
            let len = pool.snapshot().picker().cycle_len().unwrap() as u64;
            let g = weights.iter().map(|&w| u64::from(w)).fold(0, gcd);
            let picks = (len - u64::from(weights[refused]) / g) as usize;
            let mut counts = vec![0u64; weights.len()];
            for _ in 0..picks * 2 {
                let l = pool.pick(Timestamp::ZERO, |b| b.address().port() != 9000 + refused as u16).unwrap();
                counts[index(&l)] += 1;
            }
            for (i, &w) in weights.iter().enumerate() {
                let expect = if i == refused { 0 } else { u64::from(w) / g * 2 };
                prop_assert_eq!(counts[i], expect, "{:?} {:?} refusing {}", algorithm, weights, refused);
            }
        }
    }
}

#[test]
fn random_follows_the_weights() {
    let weights = [1, 2, 3, 4];
    let pool = pool_with(Algorithm::Random, &weights, &[false; 4], 0);
    let n = 100_000;
    let counts = count_picks(&pool, 4, n, Timestamp::ZERO);
    for (i, &w) in weights.iter().enumerate() {
        let expected = n as f64 * f64::from(w) / 10.0;
        let got = counts[i] as f64;
        assert!(
            (got - expected).abs() < expected * 0.03,
            "backend {i}: {got} vs {expected}"
        );
    }
}

#[test]
fn threads_picking_at_once_still_get_exact_totals() {
    for algorithm in CYCLIC {
        let weights = [5, 1, 3, 2];
        let pool = pool_with(algorithm, &weights, &[false; 4], 0);
        let len = pool.snapshot().picker().cycle_len().unwrap() as usize;
        let (threads, cycles_each) = (4, 500);
        let totals = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| s.spawn(|| count_picks(&pool, 4, len * cycles_each, Timestamp::ZERO)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .fold(vec![0u64; 4], |mut acc, c| {
                    acc.iter_mut().zip(c).for_each(|(a, c)| *a += c);
                    acc
                })
        });
        let scale = |w: u64| {
            if algorithm == Algorithm::RoundRobin {
                1
            } else {
                w
            }
        };
        let expect: Vec<u64> = weights
            .iter()
            .map(|&w| scale(u64::from(w)) * (threads * cycles_each) as u64)
            .collect();
        assert_eq!(totals, expect, "{algorithm:?}");
    }
}
