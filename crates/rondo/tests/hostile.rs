//! Malformed and hostile requests over real sockets: each is answered with a 4xx/5xx, and the
//! backend — which records every raw byte it receives — sees nothing after the malformed point.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that keeps every byte it receives and never answers.
struct Recorder {
    addr: SocketAddr,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&bytes);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let sink = Arc::clone(&sink);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        sink.lock().extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
        Recorder { addr, bytes }
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock()).into_owned()
    }
}

fn proxy_for(backend: &Recorder) -> common::Proxy {
    let upstream = common::UpstreamBuilder::new("app")
        .backend("sink", backend.addr, 1.0)
        .duration("response_timeout", Duration::from_secs(5));
    common::start(&common::ConfigBuilder::proxy(upstream).set("workers", 1))
}

/// Sends `parts` one write at a time (a pause between them, so they arrive as separate reads)
/// and returns everything the proxy answered before closing.
async fn exchange(addr: SocketAddr, parts: &[&[u8]]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if s.write_all(p).await.is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_head_is_answered_and_nothing_reaches_the_backend() {
    let backend = Recorder::start().await;
    let proxy = proxy_for(&backend);
    let addr = common::web(&proxy);
    let cases: &[(&str, &[u8], &str)] = &[
        ("no Host", b"GET / HTTP/1.1\r\n\r\n", "400"),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400"),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", "400"),
        ("bare CR", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", "400"),
        ("bare LF", b"GET / HTTP/1.1\nHost: a\n\n", "400"),
        ("space before colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", "400"),
        ("control character", b"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n", "400"),
        ("CL and TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "400"),
        ("two lengths", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", "400"),
        ("bad length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", "400"),
        ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "400"),
        ("unknown coding", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", "501"),
        ("oversize target", &[b"GET /".as_slice(), &[b'a'; 70_000], b" HTTP/1.1\r\n\r\n"].concat(), "414"),
        ("oversize head", &[b"GET / HTTP/1.1\r\nHost: a\r\nX: ".as_slice(), &[b'a'; 70_000], b"\r\n\r\n"].concat(), "431"),
    ];
    for (name, bytes, status) in cases {
        let answer = exchange(addr, &[bytes]).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{name}: {answer:?}"
        );
    }
    assert_eq!(backend.received(), "", "no malformed head was forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cannot_be_smuggled_as_a_request_by_naming_its_length_in_connection() {
    // Dropping Content-Length because Connection names it would forward the body with no
    // length: the backend would read it as a second request that skipped rondo's routing
    // and headers, on a connection the pool then hands to another client.
    let backend = Recorder::start().await;
    let proxy = proxy_for(&backend);
    let smuggled = "GET /admin HTTP/1.1\r\nHost: evil\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n";
    let request = format!(
        "POST /a HTTP/1.1\r\nHost: x\r\nConnection: content-length, host\r\n\
         Content-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let mut client = TcpStream::connect(common::web(&proxy)).await.unwrap();
    client.write_all(request.as_bytes()).await.unwrap();
    common::eventually(Duration::from_secs(10), "the body at the backend", || {
        backend.received().ends_with(smuggled)
    })
    .await;
    let received = backend.received();
    let head = received.split("\r\n\r\n").next().unwrap();
    assert!(head.starts_with("POST /a HTTP/1.1\r\n"), "{received}");
    assert!(
        head.contains(&format!("\r\nContent-Length: {}", smuggled.len())),
        "the length goes on: {received}"
    );
    assert!(head.contains("\r\nHost: x"), "{received}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunk_gets_400_and_nothing_after_it_is_forwarded() {
    let backend = Recorder::start().await;
    let proxy = proxy_for(&backend);
    let addr = common::web(&proxy);
    let head: &[u8] = b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    let cases: &[(&str, &[u8])] = &[
        ("size not hex", b"zz\r\nSECRET\r\n0\r\n\r\n"),
        (
            "size over 64 bits",
            b"1ffffffffffffffff\r\nSECRET\r\n0\r\n\r\n",
        ),
        ("bare LF in extension", b"3;x=\ny\r\nSECRET\r\n0\r\n\r\n"),
        ("data not ended by CRLF", b"3\r\nabcSECRET\r\n0\r\n\r\n"),
        ("bad trailer", b"0\r\nX: y\nSECRET\r\n\r\n"),
    ];
    for (name, bad) in cases {
        // The first chunk arrives alone and is forwarded; the malformed part comes next.
        let answer = exchange(addr, &[head, b"5\r\nhello\r\n", bad]).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{name}: {answer:?}");
        let got = backend.received();
        assert!(
            !got.contains("SECRET"),
            "{name}: forwarded past the error: {got:?}"
        );
        backend.bytes.lock().clear();
    }
    // A malformed first chunk: not even the head is sent.
    let answer = exchange(addr, &[&[head, b"zz\r\nSECRET\r\n".as_slice()].concat()]).await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer:?}");
    assert_eq!(backend.received(), "");
}

/// One slowloris connection: sends `head` one byte every 200 ms, and returns what the proxy
/// answered once it stopped (it answered, closed, or the whole head went out).
async fn trickle(addr: SocketAddr, head: &'static [u8], started: Arc<AtomicUsize>) -> String {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return "connect failed".to_owned();
    };
    let mut out = Vec::new();
    for (i, byte) in head.iter().enumerate() {
        if s.write_all(&[*byte]).await.is_err() {
            break;
        }
        if i == 0 {
            started.fetch_add(1, Ordering::Relaxed);
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                break;
            }
            Err(_) => {} // nothing yet: send the next byte
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_trickling_clients_are_cut_at_the_header_timeout_and_others_are_served() {
    let backend = common::mock("a").await;
    let proxy = common::start(
        &common::proxy_config(common::plain("app", &[&backend]))
            .set("workers", 1)
            .listeners_set("header_timeout", "3s"),
    );
    let addr = common::web(&proxy);
    // 38 bytes at one per 200 ms would take 7.6 s: the 3 s header timeout cuts every one.
    let head: &'static [u8] = b"GET / HTTP/1.1\r\nHost: test.local\r\n\r\n";
    let started = Arc::new(AtomicUsize::new(0));
    let slow: Vec<_> = (0..500)
        .map(|_| tokio::spawn(trickle(addr, head, Arc::clone(&started))))
        .collect();
    common::eventually(
        Duration::from_secs(30),
        "every trickling client has sent its first byte",
        || started.load(Ordering::Relaxed) == 500,
    )
    .await;
    for _ in 0..20 {
        let reply = common::get(addr, "/").await;
        assert_eq!(reply.status, 200, "a normal client is served meanwhile");
    }
    let mut cut = 0;
    for task in slow {
        let answer = task.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
        cut += 1;
    }
    assert_eq!(cut, 500);
    assert_eq!(
        backend.hits(),
        20,
        "only the normal requests reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_connection_that_carried_a_malformed_chunk_is_closed_and_never_reused() {
    let backend = common::Backend::builder("a")
        .record_raw()
        .start()
        .await
        .unwrap();
    let config = common::proxy_config(common::plain("app", &[&backend])).set("workers", 1);
    let proxy = common::start(&config);
    let addr = common::web(&proxy);
    let head: &[u8] = b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    let answer = exchange(
        addr,
        &[head, b"5\r\nhello\r\n", b"zz\r\nSECRET\r\n0\r\n\r\n"],
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer:?}");
    assert_eq!(backend.connections(), 1, "the partial request went out");
    common::eventually(
        Duration::from_secs(10),
        "the connection that carried the partial request closed",
        || backend.open_connections() == 0,
    )
    .await;
    // The next request opens a new connection and is served whole.
    let reply = common::get(addr, "/next").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        backend.connections(),
        2,
        "the broken connection was not reused"
    );
    let raw = String::from_utf8_lossy(&backend.raw()).into_owned();
    assert!(raw.contains("5\r\nhello\r\n"), "{raw:?}");
    assert!(!raw.contains("SECRET"), "{raw:?}");
    assert!(raw.contains("GET /next "), "{raw:?}");
    proxy.shutdown(Duration::from_secs(1));
}
