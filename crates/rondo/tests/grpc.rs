//! gRPC through rondo to real gRPC servers (tonic): each call of one client connection is
//! its own pick, failures and GOAWAY are absorbed, a backend's stream limit opens more
//! connections (and none goes to a backend that never sends its SETTINGS), gRPC health checks take a NOT_SERVING backend out, and rondo's own errors
//! reach gRPC clients as gRPC statuses.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;
#[path = "common/grpc.rs"]
mod grpc_backend;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use grpc_backend::{GrpcBackend, client, say};

const LIMIT: Duration = Duration::from_secs(20);

async fn grpc_backends(n: usize, max_streams: Option<u32>) -> Vec<GrpcBackend> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(GrpcBackend::start(&format!("g{}", i + 1), max_streams).await);
    }
    v
}

/// Upstream `app` speaking h2c to `backends` with these weights.
fn h2c(backends: &[(&GrpcBackend, f64)]) -> UpstreamBuilder {
    backends
        .iter()
        .fold(UpstreamBuilder::new("app"), |u, (b, w)| {
            u.backend(b.name(), b.addr(), *w)
        })
        .set("protocol", "h2c")
        .health_check(Section::disabled())
}

/// Runs `calls` calls, `concurrency` at a time, over one client connection; returns the
/// replies' backends counted, and the failed calls' statuses.
async fn run_calls(
    proxy: std::net::SocketAddr,
    calls: usize,
    concurrency: usize,
    mut between: impl FnMut(usize),
) -> (HashMap<String, usize>, Vec<tonic::Status>) {
    let grpc = client(proxy).await;
    let mut counts = HashMap::new();
    let mut failures = Vec::new();
    let mut done = 0;
    while done < calls {
        let batch = concurrency.min(calls - done);
        let mut set = tokio::task::JoinSet::new();
        for i in 0..batch {
            let mut grpc = grpc.clone();
            set.spawn(async move { say(&mut grpc, &format!("call {}", done + i)).await });
        }
        while let Some(joined) = set.join_next().await {
            match joined.unwrap() {
                Ok(reply) => *counts.entry(reply.backend).or_insert(0) += 1,
                Err(status) => failures.push(status),
            }
        }
        done += batch;
        between(done);
    }
    (counts, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_connection_is_spread_call_by_call_in_exact_round_robin() {
    let b = grpc_backends(4, None).await;
    let upstream = h2c(&[(&b[0], 1.0), (&b[1], 1.0), (&b[2], 1.0), (&b[3], 1.0)]);
    let proxy = start(&proxy_config(upstream));
    let (counts, failures) = run_calls(web(&proxy), 1000, 8, |_| {}).await;
    assert!(failures.is_empty(), "{failures:?}");
    for backend in &b {
        assert_eq!(counts.get(backend.name()), Some(&250), "{counts:?}");
        assert_eq!(backend.calls(), 250);
    }
    // Streams share connections: far fewer backend connections than calls.
    for backend in &b {
        assert!(
            backend.connections() <= 2,
            "{} opened {}",
            backend.name(),
            backend.connections()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_are_respected_call_by_call() {
    let b = grpc_backends(4, None).await;
    let upstream = h2c(&[(&b[0], 1.0), (&b[1], 2.0), (&b[2], 3.0), (&b[3], 4.0)]);
    let proxy = start(&proxy_config(upstream));
    let (counts, failures) = run_calls(web(&proxy), 1000, 8, |_| {}).await;
    assert!(failures.is_empty(), "{failures:?}");
    for (backend, want) in b.iter().zip([100, 200, 300, 400]) {
        assert_eq!(counts.get(backend.name()), Some(&want), "{counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_run_fails_no_idempotent_call() {
    let b = grpc_backends(4, None).await;
    let upstream = h2c(&[(&b[0], 1.0), (&b[1], 1.0), (&b[2], 1.0), (&b[3], 1.0)])
        .set("grpc_idempotent", vec!["/echo.Echo/"]);
    let proxy = start(&proxy_config(upstream));
    // Calls held in flight on the victim when it dies.
    let victim = &b[1];
    let (counts, failures) = run_calls(web(&proxy), 1000, 8, |done| {
        if done == 400 {
            victim.kill();
        }
    })
    .await;
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(counts.values().sum::<usize>(), 1000);
    assert!(
        counts.get(victim.name()).copied().unwrap_or(0) <= 100,
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_on_a_dying_backend_are_retried_elsewhere() {
    let b = grpc_backends(2, None).await;
    let upstream =
        h2c(&[(&b[0], 1.0), (&b[1], 1.0)]).set("grpc_idempotent", vec![grpc_backend::SAY]);
    let proxy = start(&proxy_config(upstream));
    let grpc = client(web(&proxy)).await;
    b[0].release(false);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..10 {
        let mut grpc = grpc.clone();
        set.spawn(async move { say(&mut grpc, &format!("held {i}")).await });
    }
    eventually(LIMIT, "five calls held on g1", || b[0].in_flight() == 5).await;
    b[0].kill();
    while let Some(joined) = set.join_next().await {
        let reply = joined.unwrap().expect("the call succeeds on g2");
        assert_eq!(reply.backend, "g2");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_from_a_backend_fails_no_call() {
    let b = grpc_backends(4, None).await;
    // Not idempotent: only calls the backend did not process may move.
    let upstream = h2c(&[(&b[0], 1.0), (&b[1], 1.0), (&b[2], 1.0), (&b[3], 1.0)]);
    let proxy = start(&proxy_config(upstream));
    let (counts, failures) = run_calls(web(&proxy), 1000, 8, |done| {
        if done == 400 {
            b[2].goaway();
        }
    })
    .await;
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(counts.values().sum::<usize>(), 1000);
}

/// `n` calls started at once over one client connection, to be joined later.
fn spawn_calls(
    grpc: &tonic::client::Grpc<tonic::transport::Channel>,
    n: usize,
) -> tokio::task::JoinSet<Result<grpc_backend::EchoReply, tonic::Status>> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let mut grpc = grpc.clone();
        set.spawn(async move { say(&mut grpc, &format!("call {i}")).await });
    }
    set
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_allowing_ten_streams_gets_more_connections_not_a_queue() {
    let b = GrpcBackend::start("g1", Some(10)).await;
    let upstream = h2c(&[(&b, 1.0)]);
    let proxy = start(&proxy_config(upstream));
    let grpc = client(web(&proxy)).await;
    // One call first, so rondo has read the backend's SETTINGS.
    say(&mut grpc.clone(), "warm-up").await.unwrap();
    b.release(false);
    let mut set = spawn_calls(&grpc, 30);
    // Queued past the limit, calls would wait in rondo and never reach 30 at once.
    eventually(LIMIT, "30 calls in flight at the backend", || {
        b.in_flight() == 30
    })
    .await;
    assert!(b.connections() >= 3, "{} connections", b.connections());
    // The admin API, the metrics and the dashboard count them: 30 streams on every
    // connection the backend accepted.
    let admin = proxy.admin_addr();
    let g1 = backend_stats(&proxy, "g1").await;
    assert_eq!(g1["http2_streams"], 30, "{g1}");
    assert_eq!(g1["http2_connections"], b.connections(), "{g1}");
    let labels = [("upstream", "app"), ("backend", "g1")];
    assert_eq!(
        metric(admin, "rondo_backend_http2_streams", &labels).await,
        Some(30.0)
    );
    let connections = metric(admin, "rondo_backend_http2_connections", &labels).await;
    assert_eq!(connections, Some(b.connections() as f64));
    let expected = format!("30 streams, {} conns", b.connections());
    let driver = browser::chromedriver();
    let page = browser::session(&driver).await;
    page.goto(&format!("http://{admin}/")).await.unwrap();
    let cell = "tr[data-backend='app/g1'] [data-field='http2']";
    eventually_async(LIMIT, "the dashboard shows 30 streams", || async {
        browser::text(&page, cell).await == expected
    })
    .await;
    let _ = page.close().await;
    b.release(true);
    while let Some(joined) = set.join_next().await {
        joined.unwrap().unwrap();
    }
}

/// A port that accepts connections and records what arrives on them, but never answers:
/// a server caught between accepting and serving (as in the middle of its shutdown).
struct MuteBackend {
    addr: std::net::SocketAddr,
    received: std::sync::Arc<parking_lot::Mutex<Vec<Vec<u8>>>>,
}

impl MuteBackend {
    fn start() -> MuteBackend {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let log = std::sync::Arc::clone(&received);
        std::thread::spawn(move || {
            // Ends when the test process does; each connection is read until it closes.
            for conn in listener.incoming().take(64) {
                let Ok(mut conn) = conn else { return };
                let log = std::sync::Arc::clone(&log);
                std::thread::spawn(move || {
                    let index = {
                        let mut all = log.lock();
                        all.push(Vec::new());
                        all.len() - 1
                    };
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = std::io::Read::read(&mut conn, &mut buf) {
                        log.lock()[index].extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
        MuteBackend { addr, received }
    }

    /// The HTTP/2 frame types received after the client preface, on every connection.
    fn frame_types(&self) -> Vec<u8> {
        let mut types = Vec::new();
        for bytes in self.received.lock().iter() {
            let mut rest = bytes.get(24..).unwrap_or_default();
            while rest.len() >= 9 {
                let len =
                    usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
                types.push(rest[3]);
                rest = rest.get(9 + len..).unwrap_or_default();
            }
        }
        types
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_accepts_but_sends_no_settings_gets_no_call_and_costs_none() {
    let mute = MuteBackend::start();
    let b = GrpcBackend::start("g1", None).await;
    let upstream = UpstreamBuilder::new("app")
        .backend("mute", mute.addr, 1.0)
        .backend("g1", b.addr(), 1.0)
        .set("protocol", "h2c")
        .set("connect_timeout", "300ms")
        .set("max_fails", 0)
        .circuit_breaker(Section::disabled())
        .health_check(Section::disabled());
    let proxy = start(&proxy_config(upstream));
    let mut grpc = client(web(&proxy)).await;
    // `Say` is not listed as idempotent: a call may move only because none of it was sent.
    for i in 0..6 {
        let reply = say(&mut grpc, &format!("{i}")).await.unwrap();
        assert_eq!(reply.backend, "g1");
    }
    assert!(
        !mute.received.lock().is_empty(),
        "rondo tried the mute backend"
    );
    let types = mute.frame_types();
    assert!(!types.is_empty(), "rondo's SETTINGS reached it: {types:?}");
    assert!(
        !types.contains(&1),
        "no HEADERS frame (a request) was sent to a backend that never sent SETTINGS: {types:?}"
    );
}

/// Backend `id` of upstream `app` as the admin API reports it now.
async fn backend_stats(proxy: &Proxy, id: &str) -> serde_json::Value {
    let stats: serde_json::Value =
        serde_json::from_str(&get(proxy.admin_addr(), "/api/v1/stats").await.text()).unwrap();
    stats["upstreams"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .cloned()
        .unwrap()
}

/// HTTP/2 connections to `id` open now, as the admin API reports them.
async fn http2_connections(proxy: &Proxy, id: &str) -> u64 {
    backend_stats(proxy, id).await["http2_connections"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_to_a_backend_closes_after_keepalive_timeout() {
    let b = GrpcBackend::start("g1", None).await;
    // One worker: one pool holds every connection to the backend.
    let upstream = h2c(&[(&b, 1.0)]).set("keepalive_timeout", "2s");
    let proxy = start(&proxy_config(upstream).set("workers", 1));
    let mut grpc = client(web(&proxy)).await;
    say(&mut grpc, "one").await.unwrap();
    assert_eq!(http2_connections(&proxy, "g1").await, 1);
    // Busy, it stays: calls every quarter second for four seconds use the same connection.
    for i in 0..16 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        say(&mut grpc, &format!("{i}")).await.unwrap();
    }
    assert_eq!(b.connections(), 1, "a busy connection was closed");
    // Idle, it closes, and the next call opens a new one.
    eventually_async(LIMIT, "the idle connection to close", || async {
        http2_connections(&proxy, "g1").await == 0
    })
    .await;
    say(&mut grpc, "again").await.unwrap();
    assert_eq!(b.connections(), 2);
}

/// An h2c gRPC server that answers every call with one reply message and then
/// `grpc-status` 14 (UNAVAILABLE) in the trailers: a call that fails after it started
/// streaming, which only the trailers tell. Returns its address and the calls it answered.
async fn fails_in_trailers() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use prost::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&calls);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let counted = std::sync::Arc::clone(&counted);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let reply = grpc_backend::EchoReply {
                        text: "partial".into(),
                        backend: "trailers".into(),
                    }
                    .encode_to_vec();
                    let mut framed = vec![0u8];
                    framed.extend_from_slice(&u32::try_from(reply.len()).unwrap().to_be_bytes());
                    framed.extend_from_slice(&reply);
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
                    let frames: Vec<Result<Frame<bytes::Bytes>, std::convert::Infallible>> = vec![
                        Ok(Frame::data(bytes::Bytes::from(framed))),
                        Ok(Frame::trailers(trailers)),
                    ];
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/grpc")
                                .body(StreamBody::new(futures_util::stream::iter(frames)))
                                .unwrap(),
                        )
                    }
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
            });
        }
    });
    (addr, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_in_the_trailers_counts_for_the_breaker() {
    let good = GrpcBackend::start("g1", None).await;
    let (bad, bad_calls) = fails_in_trailers().await;
    let upstream = UpstreamBuilder::new("app")
        .backend("g1", good.addr(), 1.0)
        .backend("bad", bad, 1.0)
        .set("protocol", "h2c")
        .set("max_fails", 0)
        .circuit_breaker(Section::new().set("failure_threshold", 3))
        .health_check(Section::disabled());
    let proxy = start(&proxy_config(upstream));
    let mut grpc = client(web(&proxy)).await;
    // Round robin: every other call reaches `bad`, which answers a reply and then
    // UNAVAILABLE in its trailers; the client sees the failure, and so does the breaker.
    let mut failed = 0;
    for i in 0..6 {
        match say(&mut grpc, &format!("{i}")).await {
            Ok(reply) => assert_eq!(reply.backend, "g1"),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                failed += 1;
            }
        }
    }
    assert_eq!(failed, 3);
    assert_eq!(bad_calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    let bad_stats = backend_stats(&proxy, "bad").await;
    assert_eq!(bad_stats["breaker"], "open", "{bad_stats}");
    assert_eq!(bad_stats["failed_requests"], 3, "{bad_stats}");
    // Open, it takes no call.
    for i in 0..4 {
        let reply = say(&mut grpc, &format!("after {i}")).await.unwrap();
        assert_eq!(reply.backend, "g1");
    }
    assert_eq!(bad_calls.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_never_opens_more_than_h2_max_connections() {
    let b = GrpcBackend::start("g1", Some(10)).await;
    let upstream = h2c(&[(&b, 1.0)]).set("h2_max_connections", 3);
    // One worker: one pool, so the cap is the backend's whole count.
    let proxy = start(&proxy_config(upstream).set("workers", 1));
    let grpc = client(web(&proxy)).await;
    b.release(false);
    // 50 calls at once on a cold pool: three connections of ten streams, the other
    // twenty wait in rondo (on the least busy connection) rather than a connection each.
    let mut set = spawn_calls(&grpc, 50);
    eventually(LIMIT, "30 calls in flight at the backend", || {
        b.in_flight() == 30
    })
    .await;
    assert_eq!(b.connections(), 3);
    b.release(true);
    while let Some(joined) = set.join_next().await {
        joined.unwrap().unwrap();
    }
    assert_eq!(b.calls(), 50);
    assert_eq!(b.connections(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_answers_are_retried_for_idempotent_methods_only() {
    let b = grpc_backends(2, None).await;
    b[0].fail_with(tonic::Code::Unavailable as i32);
    let idempotent = h2c(&[(&b[0], 1.0), (&b[1], 1.0)])
        .set("grpc_idempotent", vec![grpc_backend::SAY])
        .set("max_fails", 0)
        .circuit_breaker(Section::disabled());
    let proxy = start(&proxy_config(idempotent));
    let mut grpc = client(web(&proxy)).await;
    for i in 0..6 {
        let reply = say(&mut grpc, &format!("{i}")).await.unwrap();
        assert_eq!(reply.backend, "g2");
    }
    drop(proxy);
    let not_listed = h2c(&[(&b[0], 1.0), (&b[1], 1.0)])
        .set("max_fails", 0)
        .circuit_breaker(Section::disabled());
    let proxy = start(&proxy_config(not_listed));
    let mut grpc = client(web(&proxy)).await;
    let first = say(&mut grpc, "a").await.unwrap_err();
    assert_eq!(first.code(), tonic::Code::Unavailable);
    assert_eq!(first.message(), "scripted failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rondo_answers_grpc_clients_with_grpc_errors() {
    let dead = GrpcBackend::start("g1", None).await;
    let addr = dead.addr();
    dead.kill();
    drop(dead);
    let upstream = UpstreamBuilder::new("app")
        .backend("g1", addr, 1.0)
        .set("protocol", "h2c")
        .health_check(Section::disabled());
    let proxy = start(&proxy_config(upstream));
    let mut grpc = client(web(&proxy)).await;
    let status = say(&mut grpc, "anyone?").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("rondo"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_bounds_the_wait_for_the_backend() {
    let b = GrpcBackend::start("g1", None).await;
    b.release(false);
    let upstream = h2c(&[(&b, 1.0)]).set("tries", 1);
    let proxy = start(&proxy_config(upstream));
    // A raw HTTP/2 client, which (unlike tonic's) does not enforce the deadline itself: the
    // answer it gets is rondo's.
    let mut h2 = H2Client::connect(web(&proxy)).await;
    let framed = [0u8, 0, 0, 0, 0];
    let reply = h2
        .send_with(
            "POST",
            grpc_backend::SAY,
            &[
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("grpc-timeout", "200m"),
            ],
            &framed,
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("grpc-status"),
        Some("4"),
        "{:?}",
        reply.headers
    );
    assert_eq!(b.in_flight(), 1);
    b.release(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_health_check_takes_a_not_serving_backend_out() {
    let b = grpc_backends(2, None).await;
    let check = Section::new()
        .set("kind", "grpc")
        .set("service", "echo.Echo")
        .duration("interval", Duration::from_millis(100))
        .duration("timeout", Duration::from_millis(90))
        .set("fall", 1)
        .set("rise", 1);
    let upstream = h2c(&[(&b[0], 1.0), (&b[1], 1.0)]).health_check(check);
    let proxy = start(&proxy_config(upstream));
    b[0].set_serving(false).await;
    eventually(LIMIT, "g1 marked down", || {
        health(&proxy, "app", "g1") == balance::Health::Down
    })
    .await;
    assert_eq!(health(&proxy, "app", "g2"), balance::Health::Up);
    let mut grpc = client(web(&proxy)).await;
    for i in 0..4 {
        assert_eq!(say(&mut grpc, &format!("{i}")).await.unwrap().backend, "g2");
    }
    b[0].set_serving(true).await;
    eventually(LIMIT, "g1 back up", || {
        health(&proxy, "app", "g1") == balance::Health::Up
    })
    .await;
}
