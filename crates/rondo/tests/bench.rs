//! `rondo bench` against real servers on loopback, started inside each test on
//! `127.0.0.1:0`: a small HTTP/1.1 server written here on `httparse` (the wire-level framings
//! and closes a client must read: chunked, close-delimited, a close between requests), and
//! for HTTP/2 the harness's one mock backend speaking h2c. Nothing here asserts on speed: counts are exact, the only time bounds
//! are lower ones the generator guarantees, read from its own report (a paced run cannot
//! finish before its last request is due), and a run that must end by itself has a deadline
//! against a hang.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rondo_bench::{ErrorKind, LoadSpec, Report, generate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the test server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `Content-Length` framed responses on a keep-alive connection.
    KeepAlive,
    /// Chunked responses.
    Chunked,
    /// Every response says `Connection: close`, and the server closes.
    ConnectionClose,
    /// HTTP/1.0 responses without length, delimited by closing the connection.
    Http10UntilClose,
    /// Keep-alive responses, but the server closes the connection right after each one
    /// without saying so (an aggressive idle timeout).
    SilentClose,
    /// Sends a head promising 100 bytes, 3 of them, and closes.
    CloseMidResponse,
    /// Reads the request and resets the connection (RST) without answering.
    Reset,
    /// Answers the first request of each connection (keep-alive); counts the second and
    /// closes without a byte of answer — a keep-alive race the client cannot tell from a
    /// server that processed the request and crashed.
    CountSecondThenClose,
}

#[derive(Debug, Clone)]
struct Plan {
    mode: Mode,
    delay: Duration,
    /// Every `n`-th request (1-based) gets this status instead of 200.
    status_every: Option<(u64, u16)>,
    /// Responses carry `x-backend: b{k % backends}`, `k` the request number.
    backends: u64,
    body: &'static str,
}

impl Plan {
    fn new(mode: Mode) -> Self {
        Plan {
            mode,
            delay: Duration::ZERO,
            status_every: None,
            backends: 0,
            body: "hello",
        }
    }

    fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    fn status_every(mut self, n: u64, status: u16) -> Self {
        self.status_every = Some((n, status));
        self
    }

    fn backends(mut self, n: u64) -> Self {
        self.backends = n;
        self
    }

    async fn start(self) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server {
            addr,
            requests: Arc::new(AtomicU64::new(0)),
            bodies: Arc::new(Mutex::new(Vec::new())),
        };
        let (requests, bodies) = (server.requests.clone(), server.bodies.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(
                    stream,
                    self.clone(),
                    requests.clone(),
                    bodies.clone(),
                ));
            }
        });
        server
    }
}

#[derive(Debug)]
struct Server {
    addr: SocketAddr,
    /// Complete requests received.
    requests: Arc<AtomicU64>,
    /// Bodies of requests that had one.
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Server {
    fn url(&self) -> String {
        format!("http://{}/path?q=1", self.addr)
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

/// One connection of the test server: parse requests with httparse, answer by the plan.
async fn serve(
    mut stream: TcpStream,
    plan: Plan,
    requests: Arc<AtomicU64>,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut on_connection = 0u64;
    loop {
        let (head_len, body_len, head_method) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let length = request
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                        .unwrap_or(0usize);
                    break (n, length, request.method == Some("HEAD"));
                }
                Ok(httparse::Status::Partial) => match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                },
                Err(_) => return,
            }
        };
        while buf.len() < head_len + body_len {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        if body_len > 0 {
            let body = buf[head_len..head_len + body_len].to_vec();
            bodies.lock().unwrap().push(body);
        }
        buf.drain(..head_len + body_len);
        let k = requests.fetch_add(1, Ordering::SeqCst) + 1;
        on_connection += 1;
        if plan.mode == Mode::CountSecondThenClose && on_connection == 2 {
            return;
        }
        if !plan.delay.is_zero() {
            tokio::time::sleep(plan.delay).await;
        }
        let status = match plan.status_every {
            Some((n, status)) if k.is_multiple_of(n) => status,
            _ => 200,
        };
        let backend = if plan.backends > 0 {
            format!("x-backend: b{}\r\n", k % plan.backends)
        } else {
            String::new()
        };
        let body = if head_method { "" } else { plan.body };
        let response = match plan.mode {
            Mode::KeepAlive | Mode::SilentClose | Mode::CountSecondThenClose => format!(
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n{backend}\r\n{body}",
                plan.body.len()
            ),
            Mode::ConnectionClose => format!(
                "HTTP/1.1 {status} X\r\nconnection: close\r\ncontent-length: {}\r\n{backend}\r\n{body}",
                plan.body.len()
            ),
            Mode::Chunked => format!(
                "HTTP/1.1 {status} X\r\ntransfer-encoding: chunked\r\n{backend}\r\n{:x};ext=1\r\n{body}\r\n0\r\nx-trailer: t\r\n\r\n",
                body.len()
            ),
            Mode::Http10UntilClose => format!("HTTP/1.0 {status} X\r\n{backend}\r\n{body}"),
            Mode::CloseMidResponse => {
                format!("HTTP/1.1 {status} X\r\ncontent-length: 100\r\n{backend}\r\nabc")
            }
            Mode::Reset => {
                let _ = stream.set_zero_linger();
                return;
            }
        };
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
        match plan.mode {
            Mode::KeepAlive | Mode::Chunked | Mode::CountSecondThenClose => {}
            _ => return,
        }
    }
}

fn spec(url: String, connections: usize, requests: u64) -> LoadSpec {
    let mut spec = LoadSpec::new(url);
    spec.connections = connections;
    spec.requests = Some(requests);
    spec
}

async fn run(spec: &LoadSpec) -> Report {
    generate(spec).await.expect("the run starts")
}

/// [`run`] for a run that must end by itself (a duration, a stop handle): fails instead of
/// hanging when it does not. The deadline is against a hang, not a claim about speed.
async fn run_to_its_end(spec: &LoadSpec) -> Report {
    tokio::time::timeout(Duration::from_secs(60), run(spec))
        .await
        .expect("the run ends by itself")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_exactly_the_requested_number_of_requests() {
    let server = Plan::new(Mode::KeepAlive).start().await;
    let report = run(&spec(server.url(), 8, 1000)).await;
    assert_eq!(server.requests(), 1000);
    assert_eq!(report.requests, 1000);
    assert_eq!(report.responses, 1000);
    assert_eq!(report.successes, 1000);
    assert_eq!(report.status_counts.get(&200), Some(&1000));
    assert_eq!(report.errors.total, 0);
    assert!((report.success_rate - 1.0).abs() < 1e-12);
    assert!(report.latency.min <= report.latency.p50);
    assert!(report.latency.p50 <= report.latency.p99);
    assert!(report.latency.p99 <= report.latency.max);
    // Every response is at least its status line and body.
    assert!(report.bytes_read >= 1000 * ("HTTP/1.1 200 X\r\n".len() + 5) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_status_codes_and_success_rate() {
    let server = Plan::new(Mode::KeepAlive)
        .status_every(4, 503)
        .start()
        .await;
    let report = run(&spec(server.url(), 4, 400)).await;
    assert_eq!(report.status_counts.get(&200), Some(&300));
    assert_eq!(report.status_counts.get(&503), Some(&100));
    assert_eq!(report.successes, 300);
    assert!((report.success_rate - 0.75).abs() < 1e-12);
    assert_eq!(report.errors.total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_every_framing_chunked_close_delimited_and_connection_close() {
    for mode in [Mode::Chunked, Mode::ConnectionClose, Mode::Http10UntilClose] {
        let server = Plan::new(mode).start().await;
        let report = run(&spec(server.url(), 3, 60)).await;
        assert_eq!(server.requests(), 60, "{mode:?}");
        assert_eq!(report.status_counts.get(&200), Some(&60), "{mode:?}");
        assert_eq!(
            report.errors.total, 0,
            "{mode:?}: {:?}",
            report.error_examples
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resends_once_when_an_idle_connection_was_closed_silently() {
    let server = Plan::new(Mode::SilentClose).start().await;
    let report = run(&spec(server.url(), 2, 50)).await;
    assert_eq!(report.status_counts.get(&200), Some(&50));
    assert_eq!(report.errors.total, 0, "{:?}", report.error_examples);
    assert_eq!(server.requests(), 50);

    // A POST is not sent twice. This server answers the first request of a connection and
    // counts the second before closing without a word: a client that resent the POST would
    // make the server count more requests than the client sent.
    let server = Plan::new(Mode::CountSecondThenClose).start().await;
    let mut post = spec(server.url(), 2, 50);
    post.method = "POST".into();
    post.body = "x".into();
    let report = run(&post).await;
    assert_eq!(report.requests, 50);
    assert_eq!(server.requests(), 50, "each POST was received exactly once");
    assert_eq!(report.errors.total, report.errors.closed);
    // Every second POST of a connection is lost to the close and reported (about half: how
    // the 50 split between the two connections decides the exact number).
    assert!(
        report.errors.closed >= 20,
        "{} closed: {:?}",
        report.errors.closed,
        report.error_examples
    );
    assert_eq!(report.responses + report.errors.closed, 50);

    // The same server with GETs: the lost second request is resent once on a new
    // connection, so the client sees no error and the server counts the resends too.
    let server = Plan::new(Mode::CountSecondThenClose).start().await;
    let report = run(&spec(server.url(), 2, 50)).await;
    assert_eq!(report.status_counts.get(&200), Some(&50));
    assert_eq!(report.errors.total, 0, "{:?}", report.error_examples);
    assert!(server.requests() > 50, "{}", server.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_request_does_not_wait_for_a_body() {
    let server = Plan::new(Mode::KeepAlive).start().await;
    let mut spec = spec(server.url(), 2, 20);
    spec.method = "HEAD".into();
    spec.timeout = Some(Duration::from_secs(5));
    let report = run(&spec).await;
    assert_eq!(report.status_counts.get(&200), Some(&20));
    assert_eq!(report.errors.total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_gives_connect_errors() {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let report = run(&spec(format!("http://{addr}/"), 2, 20)).await;
    assert_eq!(report.requests, 20);
    assert_eq!(report.responses, 0);
    assert_eq!(report.errors.connect, 20);
    assert_eq!(report.errors.total, 20);
    assert_eq!(report.success_rate, 0.0);
    assert!(report.error_examples.contains_key(&ErrorKind::Connect));
    // Nothing to measure, and nothing invented.
    assert_eq!(report.latency, rondo_bench::Latency::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_slower_than_the_timeout_gives_timeouts() {
    let server = Plan::new(Mode::KeepAlive)
        .delay(Duration::from_secs(30))
        .start()
        .await;
    let mut spec = spec(server.url(), 2, 4);
    spec.timeout = Some(Duration::from_millis(150));
    let report = run(&spec).await;
    assert_eq!(report.errors.timeout, 4);
    assert_eq!(report.errors.total, 4);
    assert_eq!(report.responses, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_closes_mid_response_gives_closed_errors() {
    let server = Plan::new(Mode::CloseMidResponse).start().await;
    let report = run(&spec(server.url(), 2, 10)).await;
    assert_eq!(report.errors.closed, 10, "{:?}", report.error_examples);
    assert_eq!(report.errors.total, 10);
    assert_eq!(server.requests(), 10);

    let server = Plan::new(Mode::Reset).start().await;
    let report = run(&spec(server.url(), 2, 10)).await;
    assert_eq!(report.errors.closed, 10, "{:?}", report.error_examples);
    assert_eq!(report.errors.total, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_responses_by_backend_header() {
    let server = Plan::new(Mode::KeepAlive).backends(3).start().await;
    let mut spec = spec(server.url(), 4, 900);
    spec.backend_header = Some("X-Backend".into());
    let report = run(&spec).await;
    assert_eq!(report.backend_header.as_deref(), Some("x-backend"));
    assert_eq!(report.backends.len(), 3);
    for share in &report.backends {
        assert_eq!(share.responses, 300, "{share:?}");
        assert!((share.share - 1.0 / 3.0).abs() < 1e-9);
    }
    let mut names: Vec<_> = report.backends.iter().map(|b| b.value.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["b0", "b1", "b2"]);
    assert_eq!(report.backend_missing, 0);
    assert!(report.render_text().contains("b1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duration_ends_the_run_by_itself() {
    let server = Plan::new(Mode::KeepAlive).start().await;
    let mut spec = LoadSpec::new(server.url());
    spec.connections = 4;
    spec.duration = Some(Duration::from_millis(300));
    let report = run_to_its_end(&spec).await;
    // The generator's own clock: the run lasted its whole duration.
    assert!(
        report.elapsed >= Duration::from_millis(300),
        "{:?}",
        report.elapsed
    );
    assert!(report.responses > 0);
    assert_eq!(report.errors.total, 0);
    // Requests abandoned at the end are not counted, and none is counted twice.
    assert!(report.requests <= server.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duration_ends_the_run_even_when_the_server_hangs() {
    let server = Plan::new(Mode::KeepAlive)
        .delay(Duration::from_secs(60))
        .start()
        .await;
    let mut spec = LoadSpec::new(server.url());
    spec.connections = 2;
    spec.duration = Some(Duration::from_millis(200));
    spec.timeout = None;
    let report = run_to_its_end(&spec).await;
    assert_eq!(report.requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_paces_the_requests() {
    let server = Plan::new(Mode::KeepAlive).start().await;
    let mut spec = spec(server.url(), 4, 30);
    spec.rate = Some(100.0);
    let report = run(&spec).await;
    // Request 29 is due 290 ms after the start: the run cannot end sooner, by its own clock.
    assert!(
        report.elapsed >= Duration::from_millis(290),
        "{:?}",
        report.elapsed
    );
    assert_eq!(report.requests, 30);
    assert_eq!(server.requests(), 30);
    assert_eq!(report.target_rate, Some(100.0));

    // With a duration, the rate bounds the count: due times before 250 ms are 0, 10, …, 240.
    let mut spec = LoadSpec::new(server.url());
    spec.connections = 4;
    spec.rate = Some(100.0);
    spec.duration = Some(Duration::from_millis(250));
    let report = run(&spec).await;
    assert!(report.requests <= 25, "{}", report.requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_handle_ends_the_run_and_lets_requests_in_flight_finish() {
    let server = Plan::new(Mode::KeepAlive)
        .delay(Duration::from_millis(20))
        .start()
        .await;
    let mut spec = LoadSpec::new(server.url());
    spec.connections = 4;
    spec.duration = Some(Duration::from_secs(60));
    let stop = spec.stop.clone();
    let requests = server.requests.clone();
    tokio::spawn(async move {
        while requests.load(Ordering::SeqCst) < 20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.stop();
    });
    let report = run_to_its_end(&spec).await;
    assert!(report.interrupted);
    assert!(report.requests >= 20);
    assert_eq!(report.errors.total, 0);
    // Requests in flight when it stopped were answered and counted, none abandoned.
    assert_eq!(report.requests, server.requests());
    assert!(report.render_text().contains("(interrupted)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_arrive_with_their_body_intact() {
    let server = Plan::new(Mode::KeepAlive).start().await;
    let body: String = (0..10_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let mut spec = spec(server.url(), 3, 30);
    spec.method = "POST".into();
    spec.body = body.clone().into();
    spec.headers = vec![("Content-Type".into(), "text/plain".into())];
    let report = run(&spec).await;
    assert_eq!(report.status_counts.get(&200), Some(&30));
    let bodies = server.bodies.lock().unwrap();
    assert_eq!(bodies.len(), 30);
    assert!(bodies.iter().all(|b| b == body.as_bytes()));
}

/// The one mock backend, speaking h2c (HTTP/2 with prior knowledge), named `h2`.
fn h2_backend() -> common::BackendBuilder {
    common::Backend::builder("h2").http2()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaks_http2_with_prior_knowledge() {
    let server = h2_backend().start().await.unwrap();
    let mut spec = spec(format!("http://{}/", server.addr()), 3, 100);
    spec.http2 = true;
    spec.backend_header = Some("x-backend".into());
    let report = run(&spec).await;
    assert_eq!(report.protocol, "HTTP/2");
    assert_eq!(report.errors.total, 0, "{:?}", report.error_examples);
    assert_eq!(server.received(), 100);
    assert_eq!(report.status_counts.get(&200), Some(&100));
    assert_eq!(report.backends.len(), 1);
    assert_eq!(report.backends[0].value, "h2");
    assert_eq!(report.backends[0].responses, 100);
    assert!(report.bytes_read > 0);

    // Statuses are read from each response, not assumed.
    server.set_status(404);
    let report = run(&spec).await;
    assert_eq!(server.received(), 200);
    assert_eq!(report.status_counts.get(&404), Some(&100));
    assert_eq!(report.successes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_moves_on_when_the_server_retires_a_connection() {
    // Each connection serves 10 requests, then the server sends GOAWAY. The run goes on over
    // new connections; a request caught by the GOAWAY counts as a `closed` error (h2 cannot
    // tell whether the server processed it), never twice.
    let server = h2_backend()
        .requests_per_connection(10)
        .start()
        .await
        .unwrap();
    let mut spec = spec(format!("http://{}/", server.addr()), 3, 300);
    spec.http2 = true;
    let report = run(&spec).await;
    assert_eq!(report.requests, 300);
    assert_eq!(
        report.errors.total, report.errors.closed,
        "{:?}",
        report.error_examples
    );
    // Far more than the 30 the first three connections could serve.
    assert!(report.responses > 100, "{}", report.responses);
    let seen = server.received() as u64;
    assert!(seen >= report.responses && seen <= 300, "{seen}");
}

#[tokio::test]
async fn refuses_what_cannot_be_sent() {
    // (https:// is supported: see tests/tls.rs.)
    for url in ["ftp://x/", "127.0.0.1:80", "http:///"] {
        assert!(generate(&LoadSpec::new(url)).await.is_err(), "{url}");
    }
    let mut bad = LoadSpec::new("http://127.0.0.1:1/");
    bad.headers = vec![("Bad Name".into(), "v".into())];
    assert!(generate(&bad).await.is_err());
    let mut bad = LoadSpec::new("http://127.0.0.1:1/");
    bad.connections = 0;
    assert!(generate(&bad).await.is_err());
    let mut bad = LoadSpec::new("http://127.0.0.1:1/");
    bad.rate = Some(f64::NAN);
    assert!(generate(&bad).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_prints_the_documented_json() {
    let server = Plan::new(Mode::KeepAlive)
        .backends(2)
        .status_every(2, 404)
        .start()
        .await;
    let out = common::rondo_output(
        [
            "bench",
            "--json",
            "-c",
            "2",
            "-n",
            "100",
            "--threads",
            "2",
            "--backend-header",
            "x-backend",
            "-m",
            "POST",
            "-b",
            "payload",
            "-H",
            "X-Test: yes",
        ]
        .into_iter()
        .map(String::from)
        .chain([server.url()])
        .collect(),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for field in [
        "url",
        "protocol",
        "connections",
        "target_rate",
        "duration_s",
        "interrupted",
        "requests",
        "responses",
        "successes",
        "success_rate",
        "requests_per_sec",
        "status_counts",
        "errors",
        "error_examples",
        "latency_ms",
        "bytes_read",
        "backend_header",
        "backends",
        "backend_missing",
        "grpc_method",
        "grpc_status_counts",
    ] {
        assert!(json.get(field).is_some(), "missing {field}: {json}");
    }
    assert_eq!(json["requests"], 100);
    assert_eq!(json["status_counts"]["200"], 50);
    assert_eq!(json["status_counts"]["404"], 50);
    assert_eq!(json["success_rate"], 0.5);
    for kind in ["connect", "timeout", "closed", "other", "total"] {
        assert_eq!(json["errors"][kind], 0, "{kind}");
    }
    for p in [
        "min", "mean", "stdev", "p50", "p90", "p95", "p99", "p99_9", "max",
    ] {
        assert!(json["latency_ms"][p].is_f64(), "{p}");
    }
    assert_eq!(json["backends"].as_array().unwrap().len(), 2);
    assert_eq!(json["backends"][0]["share"], 0.5);
    assert!(json["grpc_method"].is_null());
    assert_eq!(json["grpc_status_counts"], serde_json::json!({}));
    assert_eq!(server.bodies.lock().unwrap().len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_prints_a_text_report_and_explains_bad_input() {
    let server = Plan::new(Mode::KeepAlive).start().await;
    let out = common::rondo_output(vec![
        "bench".into(),
        "-n".into(),
        "50".into(),
        "--threads".into(),
        "1".into(),
        server.url(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for line in [
        "Requests    50 finished",
        "Status      200: 50",
        "Errors      none",
        "p99.9",
    ] {
        assert!(text.contains(line), "{line:?} not in\n{text}");
    }

    let out = common::rondo_output(vec![
        "bench".into(),
        "-H".into(),
        "no colon".into(),
        server.url(),
    ])
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Name: value"));
}
