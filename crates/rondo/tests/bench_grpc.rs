//! `rondo bench --grpc-unary` and `--backend-header` over HTTP/2, against real servers on
//! loopback: the tests' tonic backend (`common/grpc.rs`) directly, and rondo in front of
//! several of them (h2c) or of HTTP/1.1 mocks. Counts are exact: every call the generator
//! reports arrived, with the `grpc-status` and backend it reports. Kept apart from
//! `bench.rs` so that file's tests do not compile tonic.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;
#[path = "common/grpc.rs"]
mod grpc_backend;
#[path = "../src/tls/test_certs.rs"]
mod test_certs;

use common::*;
use grpc_backend::{GrpcBackend, SAY};
use rondo_bench::{GrpcStatus, LoadSpec, Report, generate};

/// A gRPC load of `calls` calls to `Say` over `connections` connections at `url`.
fn grpc_spec(url: String, connections: usize, calls: u64) -> LoadSpec {
    let mut spec = LoadSpec::new(url);
    spec.connections = connections;
    spec.requests = Some(calls);
    spec.grpc_unary = Some(SAY.into());
    spec
}

async fn run(spec: &LoadSpec) -> Report {
    generate(spec).await.unwrap()
}

/// `report.grpc_status_counts` as (code, calls) pairs, `None` for "missing".
fn grpc_counts(report: &Report) -> Vec<(Option<u32>, u64)> {
    report
        .grpc_status_counts
        .iter()
        .map(|(status, &n)| match status {
            GrpcStatus::Code(code) => (Some(*code), n),
            GrpcStatus::Missing => (None, n),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_grpc_calls_by_the_status_in_trailers_and_in_headers() {
    let backend = GrpcBackend::start("g1", None).await;
    // Successful calls end with grpc-status 0 in the trailers.
    let mut spec = grpc_spec(format!("http://{}", backend.addr()), 3, 200);
    // A request message of the backend's type (field 1, "hi"), framed by the generator.
    spec.body = bytes::Bytes::from_static(b"\x0a\x02hi");
    let report = run(&spec).await;
    assert_eq!(report.errors.total, 0, "{:?}", report.error_examples);
    assert_eq!(report.protocol, "gRPC over HTTP/2");
    assert_eq!(report.grpc_method.as_deref(), Some(SAY));
    assert_eq!(grpc_counts(&report), [(Some(0), 200)]);
    assert_eq!(report.successes, 200);
    assert_eq!(backend.calls(), 200);

    // A failing service answers "trailers-only": grpc-status 14 in the headers of an
    // HTTP 200. Those are responses, not successes.
    backend.fail_with(14);
    let report = run(&grpc_spec(format!("http://{}/", backend.addr()), 2, 50)).await;
    assert_eq!(report.errors.total, 0, "{:?}", report.error_examples);
    assert_eq!(grpc_counts(&report), [(Some(14), 50)]);
    assert_eq!(report.status_counts.get(&200), Some(&50));
    assert_eq!(report.successes, 0);
    assert_eq!(backend.calls(), 250);
    let text = report.render_text();
    assert!(text.contains("gRPC status 14 UNAVAILABLE: 50"), "{text}");
    assert!(text.contains("(0 of 50 had grpc-status 0)"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_without_grpc_status_counts_as_missing() {
    // Something that is not a gRPC server (here an HTTP/1.1 mock behind rondo, reached
    // over HTTP/2) answers a call without any grpc-status.
    let plain = mock("plain").await;
    let proxy = start(&config(&[(&plain, 1.0)]));
    let report = run(&grpc_spec(format!("http://{}", web(&proxy)), 1, 20)).await;
    assert_eq!(report.errors.total, 0, "{:?}", report.error_examples);
    assert_eq!(grpc_counts(&report), [(None, 20)]);
    assert_eq!(report.successes, 0);
    assert_eq!(plain.hits(), 20);
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["grpc_status_counts"]["missing"], 20);
    assert_eq!(json["grpc_method"], SAY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_through_rondo_shows_every_call_picked_in_turn() {
    let mut backends = Vec::new();
    for i in 1..=4 {
        backends.push(GrpcBackend::start(&format!("g{i}"), None).await);
    }
    let upstream = backends
        .iter()
        .fold(UpstreamBuilder::new("app"), |u, b| {
            u.backend(b.name(), b.addr(), 1.0)
        })
        .set("protocol", "h2c")
        .health_check(Section::disabled());
    let proxy = start(&proxy_config(upstream));
    let mut spec = grpc_spec(format!("http://{}", web(&proxy)), 1, 1000);
    spec.backend_header = Some("x-backend".into());
    let report = run(&spec).await;
    assert_eq!(report.errors.total, 0, "{:?}", report.error_examples);
    assert_eq!(grpc_counts(&report), [(Some(0), 1000)]);
    // One client connection, yet each call is its own pick: exactly a quarter each.
    let shares: Vec<(&str, u64)> = report
        .backends
        .iter()
        .map(|b| (b.value.as_str(), b.responses))
        .collect();
    assert_eq!(shares, [("g1", 250), ("g2", 250), ("g3", 250), ("g4", 250)]);
    assert_eq!(report.backend_missing, 0);
    for b in &backends {
        assert_eq!(b.calls(), 250, "{}", b.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_shows_an_http2_connection_spread_per_request() {
    // `rondo bench --http2 -c 1 --backend-header`: one HTTP/2 connection to rondo, three
    // backends, and the printed table says each got a third of the requests.
    let b: Vec<_> = [mock("a").await, mock("b").await, mock("c").await].into();
    let proxy = start(&config(&[(&b[0], 1.0), (&b[1], 1.0), (&b[2], 1.0)]));
    let out = rondo_output(vec![
        "bench".into(),
        "--http2".into(),
        "-c".into(),
        "1".into(),
        "-n".into(),
        "300".into(),
        "--threads".into(),
        "1".into(),
        "--backend-header".into(),
        "x-backend".into(),
        format!("http://{}/", web(&proxy)),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("Backends    by response header x-backend"),
        "{text}"
    );
    for name in ["a", "b", "c"] {
        let row = format!("{name:<9}   33.33 %         100");
        assert!(text.contains(&row), "{row:?} not in\n{text}");
    }
    for backend in &b {
        assert_eq!(backend.hits(), 100);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_makes_grpc_calls_over_tls_and_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = test_certs::self_signed(&["localhost"]).write(dir.path(), "self");
    let backend = GrpcBackend::start("g1", None).await;
    let upstream = UpstreamBuilder::new("app")
        .backend("g1", backend.addr(), 1.0)
        .set("protocol", "h2c")
        .health_check(Section::disabled());
    let mut certificate = toml::Table::new();
    certificate.insert("cert".into(), cert.display().to_string().into());
    certificate.insert("key".into(), key.display().to_string().into());
    let mut tls = toml::Table::new();
    tls.insert(
        "certificates".into(),
        toml::Value::Array(vec![certificate.into()]),
    );
    let proxy = start(&proxy_config(upstream).listeners_set("tls", tls));
    let url = format!("https://localhost:{}", web(&proxy).port());
    let out = rondo_output(vec![
        "bench".into(),
        "--json".into(),
        "-k".into(),
        "-c".into(),
        "2".into(),
        "-n".into(),
        "100".into(),
        "--threads".into(),
        "1".into(),
        "--grpc-unary".into(),
        "echo.Echo/Say".into(),
        url,
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["protocol"], "gRPC over HTTP/2");
    assert_eq!(json["grpc_method"], SAY);
    assert_eq!(json["grpc_status_counts"]["0"], 100, "{json}");
    assert_eq!(json["successes"], 100);
    assert_eq!(backend.calls(), 100);
}

#[tokio::test]
async fn the_command_explains_a_bad_grpc_method_or_url() {
    for (args, says) in [
        (
            vec!["--grpc-unary", "Say", "http://127.0.0.1:1"],
            "expected /package.Service/Method",
        ),
        (
            vec!["--grpc-unary", "/echo.Echo/Say", "http://127.0.0.1:1/x"],
            "the URL is only scheme, host and port",
        ),
        (
            vec![
                "--grpc-unary",
                "/echo.Echo/Say",
                "-m",
                "GET",
                "http://127.0.0.1:1",
            ],
            "cannot be used with",
        ),
    ] {
        let mut all = vec!["bench".to_owned()];
        all.extend(args.iter().map(|a| a.to_string()));
        let out = rondo_output(all).await;
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{says:?} not in {stderr}");
    }
}
