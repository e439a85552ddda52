//! `smooth-weighted` replays what a real nginx answered, element by element, first pick
//! included, for every recorded weight vector.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use balance::{Algorithm, BackendSpec, Pool, PoolConfig, Timestamp, Weight};

#[derive(Debug)]
struct Vector {
    weights: Vec<u32>,
    sequence: Vec<usize>,
}

fn vectors() -> Vec<Vector> {
    let text = include_str!("data/nginx-swrr.json");
    let json: serde_json::Value = serde_json::from_str(text).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|v| Vector {
            weights: v["weights"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_u64().unwrap() as u32)
                .collect(),
            sequence: v["sequence"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap() as usize)
                .collect(),
        })
        .collect()
}

fn pool(weights: &[u32]) -> Pool {
    let specs: Vec<BackendSpec> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let addr = format!("127.0.0.1:{}", 9000 + i).parse().unwrap();
            BackendSpec::new(addr).weight(Weight::from_integer(w).unwrap())
        })
        .collect();
    let config = PoolConfig {
        algorithm: Algorithm::SmoothWeighted,
        ..PoolConfig::default()
    };
    Pool::new(config, &specs, Timestamp::ZERO).unwrap()
}

fn index_of(pool: &Pool) -> usize {
    let lease = pool.pick(Timestamp::ZERO, |_| true).unwrap();
    let port = lease.backend().address().port();
    usize::from(port - 9000)
}

#[test]
fn smooth_weighted_replays_every_nginx_vector() {
    let vectors = vectors();
    assert_eq!(vectors.len(), 10, "all recorded vectors are read");
    for v in vectors {
        let pool = pool(&v.weights);
        assert!(pool.snapshot().picker().is_exact_order());
        let ours: Vec<usize> = (0..v.sequence.len()).map(|_| index_of(&pool)).collect();
        assert_eq!(ours, v.sequence, "weights {:?}", v.weights);
    }
}

#[test]
fn fractional_weights_follow_the_sequence_of_their_integer_ratio() {
    // 1, 2, 3, 1.5 is 2 : 4 : 6 : 3, so it must pick exactly as nginx would for 2, 4, 6, 3.
    let specs: Vec<BackendSpec> = [1.0, 2.0, 3.0, 1.5]
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            BackendSpec::new(format!("127.0.0.1:{}", 9000 + i).parse().unwrap())
                .weight(Weight::new(w).unwrap())
        })
        .collect();
    let fractional = Pool::new(PoolConfig::default(), &specs, Timestamp::ZERO).unwrap();
    let integral = pool(&[2, 4, 6, 3]);
    let a: Vec<usize> = (0..30).map(|_| index_of(&fractional)).collect();
    let b: Vec<usize> = (0..30).map(|_| index_of(&integral)).collect();
    assert_eq!(a, b);
    let mut counts = [0; 4];
    for i in &a[..15] {
        counts[*i] += 1;
    }
    assert_eq!(counts, [2, 4, 6, 3]);
}
