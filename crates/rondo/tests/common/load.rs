//! Steady load for the fault tests: keep-alive clients sending GETs back to back through the
//! proxy, and a tally of everything they saw — answers by status and backend, bodies that
//! broke off, connection errors — so a test can wait on the traffic's state and then assert
//! what a client saw during a fault.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::Client;

/// A response whose body broke off before its announced end.
#[derive(Debug, Clone)]
pub struct Broken {
    pub status: u16,
    pub backend: String,
    /// Body bytes that arrived before the break.
    pub received: usize,
}

/// What the load's clients saw.
#[derive(Debug, Default)]
pub struct Tally {
    ok: AtomicUsize,
    /// Answers that were not 200 (status, body), and connection errors (status 0, error).
    failed: Mutex<Vec<(u16, String)>>,
    /// Responses whose body broke off.
    broken: Mutex<Vec<Broken>>,
    /// Complete 200s by backend name.
    by_backend: Mutex<HashMap<String, usize>>,
    /// Exchanges each client finished, whatever their result.
    rounds: Vec<AtomicUsize>,
}

impl Tally {
    /// Complete 200 answers.
    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    /// Complete 200 answers from `backend`.
    pub fn from(&self, backend: &str) -> usize {
        self.by_backend.lock().get(backend).copied().unwrap_or(0)
    }

    /// Non-200 answers and connection errors, in order.
    pub fn failed(&self) -> Vec<(u16, String)> {
        self.failed.lock().clone()
    }

    /// Responses whose body broke off, in order.
    pub fn broken(&self) -> Vec<Broken> {
        self.broken.lock().clone()
    }

    /// Exchanges each client has finished so far, to pass to [`Tally::each_did`].
    pub fn rounds(&self) -> Vec<usize> {
        self.rounds
            .iter()
            .map(|r| r.load(Ordering::SeqCst))
            .collect()
    }

    /// True once every client has finished `n` more exchanges since `then` (a
    /// [`Tally::rounds`]): none still has a request in flight from before then.
    pub fn each_did(&self, then: &[usize], n: usize) -> bool {
        self.rounds
            .iter()
            .zip(then)
            .all(|(r, t)| r.load(Ordering::SeqCst) >= t + n)
    }

    /// Waits until every client has finished `n` more exchanges from now (a deadline of a
    /// minute against a hang, panicking with `what`).
    pub async fn wait_each_does(&self, n: usize, what: &str) {
        let then = self.rounds();
        super::eventually(Duration::from_secs(60), what, || self.each_did(&then, n)).await;
    }

    /// Waits until each named backend has answered more than `n` GETs (a deadline of 20 s),
    /// then checks that no GET failed meanwhile.
    pub async fn wait_all_serve(&self, names: &[&str], n: usize) {
        super::eventually(Duration::from_secs(20), "all backends serve", || {
            names.iter().all(|b| self.from(b) > n)
        })
        .await;
        assert!(self.failed().is_empty(), "{:?}", self.failed().first());
    }
}

/// `clients` keep-alive clients sending `GET /` back to back until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts the clients against `addr`.
    pub fn start(addr: SocketAddr, clients: usize) -> Load {
        Load::start_with(addr, clients, false)
    }

    /// Starts the clients against `addr`, over HTTP/2 with prior knowledge when `http2`.
    pub fn start_with(addr: SocketAddr, clients: usize, http2: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally {
            rounds: (0..clients).map(|_| AtomicUsize::new(0)).collect(),
            ..Tally::default()
        });
        let tasks = (0..clients)
            .map(|i| {
                let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
                tokio::spawn(async move {
                    let connect = || async move {
                        if http2 {
                            Client::connect_http2(addr).await
                        } else {
                            Client::connect(addr).await
                        }
                    };
                    let mut c = connect().await;
                    while !stop.load(Ordering::SeqCst) {
                        let reconnect = exchange(&mut c, &tally).await;
                        tally.rounds[i].fetch_add(1, Ordering::SeqCst);
                        if reconnect || c.is_closed() {
                            c = connect().await;
                        }
                    }
                })
            })
            .collect();
        Load { stop, tally, tasks }
    }

    /// What the clients saw so far.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// Stops the clients after their current exchange and returns the tally.
    pub async fn stop(self) -> Arc<Tally> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.tally
    }
}

/// One GET, tallied; true when the connection cannot carry another request.
async fn exchange(c: &mut Client, tally: &Tally) -> bool {
    let partial = match c.get_partial("/").await {
        Ok(p) => p,
        Err(e) => {
            tally
                .failed
                .lock()
                .push((0, format!("connection error: {e}")));
            return true;
        }
    };
    let reply = partial.reply;
    if !partial.complete {
        tally.broken.lock().push(Broken {
            status: reply.status,
            backend: reply.backend(),
            received: reply.body.len(),
        });
        return true;
    }
    if reply.status == 200 {
        tally.ok.fetch_add(1, Ordering::SeqCst);
        *tally.by_backend.lock().entry(reply.backend()).or_default() += 1;
    } else {
        tally.failed.lock().push((reply.status, reply.text()));
    }
    reply.header("connection") == Some("close")
}
