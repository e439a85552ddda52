//! Measures how many keys a `consistent-hash` pool moves when one backend is removed (a
//! reload): the removed backend's keys must move, Maglev also moves a few others. The
//! figures in docs/balance.md come from here.
//!
//! Run: `cargo run -p balance --example measure_moves`.

use balance::{Algorithm, BackendSpec, Pool, PoolConfig, Timestamp};

/// Keys as a caller passes them: well-mixed 64-bit hashes (SplitMix64 of a counter).
fn key(i: u64) -> u64 {
    let mut z = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn owners(pool: &Pool, keys: u64) -> Vec<String> {
    (0..keys)
        .filter_map(|k| pool.pick_keyed(Timestamp::ZERO, key(k), |_| true))
        .map(|lease| lease.backend().id().to_owned())
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = PoolConfig {
        algorithm: Algorithm::ConsistentHash,
        ..PoolConfig::default()
    };
    let keys = 100_000;
    println!("backends | worst share moved | 1/n | worst share of other backends' keys moved");
    for n in [2usize, 3, 5, 10, 20, 50, 100] {
        let specs =
            (0..n)
                .map(|i| {
                    Ok(BackendSpec::new(format!("127.0.0.1:{}", 9000 + i).parse()?)
                        .id(format!("b{i}")))
                })
                .collect::<Result<Vec<_>, std::net::AddrParseError>>()?;
        let (mut worst, mut worst_other) = (0.0f64, 0.0f64);
        for gone in 0..n.min(10) {
            let pool = Pool::new(config.clone(), &specs, Timestamp::ZERO)?;
            let before = owners(&pool, keys);
            let mut kept = specs.clone();
            let removed = kept.remove(gone).id;
            pool.update(config.clone(), &kept, Timestamp::ZERO)?;
            let after = owners(&pool, keys);
            let moved = |others: bool| {
                let count = before
                    .iter()
                    .zip(&after)
                    .filter(|(b, a)| b != a && (!others || **b != removed))
                    .count();
                count as f64 / keys as f64
            };
            worst = worst.max(moved(false));
            worst_other = worst_other.max(moved(true));
        }
        println!(
            "{n} | {worst:.4} | {:.4} | {worst_other:.4}",
            1.0 / n as f64
        );
    }
    Ok(())
}
