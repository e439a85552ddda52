//! One backend of four misbehaving under steady keep-alive load, over real sockets: it resets
//! the connection in the middle of a response body, stalls in the middle of one, or accepts
//! requests and never answers.
//!
//! What a client must see follows nginx and HAProxy: a response whose head has reached the
//! client cannot be retried (the client already holds a status), so when its body breaks the
//! proxy relays what had arrived and closes the connection — the client sees a truncated body,
//! never a second response glued to the first. A backend that never answers sent nothing, so
//! its GETs are retried elsewhere after `response_timeout` and the client gets a 200. Either
//! way the failure counts against the backend (here one failure ejects it), and the GETs after
//! that go to the other three without an error.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::load::{Load, Tally};
use common::{
    Fault, MockBackend, Section, app, backend_state, backends, eventually, proxy_config, start, web,
};
use rondo::lab::backend::BROKEN_BODY_SENT;

/// What one run saw: the clients' tally and the requests the faulty backend received after
/// its fault began.
struct Run {
    seen: Arc<Tally>,
    reached_faulty: usize,
}

/// Backends a, b, c and d answering after 2 ms, 16 clients; once every backend serves, d
/// misbehaves as `fault` says. Waits until d is out of rotation and then checks, over 20 more
/// GETs per client, that nothing reaches it and no client sees an error any more.
///
/// No health checks (d answers them, and a passing check ends an ejection), `fail_timeout` of
/// a minute so d stays ejected for the whole test, and a 2 s `response_timeout`, which is also
/// the limit between two reads of a response body: far above the healthy backends' 2 ms even on
/// a starved machine (at 500 ms, one run beside a parallel build timed out healthy backends
/// too, and with one failure ejecting, the pool emptied).
async fn one_of_four_misbehaves(fault: Fault) -> Run {
    let names = ["a", "b", "c", "d"];
    let bs = backends(&names).await;
    for b in &bs {
        b.set_delay(Duration::from_millis(2));
    }
    let list: Vec<(&MockBackend, f64)> = bs.iter().map(|b| (b, 1.0)).collect();
    let upstream = app(&list)
        .health_check(Section::disabled())
        .duration("fail_timeout", Duration::from_secs(60))
        .duration("response_timeout", Duration::from_secs(2));
    let proxy = start(&proxy_config(upstream));
    let load = Load::start(web(&proxy), 16);
    let seen = load.tally();
    seen.wait_all_serve(&names, 50).await;

    let faulty = &bs[3];
    let before = faulty.received();
    faulty.set_fault(fault);
    let ejected = eventually(Duration::from_secs(10), "d counted out of rotation", || {
        backend_state(&proxy, "app", "d").0 != balance::BackendState::Up
    })
    .await;
    println!("{fault:?}: d out of rotation {ejected:?} after the fault began");
    // Requests sent to d before it left rotation end; then none reaches it.
    seen.wait_each_does(2, "every client past the ejection")
        .await;
    let (reached, broken, failed) = (faulty.received(), seen.broken(), seen.failed());
    seen.wait_each_does(20, "20 more GETs per client").await;
    assert_eq!(
        faulty.received(),
        reached,
        "a GET reached d after it was out"
    );
    let seen = load.stop().await;
    assert_eq!(seen.broken().len(), broken.len(), "{:?}", seen.broken());
    assert_eq!(seen.failed().len(), failed.len(), "{:?}", seen.failed());
    assert_ne!(
        backend_state(&proxy, "app", "d").0,
        balance::BackendState::Up,
        "the fault counted against d"
    );
    proxy.shutdown(Duration::from_secs(1));
    Run {
        seen,
        reached_faulty: reached - before,
    }
}

/// The clients of `run` saw bodies cut exactly where d broke them, and nothing else failed.
fn assert_cut_where_the_backend_broke(run: &Run) {
    let broken = run.seen.broken();
    assert!(!broken.is_empty(), "some GETs were at d when it broke");
    assert!(broken.len() <= run.reached_faulty);
    for b in &broken {
        assert_eq!(
            (b.status, b.backend.as_str(), b.received),
            (200, "d", BROKEN_BODY_SENT),
            "the head and the bytes d sent, then the close"
        );
    }
    let failed = run.seen.failed();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_resetting_mid_body_truncates_only_its_responses_and_is_ejected() {
    let run = one_of_four_misbehaves(Fault::ResetMidBody).await;
    assert_cut_where_the_backend_broke(&run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_stalling_mid_body_is_cut_at_the_response_timeout_and_ejected() {
    let run = one_of_four_misbehaves(Fault::StallMidBody).await;
    assert_cut_where_the_backend_broke(&run);
}

/// A GET that hung at d is retried on another backend at `response_timeout`. The GETs in
/// flight at d time out together, a burst that can be larger than the retry budget (20 % of the requests in flight, at least 3); the first one takes d out
/// (`max_fails` 1), and a timeout that took its backend out while others serve is retried
/// without the budget. So every GET is answered 200, as by nginx and HAProxy, which retry
/// every timed-out GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_is_retried_around_and_ejected() {
    let run = one_of_four_misbehaves(Fault::Hang).await;
    assert!(run.reached_faulty > 0, "GETs reached d while it hung");
    let (failed, broken) = (run.seen.failed(), run.seen.broken());
    assert!(broken.is_empty(), "{:?}", broken.first());
    assert!(
        failed.is_empty(),
        "{} of the {} GETs that hung at d failed, first: {:?}",
        failed.len(),
        run.reached_faulty,
        failed.first()
    );
}

/// How the client of [`still_connecting_when_its_backend_leaves`] speaks to the proxy.
#[derive(Debug, Clone, Copy)]
enum Speaks {
    Http1,
    Http2,
    /// A `mode = "tcp"` listener relaying a raw HTTP/1.1 request.
    Tcp,
}

/// A listening socket whose listen queue is full: it never accepts, so the kernel drops the
/// SYNs of every further connect (and the connecting side sends one again after 1 s, 3 s,
/// 7 s…), as a backend process being torn down after `kill -9` does. Returns the listener and
/// the connections that fill its queue, to keep.
async fn full_listener() -> (tokio::net::TcpListener, Vec<tokio::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    loop {
        let connect = tokio::net::TcpStream::connect(addr);
        match tokio::time::timeout(Duration::from_millis(300), connect).await {
            Ok(conn) => queued.push(conn.unwrap()),
            Err(_) => return (listener, queued),
        }
        assert!(queued.len() < 16, "the listen queue never filled");
    }
}

/// Backend `b` (listed first, so the first request goes to it) has a full listen queue, `a`
/// serves; `connect_timeout` is a minute and a TCP health check every 3 s (2 s timeout, one
/// failure) takes `b` out, 2–5 s after the start: the first request has reached `b` by then
/// even on a loaded machine. The first request's connect to `b` hangs; once the check takes `b`
/// out it goes to `a`, long before its connect would have timed out (the 20 s limit here is
/// a deadline against that, not a claim about speed). The retry is counted as a connect
/// retry, and `b` is out by its health, not by a failure of the request.
async fn still_connecting_when_its_backend_leaves(speaks: Speaks) {
    let (full, _queued) = full_listener().await;
    let b_addr = full.local_addr().unwrap();
    let a = common::mock("a").await;
    let checks = Section::new()
        .set("kind", "tcp")
        .duration("interval", Duration::from_secs(3))
        .duration("timeout", Duration::from_secs(2))
        .set("fall", 1)
        .set("jitter", 0);
    let upstream = common::UpstreamBuilder::new("app")
        .backend("b", b_addr, 1.0)
        .backend("a", a.addr(), 1.0)
        .duration("connect_timeout", Duration::from_secs(60))
        .health_check(checks);
    let mut config = proxy_config(upstream);
    if let Speaks::Tcp = speaks {
        config = config.listeners_set("mode", "tcp");
    }
    let proxy = start(&config);
    let addr = web(&proxy);
    let deadline = Duration::from_secs(20);
    let answered = async {
        match speaks {
            Speaks::Http1 => common::get(addr, "/").await.backend(),
            Speaks::Http2 => common::H2Client::connect(addr)
                .await
                .send("GET", "/", b"")
                .await
                .backend(),
            Speaks::Tcp => {
                let request = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
                let head = common::raw(addr, request, deadline).await;
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                let field = head.lines().find_map(|l| {
                    l.split_once(':')
                        .filter(|(name, _)| name.eq_ignore_ascii_case("x-backend"))
                });
                field.map(|(_, v)| v.trim().to_owned()).unwrap_or_default()
            }
        }
    };
    let backend = tokio::time::timeout(deadline, answered)
        .await
        .unwrap_or_else(|_| panic!("{speaks:?}: still waiting on b's connect after {deadline:?}"));
    assert_eq!(backend, "a", "{speaks:?}");
    assert_eq!(
        backend_state(&proxy, "app", "b"),
        (balance::BackendState::Down, balance::Health::Down),
        "{speaks:?}: b out by its checks"
    );
    let retries = [("reason", "connect"), ("upstream", "app")];
    let admin = proxy.admin_addr();
    assert_eq!(
        common::metric(admin, "rondo_retries_total", &retries).await,
        Some(1.0),
        "{speaks:?}: the request tried b first"
    );
    proxy.shutdown(Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_still_connecting_goes_elsewhere_when_its_backend_leaves_rotation() {
    still_connecting_when_its_backend_leaves(Speaks::Http1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_request_still_connecting_goes_elsewhere_when_its_backend_leaves_rotation() {
    still_connecting_when_its_backend_leaves(Speaks::Http2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_connection_still_connecting_goes_elsewhere_when_its_backend_leaves_rotation() {
    still_connecting_when_its_backend_leaves(Speaks::Tcp).await;
}

/// A backend enforcing its own body limit: it reads a request's head, answers a POST with
/// `413` and `Connection: close` at once, and closes 100 ms later with the body unread (the
/// kernel resets the connection); a GET gets `200 ok`.
async fn limiting_backend() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                if head.starts_with(b"POST") {
                    let answer = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\n\
                                   connection: close\r\n\r\ntoo large";
                    let _ = s.write_all(answer).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                } else {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    let _ = s.read(&mut buf).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_answering_before_it_read_the_upload_has_its_answer_passed_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Every backend limits uploads; one failure would eject (the default max_fails = 1).
    let (a, b) = (limiting_backend().await, limiting_backend().await);
    let upstream = common::UpstreamBuilder::new("app")
        .backend("a", a, 1.0)
        .backend("b", b, 1.0)
        .health_check(Section::disabled())
        .duration("fail_timeout", Duration::from_secs(600));
    let proxy = start(&proxy_config(upstream));
    for _ in 0..2 {
        // 64 MiB, more than every socket buffer on the way holds (loopback's grow to several
        // MiB each): the proxy's send is cut by the backend's reset.
        let mut client = tokio::net::TcpStream::connect(web(&proxy)).await.unwrap();
        let head = "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 67108864\r\n\r\n";
        client.write_all(head.as_bytes()).await.unwrap();
        let body = vec![b'x'; 64 * 1024];
        for _ in 0..1024 {
            if client.write_all(&body).await.is_err() {
                break; // the proxy closed after answering
            }
        }
        let mut answer = Vec::new();
        let read = client.read_to_end(&mut answer);
        let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
        assert!(answer.ends_with("too large"), "{answer}");
        assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    }
    // Neither backend was counted as failed: both still serve.
    for id in ["a", "b"] {
        assert_eq!(
            backend_state(&proxy, "app", id).0,
            balance::BackendState::Up,
            "{id}"
        );
    }
    assert_eq!(common::get(web(&proxy), "/").await.status, 200);
}

/// A backend whose keep-alive timeout always wins the race: on each connection it answers
/// the first request and closes when the second arrives, without a byte of answer (as a
/// server closing an idle connection just as a proxy reuses it). Counts the connections.
async fn closes_on_reuse_backend() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if s.write_all(ok).await.is_err() {
                    return;
                }
                // The next request's first bytes: close without answering.
                let _ = s.read(&mut buf).await;
            });
        }
    });
    (addr, connections)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lone_backend_closing_a_reused_connection_is_retried_on_a_new_one() {
    let (addr, connections) = closes_on_reuse_backend().await;
    let upstream = common::UpstreamBuilder::new("app")
        .backend("a", addr, 1.0)
        .health_check(Section::disabled());
    let proxy = start(&proxy_config(upstream));
    // Sequential GETs on one client connection: from the second on, the pooled connection
    // fails as it is reused, and the GET goes to the same backend on a new one.
    for i in 0..5 {
        let r = common::get(web(&proxy), "/").await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    assert!(
        connections.load(std::sync::atomic::Ordering::SeqCst) >= 5,
        "each GET after the first needed a new connection"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_answering_before_it_read_an_http2_clients_upload_has_its_answer_passed_on() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    // As above, for an HTTP/2 client: rondo writes the HTTP/1.1 request itself, the body
    // chunked as the client's frames arrive.
    let (a, b) = (limiting_backend().await, limiting_backend().await);
    let upstream = common::UpstreamBuilder::new("app")
        .backend("a", a, 1.0)
        .backend("b", b, 1.0)
        .health_check(Section::disabled())
        .duration("fail_timeout", Duration::from_secs(600));
    let proxy = start(&proxy_config(upstream));
    let mut sender = common::h2_sender(web(&proxy)).await;
    for _ in 0..2 {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
        let frames = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let req = hyper::Request::post("http://test.local/up")
            .body(StreamBody::new(frames))
            .unwrap();
        // 64 MiB, more than every buffer on the way holds; stops once nobody reads it.
        let sending = tokio::spawn(async move {
            let piece = Bytes::from(vec![b'x'; 64 * 1024]);
            for _ in 0..1024 {
                if tx.send(Ok(Frame::data(piece.clone()))).await.is_err() {
                    break;
                }
            }
        });
        let reply = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert_eq!(reply.status(), 413);
        let body = reply.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "too large");
        sending.abort();
    }
    for id in ["a", "b"] {
        assert_eq!(
            backend_state(&proxy, "app", id).0,
            balance::BackendState::Up,
            "{id}"
        );
    }
}
