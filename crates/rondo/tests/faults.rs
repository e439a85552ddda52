//! Faults under load, over real sockets: backends crashing with requests in flight and on
//! pooled connections, coming back, and what the clients saw meanwhile. Every GET must be
//! answered 200 while a healthy backend exists.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Client, MockBackend, Section, app, eventually, mock, proxy_config, start, web};

/// What the load's clients saw.
#[derive(Default)]
struct Seen {
    ok: AtomicUsize,
    /// Answers that were not 200, with their status.
    failed: parking_lot::Mutex<Vec<(u16, String)>>,
    /// 200s by backend name.
    by_backend: parking_lot::Mutex<std::collections::HashMap<String, usize>>,
}

impl Seen {
    fn from(&self, backend: &str) -> usize {
        self.by_backend.lock().get(backend).copied().unwrap_or(0)
    }
}

/// `clients` keep-alive clients sending GETs back to back until `stop`.
fn load(
    addr: SocketAddr,
    clients: usize,
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
            tokio::spawn(async move {
                let mut c = Client::connect(addr).await;
                while !stop.load(Ordering::SeqCst) {
                    let r = match c.send("GET", "/", b"").await {
                        Ok(r) => r,
                        Err(e) => {
                            seen.failed
                                .lock()
                                .push((0, format!("connection error: {e}")));
                            c = Client::connect(addr).await;
                            continue;
                        }
                    };
                    if r.status == 200 {
                        seen.ok.fetch_add(1, Ordering::SeqCst);
                        *seen.by_backend.lock().entry(r.backend()).or_default() += 1;
                    } else {
                        seen.failed.lock().push((r.status, r.text()));
                    }
                    if r.header("connection") == Some("close") {
                        c = Client::connect(addr).await;
                    }
                }
            })
        })
        .collect()
}

/// Four backends answering after 5 ms, health checks every 300 ms with `rise = 2`: kill one
/// with requests in flight, then a second, then bring both back on their ports.
async fn crash_and_return(clients: usize) {
    let names = ["a", "b", "c", "d"];
    let mut bs = Vec::new();
    for n in names {
        let b = mock(n).await;
        b.set_delay(Duration::from_millis(5));
        bs.push(b);
    }
    let list: Vec<(&MockBackend, f64)> = bs.iter().map(|b| (b, 1.0)).collect();
    let checks = Section::new()
        .duration("interval", Duration::from_millis(300))
        .duration("timeout", Duration::from_millis(250))
        .set("rise", 2)
        .set("fall", 2)
        .set("jitter", 0);
    let proxy = start(&proxy_config(app(&list).health_check(checks)));
    let addr = web(&proxy);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let tasks = load(addr, clients, Arc::clone(&stop), Arc::clone(&seen));

    // Warm: every backend has answered on pooled connections.
    eventually(Duration::from_secs(20), "all backends serve", || {
        let warm = names.iter().all(|n| seen.from(n) > 100);
        assert!(
            seen.failed.lock().is_empty(),
            "{:?}",
            seen.failed.lock().first()
        );
        warm
    })
    .await;

    // Kill b, then c, with requests in flight on each.
    let mut in_flight_at_kill = 0;
    for i in [1, 2] {
        eventually(Duration::from_secs(5), "a request in flight", || {
            bs[i].in_flight() > 0
        })
        .await;
        let in_flight = bs[i].in_flight();
        bs[i].kill();
        in_flight_at_kill += in_flight;
        let served = seen.ok.load(Ordering::SeqCst);
        eventually(Duration::from_secs(10), "traffic goes on", || {
            seen.ok.load(Ordering::SeqCst) > served + 500
        })
        .await;
    }
    assert!(
        in_flight_at_kill > 0,
        "the kills happened with requests in flight"
    );

    // Health checks mark both down; then both come back on their ports and get traffic.
    let up = proxy.upstream("app").unwrap();
    let health = |i: usize| {
        up.pool()
            .snapshot()
            .backends()
            .iter()
            .find(|b| b.id() == names[i])
            .unwrap()
            .health()
    };
    eventually(
        Duration::from_secs(10),
        "killed backends marked down",
        || health(1) == balance::Health::Down && health(2) == balance::Health::Down,
    )
    .await;
    let before = (seen.from("b"), seen.from("c"));
    bs[1].restart().await.unwrap();
    bs[2].restart().await.unwrap();
    let back = eventually(
        Duration::from_secs(10),
        "restarted backends take traffic",
        || seen.from("b") > before.0 && seen.from("c") > before.1,
    )
    .await;
    println!("restarted backends served again after {back:?} (rise 2 x interval 300ms)");

    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let failed = seen.failed.lock().clone();
    assert!(
        failed.is_empty(),
        "{} failed GETs, first: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(seen.ok.load(Ordering::SeqCst) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_four_backends_killed_under_16_connections_lose_no_get_and_come_back() {
    crash_and_return(16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_four_backends_killed_under_128_connections_lose_no_get_and_come_back() {
    crash_and_return(128).await;
}
