//! TLS termination, certificate reload, WebSocket and TCP mode, end to end over loopback:
//! certificates made by rcgen in the test, real rustls clients, a real HTTP/2 client, a real
//! WebSocket client and server (tokio-tungstenite).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;
#[path = "../src/tls/test_certs.rs"]
mod test_certs;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use test_certs::Ca;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use common::{ConfigBuilder, MockBackend, Section, web};

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// `config` with `[listeners.tls]` holding `certificates` on every listener.
fn with_tls(config: ConfigBuilder, certificates: Vec<Section>) -> ConfigBuilder {
    config.listeners_set("tls", Section::new().set("certificates", certificates))
}

/// The usual test config over `backend`, its listener terminating TLS with `certificates`.
fn tls_config(backend: &MockBackend, certificates: Vec<Section>) -> ConfigBuilder {
    with_tls(common::config(&[(backend, 1.0)]), certificates)
}

/// One entry of `certificates`: a certificate file, its key, the names it serves.
fn entry(cert: &Path, key: &Path, names: &[&str]) -> Section {
    Section::new()
        .set("cert", cert.display().to_string())
        .set("key", key.display().to_string())
        .set("server_names", names.to_vec())
}

/// A TLS connection to `addr` asking for `name`, trusting `ca`, offering `alpn`.
async fn connect(addr: SocketAddr, name: &str, ca: &str, alpn: &[&[u8]]) -> Tls {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .unwrap()
}

fn served_certificate(tls: &Tls) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

use rustls::pki_types::pem::PemObject;

/// An HTTP/1.1 client over an established stream.
async fn http1<S>(stream: S) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// An HTTP/2 client over a TLS stream that negotiated `h2`.
async fn http2(tls: Tls) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

async fn get1(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    path: &str,
) -> (u16, String) {
    let req = hyper::Request::get(path)
        .header("host", "site.test")
        .body(Empty::new())
        .unwrap();
    sender.ready().await.unwrap();
    let res = sender.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let backend = res
        .headers()
        .get("x-backend")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    res.into_body().collect().await.unwrap();
    (status, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_exact_name_then_the_wildcard_then_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let site = ca.leaf(&["site.test"]);
    let api = ca.leaf(&["api.test"]);
    let any = ca.leaf(&["*.wild.test"]);
    let (sc, sk) = site.write(dir.path(), "site");
    let (ac, ak) = api.write(dir.path(), "api");
    let (wc, wk) = any.write(dir.path(), "wild");
    let backend = common::mock("a").await;
    let certificates = vec![
        entry(&ac, &ak, &["api.test"]),
        entry(&sc, &sk, &[]),
        entry(&wc, &wk, &["*.wild.test"]),
    ];
    let running = common::start(&tls_config(&backend, certificates));
    let addr = web(&running);
    let alpn: &[&[u8]] = &[b"http/1.1"];

    let tls = connect(addr, "api.test", &ca.cert, alpn).await;
    assert_eq!(served_certificate(&tls), der(&api.cert));
    let tls = connect(addr, "x.wild.test", &ca.cert, alpn).await;
    assert_eq!(served_certificate(&tls), der(&any.cert));
    let tls = connect(addr, "site.test", &ca.cert, alpn).await;
    assert_eq!(served_certificate(&tls), der(&site.cert));

    // HTTP/1.1 keep-alive over TLS: two requests on one connection, marked https.
    let mut sender = http1(tls).await;
    assert_eq!(get1(&mut sender, "/one").await, (200, "a".to_owned()));
    assert_eq!(get1(&mut sender, "/two").await, (200, "a".to_owned()));
    let seen = backend.seen();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|s| s.header("x-forwarded-proto") == Some("https"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_h2_is_served_as_http2_through_the_forwarding_policy() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (cert, key) = ca.leaf(&["site.test"]).write(dir.path(), "site");
    let [a, b] = [common::mock("a").await, common::mock("b").await];
    let config = with_tls(
        common::config(&[(&a, 1.0), (&b, 1.0)]),
        vec![entry(&cert, &key, &[])],
    );
    let running = common::start(&config);
    let tls = connect(web(&running), "site.test", &ca.cert, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut sender = http2(tls).await;
    let mut backends = Vec::new();
    for _ in 0..4 {
        let req = hyper::Request::get("https://site.test/h2")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.version(), hyper::Version::HTTP_2);
        backends.push(res.headers()["x-backend"].to_str().unwrap().to_owned());
        res.into_body().collect().await.unwrap();
    }
    backends.sort();
    assert_eq!(backends, ["a", "a", "b", "b"]);
    assert_eq!(a.seen()[0].header("x-forwarded-proto"), Some("https"));
}

/// A graceful shutdown waits for a stream of an HTTP/2 client over TLS (ALPN `h2`, served by
/// hyper from the handshake on) as it waits for an HTTP/1.1 request: the stream in flight
/// when it starts is answered whole, and the shutdown ends with it, not with the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_an_in_flight_stream_of_http2_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (cert, key) = ca.leaf(&["site.test"]).write(dir.path(), "site");
    let backend = common::mock("a").await;
    backend.set_delay(Duration::from_millis(500));
    let running = common::start(&tls_config(&backend, vec![entry(&cert, &key, &[])]));
    let tls = connect(web(&running), "site.test", &ca.cert, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut sender = http2(tls).await;
    let pending = tokio::spawn(async move {
        let req = hyper::Request::get("https://site.test/slow")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    });
    common::shut_down_with_one_in_flight(running, &backend, "waited for the stream only").await;
    let (status, body) = pending.await.unwrap();
    assert_eq!((status, &body[..]), (200, &b"a"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_the_certificate_keeps_open_connections_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let old = ca.leaf(&["site.test"]);
    let (cert, key) = old.write(dir.path(), "site");
    let backend = common::mock("a").await;
    let config = tls_config(&backend, vec![entry(&cert, &key, &[])]);
    let running = common::start(&config);
    let addr = web(&running);
    let alpn: &[&[u8]] = &[b"http/1.1"];
    let before = connect(addr, "site.test", &ca.cert, alpn).await;
    assert_eq!(served_certificate(&before), der(&old.cert));
    let mut open = http1(before).await;
    assert_eq!(get1(&mut open, "/").await.0, 200);

    // The files change, the configuration does not: a reload re-reads them.
    let new = ca.leaf(&["site.test"]);
    new.write(dir.path(), "site");
    let parsed = common::parse(&config);
    let report = running.reload(&parsed);
    assert!(report.refused.is_empty(), "{report:?}");
    let after = connect(addr, "site.test", &ca.cert, alpn).await;
    assert_eq!(served_certificate(&after), der(&new.cert));
    assert_eq!(get1(&mut open, "/still-open").await.0, 200);

    // A key that does not match: refused, naming the file; the new certificate stays.
    std::fs::write(&key, ca.leaf(&["site.test"]).key).unwrap();
    let report = running.reload(&parsed);
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert!(
        report.refused[0].contains(&format!(
            "{}: this private key does not match",
            key.display()
        )),
        "{report:?}"
    );
    let again = connect(addr, "site.test", &ca.cert, alpn).await;
    assert_eq!(served_certificate(&again), der(&new.cert));
    assert_eq!(get1(&mut open, "/after-bad").await.0, 200);
}

/// A WebSocket server that echoes every text message, prefixed with "echo: ".
async fn websocket_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
                while let Some(Ok(msg)) = ws.next().await {
                    // tungstenite answers a Close itself; reading on sends that answer and then
                    // ends the stream.
                    if let Message::Text(t) = msg {
                        ws.send(Message::text(format!("echo: {t}"))).await.unwrap();
                    }
                }
            });
        }
    });
    addr
}

async fn talk<S>(stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut ws, response) = tokio_tungstenite::client_async("ws://site.test/chat", stream)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    for i in 0..3 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        assert_eq!(reply, Message::text(format!("echo: hello {i}")));
    }
    ws.close(None).await.unwrap();
    // The close handshake completes: the server's Close frame comes back, then the end.
    let mut closed = false;
    while let Some(msg) = ws.next().await {
        if matches!(msg, Ok(Message::Close(_))) {
            closed = true;
        }
    }
    assert!(closed, "no Close frame came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_flow_both_ways_over_plain_and_tls_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (cert, key) = ca.leaf(&["site.test"]).write(dir.path(), "site");
    let echo = websocket_echo().await;
    let upstream = common::UpstreamBuilder::new("ws")
        .backend("echo", echo, 1.0)
        .health_check(Section::disabled());
    let tls = Section::new().set("certificates", vec![entry(&cert, &key, &[])]);
    let config = ConfigBuilder::proxy(upstream).listener_with(
        Section::new()
            .set("name", "secure")
            .set("bind", "127.0.0.1:0")
            .set("upstream", "ws")
            .set("tls", tls),
    );
    let running = common::start(&config);
    talk(TcpStream::connect(web(&running)).await.unwrap()).await;
    let secure = running.addr("secure").unwrap();
    talk(connect(secure, "site.test", &ca.cert, &[b"http/1.1"]).await).await;
    let upstream = running.upstream("ws").unwrap();
    common::eventually(Duration::from_secs(5), "two upgraded connections", || {
        upstream.recorder().upgrades() == 2
    })
    .await;
}

/// A TCP server that sends its name, then echoes.
async fn tcp_echo(name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                stream.write_all(name.as_bytes()).await.unwrap();
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// A configuration with one worker and a TCP-mode listener `web` in front of the upstream
/// `db`, whose keys (`backends` among them) are `upstream` (health checks off).
fn tcp_mode(upstream: &str) -> String {
    format!(
        "workers = 1\naccess_log = false\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nupstream = \"db\"\nmode = \"tcp\"\n\
         [[upstreams]]\nname = \"db\"\n{upstream}\n[upstreams.health_check]\nenabled = false\n"
    )
}

/// Opens a TCP-mode connection, sends `ping`, returns (backend name, echo).
async fn tcp_roundtrip(addr: SocketAddr) -> (String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut name = [0u8; 1];
    s.read_exact(&mut name).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    s.read_exact(&mut echo).await.unwrap();
    (
        String::from_utf8_lossy(&name).into_owned(),
        String::from_utf8_lossy(&echo).into_owned(),
    )
}

/// A graceful shutdown gives an open TCP-mode connection `shutdown_grace`, as nginx's stream
/// module and HAProxy's soft stop do: bytes still flow both ways after it starts, and the
/// shutdown ends when the client closes, not when the grace does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_keeps_an_open_tcp_connection_until_it_closes() {
    let (a, _a_task) = tcp_echo("a").await;
    let running = common::start_text(&tcp_mode(&format!(
        "backends = [{{ address = \"{a}\", id = \"a\" }}]"
    )));
    let mut s = TcpStream::connect(web(&running)).await.unwrap();
    let mut name = [0u8; 1];
    s.read_exact(&mut name).await.unwrap();
    assert_eq!(&name, b"a");
    let shutdown = running.shutdown_in_background();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !shutdown.is_finished(),
        "the open connection holds the shutdown"
    );
    s.write_all(b"still here").await.unwrap();
    let mut echo = [0u8; 10];
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"still here");
    drop(s);
    common::shutdown_ends(shutdown, "ended with the connection").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_mode_relays_bytes_and_fails_over_from_a_killed_backend_on_connect() {
    let (a, _a_task) = tcp_echo("a").await;
    let (b, b_task) = tcp_echo("b").await;
    let running = common::start_text(&tcp_mode(&format!(
        "max_fails = 0\n\
         backends = [{{ address = \"{a}\", id = \"a\" }}, {{ address = \"{b}\", id = \"b\" }}]"
    )));
    let addr = web(&running);
    let mut names = Vec::new();
    for _ in 0..4 {
        let (name, echo) = tcp_roundtrip(addr).await;
        assert_eq!(echo, "ping");
        names.push(name);
    }
    names.sort();
    assert_eq!(names, ["a", "a", "b", "b"]);

    // b stops listening: its connects are refused and every connection lands on a.
    b_task.abort();
    let _ = b_task.await;
    for _ in 0..4 {
        assert_eq!(
            tcp_roundtrip(addr).await,
            ("a".to_owned(), "ping".to_owned())
        );
    }
    let upstream = running.upstream("db").unwrap();
    let recorder = upstream.recorder();
    common::eventually(
        Duration::from_secs(5),
        "bytes of 6 connections to a",
        || {
            recorder
                .get("a")
                .is_some_and(|r| r.bytes() == (6 * 4, 6 * 5))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_connection_silent_for_tunnel_timeout_is_closed_at_both_ends() {
    let (a, _a_task) = tcp_echo("a").await;
    let running = common::start_text(&tcp_mode(&format!(
        "tunnel_timeout = \"300ms\"\nbackends = [{{ address = \"{a}\", id = \"a\" }}]"
    )));
    let mut s = TcpStream::connect(web(&running)).await.unwrap();
    let mut name = [0u8; 1];
    s.read_exact(&mut name).await.unwrap();
    // Talking keeps it open past the limit: four exchanges 100 ms apart.
    for _ in 0..4 {
        s.write_all(b"ping").await.unwrap();
        let mut echo = [0u8; 4];
        s.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"ping");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then silence: rondo closes the connection (read returns end of stream). The deadline
    // only guards against a hang.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "{read:?} {rest:?}");
    let upstream = running.upstream("db").unwrap();
    let recorder = upstream.recorder();
    common::eventually(Duration::from_secs(5), "the relay's bytes counted", || {
        recorder.get("a").is_some_and(|r| r.bytes() == (16, 17))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_https_answers_308_to_the_same_host_and_path() {
    let backend = common::mock("a").await;
    let running =
        common::start(&common::config(&[(&backend, 1.0)]).listeners_set("redirect_https", true));
    let reply = common::raw(
        web(&running),
        b"GET /a/b?c=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        reply.starts_with("HTTP/1.1 308 Permanent Redirect\r\n"),
        "{reply}"
    );
    assert!(
        reply.contains("location: https://example.com/a/b?c=1\r\n"),
        "{reply}"
    );
    assert_eq!(backend.hits(), 0);
}

#[test]
fn rondo_check_names_a_certificate_whose_key_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = test_certs::self_signed(&["site.test"]).write(dir.path(), "site");
    let file = dir.path().join("rondo.toml");
    std::fs::write(
        &file,
        "[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:8443\"\nupstream = \"app\"\n\
         [listeners.tls]\ncertificates = [{ cert = \"site.pem\", key = \"site.key.missing\" }]\n\
         [[upstreams]]\nname = \"app\"\nbackends = [{ address = \"127.0.0.1:9001\" }]\n",
    )
    .unwrap();
    assert!(cert.exists());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rondo"))
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "error: {}: no such file",
            dir.path().join("site.key.missing").display()
        )),
        "{stderr}"
    );
}

/// An HTTPS backend with a certificate for `backend.test` signed by `ca`, offering the
/// `alpn` protocols (HTTP/1.1 and HTTP/2 are both served); every answer says the HTTP version
/// it came over in `x-version`. Returns its address and a count of the health checks it
/// answered.
async fn https_backend(
    ca: &Ca,
    alpn: &[&[u8]],
) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let pair = ca.leaf(&["backend.test"]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(pair.cert.as_bytes()).unwrap()],
            rustls::pki_types::PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).unwrap(),
        )
        .unwrap();
    let mut config = config;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let checks = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&checks);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counted) = (acceptor.clone(), Arc::clone(&counted));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    if req.uri().path() == "/health" {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                    let version = format!("{:?}", req.version());
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("x-backend", "tls")
                                .header("x-version", version)
                                .body(http_body_util::Full::new(Bytes::from_static(b"secure")))
                                .unwrap(),
                        )
                    }
                });
                let executor = hyper_util::rt::TokioExecutor::new();
                let _ = hyper_util::server::conn::auto::Builder::new(executor)
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, checks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_and_auto_over_tls_speak_what_alpn_chose_and_h2_refuses_a_backend_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("backend CA");
    let ca_file = ca.write(dir.path(), "ca");
    let (both, _) = https_backend(&ca, &[b"h2", b"http/1.1"]).await;
    let (http1_only, _) = https_backend(&ca, &[b"http/1.1"]).await;
    let toml = |backend: SocketAddr, protocol: &str| {
        format!(
            "workers = 1\naccess_log = false\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\
             [[upstreams]]\nname = \"app\"\nmax_fails = 0\ntries = 1\nprotocol = \"{protocol}\"\n\
             backends = [{{ address = \"{backend}\" }}]\n\
             tls = {{ server_name = \"backend.test\", ca = \"{}\" }}\n\
             [upstreams.health_check]\nenabled = false\n",
            ca_file.display()
        )
    };
    // (backend, protocol, the version the backend sees; None: rondo answers 502)
    let cases = [
        (both, "h2", Some("HTTP/2.0")),
        (both, "auto", Some("HTTP/2.0")),
        (http1_only, "auto", Some("HTTP/1.1")),
        (both, "http1", Some("HTTP/1.1")),
        (http1_only, "h2", None),
    ];
    for (backend, protocol, version) in cases {
        let running = common::start_text(&toml(backend, protocol));
        let mut client = common::Client::connect(web(&running)).await;
        for _ in 0..3 {
            let reply = client.get("/").await;
            match version {
                Some(v) => {
                    assert_eq!(reply.status, 200, "{protocol}: {}", reply.text());
                    assert_eq!(reply.header("x-version"), Some(v), "{protocol}");
                    assert_eq!(reply.text(), "secure");
                }
                None => {
                    assert_eq!(reply.status, 502, "{protocol}: {}", reply.text());
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_verifies_backends_with_the_test_ca_and_refuses_a_wrong_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("backend CA");
    let ca_file = ca.write(dir.path(), "ca");
    let wrong_file = Ca::new("another CA").write(dir.path(), "wrong");
    let (backend, checks) = https_backend(&ca, &[]).await;
    let toml = |ca: &Path| {
        format!(
            "workers = 1\naccess_log = false\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\
             [[upstreams]]\nname = \"app\"\nmax_fails = 0\n\
             backends = [{{ address = \"{backend}\" }}]\n\
             tls = {{ server_name = \"backend.test\", ca = \"{}\" }}\n\
             [upstreams.health_check]\ninterval = \"50ms\"\ntimeout = \"40ms\"\n",
            ca.display()
        )
    };
    let running = common::start_text(&toml(&ca_file));
    let mut client = common::Client::connect(web(&running)).await;
    for _ in 0..3 {
        let reply = client.get("/").await;
        assert_eq!((reply.status, reply.text().as_str()), (200, "secure"));
    }
    // Health checks speak TLS too.
    common::eventually(Duration::from_secs(5), "a health check over TLS", || {
        checks.load(std::sync::atomic::Ordering::Relaxed) > 0
    })
    .await;
    drop(running);

    let running = common::start_text(&toml(&wrong_file));
    let reply = common::get(web(&running), "/").await;
    assert_eq!(reply.status, 502, "{}", reply.text());
}

/// One worker, one keep-alive client: the backend connection is pooled after each answer;
/// once a reload asks for TLS, the pooled plain connection must not be used.
async fn turning_upstream_tls_on_never_reuses_a_plain_pooled_connection(http2: bool) {
    // A plain backend: once TLS is asked for, no request may reach it in the clear.
    let b = common::mock("plain").await;
    let toml = |tls: &str| {
        format!(
            "workers = 1\naccess_log = false\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\
             [[upstreams]]\nname = \"app\"\nmax_fails = 0\ntries = 1\n\
             backends = [{{ address = \"{}\" }}]\n{tls}\
             [upstreams.health_check]\nenabled = false\n",
            b.addr()
        )
    };
    let running = common::start_text(&toml(""));
    let mut client = common::KeptClient::connect(web(&running), http2).await;
    assert_eq!(client.get("/").await.status, 200);
    assert_eq!(b.connections(), 1);
    let tls = toml("tls = { verify = false }\n");
    let done = running.reload(&rondo::config::parse(&tls, "rondo.toml").unwrap());
    assert!(done.refused.is_empty(), "{:?}", done.refused);
    // The pooled plain connection is not used: a TLS handshake with a plain server fails.
    let hits = b.hits();
    let reply = client.get("/").await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(b.hits(), hits, "a request reached the backend in the clear");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_turns_upstream_tls_on_never_reuses_a_plain_pooled_connection() {
    turning_upstream_tls_on_never_reuses_a_plain_pooled_connection(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nor_does_an_http2_clients_request() {
    turning_upstream_tls_on_never_reuses_a_plain_pooled_connection(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rondo_bench_loads_an_https_listener_over_http1_and_h2_with_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = test_certs::self_signed(&["localhost"]).write(dir.path(), "self");
    let backend = common::mock("a").await;
    let running = common::start(&tls_config(&backend, vec![entry(&cert, &key, &[])]));
    let url = format!("https://localhost:{}/", web(&running).port());
    for http2 in [false, true] {
        let mut spec = rondo_bench::LoadSpec::new(&url);
        spec.connections = 4;
        spec.requests = Some(200);
        spec.http2 = http2;
        spec.insecure = true;
        let report = rondo_bench::generate(&spec).await.unwrap();
        assert_eq!(
            report.successes, 200,
            "http2 {http2}: {:?}",
            report.error_examples
        );
        assert_eq!(report.status_counts.get(&200), Some(&200));
    }
    // Without --insecure a self-signed certificate is refused: every request a connect error.
    let mut spec = rondo_bench::LoadSpec::new(&url);
    spec.connections = 1;
    spec.requests = Some(3);
    let report = rondo_bench::generate(&spec).await.unwrap();
    assert_eq!(report.successes, 0);
    assert_eq!(report.errors.total, 3, "{:?}", report.error_examples);
    assert_eq!(backend.hits(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_watch_reloads_when_only_the_certificate_files_change() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let old = ca.leaf(&["site.test"]);
    let (cert, key) = old.write(dir.path(), "site");
    let backend = common::mock("a").await;
    let path = dir.path().join("rondo.toml");
    std::fs::write(
        &path,
        tls_config(&backend, vec![entry(&cert, &key, &[])]).to_toml(),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rondo"))
        .args(["serve", "--log-format", "json", "--watch", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    // The next log line whose message starts with `message`, within 10 s.
    let mut wait_for = async |message: &str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let line = tokio::time::timeout_at(deadline, lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no log line \"{message}\""))
                .unwrap()
                .unwrap_or_else(|| panic!("rondo exited before \"{message}\""));
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
            {
                return v;
            }
        }
    };
    let listening = wait_for("listening").await;
    let addr: SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();
    let alpn: &[&[u8]] = &[b"http/1.1"];
    assert_eq!(
        served_certificate(&connect(addr, "site.test", &ca.cert, alpn).await),
        der(&old.cert)
    );

    let new = ca.leaf(&["site.test"]);
    new.write(dir.path(), "site");
    let reloaded = wait_for("configuration reloaded").await;
    assert_eq!(reloaded["trigger"], "file changed", "{reloaded}");
    assert_eq!(
        served_certificate(&connect(addr, "site.test", &ca.cert, alpn).await),
        der(&new.cert)
    );
}
