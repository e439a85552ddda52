//! Configuration reload: backends added, removed and re-weighted with the state of kept ones
//! intact, parts that need a restart refused, no request lost under load, and `rondo serve`
//! reloading on SIGHUP, `rondo reload --pid-file` and `--watch`, keeping the old configuration
//! when the new file is bad.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use balance::Health;
use common::{Client, MockBackend, config, eventually, health, start, web};

fn parse(toml: &str) -> rondo::config::Config {
    rondo::config::parse(toml, "test.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

async fn spread(addr: std::net::SocketAddr, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut client = Client::connect(addr).await;
    let mut out = std::collections::BTreeMap::new();
    for _ in 0..n {
        *out.entry(client.get("/").await.backend()).or_default() += 1;
    }
    out
}

const CHECKS: &str =
    "[upstreams.health_check]\ninterval = \"100ms\"\ntimeout = \"50ms\"\nfall = 2\nrise = 2\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_removes_and_reweights_backends_and_keeps_the_state_of_kept_ones() {
    let [a, b, c, d] = [
        MockBackend::start("a").await,
        MockBackend::start("b").await,
        MockBackend::start("c").await,
        MockBackend::start("d").await,
    ];
    let running = start(&config(&[(&a, 1.0), (&b, 1.0), (&c, 1.0)], "", CHECKS));
    let addr = web(&running);
    let before = spread(addr, 30).await;
    assert_eq!(before.values().copied().collect::<Vec<_>>(), [10, 10, 10]);
    // c fails its checks and goes down: a kept backend's health must survive the reload.
    c.set_health(503);
    eventually(Duration::from_secs(2), "c goes down", || {
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
    let done = running.reload(&parse(&config(
        &[(&a, 3.0), (&c, 1.0), (&d, 1.0)],
        "tries = 2",
        CHECKS,
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
    eventually(Duration::from_secs(2), "d is checked", || {
        d.seen().iter().any(|s| s.path == "/health")
    })
    .await;
    // c recovers and rejoins at its new weight.
    c.set_health(200);
    eventually(Duration::from_secs(2), "c comes back", || {
        health(&running, "app", "c") == Health::Up
    })
    .await;
    let last = spread(addr, 50).await;
    assert_eq!(
        last.values().copied().collect::<Vec<_>>(),
        [30, 10, 10],
        "{last:?}"
    );
    running.shutdown(Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_refuses_what_needs_a_restart_and_applies_the_rest() {
    let a = MockBackend::start("a").await;
    let b = MockBackend::start("b").await;
    let base = config(&[(&a, 1.0)], "", "");
    let running = start(&base);
    let mut more = config(&[(&a, 1.0), (&b, 1.0)], "", "");
    more.push_str(
        "[[listeners]]\nname = \"api\"\nbind = \"127.0.0.1:0\"\nupstream = \"other\"\n\
         [[upstreams]]\nname = \"other\"\nbackends = [{ address = \"127.0.0.1:9\" }]\n",
    );
    let done = running.reload(&parse(&more.replace("workers = 2", "workers = 3")));
    assert_eq!(done.upstreams, ["app"]);
    let refused = done.refused.join("\n");
    assert!(
        refused.contains("listener `api` uses upstream `other`, which is new"),
        "{refused}"
    );
    assert!(
        refused.contains("adding upstreams needs a restart"),
        "{refused}"
    );
    assert!(refused.contains("`workers` needs a restart"), "{refused}");
    assert!(running.addr("api").is_none());
    let seen = spread(web(&running), 4).await;
    assert_eq!(seen.get("b"), Some(&2), "{seen:?}");
    running.shutdown(Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_steady_load_lose_no_request() {
    let [a, b, c] = [
        MockBackend::start("a").await,
        MockBackend::start("b").await,
        MockBackend::start("c").await,
    ];
    let running = Arc::new(start(&config(&[(&a, 1.0), (&b, 1.0)], "", "")));
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
        parse(&config(&[(&a, 1.0), (&b, 1.0)], "", "")),
        parse(&config(&[(&b, 2.0), (&c, 1.0)], "", "")),
        parse(&config(&[(&c, 1.0), (&a, 3.0)], "keepalive = 0", "")),
    ];
    let started = std::time::Instant::now();
    let mut reloads = 0;
    while started.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(100)).await;
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
    assert!(reloads >= 15);
    assert!(ok > 500, "{ok} requests");
    assert_eq!(failed, 0);
    assert!(a.hits() > 0 && b.hits() > 0 && c.hits() > 0);
    Arc::try_unwrap(running)
        .unwrap()
        .shutdown(Duration::from_secs(1));
}

/// Ends the child process if the test fails half-way.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve_config(backends: &[&MockBackend], weight: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|b| {
            format!(
                "{{ address = \"{}\", id = \"{}\", weight = {weight} }}",
                b.addr, b.name
            )
        })
        .collect();
    format!(
        "workers = 1\naccess_log = false\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\
         [[upstreams]]\nname = \"app\"\nbackends = [{}]\n[upstreams.health_check]\nenabled = false\n",
        list.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reloads_on_sighup_and_on_file_change_and_keeps_serving_on_a_bad_file() {
    let a = MockBackend::start("a").await;
    let b = MockBackend::start("b").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rondo.toml");
    let pid_file = dir.path().join("rondo.pid");
    std::fs::write(&path, serve_config(&[&a], "1")).unwrap();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_rondo"))
            .args(["serve", "--log-format", "json", "--watch", "--config"])
            .arg(&path)
            .arg("--pid-file")
            .arg(&pid_file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        while let Some(Ok(line)) = lines.next() {
            let v = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    // The next log line whose message starts with `message` (within 5 s).
    let wait_for = |message: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line \"{message}\""));
            if line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
            {
                return line;
            }
        }
    };
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
    assert_eq!(pid, child.id());

    // `rondo reload --pid-file` after adding b: it reads the outcome from the admin API.
    std::fs::write(&path, serve_config(&[&a, &b], "1")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rondo"))
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
    std::fs::write(&path, serve_config(&[&b], "-1")).unwrap();
    Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    let bad = tokio::task::block_in_place(|| wait_for("configuration not reloaded"));
    let error = bad["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("{}:11:", path.display())),
        "{error}"
    );
    let still = spread(addr, 4).await;
    assert_eq!((still.get("a"), still.get("b")), (Some(&2), Some(&2)));

    // --watch: a good file is picked up without a signal.
    std::fs::write(&path, serve_config(&[&b], "2")).unwrap();
    let watched = tokio::task::block_in_place(|| wait_for("configuration reloaded"));
    assert_eq!(watched["trigger"], "file changed", "{watched}");
    assert_eq!(spread(addr, 4).await.get("b"), Some(&4));

    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let exited = tokio::task::block_in_place(|| {
        for _ in 0..100 {
            if let Some(s) = child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        None
    });
    assert_eq!(exited.map(|s| s.code()), Some(Some(0)));
    assert!(!pid_file.exists(), "the pid file is removed on exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_starts_changes_and_stops_listeners() {
    let a = MockBackend::start("a").await;
    let b = MockBackend::start("b").await;
    let two = |extra_listener: &str, route: &str| {
        let mut text = config(&[(&a, 1.0)], "", "");
        text = text.replace(
            "upstream = \"app\"\n",
            &format!("upstream = \"app\"\n{route}"),
        );
        text.push_str(&format!(
            "[[upstreams]]\nname = \"other\"\nbackends = [{{ address = \"{}\", id = \"b\" }}]\n{extra_listener}",
            b.addr
        ));
        text
    };
    let running = start(&two("", ""));
    let web_addr = web(&running);
    assert_eq!(common::get(web_addr, "/x").await.backend(), "a");

    // A new listener, and a route added to the existing one.
    let api = "[[listeners]]\nname = \"api\"\nbind = \"127.0.0.1:0\"\nupstream = \"other\"\n";
    let route = "[[listeners.routes]]\npath_prefix = \"/b/\"\nupstream = \"other\"\n";
    let done = running.reload(&parse(&two(api, route)));
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
    let done = running.reload(&parse(&two("", route)));
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
    running.shutdown(Duration::from_secs(1));
}
