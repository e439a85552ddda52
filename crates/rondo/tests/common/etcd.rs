//! A real etcd server for the fleet tests: started on free loopback ports with a temporary
//! data directory, stopped by its PID when dropped (or by [`Etcd::stop`], keeping its data for
//! [`Etcd::restart`]); `etcdctl` writes to it as an operator would. And a [`Relay`] in front of
//! it that a test cuts to partition rondo from etcd while etcd itself keeps running.

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
