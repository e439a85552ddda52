//! Large bodies stream through the proxy in both directions with bounded memory. In a test
//! binary of its own, so the process's peak memory reflects this transfer alone.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::time::Duration;

use common::{MockBackend, config, start, web};
use http_body_util::BodyExt;

/// Peak and current resident memory of this process, in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("VmHWM:"), field("VmRSS:"))
}

const SIZE: u64 = 256 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn a_256_mib_upload_and_download_stream_with_bounded_memory() {
    let backend = MockBackend::start("a").await;
    let proxy = start(&config(&[(&backend, 1.0)], "", ""));
    let (_, baseline) = memory_kib();

    let stream = tokio::net::TcpStream::connect(web(&proxy)).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);

    // Upload: a generated body larger than any buffer, with its length declared.
    let body = common::generated(SIZE, bytes::Bytes::from(vec![b'u'; 64 * 1024]));
    let req = hyper::Request::builder()
        .method("PUT")
        .uri("/upload")
        .header("host", "a")
        .header("content-length", SIZE)
        .body(body)
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(120), sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, format!("a:{SIZE}").as_bytes(), "every byte arrived");

    // Download: counted as it arrives, never collected.
    let stream = tokio::net::TcpStream::connect(web(&proxy)).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<
        _,
        http_body_util::Empty<bytes::Bytes>,
    >(hyper_util::rt::TokioIo::new(stream))
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri(format!("/bytes/{SIZE}"))
        .header("host", "a")
        .body(Default::default())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(received, SIZE);

    let (peak, _) = memory_kib();
    let grew_mib = peak.saturating_sub(baseline) / 1024;
    assert!(
        grew_mib < 64,
        "peak memory grew by {grew_mib} MiB while moving 2 x 256 MiB"
    );
    proxy.shutdown(Duration::from_secs(1));
}
