//! What README and `docs/` promise, each shown over real sockets: mock backends on
//! 127.0.0.1:0, the proxy in-process, real requests, and checks of what arrived where. Every
//! wait is on state (a backend's health, a breaker's reopening time, a connection count),
//! with a deadline against hangs only.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::time::Duration;

use balance::Health;
use common::{
    Backend, Client, ConfigBuilder, H2Client, KeptClient, Section, UpstreamBuilder, eventually,
    get, health, mock, parse, plain, proxy_config, start, web,
};

/// A deadline against hangs, not a claim about speed.
const DEADLINE: Duration = Duration::from_secs(30);

/// Health checks every 150 ms that take a backend out after two failures and bring it back
/// on the first pass. Two, so one probe slowed past its timeout on a loaded machine does not
/// take a healthy backend out.
fn quick_checks() -> Section {
    Section::new()
        .duration("interval", Duration::from_millis(150))
        .duration("timeout", Duration::from_millis(140))
        .set("fall", 2)
        .set("rise", 1)
}

/// Sends `n` GETs on one connection and returns who answered.
async fn answered_by(addr: std::net::SocketAddr, n: usize) -> Vec<String> {
    let mut c = Client::connect(addr).await;
    let mut out = Vec::new();
    for _ in 0..n {
        let r = c.get("/").await;
        assert_eq!(r.status, 200, "{}", r.text());
        out.push(r.backend());
    }
    out
}

fn all(names: &[String], who: &str) -> bool {
    names.iter().all(|n| n == who)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_put_within_retry_body_limit_is_replayed_intact_and_a_larger_one_is_not_retried() {
    let a = mock("a").await;
    let b = Backend::builder("b").record_raw().start().await.unwrap();
    let proxy = start(&proxy_config(
        plain("app", &[&a, &b]).set("retry_body_limit", "1KiB"),
    ));
    a.set_status(503);
    let mut c = Client::connect(web(&proxy)).await;

    let small: Vec<u8> = (0..512u32).map(|i| b'a' + (i % 26) as u8).collect();
    let r = c.send("PUT", "/doc", &small).await.unwrap();
    assert_eq!((r.status, r.text()), (200, "b:512".to_owned()));
    assert_eq!(a.received(), 1, "a answered 503 first");
    let raw = b.raw();
    assert!(
        raw.windows(small.len()).any(|w| w == small.as_slice()),
        "the replayed body arrived byte for byte"
    );

    // 2 KiB is over the limit: streamed, so once sent it is not retried; a's 503 stands.
    let large = vec![b'z'; 2048];
    let r = c.send("PUT", "/doc", &large).await.unwrap();
    assert_eq!((r.status, r.backend()), (503, "a".to_owned()));
    assert_eq!(a.received(), 2);
    assert_eq!(b.received(), 1, "not retried on b");
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_requests_fail_over_retry_time_out_and_never_replay_a_post_that_arrived() {
    // Refused connection: failed over, even for a POST.
    let (a, b) = (mock("a").await, mock("b").await);
    let proxy = start(&proxy_config(plain("app", &[&a, &b])));
    a.kill().await;
    let mut h2 = H2Client::connect(web(&proxy)).await;
    for method in ["GET", "POST"] {
        let r = h2.send(method, "/", b"x").await;
        assert_eq!((r.status, r.backend()), (200, "b".to_owned()), "{method}");
    }
    drop(proxy);

    // 503: a GET is retried on the next backend; a POST that reached a is not.
    let (a, b) = (mock("a").await, mock("b").await);
    let proxy = start(&proxy_config(plain("app", &[&a, &b])));
    a.set_status(503);
    let mut h2 = H2Client::connect(web(&proxy)).await;
    let r = h2.send("GET", "/", b"").await;
    assert_eq!((r.status, r.backend()), (200, "b".to_owned()));
    assert_eq!(a.received(), 1);
    let r = h2.send("POST", "/order", b"one order").await;
    assert_eq!((r.status, r.backend()), (503, "a".to_owned()));
    assert_eq!(
        (a.received(), b.received()),
        (2, 1),
        "the POST went to a only"
    );
    drop(proxy);

    // No response head within response_timeout: 504.
    let slow = mock("slow").await;
    slow.set_delay(Duration::from_secs(600));
    let proxy = start(&proxy_config(
        plain("app", &[&slow]).duration("response_timeout", Duration::from_millis(300)),
    ));
    let r = H2Client::connect(web(&proxy))
        .await
        .send("GET", "/", b"")
        .await;
    assert_eq!(r.status, 504);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_waits_longer_than_queue_timeout_gets_503() {
    let a = mock("a").await;
    a.set_delay(Duration::from_secs(600));
    let proxy = start(&ConfigBuilder::proxy(
        UpstreamBuilder::new("app")
            .backend_with("a", a.addr(), 1.0, Section::new().set("max_connections", 1))
            .set("queue_size", 1)
            .duration("queue_timeout", Duration::from_millis(200))
            .health_check(Section::disabled()),
    ));
    let addr = web(&proxy);
    let _busy =
        tokio::spawn(async move { Client::connect(addr).await.send("GET", "/", b"").await });
    eventually(DEADLINE, "a is busy", || a.in_flight() == 1).await;
    let r = get(addr, "/").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(a.received(), 1, "the queued request never reached a");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_takes_over_while_the_primary_fails_its_checks_and_hands_back() {
    let (a, k) = (mock("a").await, mock("k").await);
    let proxy = start(&proxy_config(
        UpstreamBuilder::new("app")
            .backend("a", a.addr(), 1.0)
            .backup("k", k.addr(), 1.0)
            .health_check(quick_checks()),
    ));
    let addr = web(&proxy);
    assert!(all(&answered_by(addr, 4).await, "a"), "the backup idles");
    a.set_health(503);
    eventually(DEADLINE, "a is down", || {
        health(&proxy, "app", "a") == Health::Down
    })
    .await;
    assert!(all(&answered_by(addr, 4).await, "k"), "the backup serves");
    a.set_health(200);
    eventually(DEADLINE, "a is up", || {
        health(&proxy, "app", "a") == Health::Up
    })
    .await;
    assert!(all(&answered_by(addr, 4).await, "a"), "back to the primary");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_every_primary_failed_is_retried_on_a_backup() {
    // Nothing takes a out of rotation (no checks, no ejection, no breaker): each request
    // meets its failure, and its retry finds no primary left to try.
    let (a, b, k) = (mock("a").await, mock("b").await, mock("k").await);
    let proxy = start(&proxy_config(plain("app", &[&a, &b]).backup(
        "k",
        k.addr(),
        1.0,
    )));
    let addr = web(&proxy);
    a.set_status(503);
    b.set_status(503);
    for _ in 0..3 {
        let r = get(addr, "/").await;
        assert_eq!(
            (r.status, r.backend()),
            (200, "k".to_owned()),
            "{}",
            r.text()
        );
    }
    assert_eq!((a.received(), b.received(), k.received()), (3, 3, 3));
    // A primary that is gone: its refused connect is retried on the backup too.
    a.set_status(200);
    b.set_status(200);
    a.kill().await;
    b.kill().await;
    let r = get(addr, "/").await;
    assert_eq!(
        (r.status, r.backend()),
        (200, "k".to_owned()),
        "{}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_no_backend_left_to_try_the_last_backends_own_answer_reaches_the_client() {
    // 503 is retried by default: a's goes to b, and b's, with nothing left to try, is passed
    // on whole (its headers and body), as nginx passes on the last answer.
    let (a, b) = (mock("a").await, mock("b").await);
    a.set_status(503);
    b.set_status(503);
    let proxy = start(&proxy_config(plain("app", &[&a, &b])));
    let r = get(web(&proxy), "/").await;
    assert_eq!(
        (r.status, r.backend()),
        (503, "b".to_owned()),
        "{}",
        r.text()
    );
    assert!(
        r.text().starts_with("b"),
        "the backend's body: {}",
        r.text()
    );
    assert_eq!((a.received(), b.received()), (1, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lone_backend_is_never_ejected_by_one_failed_request() {
    // max_fails = 1 and a long fail_timeout, no checks and no breaker: with two backends a
    // reset takes its backend out; alone, nginx's rule keeps it in and the next request
    // is served.
    let a = mock("a").await;
    let upstream = UpstreamBuilder::new("app")
        .backend("a", a.addr(), 1.0)
        .set("max_fails", 1)
        .duration("fail_timeout", Duration::from_secs(600))
        .set("tries", 1)
        .health_check(Section::disabled())
        .circuit_breaker(Section::disabled());
    let proxy = start(&proxy_config(upstream));
    a.set_fault(rondo::lab::backend::Fault::Reset);
    assert_eq!(get(web(&proxy), "/").await.status, 502);
    a.set_fault(rondo::lab::backend::Fault::None);
    let r = get(web(&proxy), "/").await;
    assert_eq!(
        (r.status, r.backend()),
        (200, "a".to_owned()),
        "{}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_takes_over_while_the_primarys_breaker_is_open_and_hands_back() {
    let (a, k) = (mock("a").await, mock("k").await);
    let proxy = start(&proxy_config(
        UpstreamBuilder::new("app")
            .backend("a", a.addr(), 1.0)
            .backup("k", k.addr(), 1.0)
            .set("max_fails", 0)
            .set("retry_on_status", Vec::<i64>::new())
            .health_check(Section::disabled())
            .circuit_breaker(
                Section::new()
                    .set("failure_threshold", 2)
                    .set("count_all_5xx", true)
                    .duration("recovery_timeout", Duration::from_secs(1)),
            ),
    ));
    let addr = web(&proxy);
    a.set_status(500);
    let mut c = Client::connect(addr).await;
    for _ in 0..2 {
        assert_eq!(c.get("/").await.status, 500);
    }
    let up = proxy.upstream("app").unwrap();
    // The outcome is recorded as the response ends, which the client may see first.
    eventually(DEADLINE, "a's breaker opens", || {
        up.pool().snapshot().backends()[0].breaker_state() == balance::BreakerState::Open
    })
    .await;
    assert!(all(&answered_by(addr, 4).await, "k"), "the backup serves");
    a.set_status(200);
    eventually(DEADLINE, "a's recovery timeout passes", || {
        let snapshot = up.pool().snapshot();
        snapshot.backends()[0]
            .breaker()
            .reopens_at()
            .is_none_or(|at| up.clock().now() >= at)
    })
    .await;
    // The pool admits a again once it sees the breaker half-open: requests go to k until
    // one probes a and closes its breaker; from then on they stay on a.
    let mut client = Client::connect(addr).await;
    let mut probes = 0;
    while client.get("/").await.backend() != "a" {
        probes += 1;
        assert!(probes < 1000, "a was never probed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eventually(DEADLINE, "a's breaker closes", || {
        up.pool().snapshot().backends()[0].breaker_state() == balance::BreakerState::Closed
    })
    .await;
    assert!(all(&answered_by(addr, 4).await, "a"), "back to the primary");
}

#[tokio::test(flavor = "multi_thread")]
async fn below_the_panic_threshold_traffic_spreads_over_every_primary() {
    let bs = common::backends(&["a", "b", "c", "d"]).await;
    let refs: Vec<&Backend> = bs.iter().collect();
    let proxy = start(&proxy_config(
        plain("app", &refs)
            .set("panic_threshold", 50)
            .health_check(quick_checks()),
    ));
    for b in &bs[1..] {
        b.set_health(503);
    }
    eventually(DEADLINE, "b, c and d are down", || {
        ["b", "c", "d"]
            .iter()
            .all(|id| health(&proxy, "app", id) == Health::Down)
    })
    .await;
    // One healthy primary of four is below 50%: balance over all four rather than crush a.
    let seen = answered_by(web(&proxy), 8).await;
    for name in ["a", "b", "c", "d"] {
        assert!(seen.iter().any(|n| n == name), "{name} in {seen:?}");
    }
}

/// Backend `id`'s `current_weight` in `GET /api/v1/stats`.
async fn current_weight(admin: std::net::SocketAddr, id: &str) -> f64 {
    let reply = get(admin, "/api/v1/stats").await;
    let stats: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    stats["upstreams"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {stats}"))["current_weight"]
        .as_f64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_start_ramps_a_returning_an_added_and_a_reloaded_backend() {
    let (a, b, c, d) = (
        mock("a").await,
        mock("b").await,
        mock("c").await,
        mock("d").await,
    );
    let upstream = |extra: &[&Backend]| {
        let list: Vec<&Backend> = [&a, &b].into_iter().chain(extra.iter().copied()).collect();
        proxy_config(
            plain("app", &list)
                .algorithm("smooth-weighted")
                .duration("slow_start", Duration::from_secs(20))
                .health_check(quick_checks()),
        )
    };
    let proxy = start(&upstream(&[]));
    let admin = proxy.admin_addr();
    // Should b be ramping (as every backend new at start may), let it get ahead first: the
    // ramp moves in steps, so a backend that starts again later is then visibly lower.
    common::eventually_async(DEADLINE, "b's ramp moves past 15%", || async {
        current_weight(admin, "b").await >= 0.15
    })
    .await;

    // After its checks fail and pass again.
    a.set_health(503);
    eventually(DEADLINE, "a is down", || {
        health(&proxy, "app", "a") == Health::Down
    })
    .await;
    a.set_health(200);
    eventually(DEADLINE, "a is up", || {
        health(&proxy, "app", "a") == Health::Up
    })
    .await;
    let (wa, wb) = (
        current_weight(admin, "a").await,
        current_weight(admin, "b").await,
    );
    assert!(
        wa < wb && wb <= 1.0,
        "a ramps from the start again: a {wa}, b {wb}"
    );

    // Added through the admin API.
    let mut client = Client::connect(admin).await;
    let add = format!(r#"{{"address": "{}", "weight": 1, "id": "c"}}"#, c.addr());
    let r = client
        .send("POST", "/api/v1/upstreams/app/backends", add.as_bytes())
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let (wc, wb) = (
        current_weight(admin, "c").await,
        current_weight(admin, "b").await,
    );
    assert!(wc < wb, "an added backend ramps: c {wc}, b {wb}");

    // Added by a reload.
    let done = proxy.reload(&parse(&upstream(&[&c, &d])));
    assert!(done.refused.is_empty(), "{:?}", done.refused);
    let (wd, wb) = (
        current_weight(admin, "d").await,
        current_weight(admin, "b").await,
    );
    assert!(wd < wb, "a reloaded-in backend ramps: d {wd}, b {wb}");
}

#[tokio::test(flavor = "multi_thread")]
async fn draining_a_backend_lets_its_request_in_flight_finish_and_sends_it_nothing_new() {
    let (a, b) = (mock("a").await, mock("b").await);
    a.set_delay(Duration::from_millis(500));
    let proxy = start(&proxy_config(plain("app", &[&a, &b])));
    let addr = web(&proxy);
    let in_flight = tokio::spawn(async move { get(addr, "/").await });
    eventually(DEADLINE, "a has the request", || a.in_flight() == 1).await;
    let r = Client::connect(proxy.admin_addr())
        .await
        .send("POST", "/api/v1/upstreams/app/backends/a/drain", b"")
        .await
        .unwrap();
    assert!(r.status < 300, "{} {}", r.status, r.text());
    let r = in_flight.await.unwrap();
    assert_eq!((r.status, r.backend()), (200, "a".to_owned()), "finished");
    assert!(all(&answered_by(addr, 4).await, "b"), "nothing new to a");
    assert_eq!(a.received(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_still_running_when_shutdown_grace_ends_are_cut() {
    let a = mock("a").await;
    a.set_delay(Duration::from_secs(600));
    let proxy = start(
        &proxy_config(plain("app", &[&a])).duration("shutdown_grace", Duration::from_millis(300)),
    );
    let addr = web(&proxy);
    let in_flight =
        tokio::spawn(async move { Client::connect(addr).await.send("GET", "/", b"").await });
    eventually(DEADLINE, "a has the request", || a.in_flight() == 1).await;
    // The workers end at the configured grace (300 ms); this only bounds the wait for them.
    let stop = tokio::task::spawn_blocking(move || proxy.shutdown(Duration::from_secs(600)));
    tokio::time::timeout(DEADLINE, stop)
        .await
        .expect("the workers stopped when shutdown_grace ended, not when the request did")
        .unwrap();
    let cut = tokio::time::timeout(DEADLINE, in_flight)
        .await
        .unwrap()
        .unwrap();
    assert!(cut.is_err(), "the client's request was cut: {cut:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_keeps_an_open_breaker_open() {
    let (a, b) = (mock("a").await, mock("b").await);
    let config = |b_weight: f64| {
        proxy_config(
            UpstreamBuilder::new("app")
                .algorithm("round-robin")
                .backend("a", a.addr(), 1.0)
                .backend("b", b.addr(), b_weight)
                .set("max_fails", 0)
                .set("retry_on_status", Vec::<i64>::new())
                .health_check(Section::disabled())
                .circuit_breaker(
                    Section::new()
                        .set("failure_threshold", 2)
                        .set("count_all_5xx", true)
                        .duration("recovery_timeout", Duration::from_secs(600)),
                ),
        )
    };
    let proxy = start(&config(1.0));
    a.set_status(500);
    let mut c = Client::connect(web(&proxy)).await;
    let mut failures = 0;
    while failures < 2 {
        if c.get("/").await.status == 500 {
            failures += 1;
        }
    }
    let up = proxy.upstream("app").unwrap();
    let breaker = || up.pool().snapshot().backends()[0].breaker_state();
    // The outcome is recorded as the response ends, which the client may see first.
    eventually(DEADLINE, "a's breaker opens", || {
        breaker() == balance::BreakerState::Open
    })
    .await;
    let done = proxy.reload(&parse(&config(2.0)));
    assert!(done.refused.is_empty(), "{:?}", done.refused);
    assert_eq!(
        breaker(),
        balance::BreakerState::Open,
        "kept through the reload"
    );
    assert!(all(&answered_by(web(&proxy), 6).await, "b"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_whose_listener_cannot_bind_is_refused_and_the_old_one_serves() {
    let a = mock("a").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let base = proxy_config(plain("app", &[&a]));
    let proxy = start(&base);
    let done = proxy.reload(&parse(&base.clone().listener("api", &taken_addr, "app")));
    assert!(!done.refused.is_empty(), "{done:?}");
    assert!(proxy.addr("api").is_none());
    assert_eq!(
        get(web(&proxy), "/").await.backend(),
        "a",
        "the old one serves"
    );
    drop(taken);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_client_connection_is_closed_after_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = mock("a").await;
    let proxy = start(&proxy_config(plain("app", &[&a])).listeners_set("idle_timeout", "300ms"));
    let mut s = tokio::net::TcpStream::connect(web(&proxy)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    // Read the answer, then wait for the close (the default, 60 s, is past the deadline).
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(DEADLINE, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle connection was closed");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keep_alive_connection_silent_long_enough_to_be_parked_is_served_again_then_closed_at_idle_timeout()
 {
    use tokio::io::AsyncReadExt;
    let a = mock("a").await;
    let proxy = start(&proxy_config(plain("app", &[&a])).listeners_set("idle_timeout", "4s"));
    let mut s = tokio::net::TcpStream::connect(web(&proxy)).await.unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    // Silent for 500 ms, then for 2.5 s between requests: past 100 ms the connection gives
    // up its task (it is parked, proxy/parked.rs), past 2.1 s its socket leaves tokio's
    // reactor for the worker's own poll; its next request starts a task again either way.
    for silence in [500, 2_500, 0] {
        tokio::io::AsyncWriteExt::write_all(&mut s, request)
            .await
            .unwrap();
        let head = common::read_response(&mut s).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
        tokio::time::sleep(Duration::from_millis(silence)).await;
    }
    assert_eq!(a.hits(), 3);
    // Then closed at its idle_timeout, parked or not, cleanly.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(DEADLINE, s.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "closed at idle_timeout: {read:?} {rest:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_silent_after_its_first_request_stays_open_past_header_timeout() {
    use tokio::io::AsyncWriteExt;
    // header_timeout bounds a request head, not the silence between two requests: that is
    // idle_timeout's. A new connection's first request is read as it is handed over, and the
    // wait after it must be the keep-alive one (it once was the next head's, closing the
    // connection at header_timeout with its request state and buffers held until then).
    let a = mock("a").await;
    let proxy = start(
        &proxy_config(plain("app", &[&a]))
            .listeners_set("header_timeout", "1s")
            .listeners_set("idle_timeout", "30s"),
    );
    let mut s = tokio::net::TcpStream::connect(web(&proxy)).await.unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    s.write_all(request).await.unwrap();
    let head = common::read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // Past header_timeout (and the second a deferred accept may add), far from idle_timeout.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    s.write_all(request).await.unwrap();
    let head = common::read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(a.hits(), 2);
}

/// One worker and one client connection (pools are per worker thread), HTTP/1.1 (rondo's
/// own path) or HTTP/2 (hyper's): two requests share one backend connection, which closes
/// after `keepalive_timeout`.
async fn reused_then_closed_after_keepalive_timeout(http2: bool) {
    let a = mock("a").await;
    let proxy = start(
        &proxy_config(
            plain("app", &[&a]).duration("keepalive_timeout", Duration::from_millis(300)),
        )
        .set("workers", 1),
    );
    let mut c = KeptClient::connect(web(&proxy), http2).await;
    c.get("/").await;
    c.get("/").await;
    assert_eq!(a.received(), 2);
    assert_eq!(
        a.connections(),
        1,
        "the second request reused the pooled connection"
    );
    eventually(DEADLINE, "the pooled connection is closed", || {
        a.open_connections() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_connections_of_http2_clients_are_reused_and_closed_after_keepalive_timeout() {
    reused_then_closed_after_keepalive_timeout(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_connections_are_reused_and_closed_after_keepalive_timeout() {
    reused_then_closed_after_keepalive_timeout(false).await;

    // keepalive = 0: no pooling, one connection per request.
    let b = mock("b").await;
    let proxy = start(&proxy_config(plain("app", &[&b]).set("keepalive", 0)).set("workers", 1));
    let mut c = Client::connect(web(&proxy)).await;
    c.get("/").await;
    c.get("/").await;
    assert_eq!(b.connections(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_max_body_size_gets_413_and_never_reaches_a_backend() {
    let a = mock("a").await;
    let proxy = start(&proxy_config(plain("app", &[&a])).listeners_set("max_body_size", "1KiB"));
    let mut c = Client::connect(web(&proxy)).await;
    let r = c.send("POST", "/", &[b'x'; 1024]).await.unwrap();
    assert_eq!(
        (r.status, r.text()),
        (200, "a:1024".to_owned()),
        "at the limit"
    );
    let r = Client::connect(web(&proxy))
        .await
        .send("POST", "/", &[b'x'; 1025])
        .await
        .unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(a.received(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_endpoints_500s_never_open_the_breakers_unless_every_5xx_counts() {
    // Breakers on as by default (threshold 5), no passive ejection and no checks: only the
    // breaker decides. First both backends answer 500 on every path the test sends (an
    // application bug on every backend): no breaker opens.
    let (a, b) = (mock("a").await, mock("b").await);
    a.set_status(500);
    b.set_status(500);
    let upstream = |count_all: bool| {
        plain("app", &[&a, &b]).circuit_breaker(Section::new().set("count_all_5xx", count_all))
    };
    let proxy = start(&proxy_config(upstream(false)));
    let mut c = Client::connect(web(&proxy)).await;
    for _ in 0..12 {
        assert_eq!(c.get("/bad").await.status, 500, "the application's answer");
    }
    let snapshot = proxy.upstream("app").unwrap().pool().snapshot();
    assert_eq!(snapshot.mode(), balance::Mode::Primary, "both still serve");
    let in_rotation = (0..2)
        .filter(|&i| snapshot.effective_weight(i).is_some())
        .count();
    assert_eq!(in_rotation, 2, "{snapshot:?}");
    a.set_status(200);
    b.set_status(200);
    assert_eq!(c.get("/good").await.status, 200);

    // a broken alone (b answers well): its fifth 500 in a row opens its breaker.
    a.set_status(500);
    for _ in 0..10 {
        c.get("/").await;
    }
    let up = proxy.upstream("app").unwrap();
    eventually(DEADLINE, "a's breaker opens", || {
        up.pool().snapshot().backends()[0].breaker_state() == balance::BreakerState::Open
    })
    .await;
    for _ in 0..4 {
        assert_eq!(c.get("/").await.status, 200, "b serves alone");
    }

    // With every 5xx counted, as the seed did: five 500s each open both breakers.
    a.set_status(500);
    b.set_status(500);
    let proxy = start(&proxy_config(upstream(true)));
    let mut c = Client::connect(web(&proxy)).await;
    for _ in 0..10 {
        assert_eq!(c.get("/bad").await.status, 500);
    }
    let r = c.get("/good").await;
    assert_eq!(r.status, 503, "every breaker is open");
}

/// A request body of `n` pieces of `size` bytes with no declared length (a streaming upload).
struct Unsized(std::collections::VecDeque<bytes::Bytes>);

impl hyper::body::Body for Unsized {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn max_body_size_holds_for_chunked_and_http2_bodies_too() {
    let a = mock("a").await;
    let proxy = start(&proxy_config(plain("app", &[&a])).listeners_set("max_body_size", "1KiB"));
    // HTTP/1.1 chunked: one chunk of 600 bytes passes, two get 413.
    let chunk = format!("258\r\n{}\r\n", "x".repeat(600));
    let head =
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let one = common::raw(
        web(&proxy),
        format!("{head}{chunk}0\r\n\r\n").as_bytes(),
        DEADLINE,
    )
    .await;
    assert!(
        one.starts_with("HTTP/1.1 200") && one.ends_with("a:600"),
        "{one}"
    );
    let two = format!("{head}{chunk}{chunk}0\r\n\r\n");
    let two = common::raw(web(&proxy), two.as_bytes(), DEADLINE).await;
    assert!(two.starts_with("HTTP/1.1 413"), "{two}");
    assert_eq!(
        a.received(),
        1,
        "the cut body was never answered by the backend"
    );

    // HTTP/2 with a declared length: refused before a backend sees it.
    let mut h2 = H2Client::connect(web(&proxy)).await;
    assert_eq!(h2.send("POST", "/", &[b'x'; 1024]).await.status, 200);
    assert_eq!(h2.send("POST", "/", &[b'x'; 1025]).await.status, 413);
    assert_eq!(a.received(), 2);

    // HTTP/2 without one: cut when it grows past the limit.
    let mut sender = common::h2_sender::<Unsized>(web(&proxy)).await;
    for (pieces, status) in [(2, 200), (3, 413)] {
        let body = Unsized(
            (0..pieces)
                .map(|_| bytes::Bytes::from(vec![b'y'; 500]))
                .collect(),
        );
        let request = http::Request::post("http://test.local/up")
            .body(body)
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(
            response.status().as_u16(),
            status,
            "{pieces} pieces of 500 bytes"
        );
    }
    // The cut one may have started at the backend (nothing waits for a whole streamed
    // body), but no more than the limit of any body ever reached it.
    let most = a.seen().iter().map(|s| s.body_len).max();
    assert_eq!(most, Some(1024), "{:?}", a.seen());
}

#[tokio::test(flavor = "multi_thread")]
async fn health_checks_send_the_configured_host_and_pass_only_on_expected_status() {
    let a = mock("a").await;
    let proxy = start(&proxy_config(
        plain("app", &[&a]).health_check(
            quick_checks()
                .set("host", "svc.internal")
                .set("expected_status", vec![204]),
        ),
    ));
    // a answers its checks with 200, which is not expected.
    eventually(DEADLINE, "a is down", || {
        health(&proxy, "app", "a") == Health::Down
    })
    .await;
    a.set_health(204);
    eventually(DEADLINE, "a is up", || {
        health(&proxy, "app", "a") == Health::Up
    })
    .await;
    let probe = a.seen().into_iter().find(|s| s.path == "/health").unwrap();
    assert_eq!(probe.header("host"), Some("svc.internal"));
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_on_5xx_lets_500s_eject_a_backend_and_without_it_they_do_not() {
    for fail_on_5xx in [false, true] {
        let (a, b) = (mock("a").await, mock("b").await);
        let proxy = start(&proxy_config(
            plain("app", &[&a, &b])
                .set("max_fails", 1)
                .duration("fail_timeout", Duration::from_secs(600))
                .set("fail_on_5xx", fail_on_5xx)
                .set("retry_on_status", Vec::<i64>::new()),
        ));
        a.set_status(500);
        let mut c = Client::connect(web(&proxy)).await;
        for _ in 0..6 {
            c.get("/").await;
        }
        if fail_on_5xx {
            assert_eq!(a.received(), 1, "ejected after its first 500");
        } else {
            assert_eq!(a.received(), 3, "an application's 500 does not eject");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_requests_queue_by_priority_at_the_connection_limit() {
    let a = mock("a").await;
    // The first request holds a's one connection long enough for the other two to be queued
    // behind it on a loaded machine (300 ms was not); the next two are answered at once.
    a.set_delay(Duration::from_secs(5));
    let proxy = start(&ConfigBuilder::proxy(
        UpstreamBuilder::new("app")
            .set("queue_size", 2)
            .duration("queue_timeout", Duration::from_secs(30))
            .backend_with("a", a.addr(), 1.0, Section::new().set("max_connections", 1))
            .health_check(Section::disabled()),
    ));
    let addr = web(&proxy);
    let send = |priority: &'static str, path: &'static str| {
        tokio::spawn(async move {
            H2Client::connect(addr)
                .await
                .send_with("GET", path, &[("x-priority", priority)], b"")
                .await
        })
    };
    let queued = |n: usize| {
        let proxy = &proxy;
        async move {
            eventually(DEADLINE, "requests queued", || {
                proxy.upstream("app").unwrap().queue().len() == n
            })
            .await;
        }
    };
    let first = send("0", "/first");
    eventually(DEADLINE, "a is busy", || a.in_flight() == 1).await;
    a.set_delay(Duration::ZERO);
    let low = send("1", "/low");
    queued(1).await;
    let high = send("9", "/high");
    queued(2).await;
    for r in [first, low, high] {
        assert_eq!(r.await.unwrap().status, 200);
    }
    let order: Vec<String> = a.seen().iter().map(|s| s.path.clone()).collect();
    assert_eq!(order, ["/first", "/high", "/low"], "higher priority first");
}

#[tokio::test(flavor = "multi_thread")]
async fn in_panic_every_primary_shares_except_draining_ones_and_open_breakers() {
    let bs = common::backends(&["a", "b", "c", "d"]).await;
    let refs: Vec<&Backend> = bs.iter().collect();
    let proxy = start(&proxy_config(
        plain("app", &refs)
            .set("panic_threshold", 50)
            .set("retry_on_status", Vec::<i64>::new())
            .health_check(quick_checks())
            .circuit_breaker(
                Section::new()
                    .set("failure_threshold", 1)
                    .set("count_all_5xx", true)
                    .duration("recovery_timeout", Duration::from_secs(600)),
            ),
    ));
    let up = proxy.upstream("app").unwrap();
    // c's breaker opens on one failure (and stays open: 600 s recovery).
    bs[2].set_status(500);
    let mut client = Client::connect(web(&proxy)).await;
    for _ in 0..4 {
        client.get("/").await;
    }
    eventually(DEADLINE, "c's breaker opens", || {
        up.pool().snapshot().backends()[2].breaker_state() == balance::BreakerState::Open
    })
    .await;
    bs[2].set_status(200);
    // b fails its checks; d is drained.
    bs[1].set_health(503);
    eventually(DEADLINE, "b is down", || {
        health(&proxy, "app", "b") == Health::Down
    })
    .await;
    let r = Client::connect(proxy.admin_addr())
        .await
        .send("POST", "/api/v1/upstreams/app/backends/d/drain", b"")
        .await
        .unwrap();
    assert!(r.status < 300, "{} {}", r.status, r.text());
    // One available primary of four is below 50%: panic. Every primary shares the traffic,
    // the one the checks call down included, except the drained one and the open breaker.
    let before: Vec<usize> = bs.iter().map(Backend::received).collect();
    let seen = answered_by(web(&proxy), 8).await;
    let got: Vec<usize> = bs
        .iter()
        .zip(&before)
        .map(|(b, n)| b.received() - n)
        .collect();
    assert!(got[0] > 0 && got[1] > 0, "a and b share: {seen:?}");
    assert_eq!(
        (got[2], got[3]),
        (0, 0),
        "not c (breaker open) nor d (draining): {seen:?}"
    );
}
