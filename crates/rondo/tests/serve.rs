//! `rondo serve` as an operator runs it: the binary, a config file, JSON logs on stderr, an
//! access line per request, and a clean exit on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{MockBackend, get};

#[tokio::test(flavor = "multi_thread")]
async fn serve_logs_json_access_lines_and_exits_cleanly_on_sigterm() {
    let backend = MockBackend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rondo.toml");
    std::fs::write(
        &path,
        format!(
            "workers = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\
             [[upstreams]]\nname = \"app\"\nbackends = [{{ address = \"{}\" }}]\n[upstreams.health_check]\nenabled = false\n",
            backend.addr
        ),
    )
    .unwrap();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_rondo"))
            .args(["serve", "--log-format", "json", "--config"])
            .arg(&path)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Some(Ok(line)) = lines.next() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_json = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>| {
        let line = rx.blocking_recv().expect("rondo printed a line");
        serde_json::from_str::<serde_json::Value>(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    let listening = tokio::task::block_in_place(|| next_json(&mut rx));
    assert_eq!(listening["message"], "listening", "{listening}");
    let addr: std::net::SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();

    let reply = get(addr, "/hello?x=1").await;
    assert_eq!(reply.status, 200);
    let access = tokio::task::block_in_place(|| {
        loop {
            let line = next_json(&mut rx);
            if line["target"] == "rondo::access" {
                break line;
            }
        }
    });
    assert_eq!(access["target"], "rondo::access");
    assert_eq!(access["method"], "GET");
    assert_eq!(access["path"], "/hello?x=1");
    assert_eq!(access["status"], 200);
    assert_eq!(access["backend"], backend.addr.to_string());
    assert_eq!(access["attempts"], 1);

    // SIGTERM: graceful shutdown, exit status 0.
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::block_in_place(|| {
        for _ in 0..100 {
            if let Some(s) = child.0.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.0.kill();
        None
    });
    assert_eq!(
        status.map(|s| s.code()),
        Some(Some(0)),
        "exits 0 after SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_writes_the_access_log_file_and_reopens_it_on_sigusr1() {
    let backend = MockBackend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let (config, log) = (dir.path().join("rondo.toml"), dir.path().join("access.log"));
    std::fs::write(
        &config,
        format!(
            "workers = 1\naccess_log = {{ path = \"{}\", format = \"$status $request_uri\" }}\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\
             [[upstreams]]\nname = \"app\"\nbackends = [{{ address = \"{}\" }}]\n[upstreams.health_check]\nenabled = false\n",
            log.display(),
            backend.addr
        ),
    )
    .unwrap();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_rondo"))
            .args(["serve", "--log-format", "json", "--config"])
            .arg(&config)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let addr: std::net::SocketAddr = tokio::task::block_in_place(|| {
        loop {
            let line = lines.next().expect("rondo printed a line").unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["message"] == "listening" {
                break v["addr"].as_str().unwrap().parse().unwrap();
            }
        }
    });
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || while let Some(Ok(_)) = lines.next() {});

    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    assert_eq!(get(addr, "/first").await.status, 200);
    common::eventually(Duration::from_secs(10), "the first line", || {
        read(&log) == "200 /first\n"
    })
    .await;

    // logrotate: move the file away, then SIGUSR1; the next line goes to a new file.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-USR1", &pid])
            .status()
            .unwrap()
            .success()
    );
    common::eventually(Duration::from_secs(10), "a new access.log", || {
        // The writer creates the file again when it reopens.
        log.exists()
    })
    .await;
    assert_eq!(get(addr, "/second").await.status, 200);
    common::eventually(Duration::from_secs(10), "the line in the new file", || {
        read(&log).contains("200 /second\n")
    })
    .await;
    assert!(read(&rotated).starts_with("200 /first\n"));
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "SIGUSR1 does not stop rondo"
    );
}

/// Kills the server if the test fails before it stopped it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
