//! HTTP/2 abuse against the proxy's hyper server, spoken frame by frame over real sockets:
//! each limit rondo sets (not hyper's defaults) is announced, enforced, and leaves other
//! clients served.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::time::Duration;

use common::h2raw::{self, Conn, frame};
use common::{Backend, ConfigBuilder, H2Client, mock, plain, proxy_config, start, web};

/// A deadline against hangs, not a claim about speed.
const DEADLINE: Duration = Duration::from_secs(10);

fn config(backend: &Backend) -> ConfigBuilder {
    proxy_config(plain("app", &[backend])).set("workers", 1)
}

/// A normal client on a new connection is still served.
async fn still_served(proxy: &common::Proxy) {
    let reply = H2Client::connect(web(proxy))
        .await
        .send("GET", "/", b"")
        .await;
    assert_eq!(reply.status, 200, "another client is served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_limits_are_announced_in_settings() {
    let backend = mock("a").await;
    let proxy = start(
        &config(&backend)
            .listeners_set("http2_max_concurrent_streams", 7)
            .listeners_set("max_header_bytes", "4KiB"),
    );
    let conn = Conn::open(web(&proxy)).await;
    let settings = conn.server_settings;
    assert!(
        settings.contains(&(h2raw::MAX_CONCURRENT_STREAMS, 7)),
        "{settings:?}"
    );
    assert!(
        settings.contains(&(h2raw::MAX_HEADER_LIST_SIZE, 4096)),
        "{settings:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_max_concurrent_streams_are_refused() {
    let backend = mock("a").await;
    backend.set_delay(Duration::from_millis(500));
    let proxy = start(&config(&backend).listeners_set("http2_max_concurrent_streams", 2));
    let mut conn = Conn::open(web(&proxy)).await;
    let mut burst = Vec::new();
    for id in [1, 3, 5] {
        let block = h2raw::get_block("/", &[]);
        burst.extend(frame(
            h2raw::HEADERS,
            h2raw::END_HEADERS | h2raw::END_STREAM,
            id,
            &block,
        ));
    }
    conn.send(&burst).await.unwrap();
    let reset = conn
        .until(h2raw::RST_STREAM, DEADLINE)
        .await
        .expect("a reset");
    assert_eq!(
        (reset.stream, reset.error_code()),
        (5, 0x7),
        "the third stream is refused (REFUSED_STREAM)"
    );
    assert!(
        backend.peak_in_flight() <= 2,
        "at most two reached the backend"
    );
    still_served(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_list_over_max_header_bytes_gets_431_and_the_connection_goes_on() {
    let backend = mock("a").await;
    let proxy = start(&config(&backend).listeners_set("max_header_bytes", "4KiB"));
    let mut client = H2Client::connect(web(&proxy)).await;
    // 6 KiB is under hyper's default of 16 KiB: refused only because the listener says so.
    let big = "x".repeat(6 * 1024);
    let reply = client.send_with("GET", "/", &[("x-big", &big)], b"").await;
    assert_eq!(reply.status, 431);
    assert_eq!(backend.hits(), 0, "nothing was forwarded");
    let small = "x".repeat(2 * 1024);
    let reply = client
        .send_with("GET", "/", &[("x-small", &small)], b"")
        .await;
    assert_eq!(
        reply.status, 200,
        "the same connection serves the next request"
    );
    assert_eq!(backend.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_is_closed_with_enhance_your_calm() {
    let backend = mock("a").await;
    let proxy = start(&config(&backend));
    let mut conn = Conn::open(web(&proxy)).await;
    // CVE-2023-44487: open a stream and cancel it at once, 1,000 times in one write.
    let mut flood = Vec::new();
    for n in 0..1_000u32 {
        let id = 2 * n + 1;
        let block = h2raw::get_block("/", &[]);
        flood.extend(frame(
            h2raw::HEADERS,
            h2raw::END_HEADERS | h2raw::END_STREAM,
            id,
            &block,
        ));
        flood.extend(frame(
            h2raw::RST_STREAM,
            0,
            id,
            &h2raw::CANCEL.to_be_bytes(),
        ));
    }
    let _ = conn.send(&flood).await; // the server may close before reading it all
    let goaway = conn.until(h2raw::GOAWAY, DEADLINE).await.expect("GOAWAY");
    assert_eq!(goaway.error_code(), h2raw::ENHANCE_YOUR_CALM);
    println!(
        "backend requests from 1,000 reset streams: {}",
        backend.hits()
    );
    still_served(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_closed_with_enhance_your_calm() {
    let backend = mock("a").await;
    let proxy = start(&config(&backend));
    let mut conn = Conn::open(web(&proxy)).await;
    // A head that never ends: HEADERS without END_HEADERS, then CONTINUATION frames.
    let mut flood = frame(h2raw::HEADERS, 0, 1, &h2raw::get_block("/", &[]));
    let junk = vec![b'a'; 4000];
    for _ in 0..200 {
        flood.extend(frame(h2raw::CONTINUATION, 0, 1, &junk));
    }
    let _ = conn.send(&flood).await;
    let goaway = conn.until(h2raw::GOAWAY, DEADLINE).await.expect("GOAWAY");
    assert_eq!(goaway.error_code(), h2raw::ENHANCE_YOUR_CALM);
    assert_eq!(backend.hits(), 0);
    still_served(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_idle_timeout_with_goaway() {
    let backend = mock("a").await;
    let proxy = start(&config(&backend).listeners_set("idle_timeout", "300ms"));
    let mut conn = Conn::open(web(&proxy)).await;
    conn.send(&frame(
        h2raw::HEADERS,
        h2raw::END_HEADERS | h2raw::END_STREAM,
        1,
        &h2raw::get_block("/", &[]),
    ))
    .await
    .unwrap();
    let goaway = conn.until(h2raw::GOAWAY, DEADLINE).await.expect("GOAWAY");
    assert_eq!(goaway.error_code(), 0, "NO_ERROR: a graceful close");
    assert_eq!(backend.hits(), 1, "the stream before it was served");
    // A graceful close: h2 pings to learn what the client sent meanwhile, sends the final
    // GOAWAY and closes.
    for f in conn.until_closed(DEADLINE).await {
        assert_eq!(f.kind, h2raw::GOAWAY, "only the close follows: {f:?}");
    }
}
