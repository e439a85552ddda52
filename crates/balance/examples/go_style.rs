//! The seed's `GoStyleRoundRobin`, made idiomatic: the balance library on its own, no
//! network. Run: `cargo run -p balance --example go_style`.
//!
//! - `GetNextServer` (plain round robin) is a [`Pool`] with `Algorithm::RoundRobin`;
//! - `GetWeightedNextServer` (weighted random) is `Algorithm::Random`;
//! - `ChannelBasedRoundRobin` (goroutines reading servers off a channel) is several threads
//!   picking from one pool at once: the shared cursor keeps one global order, so the
//!   threads together still hand out exact shares.

use std::collections::BTreeMap;
use std::error::Error;
use std::time::Duration;

use balance::{Algorithm, BackendSpec, Outcome, Pool, PoolConfig, Timestamp, Weight};

fn servers() -> Result<Vec<BackendSpec>, Box<dyn Error>> {
    let mut specs = Vec::new();
    for (host, port, weight) in [
        ("go-server1", 8081, 1.0),
        ("go-server2", 8082, 2.0),
        ("go-server3", 8083, 3.0),
    ] {
        specs.push(
            BackendSpec::new(format!("127.0.0.1:{port}").parse()?)
                .id(host)
                .weight(Weight::new(weight)?),
        );
    }
    Ok(specs)
}

fn pool(algorithm: Algorithm) -> Result<Pool, Box<dyn Error>> {
    let config = PoolConfig {
        algorithm,
        seed: 2024,
        ..PoolConfig::default()
    };
    Ok(Pool::new(config, &servers()?, Timestamp::ZERO)?)
}

/// Picks `n` times and returns the ids in order.
fn picks(pool: &Pool, n: usize) -> Vec<String> {
    (0..n)
        .filter_map(|_| pool.pick(Timestamp::ZERO, |_| true))
        .map(|lease| {
            let id = lease.backend().id().to_owned();
            lease.finish(Outcome::Success, Duration::from_millis(1), Timestamp::ZERO);
            id
        })
        .collect()
}

fn main() -> Result<(), Box<dyn Error>> {
    println!("GetNextServer (round-robin):");
    println!("  {}", picks(&pool(Algorithm::RoundRobin)?, 6).join(" "));

    println!("GetWeightedNextServer (random, weights 1:2:3), 600 picks:");
    let mut counts = BTreeMap::new();
    for id in picks(&pool(Algorithm::Random)?, 600) {
        *counts.entry(id).or_insert(0) += 1;
    }
    println!("  {counts:?}");

    println!("smooth-weighted (nginx's order, weights 1:2:3):");
    println!(
        "  {}",
        picks(&pool(Algorithm::SmoothWeighted)?, 6).join(" ")
    );

    println!("ChannelBasedRoundRobin: 4 threads x 300 picks from one pool:");
    let shared = pool(Algorithm::SmoothWeighted)?;
    let mut counts = BTreeMap::new();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..4).map(|_| s.spawn(|| picks(&shared, 300))).collect();
        for w in workers {
            for id in w.join().unwrap_or_default() {
                *counts.entry(id).or_insert(0) += 1;
            }
        }
    });
    println!("  {counts:?}  (exactly 1:2:3 of 1200)");
    Ok(())
}
