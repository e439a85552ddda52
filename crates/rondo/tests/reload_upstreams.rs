//! Reload of whole upstreams and of the process-wide settings: an upstream added with a
//! listener that routes to it, an upstream removed once its listener moved (its loops stop and
//! it leaves the admin API and metrics), the admin server moved and given a token, and one
//! clear refusal for each setting that needs a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{MockBackend, config_text, eventually, get, mock, raw, start_text, web};

fn parse(toml: &str) -> rondo::config::Config {
    rondo::config::parse(toml, "test.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

/// `config` plus a listener `api` in front of upstream `other` with these backends.
fn with_other(base: &str, other: &[&MockBackend]) -> String {
    let list: Vec<String> = other
        .iter()
        .map(|b| format!("{{ address = \"{}\", id = \"{}\" }}", b.addr(), b.name()))
        .collect();
    format!(
        "{base}\n[[listeners]]\nname = \"api\"\nbind = \"127.0.0.1:0\"\nupstream = \"other\"\n\n\
         [[upstreams]]\nname = \"other\"\nbackends = [{}]\n\
         [upstreams.health_check]\ninterval = \"50ms\"\ntimeout = \"40ms\"\n",
        list.join(", ")
    )
}

/// The upstream names `GET /api/v1/stats` lists.
async fn stats_upstreams(admin: SocketAddr) -> Vec<String> {
    let reply = get(admin, "/api/v1/stats").await;
    assert_eq!(reply.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    v["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn metrics(admin: SocketAddr) -> String {
    get(admin, "/metrics").await.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_an_upstream_with_a_listener_that_routes_to_it() {
    let a = mock("a").await;
    let c = mock("c").await;
    let base = config_text(&[(&a, 1.0)], "", "");
    let running = start_text(&base);
    let admin = running.admin_addr();
    assert_eq!(stats_upstreams(admin).await, ["app"]);

    let done = running.reload(&parse(&with_other(&base, &[&c])));
    assert!(done.refused.is_empty(), "{:?}", done.refused);
    assert_eq!(done.upstreams, ["other"]);
    assert_eq!(done.listeners, ["api"]);

    let api = running.addr("api").unwrap();
    for _ in 0..3 {
        assert_eq!(get(api, "/").await.backend(), "c");
    }
    assert_eq!(get(web(&running), "/").await.backend(), "a");
    assert_eq!(stats_upstreams(admin).await, ["app", "other"]);
    let m = metrics(admin).await;
    assert!(
        m.contains("rondo_requests_total{upstream=\"other\",backend=\"c\",code=\"200\"} 3"),
        "{m}"
    );
    // The new upstream's health checks run: c is probed.
    let up = running.upstream("other").unwrap();
    eventually(Duration::from_secs(5), "c health checked", || {
        up.check_counters("c").is_some_and(|c| c.passed() >= 1)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_removes_an_upstream_once_its_listener_moved_and_stops_its_loops() {
    let a = mock("a").await;
    let c = mock("c").await;
    let base = config_text(&[(&a, 1.0)], "", "");
    let running = start_text(&with_other(&base, &[&c]));
    let admin = running.admin_addr();
    let api = running.addr("api").unwrap();
    assert_eq!(get(api, "/").await.backend(), "c");
    let other = running.upstream("other").unwrap();
    eventually(Duration::from_secs(5), "c health checked", || {
        other.check_counters("c").is_some_and(|c| c.passed() >= 1)
    })
    .await;

    // `api` now routes to `app`; `other` is gone from the file.
    let moved = format!(
        "{base}\n[[listeners]]\nname = \"api\"\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n"
    );
    let done = running.reload(&parse(&moved));
    assert!(done.refused.is_empty(), "{:?}", done.refused);
    assert_eq!(done.upstreams, ["other"]);
    assert_eq!(done.listeners, ["api"]);
    assert!(running.upstream("other").is_none());
    assert_eq!(running.addr("api"), Some(api), "same socket kept");
    assert_eq!(get(api, "/").await.backend(), "a");
    assert_eq!(stats_upstreams(admin).await, ["app"]);
    assert!(!metrics(admin).await.contains("upstream=\"other\""));
    // Nothing holds the removed upstream any more: its timer and health-check loops ended
    // and no listener routes to it.
    eventually(
        Duration::from_secs(5),
        "the removed upstream released",
        || Arc::strong_count(&other) == 1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_moves_the_admin_server_and_applies_a_new_token() {
    let a = mock("a").await;
    let base = config_text(&[(&a, 1.0)], "", "");
    let running = start_text(&base);
    let old = running.admin_addr();
    let drain = b"POST /api/v1/upstreams/app/backends/a/drain HTTP/1.1\r\nHost: admin\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n";

    // A token on the same address: the socket is kept, mutations now need the token.
    let tokened = base.replace(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n",
    );
    let done = running.reload(&parse(&tokened));
    assert!(done.admin, "{done:?}");
    assert!(done.refused.is_empty(), "{:?}", done.refused);
    assert_eq!(running.admin_addr(), old);
    let answer = raw(old, drain, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");

    // A new address: the admin API answers there, the old socket is closed.
    let moved = tokened.replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.2:0\"");
    let done = running.reload(&parse(&moved));
    assert!(done.admin && done.refused.is_empty(), "{done:?}");
    let new = running.admin_addr();
    assert_eq!(new.ip().to_string(), "127.0.0.2");
    assert_eq!(stats_upstreams(new).await, ["app"]);
    eventually(
        Duration::from_secs(5),
        "the old admin socket closed",
        || std::net::TcpStream::connect(old).is_err(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_refuses_each_setting_that_needs_a_restart_in_one_line_and_applies_access_log() {
    let a = mock("a").await;
    let base = config_text(&[(&a, 1.0)], "", "");
    let running = start_text(&base);
    let changed = base
        .replace("workers = 2", "workers = 3")
        .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"7s\"")
        .replace("access_log = false", "access_log = true")
        .replace("name = \"app\"\n", "name = \"app\"\nqueue_size = 7\n");
    let done = running.reload(&parse(&changed));
    assert_eq!(done.listeners, ["web"], "access_log restarts the listener");
    let refused = done.refused;
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(
        refused[0].contains("`queue_size` needs a restart"),
        "{refused:?}"
    );
    assert!(
        refused[1].contains("`workers` (2 → 3) needs a restart"),
        "{refused:?}"
    );
    assert!(
        refused[2].contains("`shutdown_grace` (5s → 7s) needs a restart"),
        "{refused:?}"
    );
    assert_eq!(get(web(&running), "/").await.backend(), "a");
    // Applied once: the same file again changes nothing new and refuses the same three.
    let again = running.reload(&parse(&changed));
    assert!(again.listeners.is_empty(), "{again:?}");
    assert_eq!(again.refused.len(), 3, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_replaces_a_listener_winds_down_its_open_connections() {
    use common::h2raw::{self, Conn, frame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = mock("a").await;
    let c = mock("c").await;
    let base = config_text(&[(&a, 1.0)], "", "");
    let running = start_text(&with_other(&base, &[&c]));
    let api = running.addr("api").unwrap();

    // Three clients of `api`, all served by c so far: an idle HTTP/1.1 keep-alive connection,
    // one whose request is in progress when the reload comes, and an HTTP/2 connection.
    let request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut idle = tokio::net::TcpStream::connect(api).await.unwrap();
    idle.write_all(request).await.unwrap();
    let answer = read_answer(&mut idle).await;
    assert!(answer.contains("\r\nx-backend: c\r\n"), "{answer}");
    let mut h2 = Conn::open(api).await;
    let block = h2raw::get_block("/", &[]);
    let ends = h2raw::END_HEADERS | h2raw::END_STREAM;
    h2.send(&frame(h2raw::HEADERS, ends, 1, &block))
        .await
        .unwrap();
    assert!(
        h2.until(h2raw::HEADERS, Duration::from_secs(10))
            .await
            .is_some()
    );
    c.set_delay(Duration::from_millis(500));
    let mut busy = tokio::net::TcpStream::connect(api).await.unwrap();
    busy.write_all(request).await.unwrap();
    eventually(Duration::from_secs(10), "the request reached c", || {
        c.received() == 3
    })
    .await;

    // `api` now routes to `app`: its old version's connections take no more requests.
    let moved = format!(
        "{base}\n[[listeners]]\nname = \"api\"\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n"
    );
    let done = running.reload(&parse(&moved));
    assert!(done.refused.is_empty(), "{:?}", done.refused);
    assert_eq!(running.addr("api"), Some(api), "same socket kept");

    // The request in progress finishes, told the connection closes, and it does.
    let answer = read_answer(&mut busy).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), busy.read_to_end(&mut rest));
    assert!(matches!(closed.await, Ok(Ok(0))), "{rest:?}");
    // The idle one is closed without a request (nginx closes an old worker's idle ones).
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut rest));
    assert!(matches!(closed.await, Ok(Ok(0))), "{rest:?}");
    // The HTTP/2 one is told to go away.
    assert!(
        h2.until(h2raw::GOAWAY, Duration::from_secs(10))
            .await
            .is_some(),
        "no GOAWAY"
    );
    // New connections get the new settings.
    assert_eq!(get(api, "/").await.backend(), "a");
    assert_eq!(c.received(), 3, "nothing more reached c");
}

/// One response to a GET read from `s`: its head and the body its length announces.
async fn read_answer(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|n| n.trim().parse::<usize>().ok());
            if length.is_some_and(|n| body.len() >= n) {
                return text;
            }
        }
        let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
        let n = read.expect("an answer within 10 s").unwrap();
        assert!(n > 0, "closed before the answer: {text}");
        got.extend_from_slice(&buf[..n]);
    }
}
