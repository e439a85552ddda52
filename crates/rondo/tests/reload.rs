//! Configuration reload: backends added, removed and re-weighted with the state of kept ones
//! intact, parts that need a restart refused, no request lost under load, and `rondo serve`
//! reloading on SIGHUP, `rondo reload --pid-file` and `--watch`, keeping the old configuration
//! when the new file is bad.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use balance::Health;
use common::{
    Client, ConfigBuilder, MockBackend, Process, Section, UpstreamBuilder, app, config, eventually,
    health, mock, parse, proxy_config, start, web,
};

async fn spread(addr: std::net::SocketAddr, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut client = Client::connect(addr).await;
    let mut out = std::collections::BTreeMap::new();
    for _ in 0..n {
        *out.entry(client.get("/").await.backend()).or_default() += 1;
    }
    out
}

/// Health checks every 100 ms, fall 2, rise 2 (a 90 ms timeout, so a loaded machine does
/// not fail a healthy backend).
fn checks() -> Section {
    Section::new()
        .duration("interval", Duration::from_millis(100))
        .duration("timeout", Duration::from_millis(90))
        .set("fall", 2)
        .set("rise", 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_removes_and_reweights_backends_and_keeps_the_state_of_kept_ones() {
    let [a, b, c, d] = [
        mock("a").await,
        mock("b").await,
        mock("c").await,
        mock("d").await,
    ];
    let running = start(&proxy_config(
        app(&[(&a, 1.0), (&b, 1.0), (&c, 1.0)]).health_check(checks()),
    ));
    let addr = web(&running);
    let before = spread(addr, 30).await;
    assert_eq!(before.values().copied().collect::<Vec<_>>(), [10, 10, 10]);
    // c fails its checks and goes down: a kept backend's health must survive the reload.
    c.set_health(503);
    eventually(Duration::from_secs(10), "c goes down", || {
        health(&running, "app", "c") == Health::Down
    })
    .await;
    let up = running.upstream("app").unwrap();
    let backend = |id: &str| {
        up.pool()
            .snapshot()
            .backends()
            .iter()
            .find(|x| x.id() == id)
            .cloned()
    };
    let a_before = backend("a").unwrap();
    let a_requests = a_before.stats().snapshot(up.clock().now()).requests;
    assert!(a_requests >= 10);
    let a_checks = up.check_counters("a").unwrap().passed();
    assert!(a_checks >= 1);

    // a re-weighted to 3, b removed, c kept (down), d added; tries changed too.
    let done = running.reload(&parse(&proxy_config(
        app(&[(&a, 3.0), (&c, 1.0), (&d, 1.0)])
            .set("tries", 2)
            .health_check(checks()),
    )));
    assert_eq!(done.upstreams, ["app"]);
    assert!(done.refused.is_empty(), "{:?}", done.refused);
    let ids: Vec<String> = up
        .pool()
        .snapshot()
        .backends()
        .iter()
        .map(|x| x.id().to_owned())
        .collect();
    assert_eq!(ids, ["a", "c", "d"]);
    assert_eq!(up.config().tries.get(), 2);
    let a_after = backend("a").unwrap();
    assert!(Arc::ptr_eq(&a_before, &a_after), "a is the same backend");
    assert!(a_after.stats().snapshot(up.clock().now()).requests >= a_requests);
    assert!(up.check_counters("a").unwrap().passed() >= a_checks);
    assert_eq!(health(&running, "app", "c"), Health::Down, "c stays down");

    let b_hits = b.hits();
    let after = spread(addr, 40).await;
    assert_eq!(after.get("a"), Some(&30), "{after:?}");
    assert_eq!(after.get("d"), Some(&10), "{after:?}");
    assert_eq!(b.hits(), b_hits, "b gets nothing after its removal");
    // d, added by the reload, is health checked too.
    eventually(Duration::from_secs(10), "d is checked", || {
        d.seen().iter().any(|s| s.path == "/health")
    })
    .await;
    // c recovers and rejoins at its new weight.
    c.set_health(200);
    eventually(Duration::from_secs(10), "c comes back", || {
        health(&running, "app", "c") == Health::Up
    })
    .await;
    let last = spread(addr, 50).await;
    assert_eq!(
        last.values().copied().collect::<Vec<_>>(),
        [30, 10, 10],
        "{last:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_refuses_what_needs_a_restart_and_applies_the_rest() {
    let a = mock("a").await;
    let b = mock("b").await;
    let base = config(&[(&a, 1.0)]);
    let running = start(&base);
    let more = config(&[(&a, 1.0), (&b, 1.0)]).set("workers", 3);
    let done = running.reload(&parse(&more));
    assert_eq!(done.upstreams, ["app"]);
    let refused = done.refused.join("\n");
    assert!(
        refused.contains("`workers` (2 → 3) needs a restart"),
        "{refused}"
    );
    let seen = spread(web(&running), 4).await;
    assert_eq!(seen.get("b"), Some(&2), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_steady_load_lose_no_request() {
    let [a, b, c] = [mock("a").await, mock("b").await, mock("c").await];
    let running = Arc::new(start(&config(&[(&a, 1.0), (&b, 1.0)])));
    let addr = web(&running);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for _ in 0..6 {
        let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        clients.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            while !stop.load(Ordering::Relaxed) {
                match client.send("GET", "/", b"").await {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let configs = [
        parse(&config(&[(&a, 1.0), (&b, 1.0)])),
        parse(&config(&[(&b, 2.0), (&c, 1.0)])),
        parse(&proxy_config(
            app(&[(&c, 1.0), (&a, 3.0)]).set("keepalive", 0),
        )),
    ];
    // 15 reloads, each after at least 30 more requests were served: counted in requests,
    // not in seconds, so a slow machine runs the same test, only longer.
    let mut reloads = 0;
    while reloads < 15 {
        let target = ok.load(Ordering::Relaxed) + 30;
        eventually(Duration::from_secs(30), "30 more requests served", || {
            ok.load(Ordering::Relaxed) >= target || failed.load(Ordering::Relaxed) > 0
        })
        .await;
        let done = running.reload(&configs[reloads % configs.len()]);
        assert!(done.refused.is_empty(), "{:?}", done.refused);
        reloads += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{reloads} reloads, {ok} requests served, {failed} failed");
    assert!(ok >= 450, "{ok} requests");
    assert_eq!(failed, 0);
    assert!(a.hits() > 0 && b.hits() > 0 && c.hits() > 0);
}

fn serve_config(backends: &[&MockBackend], weight: f64) -> String {
    let upstream = backends.iter().fold(UpstreamBuilder::new("app"), |u, b| {
        u.backend(b.name(), b.addr(), weight)
    });
    ConfigBuilder::proxy(upstream.health_check(Section::disabled()))
        .set("workers", 1)
        .to_toml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reloads_on_sighup_and_on_file_change_and_keeps_serving_on_a_bad_file() {
    let a = mock("a").await;
    let b = mock("b").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rondo.toml");
    let pid_file = dir.path().join("rondo.pid");
    std::fs::write(&path, serve_config(&[&a], 1.0)).unwrap();
    let mut rondo = Process::spawn([
        "serve".as_ref(),
        "--log-format".as_ref(),
        "json".as_ref(),
        "--watch".as_ref(),
        "--config".as_ref(),
        path.as_os_str(),
        "--pid-file".as_ref(),
        pid_file.as_os_str(),
    ]);
    let wait_for = |message: &str| rondo.wait_for(message);
    let listening = tokio::task::block_in_place(|| wait_for("listening"));
    let addr: std::net::SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();
    let admin_line = tokio::task::block_in_place(|| wait_for("admin API"));
    let admin = admin_line["admin"].as_str().unwrap().to_owned();
    assert_eq!(spread(addr, 4).await.get("a"), Some(&4));
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, rondo.pid());

    // `rondo reload --pid-file` after adding b: it reads the outcome from the admin API.
    std::fs::write(&path, serve_config(&[&a, &b], 1.0)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rondo"))
        .arg("reload")
        .arg("--pid-file")
        .arg(&pid_file)
        .arg("--config")
        .arg(&path)
        .args(["--admin", &admin])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("configuration reloaded"), "{stdout}");
    let reloaded = tokio::task::block_in_place(|| wait_for("configuration reloaded"));
    assert_eq!(reloaded["trigger"], "SIGHUP", "{reloaded}");
    let both = spread(addr, 4).await;
    assert_eq!((both.get("a"), both.get("b")), (Some(&2), Some(&2)));

    // A bad file: logged with file:line:col, the running configuration keeps serving.
    let bad_text = serve_config(&[&b], -1.0);
    let bad_line = 1 + bad_text
        .lines()
        .position(|l| l.contains("weight = -1"))
        .unwrap();
    std::fs::write(&path, &bad_text).unwrap();
    rondo.signal("HUP");
    let bad = tokio::task::block_in_place(|| wait_for("configuration not reloaded"));
    let error = bad["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("{}:{bad_line}:", path.display())),
        "{error}"
    );
    let still = spread(addr, 4).await;
    assert_eq!((still.get("a"), still.get("b")), (Some(&2), Some(&2)));

    // --watch: a good file is picked up without a signal.
    std::fs::write(&path, serve_config(&[&b], 2.0)).unwrap();
    let watched = tokio::task::block_in_place(|| wait_for("configuration reloaded"));
    assert_eq!(watched["trigger"], "file changed", "{watched}");
    assert_eq!(spread(addr, 4).await.get("b"), Some(&4));

    rondo.signal("TERM");
    let code = tokio::task::block_in_place(|| rondo.wait_exit());
    assert_eq!(code, Some(0));
    assert!(!pid_file.exists(), "the pid file is removed on exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_starts_changes_and_stops_listeners() {
    let a = mock("a").await;
    let b = mock("b").await;
    // Listener `web` (with a route to `other` when `route`), and listener `api` when `api`.
    let two = |api: bool, route: bool| {
        let mut web = Section::new()
            .set("name", "web")
            .set("bind", "127.0.0.1:0")
            .set("upstream", "app");
        if route {
            web = web.set(
                "routes",
                vec![
                    Section::new()
                        .set("path_prefix", "/b/")
                        .set("upstream", "other"),
                ],
            );
        }
        let mut config = ConfigBuilder::new()
            .duration("shutdown_grace", Duration::from_secs(5))
            .listener_with(web)
            .upstream(app(&[(&a, 1.0)]))
            .upstream(UpstreamBuilder::new("other").backend("b", b.addr(), 1.0));
        if api {
            config = config.listener("api", "127.0.0.1:0", "other");
        }
        config
    };
    let running = start(&two(false, false));
    let web_addr = web(&running);
    assert_eq!(common::get(web_addr, "/x").await.backend(), "a");

    // A new listener, and a route added to the existing one.
    let done = running.reload(&parse(&two(true, true)));
    assert!(done.refused.is_empty(), "{:?}", done.refused);
    let api_addr = running.addr("api").expect("the new listener is up");
    assert_eq!(common::get(api_addr, "/").await.backend(), "b");
    assert_eq!(
        web(&running),
        web_addr,
        "a changed listener keeps its socket"
    );
    assert_eq!(
        common::get(web_addr, "/b/1").await.backend(),
        "b",
        "the new route applies"
    );
    assert_eq!(common::get(web_addr, "/x").await.backend(), "a");

    // Removed: it stops accepting.
    let done = running.reload(&parse(&two(false, true)));
    assert!(done.refused.is_empty(), "{:?}", done.refused);
    assert!(running.addr("api").is_none());
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(api_addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the removed listener's port is closed");
    assert_eq!(common::get(web_addr, "/b/1").await.backend(), "b");
    let listed = async || {
        let (status, body) =
            common::admin_call(running.admin_addr(), "GET", "/api/v1/stats", None, "").await;
        assert_eq!(status, 200, "{body}");
        let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
        let names: Vec<String> = stats["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap().to_owned())
            .collect();
        names
    };
    assert_eq!(
        listed().await,
        ["web"],
        "the removed listener left the statistics"
    );

    // A new listener whose address is taken: refused (the rest applies), and not listed.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = two(false, true).listener("busy", &taken.local_addr().unwrap().to_string(), "app");
    let done = running.reload(&parse(&busy));
    assert_eq!(done.refused.len(), 1, "{:?}", done.refused);
    assert!(running.addr("busy").is_none());
    assert_eq!(
        listed().await,
        ["web"],
        "a listener that never started is not listed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstreams_request_total_never_goes_down_as_backends_leave() {
    let [a, b, c] = [mock("a").await, mock("b").await, mock("c").await];
    let running = start(&config(&[(&a, 1.0), (&b, 1.0)]));
    let addr = web(&running);
    let admin = running.admin_addr();
    let total = || async move {
        let reply = common::get(admin, "/api/v1/stats").await;
        let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        v["upstreams"][0]["total_requests"].as_u64().unwrap()
    };
    spread(addr, 10).await;
    assert_eq!(total().await, 10);
    // a and b leave for c; once they have finished, their 10 requests still count.
    let done = running.reload(&parse(&config(&[(&c, 1.0)])));
    assert!(done.refused.is_empty(), "{:?}", done.refused);
    let up = running.upstream("app").unwrap();
    eventually(Duration::from_secs(10), "a and b retired", || {
        up.pool().snapshot().retiring().is_empty()
    })
    .await;
    assert_eq!(total().await, 10);
    spread(addr, 5).await;
    assert_eq!(total().await, 15);
}
