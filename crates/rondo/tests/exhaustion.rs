//! Running out of file descriptors: `rondo serve` under `ulimit -n 256`, flooded with client
//! connections that send nothing. It must not spin, must keep serving normal requests, and
//! must not blame the backend for what happened on its own side.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{get, mock};

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
    std::fs::write(
        &path,
        format!(
            "workers = 1\naccess_log = false\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\
             [[upstreams]]\nname = \"app\"\nbackends = [{{ address = \"{}\", id = \"a\" }}]\n\
             [upstreams.health_check]\nenabled = false\n",
            backend.addr()
        ),
    )
    .unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_memory_new_connections_are_refused_and_under_it_they_are_served() {
    let backend = mock("a").await;
    let config = |max: &str| {
        common::proxy_config(common::plain("app", &[&backend]))
            .set("workers", 1)
            .set("max_memory", max)
    };
    // This process (tests, backend and proxy) holds far more than 1 MiB: always over.
    let over = common::start(&config("1MiB"));
    let addr = common::web(&over);
    common::eventually_async(
        Duration::from_secs(30),
        "the memory watch's first reading",
        || async { first_line(addr).await.is_empty() },
    )
    .await;
    for _ in 0..5 {
        assert_eq!(first_line(addr).await, "", "refused without a response");
    }
    let hits = backend.hits();
    drop(over);

    // The same with room to spare: served.
    let under = common::start(&config("64GiB"));
    let addr = common::web(&under);
    for _ in 0..5 {
        assert_eq!(first_line(addr).await, "HTTP/1.1 200 OK");
    }
    assert_eq!(backend.hits(), hits + 5);
}
