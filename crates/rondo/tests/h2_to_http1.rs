//! HTTP/2 clients in front of HTTP/1.1 backends: rondo writes the request itself (framed by
//! the body it has), reads the response with the HTTP/1.1 path's parser, streams the body to
//! the client as data and trailers, and pools the connection for the next request. The
//! backend here is raw bytes, so what crossed the wire is checked byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::*;

/// A request as it arrived: the backend connection it came on (counted from 0) and its bytes.
#[derive(Debug, Clone)]
struct Arrived {
    conn: usize,
    bytes: String,
}

/// The response the raw backend sends for a request line, in pieces written 50 ms apart
/// (`/stall`: 30 s); `true` when the connection closes after it.
fn script(request_line: &str, body: &str) -> (Vec<&'static str>, bool) {
    let path = request_line.split(' ').nth(1).unwrap_or("/");
    let head = request_line.starts_with("HEAD ");
    match path {
        "/chunked" => (
            vec![
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kept: 1\r\nConnection: x-hop\r\nX-Hop: 1\r\n\r\n5\r\nhel",
                "lo\r\n7;ext=1\r\n, world\r\n0\r\nx-checksum: abc\r\n\r\n",
            ],
            false,
        ),
        "/length" if head => (vec!["HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"], false),
        "/length" => (
            vec![
                "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234",
                "56789",
            ],
            false,
        ),
        "/interim" => (
            vec!["HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
            false,
        ),
        "/big" => {
            // Head and 400,000 bytes in one write: a dozen of rondo's reads or more, and
            // more than it copies out of its read buffer.
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: 400000\r\n\r\n{}",
                big_body(400_000)
            );
            (vec![Box::leak(reply.into_boxed_str())], false)
        }
        "/big-chunked" => {
            // One chunk of 300,000 bytes (0x493e0): a body of unknown length that fills
            // every read's room.
            let reply = format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n493e0\r\n{}\r\n0\r\n\r\n",
                big_body(300_000)
            );
            (vec![Box::leak(reply.into_boxed_str())], false)
        }
        "/empty" => (vec!["HTTP/1.1 204 No Content\r\n\r\n"], false),
        "/until-close" => (vec!["HTTP/1.1 200 OK\r\n\r\nuntil ", "close"], true),
        "/two-lengths" => (
            vec!["HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"],
            true,
        ),
        "/stall" => (
            vec![
                "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n012",
                "3456789",
            ],
            false,
        ),
        "/cut" => (
            vec!["HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n012"],
            true,
        ),
        _ => {
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            (vec![Box::leak(reply.into_boxed_str())], false)
        }
    }
}

/// `len` bytes of the alphabet over and over, so a byte out of place shows.
fn big_body(len: u32) -> String {
    (0..len)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect()
}

/// Reads one request (head and body, by `Content-Length` or chunked) from `s`, `None` at
/// the end of the connection.
async fn read_request(s: &mut TcpStream, pending: &mut Vec<u8>) -> Option<(String, String)> {
    let find = |buf: &[u8], what: &[u8]| buf.windows(what.len()).position(|w| w == what);
    loop {
        if let Some(end) = find(pending, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end + 4]).into_owned();
            let lower = head.to_ascii_lowercase();
            let body_end = if lower.contains("transfer-encoding: chunked") {
                // The last chunk (at the start, or after a chunk's CRLF), then the trailer
                // section up to its empty line.
                let body = &pending[end + 4..];
                let last = if body.starts_with(b"0\r\n") {
                    Some(0)
                } else {
                    find(body, b"\r\n0\r\n").map(|i| i + 2)
                };
                last.and_then(|l| {
                    find(&body[l + 1..], b"\r\n\r\n").map(|i| end + 4 + l + 1 + i + 4)
                })
            } else {
                let n = lower
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |n| n.trim().parse::<usize>().unwrap());
                (pending.len() >= end + 4 + n).then_some(end + 4 + n)
            };
            if let Some(body_end) = body_end {
                let bytes: Vec<u8> = pending.drain(..body_end).collect();
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let body = text[head.len()..].to_owned();
                return Some((text, body));
            }
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A backend speaking raw HTTP/1.1 by [`script`], recording what arrived.
async fn raw_backend() -> (SocketAddr, Arc<Mutex<Vec<Arrived>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let arrived = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&arrived);
    tokio::spawn(async move {
        for conn in 0.. {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut pending = Vec::new();
                while let Some((bytes, body)) = read_request(&mut s, &mut pending).await {
                    let line = bytes.lines().next().unwrap_or("").to_owned();
                    log.lock().unwrap().push(Arrived { conn, bytes });
                    let (pieces, close) = script(&line, &body);
                    let gap = if line.contains(" /stall ") {
                        30_000
                    } else {
                        50
                    };
                    for (i, piece) in pieces.iter().enumerate() {
                        if i > 0 {
                            tokio::time::sleep(Duration::from_millis(gap)).await;
                        }
                        if s.write_all(piece.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    if close {
                        return;
                    }
                }
            });
        }
    });
    (addr, arrived)
}

fn one_backend(addr: SocketAddr) -> ConfigBuilder {
    proxy_config(
        UpstreamBuilder::new("app")
            .backend("raw", addr, 1.0)
            .set("max_fails", 0)
            .circuit_breaker(Section::disabled())
            .health_check(Section::disabled()),
    )
}

fn trailers_of(reply: &hyper::HeaderMap, name: &str) -> Option<String> {
    reply.get(name).map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_of_every_framing_reach_an_http2_client_whole_over_one_pooled_connection() {
    let (addr, arrived) = raw_backend().await;
    let proxy = start(&one_backend(addr));
    let mut client = H2Client::connect(web(&proxy)).await;

    let reply = client.send("GET", "/length", b"").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "0123456789"));
    assert_eq!(reply.header("content-length"), Some("10"));
    let reply = client.send("HEAD", "/length", b"").await;
    assert_eq!((reply.status, reply.body.len()), (200, 0));
    let reply = client.send("GET", "/interim", b"").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "ok"));
    let reply = client.send("GET", "/empty", b"").await;
    assert_eq!((reply.status, reply.body.len()), (204, 0));
    let reply = client.send("POST", "/echo", b"hello").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "hello"));
    let reply = client.send("GET", "/big", b"").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.body == big_body(400_000).as_bytes(),
        "the big body arrived changed"
    );
    let reply = client.send("GET", "/big-chunked", b"").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.body == big_body(300_000).as_bytes(),
        "the chunked body arrived changed"
    );
    // Every response so far was complete: the one connection carried them all.
    let conns: Vec<usize> = arrived.lock().unwrap().iter().map(|a| a.conn).collect();
    assert_eq!(conns, [0, 0, 0, 0, 0, 0, 0]);

    // A body that ends when the backend closes reaches the client whole, and its connection
    // is not reused.
    let reply = client.send("GET", "/until-close", b"").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "until close"));
    let reply = client.send("GET", "/echo", b"").await;
    assert_eq!(reply.status, 200);
    let conns: Vec<usize> = arrived.lock().unwrap().iter().map(|a| a.conn).collect();
    assert_eq!(conns[7..], [0, 1]);

    // What arrived: HTTP/1.1 heads with the forwarding fields, the POST framed by its length.
    let arrived = arrived.lock().unwrap().clone();
    assert!(
        arrived[0].bytes.starts_with("GET /length HTTP/1.1\r\n"),
        "{arrived:?}"
    );
    assert!(
        arrived[0].bytes.contains("host: test.local\r\n"),
        "{arrived:?}"
    );
    assert!(
        arrived[0].bytes.contains("via: 2.0 rondo\r\n"),
        "{arrived:?}"
    );
    assert!(!arrived[0].bytes.contains("content-length"), "{arrived:?}");
    assert!(arrived[1].bytes.starts_with("HEAD /length HTTP/1.1\r\n"));
    let post = &arrived[4].bytes;
    assert!(post.starts_with("POST /echo HTTP/1.1\r\n"), "{post}");
    assert!(post.ends_with("\r\n\r\nhello"), "{post}");
    assert_eq!(post.matches("content-length: 5\r\n").count(), 1, "{post}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_response_goes_out_as_data_and_trailers_without_its_hop_fields() {
    let (addr, arrived) = raw_backend().await;
    let proxy = start(&one_backend(addr));
    let mut sender = h2_sender(web(&proxy)).await;
    for _ in 0..2 {
        let req = hyper::Request::get("http://test.local/chunked")
            .header("te", "trailers")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers().get("x-kept").unwrap(), "1");
        for hop in ["x-hop", "connection", "transfer-encoding", "content-length"] {
            assert!(res.headers().get(hop).is_none(), "{hop} reached the client");
        }
        let collected = res.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("trailers");
        assert_eq!(collected.to_bytes(), "hello, world");
        assert_eq!(trailers_of(&trailers, "x-checksum").as_deref(), Some("abc"));
    }
    // The body ended at its last chunk, so the connection carried the second request too.
    let conns: Vec<usize> = arrived.lock().unwrap().iter().map(|a| a.conn).collect();
    assert_eq!(conns, [0, 0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_without_a_length_goes_chunked_with_its_trailers() {
    let (addr, arrived) = raw_backend().await;
    let proxy = start(&one_backend(addr));
    let mut sender = h2_sender(web(&proxy)).await;
    // Two data frames 100 ms apart, then trailers: the first goes out before the second exists.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    let body = StreamBody::new(tokio_stream_of(rx));
    let req = hyper::Request::post("http://test.local/echo")
        .body(body)
        .unwrap();
    let sending = tokio::spawn(async move {
        tx.send(Ok(Frame::data(Bytes::from_static(b"hello"))))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send(Ok(Frame::data(Bytes::from_static(b" world!"))))
            .await
            .unwrap();
        let mut trailers = hyper::HeaderMap::new();
        trailers.insert("x-sum", "12".parse().unwrap());
        tx.send(Ok(Frame::trailers(trailers))).await.unwrap();
    });
    let res = sender.send_request(req).await.unwrap();
    sending.await.unwrap();
    assert_eq!(res.status(), 200);
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let arrived = arrived.lock().unwrap().clone();
    let wire = &arrived[0].bytes;
    assert!(wire.contains("transfer-encoding: chunked\r\n"), "{wire}");
    assert!(!wire.contains("content-length"), "{wire}");
    assert!(
        wire.ends_with("\r\n\r\n5\r\nhello\r\n7\r\n world!\r\n0\r\nx-sum: 12\r\n\r\n"),
        "{wire}"
    );
    // The raw backend echoes the body it read, framing included.
    assert!(String::from_utf8_lossy(&bytes).starts_with("5\r\nhello"));
}

/// The receiving half of a channel as a stream of body frames.
fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_read_two_ways_or_cut_short_never_reaches_the_client_as_whole() {
    let (addr, arrived) = raw_backend().await;
    let proxy = start(&one_backend(addr));
    let mut client = H2Client::connect(web(&proxy)).await;
    let reply = client.send("GET", "/two-lengths", b"").await;
    assert_eq!(reply.status, 502, "{reply:?} {:?}", arrived.lock().unwrap());
    // A body cut short is a reset stream, not a short body the client takes for whole.
    let mut sender = h2_sender(web(&proxy)).await;
    let req = hyper::Request::get("http://test.local/cut")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    // The stream is reset: before its head, or after it, before the body's end.
    let whole = match sender.send_request(req).await {
        Ok(res) => res.into_body().collect().await.is_ok(),
        Err(e) => {
            assert!(format!("{e:?}").contains("INTERNAL_ERROR"), "{e:?}");
            false
        }
    };
    assert!(!whole, "a body cut short went out as whole");
    // Neither connection went back to the pool.
    let reply = client.send("GET", "/echo", b"").await;
    assert_eq!(reply.status, 200);
    let conns: Vec<usize> = arrived.lock().unwrap().iter().map(|a| a.conn).collect();
    assert_eq!(conns, [0, 1, 2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_silent_in_the_middle_of_a_body_for_response_timeout_resets_the_stream() {
    let (addr, _) = raw_backend().await;
    let upstream = UpstreamBuilder::new("app")
        .backend("raw", addr, 1.0)
        .duration("response_timeout", Duration::from_millis(300))
        .health_check(Section::disabled());
    let proxy = start(&proxy_config(upstream));
    let mut sender = h2_sender(web(&proxy)).await;
    let req = hyper::Request::get("http://test.local/stall")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    // The backend sends the rest only after 30 s: the stream is reset long before (the
    // bound here only keeps a broken build from hanging the suite).
    let body = tokio::time::timeout(Duration::from_secs(20), res.into_body().collect()).await;
    let body = body.expect("the stalled body never ended");
    assert!(body.is_err(), "a stalled body ended as if whole");
}
