//! Active health checks against real backends on loopback: HTTP and TCP probes, fall/rise
//! hysteresis seen in the pool and in proxied traffic, jitter, timeouts, and `enabled = false`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use balance::Health;
use common::{
    Client, ConfigBuilder, MockBackend, Process, Section, UpstreamBuilder, app, eventually,
    eventually_async, get, health, mock, parse, proxy_config, start, web,
};

/// Health checks of `kind` every `interval_ms` (timeout nearly as long, so a loaded machine
/// does not fail a healthy backend), fall 2, rise 2, jitter 0.1; change any key with `.set`.
fn checks(kind: &str, interval_ms: u64) -> Section {
    Section::new()
        .set("kind", kind)
        .duration("interval", Duration::from_millis(interval_ms))
        .duration("timeout", Duration::from_millis(interval_ms * 9 / 10))
        .set("fall", 2)
        .set("rise", 2)
        .set("jitter", 0.1)
}

/// Checks switched off (with an interval that would show any probe quickly).
fn checks_off() -> Section {
    checks("http", 100).set("enabled", false)
}

async fn backends_of(addr: std::net::SocketAddr, n: usize) -> Vec<String> {
    let mut client = Client::connect(addr).await;
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(client.get("/").await.backend());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_failing_http_checks_leaves_rotation_after_fall_and_returns_after_rise() {
    let a = mock("a").await;
    let b = mock("b").await;
    // A check's timeout long enough that a loaded machine does not turn a 503 into "timeout"
    // (the test reads which of the two the last check saw).
    let interval = 600;
    let running = start(&proxy_config(app(&[(&a, 1.0), (&b, 1.0)]).health_check(
        checks("http", interval).duration("timeout", Duration::from_millis(500)),
    )));
    let addr = web(&running);
    // Both serve; the checks have started.
    let first = backends_of(addr, 4).await;
    assert!(first.contains(&"a".to_owned()) && first.contains(&"b".to_owned()));
    eventually(Duration::from_secs(10), "a first check of a", || {
        a.seen().iter().any(|s| s.path == "/health")
    })
    .await;

    a.set_health(503);
    // Leaves rotation after `fall` (2) failed checks; how long that takes is not asserted
    // (a loaded machine delays timers).
    let counters = || {
        running
            .upstream("app")
            .unwrap()
            .check_counters("a")
            .unwrap()
    };
    eventually(Duration::from_secs(10), "a goes down", || {
        health(&running, "app", "a") == Health::Down
    })
    .await;
    assert!(counters().bad_status() >= 2, "{:?}", counters());
    assert!(backends_of(addr, 10).await.iter().all(|n| n == "b"));
    assert_eq!(counters().last_result().as_deref(), Some("status 503"));

    a.set_health(200);
    eventually(Duration::from_secs(10), "a comes back", || {
        health(&running, "app", "a") == Health::Up
    })
    .await;

    let after = backends_of(addr, 10).await;
    assert_eq!(after.iter().filter(|n| *n == "a").count(), 5, "{after:?}");

    // What a probe looks like on the wire.
    let probe = a.seen().into_iter().find(|s| s.path == "/health").unwrap();
    assert_eq!(probe.method, "GET");
    assert_eq!(probe.header("user-agent"), Some("rondo-health-check"));
    assert_eq!(probe.header("connection"), Some("close"));
    assert_eq!(probe.header("host"), Some(a.addr().to_string().as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_checks_mark_a_killed_backend_down_and_a_restarted_one_up() {
    let a = mock("a").await;
    let b = mock("b").await;
    let running = start(&proxy_config(
        app(&[(&a, 1.0), (&b, 1.0)]).health_check(checks("tcp", 100)),
    ));
    a.kill().await;
    eventually(Duration::from_secs(10), "a goes down", || {
        health(&running, "app", "a") == Health::Down
    })
    .await;
    let counters = running
        .upstream("app")
        .unwrap()
        .check_counters("a")
        .unwrap();
    assert!(counters.refused() >= 2, "{counters:?}");
    assert!(backends_of(web(&running), 6).await.iter().all(|n| n == "b"));

    a.restart().await.unwrap();
    eventually(Duration::from_secs(10), "a comes back", || {
        health(&running, "app", "a") == Health::Up
    })
    .await;
    assert_eq!(
        health(&running, "app", "b"),
        Health::Up,
        "b never failed a check"
    );
    assert!(
        backends_of(web(&running), 6)
            .await
            .contains(&"a".to_owned())
    );
    // A TCP check sends no request.
    assert!(a.seen().iter().all(|s| s.path != "/health"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_spreads_checks_of_many_backends() {
    let mocks = [
        mock("a").await,
        mock("b").await,
        mock("c").await,
        mock("d").await,
    ];
    let list: Vec<(&MockBackend, f64)> = mocks.iter().map(|m| (m, 1.0)).collect();
    let interval = Duration::from_millis(100);
    let running = start(&proxy_config(
        app(&list).health_check(checks("http", 100).set("fall", 3).set("jitter", 0.5)),
    ));
    eventually(
        Duration::from_secs(20),
        "six checks of every backend",
        || {
            mocks
                .iter()
                .all(|m| m.seen().iter().filter(|s| s.path == "/health").count() >= 6)
        },
    )
    .await;
    drop(running); // no check after this point

    let times: Vec<Vec<std::time::Instant>> = mocks
        .iter()
        .map(|m| {
            m.seen()
                .iter()
                .filter(|s| s.path == "/health")
                .map(|s| s.at)
                .collect()
        })
        .collect();
    for t in &times {
        assert!(
            t.len() >= 6,
            "each backend is checked about every 100 ms: {t:?}"
        );
    }
    // The k-th checks of the four backends do not fire together. A starved runtime can
    // fire due timers in one burst, so most rounds, not every one, must be spread.
    let spreads: Vec<Duration> = (0..6)
        .map(|k| {
            let at: Vec<_> = times.iter().map(|t| t[k]).collect();
            *at.iter().max().unwrap() - *at.iter().min().unwrap()
        })
        .collect();
    let spread_rounds = spreads
        .iter()
        .filter(|s| **s > Duration::from_millis(5))
        .count();
    assert!(spread_rounds >= 4, "rounds fired together: {spreads:?}");
    // Gaps are never shorter than interval × (1 - 0.5) (a timer never fires early; load can
    // only make them longer, so no upper bound is asserted) and they vary.
    let gaps: Vec<Duration> = times
        .iter()
        .flat_map(|t| t.windows(2).map(|w| w[1] - w[0]))
        .collect();
    for g in &gaps {
        assert!(*g >= interval / 2 - Duration::from_millis(5), "gap {g:?}");
    }
    let (min, max) = (gaps.iter().min().unwrap(), gaps.iter().max().unwrap());
    assert!(*max - *min > Duration::from_millis(20), "{min:?}..{max:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_times_out_without_checks_piling_up() {
    // Accepts connections and never answers; counts the ones open at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let (peak, total) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (o, p, t) = (Arc::clone(&open), Arc::clone(&peak), Arc::clone(&total));
    let server = tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            t.fetch_add(1, Ordering::SeqCst);
            let now = o.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            let o = Arc::clone(&o);
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 1024];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    let b = mock("b").await;
    let running = start(
        &proxy_config(
            UpstreamBuilder::new("app")
                .backend("silent", silent, 1.0)
                .backend("b", b.addr(), 1.0)
                .health_check(
                    checks("http", 100)
                        .duration("timeout", Duration::from_millis(60))
                        .set("jitter", 0.0),
                ),
        )
        .set("workers", 1),
    );
    eventually(
        Duration::from_secs(10),
        "the silent backend goes down",
        || health(&running, "app", "silent") == Health::Down,
    )
    .await;
    let counters = || {
        running
            .upstream("app")
            .unwrap()
            .check_counters("silent")
            .unwrap()
    };
    // Keep probing a while longer: four timed-out probes in all.
    eventually(Duration::from_secs(10), "four timed-out probes", || {
        counters().timed_out() >= 4
    })
    .await;
    let counters = counters();
    assert!(counters.timed_out() >= 4, "{counters:?}");
    assert_eq!(counters.last_result().as_deref(), Some("timeout"));
    // Piled-up probes would leave every connection open (peak = total). The server may see a
    // timed-out probe's close only after it accepted the next one on a loaded machine, so a
    // peak of 2 is allowed; more is piling up.
    let (peak, total) = (peak.load(Ordering::SeqCst), total.load(Ordering::SeqCst));
    assert!(
        peak <= 2 && total >= 4,
        "one probe at a time: peak {peak} of {total}"
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_checks_send_no_probes() {
    let a = mock("a").await;
    a.set_health(500);
    let running = start(&proxy_config(app(&[(&a, 1.0)]).health_check(checks_off())));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(a.seen().is_empty());
    assert_eq!(health(&running, "app", "a"), Health::Up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_checks_off_by_reload_brings_back_the_backends_they_took_out() {
    let a = mock("a").await;
    let b = mock("b").await;
    let list = [(&a, 1.0), (&b, 1.0)];
    let running = start(&proxy_config(app(&list).health_check(checks("http", 100))));
    a.set_health(503);
    eventually(Duration::from_secs(10), "a goes down", || {
        health(&running, "app", "a") == Health::Down
    })
    .await;
    let off = proxy_config(app(&list).health_check(checks_off()));
    let done = running.reload(&parse(&off));
    assert!(done.refused.is_empty(), "{:?}", done.refused);
    eventually(Duration::from_secs(10), "a comes back", || {
        health(&running, "app", "a") == Health::Up
    })
    .await;
    let probes = a.seen().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.seen().len(), probes, "no probe after checks are off");
    let counters = running
        .upstream("app")
        .unwrap()
        .check_counters("a")
        .unwrap();
    assert_eq!(
        counters.last_result().as_deref(),
        Some("health checks disabled")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_checks_take_every_backend_out_the_503_log_and_rondo_status_say_which_check_failed() {
    // A newcomer's backends have no /health: two answer 404, the third is not running.
    let (a, b, c) = (mock("a").await, mock("b").await, mock("c").await);
    a.set_health(404);
    b.set_health(404);
    c.kill().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rondo.toml");
    let config = ConfigBuilder::proxy(
        app(&[(&a, 1.0), (&b, 1.0), (&c, 1.0)]).health_check(checks("http", 100)),
    )
    .set("workers", 1);
    std::fs::write(&path, config.to_toml()).unwrap();
    let rondo = Process::serve(&path);
    let listening = tokio::task::block_in_place(|| rondo.wait_for("listening"));
    let addr: std::net::SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();
    let admin = tokio::task::block_in_place(|| rondo.wait_for("admin API"));
    let admin = admin["admin"].as_str().unwrap().to_owned();

    // Requests get 503 once the checks took all three out (after `fall` failures each). The
    // first 503s may come earlier, while the stopped backend is out by passive ejection and
    // not yet by its checks: those say no more, rightly, so wait for the checks' verdict.
    eventually_async(
        Duration::from_secs(10),
        "every backend down by checks",
        async || {
            get(addr, "/").await.status == 503
                && get(admin.parse().unwrap(), "/api/v1/stats")
                    .await
                    .text()
                    .contains("\"down_by_checks\"")
        },
    )
    .await;
    assert_eq!(get(addr, "/").await.status, 503);
    // The line says which check failed on how many backends and how. On a quiet machine it is
    // "status 404 on 2, connection refused on 1"; a loaded one may time a check out, so only
    // the shape is asserted, plus the refused backend that cannot be anything else.
    let line = tokio::task::block_in_place(|| {
        rondo.wait_for_line("the 503 line with the checks' verdict", |l| {
            l["status"] == 503
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("GET /health"))
        })
    });
    let message = line["message"].as_str().unwrap();
    let why = message
        .strip_prefix("no backend available in upstream `app`: ")
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        why.starts_with("GET /health failed on all 3 backends: ")
            && why.contains("connection refused on 1")
            && why.ends_with(" (expected 200-399)"),
        "{line}"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rondo"))
        .args(["status", "--admin", &admin])
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("every backend is down: GET /health failed on all 3 backends: "),
        "{table}"
    );

    // One backend passing again: the line goes away (the cause is no longer "every backend").
    a.set_health(200);
    eventually_async(Duration::from_secs(10), "a back up", async || {
        get(addr, "/").await.status == 200
    })
    .await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rondo"))
        .args(["status", "--admin", &admin])
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(!table.contains("every backend is down"), "{table}");
}
