//! A real etcd server for the fleet tests: started on free loopback ports with a temporary
//! data directory, stopped by its PID when dropped (or by [`Etcd::stop`], keeping its data for
//! [`Etcd::restart`]); `etcdctl` writes to it as an operator would. And a [`Relay`] in front of
//! it that a test cuts to partition rondo from etcd while etcd itself keeps running. And a
//! stand-in gateway for what a real etcd cannot be made to do on cue (compact a watch away).

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A running (or stopped) etcd server.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client: SocketAddr,
    peer: SocketAddr,
}

/// A free loopback port (bound, then released for the server to take).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub fn start() -> Etcd {
        let mut etcd = Etcd {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            client: free_port(),
            peer: free_port(),
        };
        etcd.restart();
        etcd
    }

    /// The client URL, for `[discovery.etcd] endpoints`.
    pub fn url(&self) -> String {
        format!("http://{}", self.client)
    }

    /// The client address.
    pub fn addr(&self) -> SocketAddr {
        self.client
    }

    /// Starts it again on the same ports and data (after [`Etcd::stop`]), and waits until it
    /// answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "etcd is running");
        let (client, peer) = (
            format!("http://{}", self.client),
            format!("http://{}", self.peer),
        );
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).unwrap();
        let child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("test={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd is installed (scripts/test installs etcd-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.etcdctl(&["endpoint", "health"]).is_err() {
            assert!(
                Instant::now() < deadline,
                "etcd did not start: see {:?}",
                self.dir.path()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it (by PID), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `etcdctl` against it; its standard output, or its error.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.url(), "--command-timeout", "3s"])
            .args(args)
            .output()
            .expect("etcdctl is installed (scripts/test installs etcd-client)");
        match out.status.success() {
            true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    }

    /// `etcdctl put KEY VALUE`.
    pub fn put(&self, key: &str, value: &str) {
        self.etcdctl(&["put", key, value]).unwrap();
    }

    /// `etcdctl del KEY`.
    pub fn del(&self, key: &str) {
        self.etcdctl(&["del", key]).unwrap();
    }

    /// `etcdctl get KEY --print-value-only`.
    pub fn get(&self, key: &str) -> String {
        self.etcdctl(&["get", key, "--print-value-only"])
            .unwrap()
            .trim()
            .to_owned()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP relay on loopback to `target` that can be cut (every connection closed, new ones
/// closed at once) and healed: a network partition between rondo and etcd.
pub struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    cuts: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Starts relaying connections to `target`.
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(tokio::sync::Notify::new());
        let (is_cut, on_cut) = (Arc::clone(&cut), Arc::clone(&cuts));
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if is_cut.load(Ordering::SeqCst) {
                    continue;
                }
                let on_cut = Arc::clone(&on_cut);
                let on_cut_flag = Arc::clone(&is_cut);
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    if is_cut_now(&on_cut_flag) {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = on_cut.notified() => {}
                    }
                });
            }
        });
        Relay {
            addr,
            cut,
            cuts,
            task,
        }
    }

    /// The client URL through the relay.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every relayed connection and refuses new ones until [`Relay::heal`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.cuts.notify_waiters();
    }

    /// Relays again.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

fn is_cut_now(flag: &AtomicBool) -> bool {
    flag.load(Ordering::SeqCst)
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A stand-in for etcd's JSON gateway that compacts away the revision of the first watch:
/// the first read of the prefix lists backend `a` at revision 5; the watch from 6 is cancelled
/// as compacted (at 7); the second read lists `a` and `b` at revision 8, and its watch stays
/// open (`key_a`, `key_b`: the keys of `a` and `b`). Returns its address and the number of prefix reads so far.
pub async fn compacting_gateway(
    key_a: &str,
    a: std::net::SocketAddr,
    key_b: &str,
    b: std::net::SocketAddr,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use base64::Engine as _;
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let member = |key: &str, addr: std::net::SocketAddr| {
        serde_json::json!({
            "key": b64(key),
            "value": b64(&format!(r#"{{"address": "{addr}"}}"#)),
            "mod_revision": "2",
        })
    };
    let first = serde_json::json!({ "header": { "revision": "5" }, "kvs": [member(key_a, a)] });
    let second = serde_json::json!({ "header": { "revision": "8" }, "kvs": [member(key_a, a), member(key_b, b)] });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&reads);
    tokio::spawn(async move {
        let mut watches = 0;
        while let Ok((mut s, _)) = listener.accept().await {
            // One request per connection, as rondo's gateway client sends them.
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            let body = loop {
                let n = s.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(str::to_owned)
                        })
                        .and_then(|n| n.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        break Some((head.to_owned(), body.to_owned()));
                    }
                }
            };
            let Some((head, body)) = body else { continue };
            if head.starts_with("POST /v3/watch") {
                watches += 1;
                let mut out = String::from("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
                let mut chunk = |line: &str| {
                    let line = format!("{line}\n");
                    out.push_str(&format!("{:x}\r\n{line}\r\n", line.len()));
                };
                chunk(r#"{"result":{"header":{"revision":"8"},"created":true}}"#);
                if watches == 1 {
                    chunk(r#"{"result":{"header":{},"canceled":true,"compact_revision":"7"}}"#);
                }
                let _ = s.write_all(out.as_bytes()).await;
                // Keep the watch open (the first one too, as etcd does after a cancel).
                tokio::spawn(async move {
                    let _ = s.read(&mut buf).await;
                });
                continue;
            }
            let answer = if body.contains("range_end") {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                if n == 0 {
                    first.clone()
                } else {
                    second.clone()
                }
            } else {
                serde_json::json!({ "header": { "revision": "8" } })
            }
            .to_string();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                answer.len()
            );
            let _ = s.write_all(response.as_bytes()).await;
        }
    });
    (addr, reads)
}
