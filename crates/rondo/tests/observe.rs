//! What an operator sees of each request: the access log file, request ids, error pages,
//! header rules (checked on the bytes at the backend and at the client) and the response
//! counters of `/metrics`.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(10);

/// A proxy over `b` writing a JSON access log to `path`.
fn json_access_log(b: &Backend, path: &std::path::Path) -> ConfigBuilder {
    config(&[(b, 1.0)]).set(
        "access_log",
        Section::new()
            .set("path", path.display().to_string())
            .set("format", "json"),
    )
}

/// Drains backend `id` of upstream `app` through the admin API.
async fn drain(proxy: &Proxy, id: &str) {
    let path = format!("/api/v1/upstreams/app/backends/{id}/drain");
    let (status, body) = admin_call(proxy.admin_addr(), "POST", &path, None, "").await;
    assert_eq!(status, 200, "{body}");
}

fn request(id: Option<&str>) -> Vec<u8> {
    let id = id.map_or(String::new(), |id| format!("X-Request-Id: {id}\r\n"));
    format!(
        "GET /page?q=1 HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: probe/1.0\r\n\
         Referer: http://from.test/\r\nX-Debug: 1\r\n{id}Connection: close\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_file_has_a_json_line_per_request_with_its_request_id() {
    let b = mock("b1").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let proxy = start(&json_access_log(&b, &path));
    let reply = raw(web(&proxy), &request(Some("abc-123")), LIMIT).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    raw(web(&proxy), &request(None), LIMIT).await;

    let seen = b.seen();
    assert_eq!(
        seen[0].header("x-request-id"),
        Some("abc-123"),
        "a valid id is kept"
    );
    let generated = seen[1].header("x-request-id").unwrap().to_owned();
    assert_eq!(generated.len(), 32, "{generated}");

    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    eventually(LIMIT, "two access lines", || read().lines().count() == 2).await;
    let lines: Vec<serde_json::Value> = read()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let first = &lines[0];
    assert_eq!(first["request_method"], "GET");
    assert_eq!(first["request_uri"], "/page?q=1");
    assert_eq!(first["server_protocol"], "HTTP/1.1");
    assert_eq!(first["status"], 200);
    assert_eq!(first["remote_addr"], "127.0.0.1");
    assert_eq!(first["http_user_agent"], "probe/1.0");
    assert_eq!(first["http_referer"], "http://from.test/");
    assert_eq!(first["listener"], "web");
    assert_eq!(first["upstream"], "app");
    assert_eq!(first["upstream_addr"], serde_json::json!(["b1"]));
    assert_eq!(first["upstream_attempts"], 1);
    assert_eq!(first["request_id"], "abc-123");
    assert_eq!(first["request_length"], request(Some("abc-123")).len());
    assert!(first["bytes_sent"].as_u64().unwrap() > 0);
    assert!(first["request_time_us"].as_u64().unwrap() > 0);
    assert!(first["upstream_header_time_us"].as_u64().is_some());
    assert!(first["upstream_connect_time_us"].as_u64().is_some());
    assert!(
        first["upstream_connect_time_us"].as_u64() <= first["upstream_header_time_us"].as_u64()
    );
    assert_eq!(lines[1]["request_id"], generated.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_requests_log_their_bytes_and_connect_time() {
    let b = mock("b1").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let proxy = start(&json_access_log(&b, &path));
    let mut client = H2Client::connect(web(&proxy)).await;
    let reply = client.send("GET", "/h2", b"").await;
    assert_eq!(reply.status, 200);
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    eventually(LIMIT, "an access line", || read().lines().count() == 1).await;
    let line: serde_json::Value = serde_json::from_str(read().trim()).unwrap();
    assert_eq!(line["server_protocol"], "HTTP/2.0");
    assert_eq!(line["bytes_sent"], reply.body.len(), "{line}");
    assert!(
        line["upstream_connect_time_us"].as_u64().is_some(),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn error_pages_carry_the_request_id_and_never_the_backend_or_the_os_error() {
    let b = mock("b1").await;
    let proxy = start(&config(&[(&b, 1.0)]));
    b.kill().await;
    let reply = raw(web(&proxy), &request(Some("rid-1")), LIMIT).await;
    assert!(reply.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{reply}");
    assert!(reply.contains("\r\nx-request-id: rid-1\r\n"), "{reply}");
    let body = reply.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(body, "502 Bad Gateway (upstream app)\nrequest id: rid-1\n");

    // Drained (a lone backend is never ejected): nothing is available.
    drain(&proxy, "b1").await;
    let reply = raw(web(&proxy), &request(None), LIMIT).await;
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    let body = reply.split("\r\n\r\n").nth(1).unwrap();
    assert!(
        body.starts_with("503 Service Unavailable (upstream app)\nrequest id: "),
        "{body}"
    );
    assert!(!reply.contains("127.0.0.1"), "{reply}");
}

#[tokio::test(flavor = "multi_thread")]
async fn header_rules_change_what_the_backend_and_the_client_receive() {
    let b = mock("b1").await;
    let request_headers = Section::new()
        .set(
            "set",
            Section::new()
                .set("x-real-ip", "$remote_addr")
                .set("x-trace", "$host/$request_id"),
        )
        .set("remove", vec!["x-debug"]);
    let response_headers = Section::new()
        .set("set", Section::new().set("x-frame-options", "DENY"))
        .set("remove", vec!["x-backend"]);
    let proxy = start(
        &config(&[(&b, 1.0)])
            .listeners_set("request_headers", request_headers)
            .listeners_set("response_headers", response_headers),
    );
    let reply = raw(web(&proxy), &request(Some("r-9")), LIMIT).await;
    let head = reply.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{reply}");
    assert!(head.contains("\r\nx-frame-options: deny"), "{head}");
    assert!(!head.contains("x-backend"), "{head}");

    let seen = &b.seen()[0];
    assert_eq!(seen.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-trace"), Some("shop.test/r-9"));
    assert_eq!(seen.header("x-debug"), None);
    assert_eq!(seen.header("user-agent"), Some("probe/1.0"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_routes_header_rules_apply_after_the_listeners_and_only_to_its_requests() {
    let (web_b, api_b) = (mock("web").await, mock("api").await);
    let rules = |set: Section, remove: &[&str]| {
        Section::new().set("set", set).set(
            "remove",
            remove.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        )
    };
    let route = Section::new()
        .set("path_prefix", "/api/")
        .set("upstream", "api")
        .set(
            "request_headers",
            rules(
                Section::new()
                    .set("x-layer", "route $request_id")
                    .set("x-route", "api"),
                &["user-agent"],
            ),
        )
        .set(
            "response_headers",
            rules(
                Section::new().set("cache-control", "no-store"),
                &["x-backend"],
            ),
        );
    let config = ConfigBuilder::new()
        .listener_with(
            Section::new()
                .set("name", "web")
                .set("bind", "127.0.0.1:0")
                .set("upstream", "web")
                .set(
                    "request_headers",
                    rules(Section::new().set("x-layer", "listener"), &["x-debug"]),
                )
                .set(
                    "response_headers",
                    rules(Section::new().set("x-frame-options", "DENY"), &[]),
                )
                .set("routes", vec![route]),
        )
        .upstream(UpstreamBuilder::new("web").backend("web", web_b.addr(), 1.0))
        .upstream(UpstreamBuilder::new("api").backend("api", api_b.addr(), 1.0));
    let proxy = start(&config);
    let ask = async |path: &str| {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: probe/1.0\r\n\
             X-Debug: 1\r\nX-Request-Id: r-7\r\nConnection: close\r\n\r\n"
        );
        let reply = raw(web(&proxy), request.as_bytes(), LIMIT).await;
        let head = reply.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{reply}");
        // Every header line ends with CRLF, the last one too.
        head + "\r\n"
    };

    // Matched by the route: the listener's rules, then the route's.
    let head = ask("/api/users").await;
    assert!(head.contains("\r\nx-frame-options: deny\r\n"), "{head}");
    assert!(head.contains("\r\ncache-control: no-store\r\n"), "{head}");
    assert!(!head.contains("x-backend"), "{head}");
    let seen = &api_b.seen()[0];
    assert_eq!(
        seen.header("x-layer"),
        Some("route r-7"),
        "the route's set wins"
    );
    assert_eq!(seen.header("x-route"), Some("api"));
    assert_eq!(
        seen.header("x-debug"),
        None,
        "the listener's removal applies"
    );
    assert_eq!(
        seen.header("user-agent"),
        None,
        "the route's removal applies"
    );

    // Not matched: the listener's rules alone.
    let head = ask("/index.html").await;
    assert!(head.contains("\r\nx-frame-options: deny\r\n"), "{head}");
    assert!(head.contains("\r\nx-backend: web\r\n"), "{head}");
    assert!(!head.contains("cache-control"), "{head}");
    let seen = &web_b.seen()[0];
    assert_eq!(seen.header("x-layer"), Some("listener"));
    assert_eq!(seen.header("x-route"), None);
    assert_eq!(seen.header("x-debug"), None);
    assert_eq!(seen.header("user-agent"), Some("probe/1.0"));
    assert_eq!(api_b.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_every_response_by_who_made_it() {
    let b = mock("b1").await;
    let proxy = start(&config(&[(&b, 1.0)]));
    assert_eq!(get(web(&proxy), "/").await.status, 200);
    let bad = raw(
        web(&proxy),
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
        LIMIT,
    )
    .await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    b.kill().await;
    assert_eq!(get(web(&proxy), "/").await.status, 502);
    drain(&proxy, "b1").await;
    assert_eq!(get(web(&proxy), "/").await.status, 503);

    let admin = proxy.admin_addr();
    let value = async |name: &str, labels: &[(&str, &str)]| {
        metric(admin, name, labels)
            .await
            .unwrap_or_else(|| panic!("no {name} {labels:?} in /metrics"))
    };
    let responses = async |upstream, code, source| {
        value(
            "rondo_responses_total",
            &[
                ("listener", "web"),
                ("upstream", upstream),
                ("code", code),
                ("source", source),
            ],
        )
        .await
    };
    assert_eq!(responses("app", "200", "backend").await, 1.0);
    assert_eq!(responses("", "400", "proxy").await, 1.0);
    assert_eq!(responses("app", "502", "proxy").await, 1.0);
    assert_eq!(responses("app", "503", "proxy").await, 1.0);
    assert_eq!(
        value("rondo_connections_accepted_total", &[("listener", "web")]).await,
        4.0
    );
    assert!(value("rondo_sent_bytes_total", &[("listener", "web")]).await > 0.0);
    assert_eq!(
        value(
            "rondo_upstream_connections_opened_total",
            &[("upstream", "app")]
        )
        .await,
        2.0
    );
    assert_eq!(
        value(
            "rondo_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        )
        .await,
        1.0
    );
    assert!(value("process_resident_memory_bytes", &[]).await > 0.0);

    let names =
        prometheus::assert_names_follow_the_conventions(&get(admin, "/metrics").await.text());
    for family in [
        "rondo_responses_total",
        "rondo_requests_total",
        "rondo_request_duration_seconds",
        "rondo_backend_up",
        "rondo_circuit_breaker_state",
        "rondo_upstream_connections_idle",
        "rondo_build_info",
        "process_open_fds",
    ] {
        assert!(names.contains(family), "{family} checked: {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_idle_gauge_follows_pooled_backend_connections() {
    let b = mock("b1").await;
    let proxy = start(&config(&[(&b, 1.0)]));
    let admin = proxy.admin_addr();
    let idle = async || {
        metric(
            admin,
            "rondo_upstream_connections_idle",
            &[("upstream", "app")],
        )
        .await
        .unwrap_or(f64::NAN)
    };
    assert_eq!(idle().await, 0.0);
    // Requests at once need several backend connections; once they are answered every
    // connection opened is pooled (the backend closed none), and the gauge says so exactly.
    for _ in 0..3 {
        let (a, c, d) = tokio::join!(
            get(web(&proxy), "/"),
            get(web(&proxy), "/"),
            get(web(&proxy), "/")
        );
        assert_eq!((a.status, c.status, d.status), (200, 200, 200));
    }
    let opened = metric(
        admin,
        "rondo_upstream_connections_opened_total",
        &[("upstream", "app")],
    )
    .await
    .unwrap_or(f64::NAN);
    assert!(opened >= 1.0, "{opened}");
    eventually_async(LIMIT, "every opened connection counted idle", async || {
        idle().await == opened
    })
    .await;
    // The backend goes away: the sweep drops its connections, and the gauge goes back to 0.
    b.kill().await;
    eventually_async(LIMIT, "the gauge back to 0", async || idle().await == 0.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sample_alerts_and_grafana_dashboard_use_only_metrics_rondo_exports() {
    let b = mock("b1").await;
    let proxy = start(&config(&[(&b, 1.0)]));
    assert_eq!(get(web(&proxy), "/").await.status, 200);
    let text = get(proxy.admin_addr(), "/metrics").await.text();
    let exported = |name: &str| {
        text.lines().any(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    for file in ["alerts.yml", "grafana-dashboard.json"] {
        let doc = std::fs::read_to_string(root.join(file)).unwrap();
        let names: std::collections::BTreeSet<&str> = doc
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("rondo_") || w.starts_with("process_"))
            .collect();
        assert!(names.len() >= 5, "{file}: {names:?}");
        for name in names {
            assert!(
                exported(name),
                "{file} uses {name}, which /metrics does not export:\n{text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_rondo_gives_itself_are_logged_with_the_bytes_they_sent() {
    let b = mock("b1").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let proxy = start(&json_access_log(&b, &path).listeners_set("header_timeout", "1s"));
    let huge = format!(
        "GET /big HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "x".repeat(20_000)
    );
    let cases: [(&[u8], u16); 3] = [
        (huge.as_bytes(), 431),
        (b"GET /bad\x01 HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        // Half a head, then silence: the header timeout answers.
        (b"GET /slow HTTP/1.1\r\nHost: t\r\n", 408),
    ];
    let mut replies = Vec::new();
    for (bytes, status) in cases {
        let reply = raw(web(&proxy), bytes, LIMIT).await;
        assert!(reply.starts_with(&format!("HTTP/1.1 {status}")), "{reply}");
        replies.push(reply);
    }
    // rondo's own 502 for a backend that is gone, and its 503 once none is in rotation.
    b.kill().await;
    let reply = raw(web(&proxy), &request(None), LIMIT).await;
    assert!(reply.starts_with("HTTP/1.1 502"), "{reply}");
    replies.push(reply);
    drain(&proxy, "b1").await;
    let reply = raw(web(&proxy), &request(None), LIMIT).await;
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    replies.push(reply);

    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    eventually(LIMIT, "five access lines", || read().lines().count() == 5).await;
    let lines: Vec<serde_json::Value> = read()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (line, reply) in lines.iter().zip(&replies) {
        let status = reply[9..12].parse::<u64>().unwrap();
        assert_eq!(line["status"], status, "{line}");
        assert_eq!(line["bytes_sent"], reply.len(), "{line}");
        assert_eq!(line["listener"], "web", "{line}");
    }
    assert_eq!(lines[0]["request_uri"], "/big");
    assert_eq!(lines[0]["request_method"], "GET");
    assert_eq!(lines[2]["request_uri"], "/slow");
    assert_eq!(lines[3]["upstream"], "app");
}
