//! The proxy over real sockets: mock backends on 127.0.0.1:0, rondo started in-process from
//! a TOML config, requests from a real HTTP client, and checks of what arrived where.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{
    Client, ConfigBuilder, MockBackend, Section, UpstreamBuilder, app, backends, config,
    eventually, get, mock, proxy_config, raw, start, web,
};

/// Sends `n` sequential GETs on one keep-alive connection and returns the backend names.
async fn sequence(addr: std::net::SocketAddr, n: usize) -> Vec<String> {
    let mut c = Client::connect(addr).await;
    let mut out = Vec::new();
    for _ in 0..n {
        let r = c.get("/").await;
        assert_eq!(r.status, 200, "{}", r.text());
        out.push(r.backend());
    }
    out
}

fn counts(seq: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for s in seq {
        *m.entry(s.clone()).or_insert(0) += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread")]
async fn smooth_weighted_replays_nginx_golden_sequences_through_the_proxy() {
    let golden: serde_json::Value =
        serde_json::from_str(include_str!("../../balance/tests/data/nginx-swrr.json")).unwrap();
    for v in golden.as_array().unwrap().iter().take(6) {
        let weights: Vec<u64> = v["weights"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_u64().unwrap())
            .collect();
        let expected: Vec<String> = v["sequence"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| format!("b{}", i.as_u64().unwrap()))
            .collect();
        let names: Vec<String> = (0..weights.len()).map(|i| format!("b{i}")).collect();
        let bs = backends(&names.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let list: Vec<(&MockBackend, f64)> = bs
            .iter()
            .zip(&weights)
            .map(|(b, &w)| (b, w as f64))
            .collect();
        let proxy = start(&proxy_config(app(&list).algorithm("smooth-weighted")));
        let got = sequence(web(&proxy), expected.len()).await;
        assert_eq!(got, expected, "weights {weights:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_cyclic_algorithm_gives_exact_shares_and_fractional_weights_are_exact() {
    let bs = backends(&["a", "b"]).await;
    for algorithm in ["weighted", "smooth-weighted"] {
        let proxy = start(&proxy_config(
            app(&[(&bs[0], 1.0), (&bs[1], 1.5)]).algorithm(algorithm),
        ));
        let c = counts(&sequence(web(&proxy), 50).await);
        assert_eq!((c["a"], c["b"]), (20, 30), "{algorithm}: 1 : 1.5 is 2 : 3");
    }
    let proxy = start(&proxy_config(
        app(&[(&bs[0], 1.0), (&bs[1], 1.5)]).algorithm("round-robin"),
    ));
    let c = counts(&sequence(web(&proxy), 50).await);
    assert_eq!((c["a"], c["b"]), (25, 25), "round-robin ignores weights");
}

#[tokio::test(flavor = "multi_thread")]
async fn adaptive_and_random_algorithms_reach_every_backend() {
    let bs = backends(&["a", "b", "c"]).await;
    for algorithm in ["random", "least-connections", "p2c"] {
        let list: Vec<(&MockBackend, f64)> = bs.iter().map(|b| (b, 1.0)).collect();
        let proxy = start(&proxy_config(app(&list).algorithm(algorithm)));
        let c = counts(&sequence(web(&proxy), 90).await);
        // p2c keeps sending to whichever answered fastest (a slower first answer, which
        // includes the backend connection's setup, is remembered for seconds), but tries
        // every backend.
        let floor = if algorithm == "p2c" { 1 } else { 10 };
        for name in ["a", "b", "c"] {
            assert!(
                c.get(name).copied().unwrap_or(0) >= floor,
                "{algorithm}: {c:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_headers_are_set_and_host_is_kept() {
    let bs = backends(&["a"]).await;
    let proxy = start(&config(&[(&bs[0], 1.0)]));
    let reply = raw(
        web(&proxy),
        b"GET /x?y=1 HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close, X-Drop\r\nX-Drop: 1\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let seen = &bs[0].seen()[0];
    assert_eq!(seen.path, "/x");
    assert_eq!(seen.header("host"), Some("shop.example"));
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("shop.example"));
    assert_eq!(seen.header("via"), Some("1.1 rondo"));
    assert_eq!(
        seen.header("x-drop"),
        None,
        "headers named by Connection are hop-by-hop"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_backend_trips_its_breaker_and_recovers_through_half_open() {
    let bs = backends(&["a", "b"]).await;
    let proxy = start(&proxy_config(
        app(&[(&bs[0], 1.0), (&bs[1], 1.0)])
            .set("retry_on_status", Vec::<i64>::new())
            .set("max_fails", 0)
            .circuit_breaker(
                Section::new()
                    .set("failure_threshold", 3)
                    .set("count_all_5xx", true)
                    .duration("recovery_timeout", Duration::from_secs(2)),
            ),
    ));
    let addr = web(&proxy);
    bs[1].set_status(500);
    let mut c = Client::connect(addr).await;
    let mut five_hundreds = 0;
    for _ in 0..20 {
        if c.get("/").await.status == 500 {
            five_hundreds += 1;
        }
    }
    assert_eq!(
        five_hundreds, 3,
        "the breaker opened after 3 consecutive failures"
    );
    let up = proxy.upstream("app").unwrap();
    assert_eq!(
        up.pool().snapshot().backends()[1].breaker_state(),
        balance::BreakerState::Open
    );
    // Waits until b's recovery timeout has passed, read from the breaker itself.
    let recovered = || async {
        eventually(
            Duration::from_secs(30),
            "the recovery timeout passes",
            || {
                let snapshot = up.pool().snapshot();
                let b = &snapshot.backends()[1];
                // Open until its time has come (or the pool's timer already made it half-open).
                b.breaker()
                    .reopens_at()
                    .is_none_or(|at| up.clock().now() >= at)
            },
        )
        .await;
    };
    // Still failing at half-open: one probe, then open again.
    recovered().await;
    // Until the pool sees the breaker half-open, requests go to a; then one probes b.
    let hits = bs[1].hits();
    for sent in 0.. {
        assert!(sent < 1000, "b was never probed");
        if bs[1].hits() > hits {
            break;
        }
        c.get("/").await;
    }
    for _ in 0..4 {
        c.get("/").await;
    }
    assert_eq!(bs[1].hits(), hits + 1, "exactly one probe while half-open");
    // Healthy again: the next probe closes it.
    bs[1].set_status(200);
    recovered().await;
    let hits = bs[1].hits();
    for sent in 0.. {
        assert!(sent < 1000, "b was never probed");
        if bs[1].hits() > hits {
            break;
        }
        c.get("/").await;
    }
    eventually(Duration::from_secs(30), "b's breaker closes", || {
        up.pool().snapshot().backends()[1].breaker_state() == balance::BreakerState::Closed
    })
    .await;
    let seq: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..10 {
            v.push(c.get("/").await.backend());
        }
        v
    };
    assert!(seq.iter().filter(|b| *b == "b").count() >= 4, "{seq:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn get_is_retried_on_503_but_post_that_reached_a_backend_is_not() {
    let bs = backends(&["a", "b"]).await;
    // Neither passive ejection nor the breaker takes a out: the POSTs must meet its 503.
    let proxy = start(&proxy_config(
        app(&[(&bs[0], 1.0), (&bs[1], 1.0)])
            .set("max_fails", 0)
            .circuit_breaker(Section::disabled()),
    ));
    bs[0].set_status(503);
    let mut c = Client::connect(web(&proxy)).await;
    for _ in 0..4 {
        let r = c.get("/").await;
        assert_eq!((r.status, r.backend()), (200, "b".to_owned()));
    }
    let (a, b) = (bs[0].hits(), bs[1].hits());
    let mut posts = Vec::new();
    for _ in 0..4 {
        posts.push(c.send("POST", "/order", b"one order").await.unwrap().status);
    }
    let delivered = (bs[0].hits() - a) + (bs[1].hits() - b);
    assert_eq!(delivered, 4, "each POST reached exactly one backend");
    assert_eq!(
        bs[0].hits() - a,
        2,
        "round robin sent two POSTs to a, which answered 503"
    );
    assert_eq!(
        posts.iter().filter(|s| **s == 503).count(),
        bs[0].hits() - a,
        "a POST's 503 is passed through"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_refused_is_failed_over_even_for_post() {
    let bs = backends(&["a", "b"]).await;
    let proxy = start(&config(&[(&bs[0], 1.0), (&bs[1], 1.0)]));
    bs[0].kill().await;
    let mut c = Client::connect(web(&proxy)).await;
    for _ in 0..6 {
        let r = c.send("POST", "/", b"payload").await.unwrap();
        assert_eq!((r.status, r.text()), (200, "b:7".to_owned()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn all_backends_down_gives_503_with_retry_after() {
    let bs = backends(&["a", "b"]).await;
    let proxy = start(&config(&[(&bs[0], 1.0), (&bs[1], 1.0)]));
    bs[0].kill().await;
    bs[1].kill().await;
    let r = get(web(&proxy), "/").await;
    assert_eq!(r.status, 502, "first: both refused after trying each");
    // Both are now ejected (max_fails = 1): nothing is available.
    let r = get(web(&proxy), "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.text().contains("app"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_backend_gives_504_after_the_response_timeout() {
    let bs = backends(&["a"]).await;
    let proxy = start(&proxy_config(
        app(&[(&bs[0], 1.0)]).duration("response_timeout", Duration::from_millis(300)),
    ));
    // The backend would answer 200 after ten minutes: a 504 shows the proxy did not wait.
    bs[0].set_delay(Duration::from_secs(600));
    let r = get(web(&proxy), "/").await;
    assert_eq!(r.status, 504, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_request_head_gets_408_and_a_malformed_one_400() {
    let bs = backends(&["a"]).await;
    let proxy = start(&config(&[(&bs[0], 1.0)]).listeners_set("header_timeout", "300ms"));
    let reply = raw(
        web(&proxy),
        b"GET / HTTP/1.1\r\nHost: a\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    let reply = raw(web(&proxy), b"BLAH\r\n\r\n", Duration::from_secs(3)).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    let reply = raw(
        web(&proxy),
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(bs[0].hits(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_finishes_an_in_flight_request() {
    let bs = backends(&["a"]).await;
    let proxy = start(&config(&[(&bs[0], 1.0)]));
    bs[0].set_delay(Duration::from_millis(500));
    let addr = web(&proxy);
    // An idle keep-alive connection does not hold the shutdown up: it is closed.
    let mut idle = Client::connect(addr).await;
    assert_eq!(idle.get("/").await.status, 200);
    let pending = tokio::spawn(async move { get(addr, "/").await });
    // A grace far longer than the test's deadline: finishing within the deadline means
    // the shutdown waited for the busy request only, not for the idle connection.
    common::shut_down_with_one_in_flight(proxy, &bs[0], "waited for the busy request only").await;
    let r = pending.await.unwrap();
    assert_eq!(r.status, 200);
    assert!(
        idle.send("GET", "/", b"").await.is_err(),
        "the idle connection was closed"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

/// The same for an HTTP/2 client: its stream in flight when the shutdown starts is answered
/// whole (the connection gets GOAWAY, the worker waits for the stream), and the shutdown does
/// not wait for the grace to end.
#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_finishes_an_in_flight_http2_stream() {
    let bs = backends(&["a"]).await;
    let proxy = start(&config(&[(&bs[0], 1.0)]));
    bs[0].set_delay(Duration::from_millis(500));
    let mut client = common::H2Client::connect(web(&proxy)).await;
    let pending = tokio::spawn(async move { client.send("GET", "/", b"").await });
    common::shut_down_with_one_in_flight(proxy, &bs[0], "waited for the stream only").await;
    let reply = pending.await.unwrap();
    assert_eq!((reply.status, reply.text()), (200, "a".to_owned()));
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_choose_the_upstream_by_host_and_path_prefix() {
    let bs = backends(&["web", "api", "admin"]).await;
    let routes = vec![
        Section::new()
            .set("path_prefix", "/api/")
            .set("upstream", "api"),
        Section::new()
            .set("host", "admin.example")
            .set("upstream", "admin"),
    ];
    let mut config = ConfigBuilder::new().listener_with(
        Section::new()
            .set("name", "web")
            .set("bind", "127.0.0.1:0")
            .set("upstream", "web")
            .set("routes", routes),
    );
    for b in &bs {
        config = config.upstream(UpstreamBuilder::new(b.name()).backend(b.name(), b.addr(), 1.0));
    }
    let proxy = start(&config);
    let addr = web(&proxy);
    assert_eq!(get(addr, "/index.html").await.backend(), "web");
    assert_eq!(get(addr, "/api/users").await.backend(), "api");
    let r = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: ADMIN.example:8080\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(r.contains("x-backend: admin"), "{r}");
    // An absolute-form target routes by its own host and path (the Host field ignored) and
    // reaches the backend in origin form with that host.
    for (target, to) in [
        ("http://x.test/api/users", "api"),
        ("http://admin.example/", "admin"),
    ] {
        let head = format!("GET {target} HTTP/1.1\r\nHost: elsewhere\r\nConnection: close\r\n\r\n");
        let r = raw(addr, head.as_bytes(), Duration::from_secs(3)).await;
        assert!(r.contains(&format!("x-backend: {to}")), "{target}: {r}");
    }
    let seen = bs[2].seen();
    let last = seen.last().unwrap();
    assert_eq!(
        (last.path.as_str(), last.header("host")),
        ("/", Some("admin.example"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http10_clients_get_responses_they_can_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A backend that answers every request with a chunked body and a trailer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let chunked_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    let big = "y".repeat(70_000);
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                         5;ext=1\r\nhello\r\n{:x}\r\n{big}\r\n1\r\n!\r\n0\r\nX-Sum: 1\r\n\r\n",
                        big.len()
                    );
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let chunked = start(&proxy_config(UpstreamBuilder::new("app").backend(
        "c",
        chunked_addr,
        1.0,
    )));
    // A chunked response reaches an HTTP/1.0 client as its data alone, ended by the close:
    // it cannot read chunked coding. An HTTP/1.1 client gets the chunks as they came.
    let reply = raw(
        web(&chunked),
        b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert_eq!(body, format!("hello{}!", "y".repeat(70_000)));
    let reply = raw(
        web(&chunked),
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        reply.ends_with("\r\n1\r\n!\r\n0\r\nX-Sum: 1\r\n\r\n"),
        "{}",
        &reply[..200]
    );

    let bs = backends(&["a"]).await;
    let proxy = start(&config(&[(&bs[0], 1.0)]));

    // A kept-alive HTTP/1.0 connection is told so, and serves a second request; its
    // `Expect: 100-continue` gets no 1xx (RFC 9110 §15.2).
    let mut c = tokio::net::TcpStream::connect(web(&proxy)).await.unwrap();
    let request = b"POST /up HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\
                    Expect: 100-continue\r\nContent-Length: 2\r\n\r\nhi";
    for _ in 0..2 {
        c.write_all(request).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).ends_with("a:2") {
            let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        let got = String::from_utf8_lossy(&got);
        assert!(
            got.starts_with("HTTP/1.1 200"),
            "no 100 Continue first: {got}"
        );
        assert!(got.contains("\r\nconnection: keep-alive\r\n"), "{got}");
    }
    let seen = bs[0].seen();
    assert!(
        seen.iter().all(|s| s.header("expect").is_none()),
        "Expect stays with rondo"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http10_request_without_host_reaches_the_backend_with_the_upstreams_name() {
    let recorded = common::Backend::builder("a")
        .record_raw()
        .start()
        .await
        .unwrap();
    let proxy = start(&config(&[(&recorded, 1.0)]));
    // Forwarded as HTTP/1.1, which requires a Host (RFC 9112 §3.2): nginx sends its
    // proxy_host, the upstream's name.
    let reply = raw(
        web(&proxy),
        b"GET /x HTTP/1.0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let received = String::from_utf8_lossy(&recorded.raw()).to_ascii_lowercase();
    assert!(received.starts_with("get /x http/1.1\r\n"), "{received}");
    assert_eq!(
        received.matches("\r\nhost: app\r\n").count(),
        1,
        "{received}"
    );
    assert!(!received.contains("x-forwarded-host"), "{received}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_x_forwarded_for_line_is_kept_and_equal_lengths_go_on_as_one() {
    let recorded = common::Backend::builder("a")
        .record_raw()
        .start()
        .await
        .unwrap();
    let proxy = start(&config(&[(&recorded, 1.0)]));
    let reply = raw(
        web(&proxy),
        b"POST / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n\
          Content-Length: 2\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        Duration::from_secs(5),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let received = String::from_utf8_lossy(&recorded.raw()).to_ascii_lowercase();
    assert!(
        received.contains("\r\nx-forwarded-for: 1.1.1.1, 2.2.2.2, 127.0.0.1\r\n"),
        "{received}"
    );
    assert_eq!(
        received.matches("content-length: 2\r\n").count(),
        1,
        "{received}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_request_and_response_bodies_pass_through() {
    let bs = backends(&["a"]).await;
    let proxy = start(&config(&[(&bs[0], 1.0)]));
    let reply = raw(
        web(&proxy),
        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("a:11"), "{reply}");
    assert_eq!(bs[0].seen()[0].body_len, 11);
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_with_prior_knowledge_is_served_on_the_same_port() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    let bs = backends(&["a", "b"]).await;
    let proxy = start(&config(&[(&bs[0], 1.0), (&bs[1], 1.0)]));
    let mut sender = common::h2_sender(web(&proxy)).await;
    let mut seen = Vec::new();
    for (method, body) in [("GET", ""), ("GET", ""), ("POST", "hello"), ("GET", "")] {
        let req = hyper::Request::builder()
            .method(method)
            .uri("http://h2.example/path")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.version(), hyper::Version::HTTP_2);
        let text = String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec())
            .unwrap();
        seen.push(text);
    }
    assert_eq!(seen[..2], ["a".to_owned(), "b".to_owned()]);
    assert_eq!(seen[2], "a:5", "the POST body arrived whole");
    let req = &bs[0].seen()[0];
    assert_eq!(req.header("host"), Some("h2.example"));
    assert_eq!(req.header("via"), Some("2.0 rondo"));
    assert_eq!(req.header("x-forwarded-for"), Some("127.0.0.1"));
    // HTTP/1.1 still works on the same port.
    assert_eq!(get(web(&proxy), "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn at_the_connection_limit_requests_queue_by_priority_and_a_full_queue_gets_503() {
    let b = mock("a").await;
    // The first request holds a's one connection long enough for the others to queue behind
    // it on a loaded machine; the later ones are answered at once.
    b.set_delay(Duration::from_secs(5));
    let proxy = start(&ConfigBuilder::proxy(
        UpstreamBuilder::new("app")
            .set("queue_size", 2)
            .duration("queue_timeout", Duration::from_secs(30))
            .backend_with("a", b.addr(), 1.0, Section::new().set("max_connections", 1))
            .health_check(Section::disabled()),
    ));
    let addr = web(&proxy);
    let send = |priority: u32, path: &'static str| {
        tokio::spawn(async move {
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: a\r\nX-Priority: {priority}\r\nConnection: close\r\n\r\n"
            );
            raw(addr, req.as_bytes(), Duration::from_secs(10)).await
        })
    };
    let queued = |n: usize| {
        let proxy = &proxy;
        async move {
            let what = format!("{n} requests queued");
            eventually(Duration::from_secs(30), &what, || {
                proxy.upstream("app").unwrap().queue().len() == n
            })
            .await;
        }
    };
    let first = send(0, "/first");
    eventually(
        Duration::from_secs(30),
        "the first request is served",
        || b.in_flight() == 1,
    )
    .await;
    b.set_delay(Duration::ZERO);
    let low = send(1, "/low");
    queued(1).await;
    let high = send(9, "/high");
    queued(2).await;
    let overflow = send(5, "/overflow").await.unwrap();
    assert!(
        overflow.starts_with("HTTP/1.1 503"),
        "queue of 2 is full: {overflow}"
    );
    for r in [first, low, high] {
        assert!(r.await.unwrap().starts_with("HTTP/1.1 200"));
    }
    let order: Vec<String> = b.seen().iter().map(|s| s.path.clone()).collect();
    assert_eq!(
        order,
        vec!["/first", "/high", "/low"],
        "higher priority first"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connect_timeout_is_failed_over_to_the_next_backend() {
    // A listener that never accepts, its one-slot backlog already full: further connection
    // attempts get no answer, as with a host that dropped off the network.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let stuck: std::net::SocketAddr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..3 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(stuck),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let good = mock("good").await;
    let proxy = start(&ConfigBuilder::proxy(
        UpstreamBuilder::new("app")
            .algorithm("round-robin")
            .duration("connect_timeout", Duration::from_millis(200))
            .backend("stuck", stuck, 1.0)
            .backend("good", good.addr(), 1.0),
    ));
    let started = std::time::Instant::now();
    let r = raw(
        web(&proxy),
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        Duration::from_secs(30),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(
        r.ends_with("good:2"),
        "a request that never reached a backend is retried, even a POST: {r}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200),
        "the first attempt waited for its connect timeout: {took:?}"
    );
    drop(fillers);
}

#[tokio::test(flavor = "multi_thread")]
async fn when_every_try_answers_503_the_last_answer_is_passed_through() {
    let bs = backends(&["a", "b"]).await;
    let proxy = start(&proxy_config(
        app(&[(&bs[0], 1.0), (&bs[1], 1.0)])
            .set("tries", 2)
            .set("max_fails", 0),
    ));
    bs[0].set_status(503);
    bs[1].set_status(503);
    let r = get(web(&proxy), "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        bs[0].hits() + bs[1].hits(),
        2,
        "retried once, on the other backend"
    );
    assert_ne!(
        r.backend(),
        "-",
        "the backend's own response, not one made up by the proxy"
    );
}

/// Reads one request head and, when it declares one, its body, from `s`.
async fn read_request(s: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed before a whole head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..end].to_vec()).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = buf[end..].to_vec();
    let mut rest = vec![0; len - body.len()];
    s.read_exact(&mut rest).await.unwrap();
    body.extend_from_slice(&rest);
    (head, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn large_bodies_arrive_intact_both_ways_and_the_connections_stay_usable_after_them() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Larger than the first read and than what a retry keeps, so both bodies stream through
    // several reads and writes: the bytes must arrive in order, and exactly the body must be
    // taken from each side (the next request and response follow on the same connections).
    let pattern: Vec<u8> = (0..300_000).map(|i| (i % 251) as u8).collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let expected = pattern.clone();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let (head, body) = read_request(&mut s).await;
        assert!(head.starts_with("PUT /up "), "{head}");
        assert!(body == expected, "the upload arrived intact");
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        let (head, _) = read_request(&mut s).await;
        assert!(head.starts_with("GET /down "), "{head}");
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
            expected.len()
        )
        .into_bytes();
        answer.extend_from_slice(&expected);
        s.write_all(&answer).await.unwrap();
        let (head, _) = read_request(&mut s).await;
        assert!(head.starts_with("GET /after "), "{head}");
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nafter")
            .await
            .unwrap();
        // All three requests were read from the one connection accepted above: rondo kept
        // it after each body (a connection it dropped would have ended these reads).
    });
    let proxy = start(&ConfigBuilder::proxy(
        UpstreamBuilder::new("app")
            .backend("only", backend, 1.0)
            .health_check(Section::disabled()),
    ));
    let mut client = tokio::net::TcpStream::connect(web(&proxy)).await.unwrap();
    let mut put = format!(
        "PUT /up HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        pattern.len()
    )
    .into_bytes();
    put.extend_from_slice(&pattern);
    client.write_all(&put).await.unwrap();
    let head = common::read_response(&mut client).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");

    client
        .write_all(b"GET /down HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let body_at = loop {
        let mut chunk = [0; 65536];
        let n = client.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&chunk[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    while got.len() < body_at + pattern.len() {
        let mut chunk = [0; 65536];
        let n = client.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the download ended early");
        got.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(got.len(), body_at + pattern.len(), "nothing past the body");
    assert!(got[body_at..] == pattern[..], "the download arrived intact");

    client
        .write_all(b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut after = String::new();
    client.read_to_string(&mut after).await.unwrap();
    assert!(
        after.starts_with("HTTP/1.1 200") && after.ends_with("after"),
        "{after}"
    );
    server.await.unwrap();
}

/// b answers 500 to everything, slowly, so several requests are at b when its breaker opens;
/// `retry_on_status = ["5xx"]` with no retry budget at all. The 500 that opens the breaker
/// has no budget to be retried with and reaches its client; the 500s b gives afterwards come
/// from a backend already out of rotation while a serves, so they are retried on a without
/// the budget (as its timeouts would be), and every other client gets a's 200.
#[tokio::test(flavor = "multi_thread")]
async fn the_5xx_of_a_backend_whose_breaker_opened_are_retried_without_the_budget() {
    let bs = backends(&["a", "b"]).await;
    bs[1].set_status(500);
    bs[1].set_delay(Duration::from_millis(300));
    let upstream = app(&[(&bs[0], 1.0), (&bs[1], 1.0)])
        .set("retry_on_status", vec!["5xx"])
        .set("retry_budget_percent", 0)
        .set("retry_budget_min", 0)
        .health_check(Section::disabled())
        .circuit_breaker(
            Section::new()
                .set("failure_threshold", 1)
                .set("count_all_5xx", true),
        );
    let proxy = start(&proxy_config(upstream).set("workers", 1));
    let addr = web(&proxy);
    let requests = 16;
    let tasks: Vec<_> = (0..requests)
        .map(|_| tokio::spawn(get(addr, "/")))
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    let failed: Vec<_> = replies.iter().filter(|r| r.status != 200).collect();
    let reached_b = bs[1].received();
    println!(
        "{} of the {reached_b} 500s of b reached their clients",
        failed.len()
    );
    assert!(reached_b > 2, "several requests were at b: {reached_b}");
    assert!(
        failed.len() < reached_b,
        "{} of the {reached_b} 500s of b reached their clients",
        failed.len()
    );
    assert!(failed.iter().all(|r| r.status == 500 && r.backend() == "b"));
    for r in replies.iter().filter(|r| r.status == 200) {
        assert_eq!(r.backend(), "a");
    }
    assert_eq!(
        common::backend_state(&proxy, "app", "b").0,
        balance::BackendState::BreakerOpen
    );
    proxy.shutdown(Duration::from_secs(1));
}

/// Client connections worker `w` serves, as `/metrics` at `admin` says.
async fn worker_connections(admin: std::net::SocketAddr, w: &str) -> f64 {
    let labels = [("worker", w)];
    common::metric(admin, "rondo_worker_connections", &labels)
        .await
        .unwrap_or(f64::NAN)
}

/// Two workers, 40 keep-alive clients connecting at once: whichever worker wins the accepts,
/// each ends up serving about half (a worker holding clearly more hands new connections to
/// the other), and `/metrics` shows each worker's count until the connections close.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_connections_is_spread_over_the_workers() {
    let a = mock("a").await;
    let proxy = start(&config(&[(&a, 1.0)]).set("workers", 2));
    let addr = web(&proxy);
    let clients = 40;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                assert_eq!(client.get("/").await.status, 200);
                client
            })
        })
        .collect();
    let mut open = Vec::new();
    for t in tasks {
        open.push(t.await.unwrap());
    }
    let admin = proxy.admin_addr();
    let (w0, w1) = (
        worker_connections(admin, "0").await,
        worker_connections(admin, "1").await,
    );
    println!("worker 0 serves {w0}, worker 1 serves {w1}");
    assert_eq!(
        w0 + w1,
        f64::from(clients),
        "every open client connection counted once"
    );
    let (fewer, more) = (w0.min(w1), w0.max(w1));
    assert!(
        more - fewer <= (fewer / 8.0).floor() + 6.0,
        "{w0} against {w1}"
    );
    drop(open);
    common::eventually_async(
        Duration::from_secs(10),
        "closed connections uncounted",
        || async move {
            worker_connections(admin, "0").await + worker_connections(admin, "1").await == 0.0
        },
    )
    .await;
    proxy.shutdown(Duration::from_secs(1));
}
