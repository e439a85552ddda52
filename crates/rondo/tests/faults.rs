//! Faults under load, over real sockets: backends crashing with requests in flight and on
//! pooled connections, all of them down and back, the proxy itself stopped by SIGTERM, and
//! what the clients saw meanwhile. Every GET must be answered 200 while a healthy backend
//! exists, and the proxy answers (never drops a connection) when none does.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::time::Duration;

use common::load::Load;
use common::{
    MockBackend, Process, Section, app, backends, eventually, health, mock, proxy_config,
    read_response, start, web,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Health checks every 600 ms, two to mark a backend up or down. The timeout is long enough
/// that a CPU-starved machine with 128 clients does not fail the checks of the backends that
/// still serve (250 ms did once, taking every survivor out).
fn quick_checks() -> Section {
    Section::new()
        .duration("interval", Duration::from_millis(600))
        .duration("timeout", Duration::from_millis(500))
        .set("rise", 2)
        .set("fall", 2)
        .set("jitter", 0)
}

/// Four backends answering after 5 ms, health checks every 600 ms with `rise = 2`: kill one
/// with requests in flight, then a second, then bring both back on their ports. `http2`: the
/// clients speak HTTP/2 (their requests go out through `proxy/h1_upstream.rs`).
async fn crash_and_return(clients: usize, http2: bool) {
    let names = ["a", "b", "c", "d"];
    let mut bs = Vec::new();
    for n in names {
        let b = mock(n).await;
        b.set_delay(Duration::from_millis(5));
        bs.push(b);
    }
    let list: Vec<(&MockBackend, f64)> = bs.iter().map(|b| (b, 1.0)).collect();
    let proxy = start(&proxy_config(app(&list).health_check(quick_checks())));
    let load = Load::start_with(web(&proxy), clients, http2);
    let seen = load.tally();

    // Warm: every backend has answered on pooled connections.
    eventually(Duration::from_secs(20), "all backends serve", || {
        let warm = names.iter().all(|n| seen.from(n) > 100);
        assert!(seen.failed().is_empty(), "{:?}", seen.failed().first());
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
        bs[i].kill().await;
        in_flight_at_kill += in_flight;
        let served = seen.ok();
        eventually(Duration::from_secs(10), "traffic goes on", || {
            seen.ok() > served + 500
        })
        .await;
    }
    assert!(
        in_flight_at_kill > 0,
        "the kills happened with requests in flight"
    );

    // Health checks mark both down; then both come back on their ports and get traffic.
    let health = |i: usize| health(&proxy, "app", names[i]);
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
    println!("restarted backends served again after {back:?} (rise 2 x interval 600ms)");

    let seen = load.stop().await;
    let failed = seen.failed();
    assert!(
        failed.is_empty() && seen.broken().is_empty(),
        "{} failed GETs, first: {:?}; broken: {:?}",
        failed.len(),
        failed.first(),
        seen.broken().first()
    );
    assert!(seen.ok() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_four_backends_killed_under_16_connections_lose_no_get_and_come_back() {
    crash_and_return(16, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_four_backends_killed_under_16_http2_clients_lose_no_get_and_come_back() {
    crash_and_return(16, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_four_backends_killed_under_128_connections_lose_no_get_and_come_back() {
    crash_and_return(128, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_down_then_back_clients_get_502_or_503_meanwhile_then_200_again() {
    let names = ["a", "b", "c", "d"];
    let bs = backends(&names).await;
    let list: Vec<(&MockBackend, f64)> = bs.iter().map(|b| (b, 1.0)).collect();
    let proxy = start(&proxy_config(app(&list).health_check(quick_checks())));
    let load = Load::start(web(&proxy), 16);
    let seen = load.tally();
    seen.wait_all_serve(&names, 50).await;

    // All down: the proxy answers for them, while the checks see them go and after.
    for b in &bs {
        b.kill().await;
    }
    eventually(Duration::from_secs(10), "all marked down", || {
        names
            .iter()
            .all(|n| health(&proxy, "app", n) == balance::Health::Down)
    })
    .await;
    let told = seen.failed().len();
    eventually(
        Duration::from_secs(10),
        "answers go on while all are down",
        || seen.failed().len() > told + 100,
    )
    .await;

    // Back on their ports: traffic returns to every one of them, and stays error-free.
    let before: Vec<usize> = names.iter().map(|n| seen.from(n)).collect();
    for b in &bs {
        b.restart().await.unwrap();
    }
    let back = eventually(
        Duration::from_secs(10),
        "every backend serves again",
        || names.iter().zip(&before).all(|(n, b)| seen.from(n) > *b),
    )
    .await;
    println!("all four served again {back:?} after the restart (rise 2 x interval 600ms)");
    seen.wait_each_does(2, "every client past the return").await;
    let settled = seen.failed().len();
    seen.wait_each_does(20, "20 more GETs per client").await;

    let seen = load.stop().await;
    let failed = seen.failed();
    let not_proxy_answers: Vec<_> = failed
        .iter()
        .filter(|(status, _)| *status != 502 && *status != 503)
        .collect();
    assert!(
        not_proxy_answers.is_empty(),
        "while all were down, every client got 502 or 503, never a dropped connection: {:?}",
        not_proxy_answers.first()
    );
    assert_eq!(
        failed.len(),
        settled,
        "errors after traffic returned: {:?}",
        &failed[settled..]
    );
    assert!(seen.broken().is_empty(), "{:?}", seen.broken().first());
    proxy.shutdown(Duration::from_secs(1));
}

/// One keep-alive client speaking raw HTTP/1.1: GETs back to back until a response says
/// `Connection: close`; returns how many it got answered and how its connection then ended.
async fn keep_alive_until_told_to_close(addr: std::net::SocketAddr) -> (usize, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut answered = 0;
    loop {
        s.write_all(b"GET / HTTP/1.1\r\nHost: test.local\r\n\r\n")
            .await
            .unwrap();
        let head = read_response(&mut s).await;
        assert!(head.starts_with("http/1.1 200 "), "{head}");
        answered += 1;
        if head.contains("connection: close") {
            let mut rest = Vec::new();
            let end = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut rest)).await;
            return (answered, format!("{end:?}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_keep_alive_load_finishes_every_request_and_closes_each_client_cleanly() {
    const CLIENTS: usize = 16;
    let bs = backends(&["a", "b"]).await;
    for b in &bs {
        b.set_delay(Duration::from_millis(500));
    }
    let list: Vec<(&MockBackend, f64)> = bs.iter().map(|b| (b, 1.0)).collect();
    let config = proxy_config(app(&list).health_check(Section::disabled()))
        .set("workers", 2)
        .duration("shutdown_grace", Duration::from_secs(30));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rondo.toml");
    std::fs::write(&path, config.to_toml()).unwrap();
    let mut rondo = Process::serve(&path);
    let listening = tokio::task::block_in_place(|| rondo.wait_for("listening"));
    let addr: std::net::SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(keep_alive_until_told_to_close(addr)))
        .collect();
    let in_flight = || bs.iter().map(|b| b.in_flight()).sum::<u32>() as usize;
    eventually(
        Duration::from_secs(30),
        "a request of every client at a backend",
        || in_flight() == CLIENTS && bs.iter().all(|b| b.hits() > 0),
    )
    .await;

    rondo.signal("TERM");
    let mut answered = 0;
    for c in clients {
        let (n, end) = c.await.unwrap();
        // The response in flight came with `Connection: close`, then a FIN: no reset.
        assert_eq!(
            end, "Ok(Ok(0))",
            "how the connection ended after `Connection: close`"
        );
        answered += n;
    }
    let served: usize = bs.iter().map(|b| b.hits()).sum();
    assert_eq!(
        answered, served,
        "every request a backend served reached its client"
    );
    let code = tokio::task::block_in_place(|| rondo.wait_exit());
    assert_eq!(code, Some(0));
}
