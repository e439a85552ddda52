//! HTTP/2 to backends for HTTP/1.1 clients: a request read over HTTP/1.1 goes to an h2c
//! backend as a stream (trailers included), each request its own pick; `auto` without TLS
//! stays HTTP/1.1.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;
#[path = "common/grpc.rs"]
mod grpc_backend;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use prost::Message;

use common::*;
use grpc_backend::{EchoReply, EchoRequest, GrpcBackend};

/// A keep-alive HTTP/1.1 connection to `addr`, for requests with whole bodies.
async fn http1_client(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// One gRPC call made by hand over an HTTP/1.1 connection: status, reply, `grpc-status`
/// from the trailers.
async fn call_over_http1(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    text: &str,
) -> (u16, Option<EchoReply>, Option<String>) {
    let message = EchoRequest {
        text: text.to_owned(),
    }
    .encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&message);
    let request = hyper::Request::post(grpc_backend::SAY)
        .header("host", "test.local")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(framed)))
        .unwrap();
    sender.ready().await.unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let collected = response.into_body().collect().await.unwrap();
    let grpc_status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|v| v.to_str().unwrap().to_owned());
    let body = collected.to_bytes();
    let reply = (body.len() > 5).then(|| EchoReply::decode(&body[5..]).unwrap());
    (status, reply, grpc_status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_client_reaches_h2c_backends_request_by_request_with_trailers() {
    let b = [
        GrpcBackend::start("g1", None).await,
        GrpcBackend::start("g2", None).await,
        GrpcBackend::start("g3", None).await,
    ];
    let upstream = b
        .iter()
        .fold(UpstreamBuilder::new("app"), |u, g| {
            u.backend(g.name(), g.addr(), 1.0)
        })
        .set("protocol", "h2c")
        .health_check(Section::disabled());
    let proxy = start(&proxy_config(upstream));
    // One keep-alive HTTP/1.1 connection for every request.
    let mut sender = http1_client(web(&proxy)).await;
    let mut seen = Vec::new();
    for i in 0..30 {
        let (status, reply, grpc_status) =
            call_over_http1(&mut sender, &format!("hello {i}")).await;
        assert_eq!(status, 200);
        assert_eq!(
            grpc_status.as_deref(),
            Some("0"),
            "the backend's trailers reach the client"
        );
        let reply = reply.expect("a reply message");
        assert_eq!(reply.text, format!("hello {i}"));
        seen.push(reply.backend);
    }
    for (i, backend) in seen.iter().enumerate() {
        assert_eq!(backend, &format!("g{}", i % 3 + 1), "{seen:?}");
    }
    for g in &b {
        assert_eq!(g.calls(), 10);
        assert_eq!(
            g.connections(),
            1,
            "{}: streams share one connection",
            g.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_without_tls_speaks_http1_to_the_backends() {
    let a = mock("a").await;
    let upstream = app(&[(&a, 1.0)])
        .set("protocol", "auto")
        .health_check(Section::disabled());
    let proxy = start(&proxy_config(upstream));
    let reply = get(web(&proxy), "/x").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend(), "a");
    assert_eq!(a.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_reaches_an_h2c_backend_and_gets_grpc_errors_from_rondo_when_it_is_gone() {
    let g = GrpcBackend::start("g1", None).await;
    let upstream = UpstreamBuilder::new("app")
        .backend("g1", g.addr(), 1.0)
        .set("protocol", "h2c")
        .health_check(Section::disabled());
    let proxy = start(&proxy_config(upstream));
    let mut h2 = H2Client::connect(web(&proxy)).await;
    let grpc = [("content-type", "application/grpc"), ("te", "trailers")];
    let reply = h2
        .send_with("POST", grpc_backend::SAY, &grpc, &[0, 0, 0, 0, 0])
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(g.calls(), 1);
    g.kill();
    let reply = h2
        .send_with("POST", grpc_backend::SAY, &grpc, &[0, 0, 0, 0, 0])
        .await;
    assert_eq!(reply.status, 200, "gRPC errors travel as HTTP 200");
    assert_eq!(
        reply.header("grpc-status"),
        Some("14"),
        "{:?}",
        reply.headers
    );
    assert_eq!(reply.header("content-type"), Some("application/grpc"));
    assert!(
        reply
            .header("grpc-message")
            .is_some_and(|m| m.contains("rondo"))
    );
}

/// A listener whose upstream speaks HTTP/2 serves its HTTP/1.1 clients through hyper: a
/// graceful shutdown waits for the request such a client has in flight, which is answered
/// whole once the backend lets it go, and ends with it, not with the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_an_http1_request_on_a_listener_in_front_of_h2c() {
    let b = GrpcBackend::start("g1", None).await;
    let upstream = UpstreamBuilder::new("app")
        .backend(b.name(), b.addr(), 1.0)
        .set("protocol", "h2c")
        .health_check(Section::disabled());
    let proxy = start(&proxy_config(upstream));
    let mut sender = http1_client(web(&proxy)).await;
    b.release(false);
    let pending = tokio::spawn(async move { call_over_http1(&mut sender, "held").await });
    eventually(
        Duration::from_secs(30),
        "the call reaches the backend",
        || b.in_flight() == 1,
    )
    .await;
    let shutdown = proxy.shutdown_in_background();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !shutdown.is_finished(),
        "the request in flight holds the shutdown"
    );
    b.release(true);
    shutdown_ends(shutdown, "ended with the request").await;
    let (status, reply, grpc_status) = pending.await.unwrap();
    assert_eq!((status, grpc_status.as_deref()), (200, Some("0")));
    assert_eq!(reply.expect("a reply message").text, "held");
}
