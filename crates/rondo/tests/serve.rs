//! `rondo serve` as an operator runs it: the binary, a config file, JSON logs on stderr, an
//! access line per request, and a clean exit on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::time::Duration;

use common::{
    ConfigBuilder, Process, Section, UpstreamBuilder, eventually, get, mock, read_response,
};

#[tokio::test(flavor = "multi_thread")]
async fn serve_logs_json_access_lines_and_exits_cleanly_on_sigterm() {
    let backend = mock("a").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rondo.toml");
    // Without an id, a backend is named by its address (as in the access line below).
    let id = backend.addr().to_string();
    let config = ConfigBuilder::proxy(
        UpstreamBuilder::new("app")
            .backend(&id, backend.addr(), 1.0)
            .health_check(Section::disabled()),
    )
    .set("workers", 1)
    .set("access_log", true);
    std::fs::write(&path, config.to_toml()).unwrap();
    let mut rondo = Process::serve(&path);
    let listening = tokio::task::block_in_place(|| rondo.wait_for_line("the first line", |_| true));
    assert_eq!(listening["message"], "listening", "{listening}");
    let addr: std::net::SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();

    let reply = get(addr, "/hello?x=1").await;
    assert_eq!(reply.status, 200);
    let access = tokio::task::block_in_place(|| {
        rondo.wait_for_line("an access line", |line| line["target"] == "rondo::access")
    });
    assert_eq!(access["target"], "rondo::access");
    assert_eq!(access["method"], "GET");
    assert_eq!(access["path"], "/hello?x=1");
    assert_eq!(access["status"], 200);
    assert_eq!(access["backend"], backend.addr().to_string());
    assert_eq!(access["attempts"], 1);

    // SIGTERM: graceful shutdown, exit status 0.
    rondo.signal("TERM");
    let code = tokio::task::block_in_place(|| rondo.wait_exit());
    assert_eq!(code, Some(0), "exits 0 after SIGTERM");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_line_names_every_backend_tried_and_counts_the_attempts() {
    let (a, b) = (mock("a").await, mock("b").await);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rondo.toml");
    let config = ConfigBuilder::proxy(
        UpstreamBuilder::new("app")
            .backend("a", a.addr(), 1.0)
            .backend("b", b.addr(), 1.0)
            .health_check(Section::disabled()),
    )
    .set("workers", 1)
    .set("access_log", true);
    std::fs::write(&path, config.to_toml()).unwrap();
    let mut rondo = Process::serve(&path);
    let listening = tokio::task::block_in_place(|| rondo.wait_for("listening"));
    let addr: std::net::SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();

    // The cycle starts at `a`, which refuses the connection: the request goes on to `b`.
    a.kill().await;
    let reply = get(addr, "/retried").await;
    assert_eq!((reply.status, reply.text()), (200, "b".to_owned()));
    let access = tokio::task::block_in_place(|| {
        rondo.wait_for_line("an access line", |line| line["target"] == "rondo::access")
    });
    assert_eq!(access["path"], "/retried", "{access}");
    assert_eq!(access["backend"], "a,b", "{access}");
    assert_eq!(access["attempts"], 2, "{access}");
    assert_eq!(access["status"], 200, "{access}");
    assert_eq!(b.hits(), 1);
    rondo.signal("TERM");
    let code = tokio::task::block_in_place(|| rondo.wait_exit());
    assert_eq!(code, Some(0));
}

/// The real binary with `workers` workers and a 600 s `shutdown_grace` in front of `backend`,
/// with one GET held at the backend (its delay decides for how long), ready for a signal.
struct InFlight {
    rondo: Process,
    addr: std::net::SocketAddr,
    reply: tokio::task::JoinHandle<common::Reply>,
    _dir: tempfile::TempDir,
}

async fn request_in_flight(backend: &common::MockBackend, workers: i64) -> InFlight {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rondo.toml");
    let config = ConfigBuilder::proxy(
        UpstreamBuilder::new("app")
            .backend("a", backend.addr(), 1.0)
            .health_check(Section::disabled()),
    )
    .set("workers", workers)
    .duration("shutdown_grace", Duration::from_secs(600));
    std::fs::write(&path, config.to_toml()).unwrap();
    let rondo = Process::serve(&path);
    let listening = tokio::task::block_in_place(|| rondo.wait_for("listening"));
    let addr: std::net::SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();
    let reply = tokio::spawn(async move { get(addr, "/held").await });
    eventually(
        Duration::from_secs(30),
        "the request reaches the backend",
        || backend.in_flight() == 1,
    )
    .await;
    InFlight {
        rondo,
        addr,
        reply,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_request_in_flight_finish_before_exiting() {
    let backend = mock("a").await;
    backend.set_delay(Duration::from_millis(800));
    let InFlight {
        mut rondo,
        addr,
        reply,
        _dir,
    } = request_in_flight(&backend, 1).await;
    rondo.signal("TERM");
    let reply = reply.await.unwrap();
    assert_eq!(
        (reply.status, reply.text()),
        (200, "a".to_owned()),
        "the request in flight was answered"
    );
    let code = tokio::task::block_in_place(|| rondo.wait_exit());
    assert_eq!(code, Some(0), "exits 0 after the request finished");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_closes_the_listening_socket_at_once_while_requests_finish() {
    // A request held by the backend far longer than the test waits for the refusal: the
    // refusal is seen during the grace period, not after the exit.
    let backend = mock("a").await;
    backend.set_delay(Duration::from_secs(60));
    let InFlight {
        mut rondo,
        addr,
        reply,
        _dir,
    } = request_in_flight(&backend, 2).await;
    rondo.signal("TERM");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        // Bounded: a listener nobody accepts from stops answering handshakes once its backlog
        // is full, and that is not a refusal either. A handshake under way as the socket
        // closes is reset; the next one is refused.
        let connect = tokio::net::TcpStream::connect(addr);
        match tokio::time::timeout(Duration::from_secs(1), connect).await {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
            Ok(Ok(_)) | Err(_) => assert!(
                tokio::time::Instant::now() < deadline,
                "still accepting connections 30 s after SIGTERM"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        backend.in_flight(),
        1,
        "refused while the request is in flight"
    );
    assert!(!reply.is_finished());
    // The backend dies: the request ends (502) and nothing keeps rondo any more.
    backend.kill().await;
    assert_eq!(reply.await.unwrap().status, 502);
    let code = tokio::task::block_in_place(|| rondo.wait_exit());
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_writes_the_access_log_file_and_reopens_it_on_sigusr1() {
    let backend = mock("a").await;
    let dir = tempfile::tempdir().unwrap();
    let (config, log) = (dir.path().join("rondo.toml"), dir.path().join("access.log"));
    let upstream = UpstreamBuilder::new("app")
        .backend("a", backend.addr(), 1.0)
        .health_check(Section::disabled());
    let access_log = Section::new()
        .set("path", log.display().to_string())
        .set("format", "$status $request_uri");
    let toml = ConfigBuilder::proxy(upstream)
        .set("workers", 1)
        .set("access_log", access_log)
        .to_toml();
    std::fs::write(&config, toml).unwrap();
    let rondo = Process::serve(&config);
    let listening = tokio::task::block_in_place(|| rondo.wait_for("listening"));
    let addr: std::net::SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();

    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    assert_eq!(get(addr, "/first").await.status, 200);
    eventually(Duration::from_secs(10), "the first line", || {
        read(&log) == "200 /first\n"
    })
    .await;

    // logrotate: move the file away, then SIGUSR1; the next line goes to a new file.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    rondo.signal("USR1");
    eventually(Duration::from_secs(10), "a new access.log", || {
        // The writer creates the file again when it reopens.
        log.exists()
    })
    .await;
    // SIGUSR1 does not stop rondo: it still answers.
    assert_eq!(get(addr, "/second").await.status, 200);
    eventually(Duration::from_secs(10), "the line in the new file", || {
        read(&log).contains("200 /second\n")
    })
    .await;
    assert!(read(&rotated).starts_with("200 /first\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigusr1_without_an_access_log_file_is_ignored_not_fatal() {
    // The default access log is the process log: nothing to reopen, but a logrotate rule
    // that still sends SIGUSR1 must not stop the balancer (the signal's default action).
    let backend = mock("a").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rondo.toml");
    let upstream = UpstreamBuilder::new("app")
        .backend("a", backend.addr(), 1.0)
        .health_check(Section::disabled());
    std::fs::write(
        &config,
        ConfigBuilder::proxy(upstream).set("workers", 1).to_toml(),
    )
    .unwrap();
    let mut rondo = Process::serve(&config);
    let listening = tokio::task::block_in_place(|| rondo.wait_for("listening"));
    let addr: std::net::SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();
    for _ in 0..2 {
        rondo.signal("USR1");
        tokio::task::block_in_place(|| {
            rondo.wait_for("SIGUSR1: no access log file to reopen, ignored")
        });
        assert_eq!(get(addr, "/").await.status, 200);
    }
    rondo.signal("TERM");
    let code = tokio::task::block_in_place(|| rondo.wait_exit());
    assert_eq!(code, Some(0), "ended by SIGTERM, not by SIGUSR1");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_answers_busy_clients_with_connection_close_closes_idle_ones_and_sends_goaway() {
    use common::h2raw::{self, Conn, frame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = mock("a").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rondo.toml");
    let config = ConfigBuilder::proxy(
        UpstreamBuilder::new("app")
            .backend("a", backend.addr(), 1.0)
            .health_check(Section::disabled()),
    )
    .set("workers", 1)
    .duration("shutdown_grace", Duration::from_secs(600));
    std::fs::write(&path, config.to_toml()).unwrap();
    let mut rondo = Process::serve(&path);
    let listening = tokio::task::block_in_place(|| rondo.wait_for("listening"));
    let addr: std::net::SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();
    let request = b"GET /slow HTTP/1.1\r\nHost: test.local\r\n\r\n";

    // Idle keep-alive clients: one request answered, then silence. The first is silent long
    // enough to give up its task (100 ms: it is parked, see proxy/parked.rs).
    let mut parked = tokio::net::TcpStream::connect(addr).await.unwrap();
    parked.write_all(request).await.unwrap();
    let head = read_response(&mut parked).await;
    assert!(!head.contains("connection: close"), "{head}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(request).await.unwrap();
    let head = read_response(&mut idle).await;
    assert!(!head.contains("connection: close"), "{head}");

    // A busy HTTP/1.1 client and a busy HTTP/2 stream, both waiting on the backend.
    backend.set_delay(Duration::from_secs(2));
    let mut busy = tokio::net::TcpStream::connect(addr).await.unwrap();
    busy.write_all(request).await.unwrap();
    let mut h2 = Conn::open(addr).await;
    let flags = h2raw::END_HEADERS | h2raw::END_STREAM;
    let block = h2raw::get_block("/slow", &[]);
    h2.send(&frame(h2raw::HEADERS, flags, 1, &block))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "two requests at the backend",
        || backend.in_flight() == 2,
    )
    .await;

    rondo.signal("TERM");
    // The idle clients are closed cleanly (FIN, not a reset), with nothing sent.
    for (which, client) in [("idle", &mut idle), ("parked", &mut parked)] {
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(30), client.read_to_end(&mut rest)).await;
        assert!(
            matches!(read, Ok(Ok(0))),
            "{which} client: {read:?} {rest:?}"
        );
    }
    // HTTP/2: GOAWAY at once, then the stream in flight still completes, then the close
    // (the client answers the PING a graceful close sends, as clients do).
    let frames = h2.until_closed(Duration::from_secs(30)).await;
    let goaway = frames.iter().position(|f| f.kind == h2raw::GOAWAY);
    let ended = frames
        .iter()
        .position(|f| f.stream == 1 && f.flags & h2raw::END_STREAM != 0);
    assert!(
        matches!((goaway, ended), (Some(g), Some(e)) if g < e),
        "GOAWAY, then the stream's end: {frames:?}"
    );
    // HTTP/1.1: the response in flight says the connection closes, and it does.
    let head = read_response(&mut busy).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), busy.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "busy client after its response: {read:?}"
    );
    let code = tokio::task::block_in_place(|| rondo.wait_exit());
    assert_eq!(code, Some(0));
}
