//! The admin API over real sockets: statistics and metrics with exact values after known
//! traffic, mutations with and without the token, bad input, `rondo status`, and the
//! dashboard.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{
    Client, ConfigBuilder, Section, admin_call as call, app, browser, config, eventually_async,
    mock, proxy_config, start, web,
};
use serde_json::{Value, json};

async fn stats(addr: SocketAddr) -> Value {
    let (status, body) = call(addr, "GET", "/api/v1/stats", None, "").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn backend<'a>(stats: &'a Value, id: &str) -> &'a Value {
    stats["upstreams"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("no backend {id} in {stats}"))
}

/// Sends `n` sequential GETs on one connection; returns the backends that answered.
async fn traffic(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut c = Client::connect(addr).await;
    let mut out = Vec::new();
    for _ in 0..n {
        let r = c.get("/").await;
        out.push(format!("{}:{}", r.backend(), r.status));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_report_exact_counts_after_known_traffic() {
    let a = mock("a").await;
    let b = mock("b").await;
    b.set_delay(Duration::from_millis(20));
    let proxy = start(&config(&[(&a, 1.0), (&b, 1.5)]));
    let admin = proxy.admin_addr();

    let (status, body) = call(admin, "GET", "/healthz", None, "").await;
    assert_eq!((status, body.as_str()), (200, "ok"));

    // Weights 1 : 1.5 are 2 : 3: ten requests are 4 to a and 6 to b.
    traffic(web(&proxy), 10).await;
    // A request's lease ends just after its response reaches the client: read the statistics
    // once the last one has.
    let mut s = stats(admin).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ["a", "b"]
        .iter()
        .any(|id| backend(&s, id)["current_connections"] != 0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "requests never ended: {s}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        s = stats(admin).await;
    }
    let up = &s["upstreams"][0];
    assert_eq!(up["name"], "app");
    assert_eq!(up["algorithm"], "smooth-weighted");
    assert_eq!(up["mode"], "primary");
    assert_eq!(up["total_servers"], 2);
    assert_eq!(up["healthy_servers"], 2);
    assert_eq!(up["total_requests"], 10);
    assert_eq!(up["retries"], 0);
    assert_eq!(
        up["circuit_breaker_states"],
        json!({"a": "closed", "b": "closed"})
    );
    assert!(up["uptime_seconds"].as_f64().unwrap() > 0.0);
    let rps = up["requests_per_second"].as_f64().unwrap();
    let expect = 10.0 / up["uptime_seconds"].as_f64().unwrap();
    assert!((rps - expect).abs() < 1e-6, "{rps} vs {expect}");

    let (ba, bb) = (backend(&s, "a"), backend(&s, "b"));
    assert_eq!(ba["address"], a.addr().to_string());
    assert_eq!(ba["total_requests"], 4);
    assert_eq!(bb["total_requests"], 6);
    assert_eq!(bb["weight"], 1.5);
    assert_eq!(bb["current_weight"], 1.5);
    for (x, n) in [(ba, 4), (bb, 6)] {
        assert_eq!(x["state"], "up");
        assert_eq!(x["healthy"], true);
        assert_eq!(x["success_rate"], 1.0);
        assert_eq!(x["current_connections"], 0);
        assert_eq!(x["breaker"], "closed");
        assert_eq!(x["status_codes"], json!({"200": n}));
    }
    // b answers after 20 ms: its percentiles say so (bucket midpoints, within 7%). Only the
    // floor is certain — a loaded machine makes every request slower, a or b.
    for key in [
        "p50_latency_ms",
        "p95_latency_ms",
        "p99_latency_ms",
        "avg_response_time_ms",
    ] {
        let v = bb[key].as_f64().unwrap();
        assert!(v >= 18.6, "{key} = {v}");
    }
    let p = |x: &Value, k: &str| x[k].as_f64().unwrap();
    for x in [ba, bb] {
        assert!(p(x, "p50_latency_ms") <= p(x, "p95_latency_ms"), "{x}");
        assert!(p(x, "p95_latency_ms") <= p(x, "p99_latency_ms"), "{x}");
    }
    assert!(bb["load_score"].as_f64().unwrap() > 0.0);
}

/// Parses /metrics with a real exposition-format parser: (name, sorted labels) → value.
async fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, body) = call(addr, "GET", "/metrics", None, "").await;
    assert_eq!(status, 200, "{body}");
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let mut out = HashMap::new();
    for s in scrape.samples {
        let mut labels: Vec<_> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let key = format!("{}{{{}}}", s.metric, labels.join(","));
        match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => {
                out.insert(key, v);
            }
            prometheus_parse::Value::Histogram(buckets) => {
                for bucket in buckets {
                    out.insert(format!("{key}le={}", bucket.less_than), bucket.count);
                }
            }
            prometheus_parse::Value::Summary(_) => {}
        }
    }
    out
}

/// Scrapes until `key` reaches `value` (the last request's outcome is recorded), then
/// returns that scrape.
async fn settled_scrape(addr: SocketAddr, key: &str, value: f64) -> HashMap<String, f64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = scrape(addr).await;
        if m.get(key) == Some(&value) {
            return m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{key} never reached {value}: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_every_attempt_retry_and_breaker_exactly() {
    let a = mock("a").await;
    let b = mock("b").await;
    b.set_status(500);
    let proxy = start(&config(&[(&a, 1.0), (&b, 1.0)]));
    let admin = proxy.admin_addr();

    // Round robin: a, b, a, b, … b's 500 is not retried (only 502/503/504 are).
    let seen = traffic(web(&proxy), 8).await;
    assert_eq!(seen, ["a:200", "b:500"].repeat(4));
    // An outcome is recorded as its response ends, which the client may see first.
    settled_scrape(
        admin,
        "rondo_requests_total{backend=b,code=500,upstream=app}",
        4.0,
    )
    .await;
    // The attempt is recorded just before its lease ends: the in-flight gauge follows.
    let m = settled_scrape(
        admin,
        "rondo_backend_in_flight{backend=b,upstream=app}",
        0.0,
    )
    .await;
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in {m:?}"));
    assert_eq!(
        get("rondo_requests_total{backend=a,code=200,upstream=app}"),
        4.0
    );
    assert_eq!(
        get("rondo_requests_total{backend=b,code=500,upstream=app}"),
        4.0
    );
    assert_eq!(
        get("rondo_request_duration_seconds_count{backend=a,upstream=app}"),
        4.0
    );
    assert_eq!(
        get("rondo_request_duration_seconds{backend=b,upstream=app}le=inf"),
        4.0
    );
    assert_eq!(get("rondo_backend_up{backend=a,upstream=app}"), 1.0);
    assert_eq!(get("rondo_backend_up{backend=b,upstream=app}"), 1.0);
    assert_eq!(get("rondo_backend_in_flight{backend=b,upstream=app}"), 0.0);
    assert_eq!(
        get("rondo_circuit_breaker_state{backend=b,upstream=app}"),
        0.0
    );
    assert_eq!(get("rondo_retries_total{reason=status,upstream=app}"), 0.0);

    // Now b answers 503: a's turn, then b's 503 is retried on a. That is b's fifth failure
    // in a row, which opens its breaker (threshold 5): its 500s counted, a answering well
    // meanwhile (b was the odd one out, see `count_all_5xx`).
    b.set_status(503);
    let seen = traffic(web(&proxy), 2).await;
    assert_eq!(seen, ["a:200", "a:200"]);
    let m = settled_scrape(
        admin,
        "rondo_request_duration_seconds_count{backend=a,upstream=app}",
        6.0,
    )
    .await;
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in {m:?}"));
    assert_eq!(
        get("rondo_requests_total{backend=a,code=200,upstream=app}"),
        6.0
    );
    assert_eq!(
        get("rondo_requests_total{backend=b,code=503,upstream=app}"),
        1.0
    );
    assert_eq!(get("rondo_retries_total{reason=status,upstream=app}"), 1.0);
    assert_eq!(
        get("rondo_circuit_breaker_state{backend=b,upstream=app}"),
        2.0
    );
    assert_eq!(get("rondo_backend_up{backend=b,upstream=app}"), 0.0);
    assert_eq!(
        get("rondo_request_duration_seconds_count{backend=b,upstream=app}"),
        5.0
    );
    assert_eq!(
        get("rondo_request_duration_seconds_count{backend=a,upstream=app}"),
        6.0
    );

    let s = stats(admin).await;
    assert_eq!(s["upstreams"][0]["total_requests"], 11);
    assert_eq!(s["upstreams"][0]["retries"], 1);
    assert_eq!(s["upstreams"][0]["healthy_servers"], 1);
    assert_eq!(backend(&s, "b")["state"], "breaker_open");
    assert_eq!(backend(&s, "b")["breaker"], "open");
    assert_eq!(backend(&s, "b")["success_rate"], 0.0);
    assert_eq!(s["upstreams"][0]["circuit_breaker_states"]["b"], "open");
}

const TOKEN: &str = "s3cret-token";

fn with_token(config: ConfigBuilder) -> ConfigBuilder {
    config.admin("token", TOKEN)
}

#[tokio::test(flavor = "multi_thread")]
async fn mutations_need_the_token_and_change_the_pool() {
    let a = mock("a").await;
    let c = mock("c").await;
    let proxy = start(&with_token(config(&[(&a, 1.0)])));
    let admin = proxy.admin_addr();
    let add = json!({"address": c.addr().to_string(), "weight": 3, "id": "c"}).to_string();
    let base = "/api/v1/upstreams/app/backends";

    // Without the token, or with a wrong one: 401 and nothing changes.
    for token in [None, Some("wrong"), Some("s3cret-token2")] {
        let (status, body) = call(admin, "POST", base, token, &add).await;
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("admin token"), "{body}");
        assert!(!body.contains(TOKEN));
        let (status, _) = call(admin, "POST", &format!("{base}/a/drain"), token, "").await;
        assert_eq!(status, 401);
    }
    let s = stats(admin).await;
    assert_eq!(s["upstreams"][0]["total_servers"], 1);
    assert_eq!(backend(&s, "a")["state"], "up");

    // Add c with weight 3: of the next 8 requests a gets 2 and c gets 6.
    let (status, body) = call(admin, "POST", base, Some(TOKEN), &add).await;
    assert_eq!(status, 201, "{body}");
    let seen = traffic(web(&proxy), 8).await;
    assert_eq!(seen.iter().filter(|s| *s == "c:200").count(), 6, "{seen:?}");
    let s = stats(admin).await;
    assert_eq!(s["upstreams"][0]["total_servers"], 2);
    assert_eq!(backend(&s, "c")["weight"], 3.0);
    assert_eq!(backend(&s, "c")["total_requests"], 6);

    // Weight 1: equal shares.
    let (status, body) = call(
        admin,
        "PATCH",
        &format!("{base}/c"),
        Some(TOKEN),
        r#"{"weight": 1}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen = traffic(web(&proxy), 4).await;
    assert_eq!(seen.iter().filter(|s| *s == "c:200").count(), 2, "{seen:?}");

    // Drain c: everything goes to a; enable: shares again.
    let (status, _) = call(admin, "POST", &format!("{base}/c/drain"), Some(TOKEN), "").await;
    assert_eq!(status, 200);
    assert_eq!(backend(&stats(admin).await, "c")["state"], "draining");
    assert_eq!(traffic(web(&proxy), 4).await, ["a:200"].repeat(4));
    let (status, _) = call(admin, "POST", &format!("{base}/c/enable"), Some(TOKEN), "").await;
    assert_eq!(status, 200);
    assert_eq!(backend(&stats(admin).await, "c")["state"], "up");
    let seen = traffic(web(&proxy), 4).await;
    assert_eq!(seen.iter().filter(|s| *s == "c:200").count(), 2, "{seen:?}");

    // Remove c: gone from the stats, no more traffic.
    let (status, _) = call(admin, "DELETE", &format!("{base}/c"), Some(TOKEN), "").await;
    assert_eq!(status, 200);
    let s = stats(admin).await;
    assert_eq!(s["upstreams"][0]["total_servers"], 1);
    assert_eq!(traffic(web(&proxy), 3).await, ["a:200"].repeat(3));
    assert_eq!(c.hits(), 6 + 2 + 2);

    // Reads need no token on loopback.
    let (status, _) = call(admin, "GET", "/metrics", None, "").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_backend_finishes_its_in_flight_request() {
    let c = mock("c").await;
    c.set_delay(Duration::from_millis(400));
    let proxy = start(&config(&[(&c, 1.0)]));
    let admin = proxy.admin_addr();
    let web_addr = web(&proxy);
    let request = tokio::spawn(async move { common::get(web_addr, "/").await });
    eventually_async(Duration::from_secs(30), "the request in flight", || async {
        backend(&stats(admin).await, "c")["current_connections"] == 1
    })
    .await;
    let (status, body) = call(
        admin,
        "DELETE",
        "/api/v1/upstreams/app/backends/c",
        None,
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let s = stats(admin).await;
    assert_eq!(s["upstreams"][0]["total_servers"], 0);
    assert_eq!(backend(&s, "c")["state"], "removed");
    // New requests find no backend; the one in flight finishes on c.
    assert_eq!(common::get(web_addr, "/").await.status, 503);
    let reply = request.await.unwrap();
    assert_eq!((reply.status, reply.backend()), (200, "c".to_owned()));
    eventually_async(Duration::from_secs(30), "c to be gone", || async {
        stats(admin).await["upstreams"][0]["backends"] == json!([])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_with_the_field_named_and_nothing_changed() {
    let a = mock("a").await;
    let proxy = start(&config(&[(&a, 1.0)]));
    let admin = proxy.admin_addr();
    let base = "/api/v1/upstreams/app/backends";
    let cases: [(&str, String, &str, u16, Option<&str>); 13] = [
        (
            "POST",
            "/api/v1/upstreams/nope/backends".into(),
            r#"{"address":"127.0.0.1:1"}"#,
            404,
            Some("upstream"),
        ),
        ("POST", format!("{base}/ghost/drain"), "", 404, Some("id")),
        ("DELETE", format!("{base}/ghost"), "", 404, Some("id")),
        (
            "PATCH",
            format!("{base}/ghost"),
            r#"{"weight":2}"#,
            404,
            Some("id"),
        ),
        (
            "POST",
            base.into(),
            r#"{"address":"localhost"}"#,
            400,
            Some("address"),
        ),
        ("POST", base.into(), r#"{"weight":1}"#, 400, Some("address")),
        (
            "POST",
            base.into(),
            r#"{"address":"127.0.0.1:1","weight":0}"#,
            400,
            Some("weight"),
        ),
        (
            "PATCH",
            format!("{base}/a"),
            r#"{"weight":-2}"#,
            400,
            Some("weight"),
        ),
        (
            "PATCH",
            format!("{base}/a"),
            r#"{"wieght":2}"#,
            400,
            Some("wieght"),
        ),
        (
            "POST",
            base.into(),
            r#"{"address": "127.0.0.1:1""#,
            400,
            None,
        ),
        (
            "POST",
            base.into(),
            r#"{"address": "127.0.0.1:0"}"#,
            400,
            Some("address"),
        ),
        (
            "POST",
            base.into(),
            r#"{"address":"127.0.0.1:1","id":"a"}"#,
            409,
            Some("id"),
        ),
        ("PUT", format!("{base}/a"), "", 404, None),
    ];
    for (method, path, body, want, field) in cases {
        let (status, text) = call(admin, method, &path, None, body).await;
        assert_eq!(status, want, "{method} {path} {body}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        assert!(v["error"].is_string(), "{text}");
        if let Some(f) = field {
            assert_eq!(v["field"], f, "{method} {path} {body}: {text}");
        }
    }
    let s = stats(admin).await;
    assert_eq!(s["upstreams"][0]["total_servers"], 1);
    assert_eq!(backend(&s, "a")["weight"], 1.0);
    assert_eq!(backend(&s, "a")["state"], "up");
    let (status, _) = call(admin, "GET", "/nowhere", None, "").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn rondo_status_prints_a_table_or_the_json() {
    let a = mock("a").await;
    let b = mock("b").await;
    let proxy = start(&config(&[(&a, 1.0), (&b, 2.0)]));
    traffic(web(&proxy), 3).await;
    let url = format!("http://{}", proxy.admin_addr());
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rondo"))
            .args(["status", "--admin", &url])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // The proxy runs on its own threads: blocking this one on the command is fine.
    let json = run(&["--json"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["upstreams"][0]["total_requests"], 3);
    let table = run(&[]);
    // Not a terminal: no colour codes.
    assert!(!table.contains('\x1b'), "{table}");
    assert!(table.contains("upstream app"), "{table}");
    let row_b = table
        .lines()
        .find(|l| l.trim_start().starts_with("b "))
        .unwrap();
    let cells: Vec<&str> = row_b.split_whitespace().collect();
    assert_eq!(
        cells[..6],
        ["b", &b.addr().to_string(), "up", "2", "2", "2"],
        "{table}"
    );
    assert_eq!(cells[6], "66.7%", "{table}");

    // A wrong address fails with a message, not a panic.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rondo"))
        .args(["status", "--admin", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_is_one_self_contained_page() {
    let a = mock("a").await;
    let proxy = start(&config(&[(&a, 1.0)]));
    let (status, page) = call(proxy.admin_addr(), "GET", "/", None, "").await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>rondo"), "{page}");
    assert!(page.contains("/api/v1/stats"), "{page}");
    // Nothing loaded from elsewhere.
    assert!(!page.contains("http://") && !page.contains("https://"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_in_a_real_browser_lists_updates_and_drains() {
    use fantoccini::Locator;

    let a = mock("a").await;
    let b = mock("b").await;
    let c = mock("c").await;
    b.set_delay(Duration::from_millis(4));
    c.set_delay(Duration::from_millis(12));
    let proxy = start(&with_token(config(&[(&a, 1.0), (&b, 1.5), (&c, 2.0)])));
    let admin = proxy.admin_addr();
    let driver = browser::chromedriver();

    let browser = browser::session(&driver).await;
    let (session, web_addr) = (browser.clone(), web(&proxy));
    let result = async move {
        let browser = session;
        browser.goto(&format!("http://{admin}/")).await.unwrap();
        // The page lists every backend.
        for id in ["a", "b", "c"] {
            browser
                .wait()
                .at_most(Duration::from_secs(30))
                .for_element(Locator::Css(&format!("tr[data-backend='app/{id}']")))
                .await
                .unwrap();
        }
        let requests = |id: &'static str| {
            let browser = browser.clone();
            async move {
                let css = format!("tr[data-backend='app/{id}'] td[data-field='requests']");
                match browser.find(Locator::Css(&css)).await {
                    Ok(cell) => cell.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                }
            }
        };
        // The cell is there once the first refresh has drawn the table.
        eventually_async(
            Duration::from_secs(30),
            "c's row shows 0 requests",
            || async { requests("c").await == "0" },
        )
        .await;

        // After traffic the page shows it: weights 1 : 1.5 : 2 are 2 : 3 : 4 of 9 requests.
        traffic(web_addr, 18).await;
        eventually_async(
            Duration::from_secs(30),
            "the page to show the traffic",
            || async {
                requests("a").await == "4"
                    && requests("b").await == "6"
                    && requests("c").await == "8"
            },
        )
        .await;

        // One request at a time: each backend had at most one in flight, none now; every
        // row draws its p99 chart.
        for id in ["a", "b", "c"] {
            let cell = format!("tr[data-backend='app/{id}'] [data-field='in-flight']");
            assert_eq!(browser::text(&browser, &cell).await, "0 / 1", "{id}");
            let chart = format!("tr[data-backend='app/{id}'] [data-field='p99-chart'] svg");
            browser.find(Locator::Css(&chart)).await.unwrap();
        }

        // Drain without the token: refused, nothing changes.
        let drain = "tr[data-backend='app/b'] button[data-action='drain']";
        browser::click(&browser, drain).await;
        eventually_async(Duration::from_secs(30), "the refusal", || async {
            match browser.find(Locator::Id("toast")).await {
                Ok(t) => t.text().await.unwrap_or_default().contains("admin token"),
                Err(_) => false,
            }
        })
        .await;
        assert_eq!(backend(&stats(admin).await, "b")["state"], "up");

        // With the token typed in: b drains, in the API and on the page.
        browser
            .find(Locator::Id("token"))
            .await
            .unwrap()
            .send_keys(TOKEN)
            .await
            .unwrap();
        browser::click(&browser, drain).await;
        eventually_async(Duration::from_secs(30), "b to drain", || async {
            backend(&stats(admin).await, "b")["state"] == "draining"
        })
        .await;
        eventually_async(
            Duration::from_secs(30),
            "the page to show the drain",
            || async {
                browser
                    .find(Locator::Css(
                        "tr[data-backend='app/b'][data-state='draining']",
                    ))
                    .await
                    .is_ok()
            },
        )
        .await;

        // At 1280 px every Drain/Enable button is inside the window and nothing scrolls
        // sideways.
        let fits = browser
            .execute(
                "const w = document.documentElement.clientWidth;
                 const rights = [...document.querySelectorAll('button[data-action]')]
                     .map(b => Math.ceil(b.getBoundingClientRect().right));
                 const fits = rights.length > 0 && document.documentElement.scrollWidth <= w
                     && rights.every(r => r <= w);
                 return { fits, width: w, page: document.documentElement.scrollWidth, rights };",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            fits["fits"],
            json!(true),
            "the backend table fits 1280 px: {fits}"
        );
        // The listener's counters and the drain, in the events list.
        browser
            .find(Locator::Css("tr[data-listener='web']"))
            .await
            .unwrap();
        eventually_async(
            Duration::from_secs(30),
            "the drain in the events, made by the admin API",
            || async {
                browser
                    .find(Locator::Css(
                        "tr[data-event='draining'] td[data-by='admin API']",
                    ))
                    .await
                    .is_ok()
            },
        )
        .await;

        // Some live traffic for the picture, then the screenshot.
        let load = tokio::spawn(async move {
            let mut client = Client::connect(web_addr).await;
            for _ in 0..400 {
                client.get("/").await;
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let png = browser.screenshot().await.unwrap();
        load.await.unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        // `RONDO_UPDATE_SCREENSHOT=1` refreshes the one in the docs.
        let path = if std::env::var_os("RONDO_UPDATE_SCREENSHOT").is_some() {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/dashboard.png")
        } else {
            std::env::temp_dir().join("rondo-dashboard.png")
        };
        std::fs::write(&path, &png).unwrap();
    };
    // Close the browser session whatever happened, then report.
    let outcome = browser::catch(result).await;
    let _ = browser.close().await;
    drop(driver);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_health_checks_by_backend_and_result() {
    let a = mock("a").await;
    let b = mock("b").await;
    b.set_health(503);
    let proxy = start(&proxy_config(
        app(&[(&a, 1.0), (&b, 1.0)]).health_check(
            Section::new()
                .duration("interval", Duration::from_millis(100))
                .duration("timeout", Duration::from_millis(50)),
        ),
    ));
    let up = proxy.upstream("app").unwrap();
    common::eventually(Duration::from_secs(20), "three checks of each", || {
        up.check_counters("a").is_some_and(|c| c.passed() >= 3)
            && up.check_counters("b").is_some_and(|c| c.bad_status() >= 3)
    })
    .await;
    let (ca, cb) = (
        up.check_counters("a").unwrap(),
        up.check_counters("b").unwrap(),
    );
    let (a_before, b_before) = (ca.passed(), cb.bad_status());
    let m = scrape(proxy.admin_addr()).await;
    let (a_after, b_after) = (ca.passed(), cb.bad_status());
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in {m:?}")) as u64;
    let passed_a = get("rondo_health_checks_total{backend=a,result=passed,upstream=app}");
    let bad_b = get("rondo_health_checks_total{backend=b,result=bad_status,upstream=app}");
    assert!(
        a_before >= 3 && (a_before..=a_after).contains(&passed_a),
        "{a_before} {passed_a} {a_after}"
    );
    assert!(
        b_before >= 3 && (b_before..=b_after).contains(&bad_b),
        "{b_before} {bad_b} {b_after}"
    );
    assert_eq!(
        get("rondo_health_checks_total{backend=b,result=passed,upstream=app}"),
        0
    );
    assert_eq!(
        get("rondo_backend_up{backend=b,upstream=app}"),
        0,
        "b is down"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_mutation_needs_the_token_and_bad_methods_and_huge_bodies_are_refused() {
    let a = mock("a").await;
    let c = mock("c").await;
    let proxy = start(&with_token(config(&[(&a, 1.0)])));
    let admin = proxy.admin_addr();
    let base = "/api/v1/upstreams/app/backends";
    let add = json!({"address": c.addr().to_string(), "weight": 3, "id": "c"}).to_string();
    let mutations: [(&str, String, String); 5] = [
        ("POST", base.to_owned(), add),
        (
            "PATCH",
            format!("{base}/a"),
            json!({"weight": 2}).to_string(),
        ),
        ("POST", format!("{base}/a/drain"), String::new()),
        ("POST", format!("{base}/a/enable"), String::new()),
        ("DELETE", format!("{base}/a"), String::new()),
    ];
    // Without the token: every one is refused and nothing changes.
    for (method, path, body) in &mutations {
        let (status, text) = call(admin, method, path, None, body).await;
        assert_eq!(status, 401, "{method} {path}: {text}");
    }
    let s = stats(admin).await;
    assert_eq!(s["upstreams"][0]["total_servers"], 1, "{s}");
    assert_eq!(backend(&s, "a")["state"], "up");
    assert_eq!(backend(&s, "a")["weight"], 1.0);
    // With it: every one is applied.
    for (method, path, body) in &mutations {
        let (status, text) = call(admin, method, path, Some(TOKEN), body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {text}"
        );
    }
    let s = stats(admin).await;
    let ids: Vec<&str> = s["upstreams"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["id"].as_str())
        .collect();
    assert!(ids.contains(&"c"), "c was added: {s}");

    // A method a path does not take: 405. A body over the admin API's limit: 413.
    let (status, _) = call(admin, "PUT", "/api/v1/stats", Some(TOKEN), "").await;
    assert_eq!(status, 405);
    let huge = format!(
        r#"{{"address": "127.0.0.1:1", "id": "{}"}}"#,
        "x".repeat(100_000)
    );
    let (status, text) = call(admin, "POST", base, Some(TOKEN), &huge).await;
    assert_eq!(status, 413, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ids_are_named_percent_encoded_in_the_path_as_the_dashboard_sends_them() {
    let a = mock("a").await;
    let c = mock("c").await;
    let d = mock("d").await;
    let proxy = start(&config(&[(&a, 1.0)]));
    let admin = proxy.admin_addr();
    let base = "/api/v1/upstreams/app/backends";

    // c without an id: its id is its address, `:` and all. The dashboard sends
    // `encodeURIComponent(id)`, so `127.0.0.1%3A<port>`.
    let add = json!({"address": c.addr().to_string()}).to_string();
    let (status, body) = call(admin, "POST", base, None, &add).await;
    assert_eq!(status, 201, "{body}");
    let c_id = c.addr().to_string();
    let c_path = format!("{base}/{}", c_id.replace(':', "%3A"));
    let (status, body) = call(admin, "POST", &format!("{c_path}/drain"), None, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(backend(&stats(admin).await, &c_id)["state"], "draining");
    assert_eq!(traffic(web(&proxy), 4).await, ["a:200"].repeat(4));
    let (status, body) = call(admin, "POST", &format!("{c_path}/enable"), None, "").await;
    assert_eq!(status, 200, "{body}");
    let seen = traffic(web(&proxy), 4).await;
    assert_eq!(seen.iter().filter(|s| *s == "c:200").count(), 2, "{seen:?}");
    let (status, body) = call(admin, "DELETE", &c_path, None, "").await;
    assert_eq!(status, 200, "{body}");

    // An id with a space and a slash, as the configuration allows: reachable the same way.
    let add = json!({"address": d.addr().to_string(), "id": "rack 1/d"}).to_string();
    let (status, body) = call(admin, "POST", base, None, &add).await;
    assert_eq!(status, 201, "{body}");
    let d_path = format!("{base}/rack%201%2Fd");
    let (status, body) = call(admin, "PATCH", &d_path, None, r#"{"weight": 3}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(backend(&stats(admin).await, "rack 1/d")["weight"], 3.0);
    let (status, body) = call(admin, "DELETE", &d_path, None, "").await;
    assert_eq!(status, 200, "{body}");
    let s = stats(admin).await;
    assert_eq!(s["upstreams"][0]["total_servers"], 1, "{s}");

    // A path that is not UTF-8 once decoded: 400, not a lookup of a mangled id.
    let (status, body) = call(admin, "POST", &format!("{base}/%FF/drain"), None, "").await;
    assert_eq!(status, 400, "{body}");
    // The read-only endpoints refuse other methods with 405, the events and history too.
    for path in ["/api/v1/events", "/api/v1/history"] {
        let (status, body) = call(admin, "POST", path, None, "").await;
        assert_eq!(status, 405, "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_of_the_unchanged_file_brings_back_its_backends_and_weights_and_keeps_drains() {
    let (a, b, c) = (mock("a").await, mock("b").await, mock("c").await);
    let file = config(&[(&a, 1.0), (&b, 1.0)]);
    let proxy = start(&file);
    let admin = proxy.admin_addr();
    let base = "/api/v1/upstreams/app/backends";
    let add = json!({"address": c.addr().to_string(), "id": "c"}).to_string();
    for (method, path, body) in [
        ("PATCH", format!("{base}/b"), r#"{"weight": 7}"#.to_owned()),
        ("POST", base.to_owned(), add),
        ("POST", format!("{base}/a/drain"), String::new()),
    ] {
        let (status, text) = call(admin, method, &path, None, &body).await;
        assert!((200..300).contains(&status), "{method} {path}: {text}");
    }
    let s = stats(admin).await;
    assert_eq!(s["upstreams"][0]["total_servers"], 3, "{s}");
    assert_eq!(backend(&s, "b")["weight"], 7.0);

    // The same file again: b's weight and the membership are the file's; a stays drained.
    let done = proxy.reload(&common::parse(&file));
    assert!(done.refused.is_empty(), "{:?}", done.refused);
    assert_eq!(done.upstreams, ["app"], "the upstream is applied again");
    let s = stats(admin).await;
    assert_eq!(backend(&s, "b")["weight"], 1.0, "{s}");
    assert_eq!(backend(&s, "a")["state"], "draining", "{s}");
    let serving = s["upstreams"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["state"] != "removed")
        .count();
    assert_eq!(serving, 2, "c is gone: {s}");
    let c_before = c.hits();
    assert_eq!(traffic(web(&proxy), 4).await, ["b:200"].repeat(4));
    assert_eq!(c.hits(), c_before);

    // With nothing changed since, a reload leaves the upstream alone.
    let done = proxy.reload(&common::parse(&file));
    assert!(done.upstreams.is_empty(), "{:?}", done.upstreams);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_events_list_says_which_changes_came_from_the_admin_api_or_a_reload() {
    let (a, b) = (mock("a").await, mock("b").await);
    let base_config = config(&[(&a, 1.0)]);
    let proxy = start(&base_config);
    let admin = proxy.admin_addr();
    let base = "/api/v1/upstreams/app/backends";
    let (status, _) = call(admin, "POST", &format!("{base}/a/drain"), None, "").await;
    assert_eq!(status, 200);
    let done = proxy.reload(&common::parse(&config(&[(&a, 1.0), (&b, 1.0)])));
    assert!(done.refused.is_empty(), "{:?}", done.refused);
    let (status, body) = call(admin, "GET", "/api/v1/events", None, "").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let events = v["events"].as_array().unwrap();
    let find = |kind: &str, id: &str| {
        events
            .iter()
            .find(|e| e["kind"] == kind && e["backend"] == id)
            .unwrap_or_else(|| panic!("no {kind} of {id} in {body}"))
    };
    assert_eq!(find("draining", "a")["by"], "admin API", "{body}");
    assert_eq!(find("added", "b")["by"], "reload", "{body}");
    // Changes rondo made on its own carry no `by`.
    assert!(
        events
            .iter()
            .filter(|e| e["kind"] == "health" || e["kind"] == "breaker")
            .all(|e| e["by"].is_null()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_scheme_is_case_insensitive_and_a_bad_since_is_refused() {
    let a = mock("a").await;
    let proxy = start(&with_token(config(&[(&a, 1.0)])));
    let admin = proxy.admin_addr();
    let drain = format!(
        "POST /api/v1/upstreams/app/backends/a/drain HTTP/1.1\r\nHost: admin\r\n\
         authorization: bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let answer = common::raw(admin, drain.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (status, body) = call(admin, "GET", "/api/v1/history?since=abc", None, "").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"field\":\"since\""), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_history_keeps_points_of_each_interval_for_the_dashboard() {
    let (a, b) = (mock("a").await, mock("b").await);
    let proxy = start(&config(&[(&a, 1.0), (&b, 1.0)]));
    let admin = proxy.admin_addr();
    let history = async |since: u64| {
        let (status, body) = call(
            admin,
            "GET",
            &format!("/api/v1/history?since={since}"),
            None,
            "",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };
    let h = history(0).await;
    assert_eq!(h["interval_s"], 5);
    assert_eq!(h["upstreams"][0]["name"], "app");
    // Traffic until a sample covers it: the first point with requests in it (one sample
    // every 5 s; the wait is a deadline against a hang, not a claim about speed).
    let web = web(&proxy);
    let first_busy = |h: &Value| {
        h["upstreams"][0]["points"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["rate"].as_f64() > Some(0.0)).cloned())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let point = loop {
        traffic(web, 4).await;
        if let Some(p) = first_busy(&history(0).await) {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no point with traffic"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(point["errors"], 0.0, "{point}");
    assert!(point["p99_ms"].as_f64().unwrap() > 0.0, "{point}");
    let h = history(0).await;
    let backends = h["upstreams"][0]["backends"].as_array().unwrap();
    let ids: Vec<&str> = backends.iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a", "b"]);
    // Only newer points after `since`.
    let last = h["upstreams"][0]["points"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["time_ms"]
        .as_u64()
        .unwrap();
    let newer = history(last).await;
    assert!(
        newer["upstreams"][0]["points"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["time_ms"].as_u64().unwrap() > last),
        "{newer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_need_the_token_when_the_admin_api_is_configured_off_loopback() {
    // The API as configured for an address off loopback, served (as tests must be) on a
    // loopback socket: what it answers depends on its configuration, not on who connects.
    let serve = |listen: &str| {
        let admin = rondo::admin::Admin::new(
            Default::default(),
            prometheus_client::registry::Registry::default(),
            Some(TOKEN.to_owned()),
            listen.parse().unwrap(),
            tokio::time::Instant::now(),
            Default::default(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let state = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(admin));
        tokio::spawn(rondo::admin::serve(listener, state, std::future::pending()));
        addr
    };
    let reads = [
        "/api/v1/stats",
        "/api/v1/events",
        "/api/v1/history",
        "/api/v1/reload",
        "/metrics",
    ];
    let off = serve("10.1.2.3:9901");
    for path in reads {
        let (status, body) = call(off, "GET", path, None, "").await;
        assert_eq!(status, 401, "{path} without the token: {body}");
        let (status, _) = call(off, "GET", path, Some("wrong"), "").await;
        assert_eq!(status, 401, "{path} with a wrong token");
        let (status, body) = call(off, "GET", path, Some(TOKEN), "").await;
        assert_eq!(status, 200, "{path} with the token: {body}");
    }
    // Liveness stays open: a load balancer's probe carries no token.
    assert_eq!(call(off, "GET", "/healthz", None, "").await.0, 200);
    // On loopback, reads are open and mutations still need the token.
    let on = serve("127.0.0.1:9901");
    for path in reads {
        assert_eq!(call(on, "GET", path, None, "").await.0, 200, "{path}");
    }
    let (status, _) = call(
        on,
        "POST",
        "/api/v1/upstreams/app/backends/a/drain",
        None,
        "",
    )
    .await;
    assert_eq!(status, 401);
}
