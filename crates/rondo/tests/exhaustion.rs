//! Running out of file descriptors: `rondo serve` under `ulimit -n 256`, flooded with client
//! connections that send nothing. It must not spin, must keep serving normal requests, and
//! must not blame the backend for what happened on its own side.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{ConfigBuilder, Section, UpstreamBuilder, get, mock};

/// CPU time (user + system) of a process so far, from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// Kills the server if the test fails before it stopped it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_at_the_descriptor_limit_neither_spins_nor_ejects_the_backend()
{
    let backend = mock("a").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rondo.toml");
    let upstream = UpstreamBuilder::new("app")
        .backend("a", backend.addr(), 1.0)
        .health_check(Section::disabled());
    let config = ConfigBuilder::proxy(upstream).set("workers", 1);
    std::fs::write(&path, config.to_toml()).unwrap();
    // `ulimit -n` sets the hard limit too, so rondo cannot raise it past 256.
    let script = format!(
        "ulimit -n 256 && exec '{}' serve --log-format json --config '{}'",
        env!("CARGO_BIN_EXE_rondo"),
        path.display()
    );
    let mut child = KillOnDrop(
        Command::new("sh")
            .args(["-c", &script])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let (addr, admin) = tokio::task::block_in_place(|| {
        let (mut web, mut admin) = (None, None);
        while web.is_none() || admin.is_none() {
            let line = lines.next().expect("rondo logs").unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let at = |key: &str| {
                v[key]
                    .as_str()
                    .map(|a| a.parse::<std::net::SocketAddr>().unwrap())
            };
            match v["message"].as_str() {
                Some("listening") => web = at("addr"),
                Some(m) if m.starts_with("admin API") => admin = at("admin"),
                _ => {}
            }
        }
        (web.unwrap(), admin.unwrap())
    });
    std::thread::spawn(move || for _ in lines.by_ref() {});
    assert_eq!(get(addr, "/").await.status, 200);

    // 600 connections that never send a byte: more than 256 descriptors allow.
    let mut flood = Vec::new();
    for _ in 0..600 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await
        {
            flood.push(s);
        }
    }
    let cpu_before = cpu_time(pid);
    let mut served = 0;
    for _ in 0..5 {
        // A normal request while the flood holds: connect, ask, get an answer.
        let reply = tokio::time::timeout(Duration::from_secs(10), get(addr, "/")).await;
        if matches!(reply, Ok(ref r) if r.status == 200) {
            served += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let spent = cpu_time(pid) - cpu_before;
    assert_eq!(served, 5, "normal requests are served while flooded");
    // A spin detector, not a benchmark: a spinning accept loop burns the whole ~1 s.
    assert!(
        spent < Duration::from_millis(600),
        "rondo used {spent:?} of CPU while flooded"
    );

    drop(flood);
    // Nothing to recover from: the backend was never blamed.
    let stats: serde_json::Value = {
        let body = get(admin, "/api/v1/stats").await;
        serde_json::from_slice(&body.body).unwrap()
    };
    let b = &stats["upstreams"][0]["backends"][0];
    assert_eq!(b["state"], "up", "{b}");
    assert_eq!(b["breaker"], "closed", "{b}");
    for _ in 0..5 {
        assert_eq!(get(addr, "/").await.status, 200);
    }
}

/// What a new connection gets: the status line of its answer to a GET, or "" when the proxy
/// closed it without a word.
async fn first_line(addr: std::net::SocketAddr) -> String {
    let answer = common::raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    answer.lines().next().unwrap_or_default().to_owned()
}

const MIB: u64 = 1 << 20;

/// This process's resident memory in bytes (the in-process proxy's `max_memory` reads the
/// same figure).
fn resident() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    kib * 1024
}

/// Memory written page by page, so it is resident, enough to bring this process to `target`
/// bytes and at least 40 MiB: glibc maps a block that large on its own, so dropping it gives
/// the memory back at once.
fn ballast(target: u64) -> Vec<u8> {
    let n = target.saturating_sub(resident()).max(40 * MIB);
    std::hint::black_box(vec![1u8; usize::try_from(n).unwrap()])
}

/// The proxy's `max_memory` is set 64 MiB above this process's memory at the start; the test
/// then holds memory of its own to pass the limit (answered 503), to pass it by more than a
/// quarter (closed unanswered), and lets it go again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_memory_requests_are_answered_503_unforwarded_and_requests_in_progress_finish() {
    let backend = mock("a").await;
    let max = resident() + 64 * MIB;
    let proxy = common::start(
        &common::proxy_config(common::plain("app", &[&backend]))
            .set("workers", 1)
            .set("max_memory", format!("{}KiB", max / 1024)),
    );
    let (addr, admin) = (common::web(&proxy), proxy.admin_addr());

    // A request in progress before the limit is passed (the backend holds it for 5 s), a
    // kept-alive HTTP/1.1 connection and an HTTP/2 connection, both served once.
    backend.set_delay(Duration::from_secs(5));
    let in_progress =
        tokio::spawn(async move { common::Client::connect(addr).await.get("/").await.status });
    common::eventually(
        Duration::from_secs(10),
        "the slow request at the backend",
        || backend.in_flight() == 1,
    )
    .await;
    backend.set_delay(Duration::ZERO);
    let mut kept = common::Client::connect(addr).await;
    assert_eq!(kept.get("/").await.status, 200);
    let mut h2 = common::H2Client::connect(addr).await;
    assert_eq!(h2.send("GET", "/", b"").await.status, 200);

    // Just over the limit: the kept-alive connection's next request learns it. A kept-alive
    // connection that is idle when the episode starts may instead be closed (the worker sheds
    // idle client connections once per episode): then the next one, opened and kept alive the
    // same way, learns it.
    let over = ballast(max + 4 * MIB);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let refused = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "never over max_memory"
        );
        let reply = match kept.send("GET", "/", b"").await {
            Ok(reply) => reply,
            Err(_) => {
                kept = common::Client::connect(addr).await;
                continue;
            }
        };
        if reply.status == 503 {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(refused.header("retry-after"), Some("1"), "{refused:?}");
    assert_eq!(refused.header("connection"), Some("close"), "{refused:?}");
    assert!(refused.header("x-request-id").is_some(), "{refused:?}");
    assert_eq!(
        backend.in_flight(),
        1,
        "the request in progress is still in progress"
    );
    let hits = backend.hits();
    // A new connection is accepted and answered, and so is an HTTP/2 stream.
    let reply = common::get(addr, "/").await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.header("retry-after"), Some("1"), "{reply:?}");
    let reply = h2.send("GET", "/", b"").await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.header("retry-after"), Some("1"), "{reply:?}");
    assert_eq!(backend.hits(), hits, "nothing refused was forwarded");
    let counted = common::metric(
        admin,
        "rondo_requests_refused_total",
        &[("listener", "web")],
    )
    .await;
    assert_eq!(counted, Some(3.0));
    assert_eq!(
        in_progress.await.unwrap(),
        200,
        "the request in progress finished"
    );

    // More than a quarter over: new connections are closed unanswered; back under a quarter
    // over, answered 503 again; under 90 % of the limit, served.
    let far = ballast(max + max / 4 + 16 * MIB);
    common::eventually_async(Duration::from_secs(30), "closed unanswered", || async {
        first_line(addr).await.is_empty()
    })
    .await;
    drop(far);
    common::eventually_async(Duration::from_secs(30), "answered 503 again", || async {
        first_line(addr).await.starts_with("HTTP/1.1 503 ")
    })
    .await;
    drop(over);
    common::eventually_async(Duration::from_secs(30), "served again", || async {
        first_line(addr).await == "HTTP/1.1 200 OK"
    })
    .await;
    assert!(backend.hits() > hits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_client_connections_a_new_client_closes_the_oldest_idle_connection_only() {
    oldest_idle_connection_closes_for_a_new_client(Duration::ZERO).await;
}

/// As above, with the idle connections silent long enough to have given up their tasks
/// (parked, see proxy/parked.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_client_connections_a_new_client_closes_the_oldest_parked_connection_only() {
    oldest_idle_connection_closes_for_a_new_client(Duration::from_millis(500)).await;
}

/// Four keep-alive connections go idle in turn, each silent for `silence` after the last;
/// a fifth client at `max_client_connections = 4` closes the oldest and no other.
async fn oldest_idle_connection_closes_for_a_new_client(silence: Duration) {
    let backend = mock("a").await;
    let proxy = common::start(
        &common::proxy_config(common::plain("app", &[&backend]))
            .set("workers", 1)
            .listeners_set("max_client_connections", 4),
    );
    let addr = common::web(&proxy);
    // Four keep-alive connections, idle in this order.
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut c = common::Client::connect(addr).await;
        assert_eq!(c.get("/").await.status, 200);
        idle.push(c);
        tokio::time::sleep(silence / 4).await;
    }
    tokio::time::sleep(silence).await;
    let mut newcomer = common::Client::connect(addr).await;
    assert_eq!(newcomer.get("/").await.status, 200);
    common::eventually(Duration::from_secs(10), "the oldest one closed", || {
        idle[0].is_closed()
    })
    .await;
    // One more round trip, so a close of any other would have arrived by now.
    assert_eq!(newcomer.get("/").await.status, 200);
    for (n, c) in idle.iter_mut().enumerate().skip(1) {
        assert!(!c.is_closed(), "connection {n} was closed too");
        assert_eq!(c.get("/").await.status, 200);
    }
}
