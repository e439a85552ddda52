//! The integration harness: the one mock backend and the one config builder (both in
//! `rondo::lab`, shared with the demo and `compare`), a proxy started in-process that stops
//! when dropped, a plain HTTP/1.1 client, and `eventually` to wait on state instead of time.
#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]

pub mod browser;
pub mod etcd;
pub mod h2raw;
pub mod load;
pub mod prometheus;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use rondo::lab::backend::{
    Backend, BackendBuilder, Fault, Generated, Seen, ServiceTime, header_pairs as header_list,
};
pub use rondo::lab::config::{ConfigBuilder, Section, UpstreamBuilder};

/// The mock backend under its old test name.
pub type MockBackend = Backend;

/// One sample of the proxy's `/metrics` at `admin`: the value of the first series named `name`
/// carrying every label of `labels`; `None` when no series matches.
pub async fn metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = get(admin, "/metrics").await.text();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// Starts a mock backend named `name` on a free loopback port.
pub async fn mock(name: &str) -> Backend {
    Backend::start(name).await.unwrap()
}

/// Starts one mock backend per name.
pub async fn backends(names: &[&str]) -> Vec<Backend> {
    let mut v = Vec::new();
    for n in names {
        v.push(mock(n).await);
    }
    v
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn backend(&self) -> String {
        self.header("x-backend").unwrap_or("-").to_owned()
    }
}

/// A keep-alive client connection: HTTP/1.1, or HTTP/2 with prior knowledge.
pub struct Client {
    sender: Sender,
}

enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        Client {
            sender: Sender::Http1(sender),
        }
    }

    /// An HTTP/2 connection (prior knowledge, as `curl --http2-prior-knowledge`).
    pub async fn connect_http2(addr: SocketAddr) -> Client {
        Client {
            sender: Sender::Http2(h2_sender(addr).await),
        }
    }

    /// `path` on host `test.local`, in the form the connection's protocol takes.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> Request<Full<Bytes>> {
        let body = Full::new(Bytes::copy_from_slice(body));
        match self.sender {
            Sender::Http1(_) => Request::builder()
                .method(method)
                .uri(path)
                .header("host", "test.local"),
            Sender::Http2(_) => Request::builder()
                .method(method)
                .uri(format!("http://test.local{path}")),
        }
        .body(body)
        .unwrap()
    }

    async fn exchange(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error> {
        match &mut self.sender {
            Sender::Http1(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
            Sender::Http2(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
        }
    }

    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Reply, hyper::Error> {
        let req = self.request(method, path, body);
        let res = self.exchange(req).await?;
        let status = res.status().as_u16();
        let headers = header_list(res.headers());
        let body = res.into_body().collect().await?.to_bytes().to_vec();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        self.send("GET", path, b"").await.unwrap()
    }

    /// A GET whose response body may break off: an error only when no response head came;
    /// a body that ended early is returned with what arrived of it.
    pub async fn get_partial(&mut self, path: &str) -> Result<Partial, hyper::Error> {
        let req = self.request("GET", path, b"");
        let res = self.exchange(req).await?;
        let status = res.status().as_u16();
        let headers = header_list(res.headers());
        let mut body = res.into_body();
        let mut received = Vec::new();
        let complete = loop {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        received.extend_from_slice(data);
                    }
                }
                Some(Err(_)) => break false,
                None => break true,
            }
        };
        Ok(Partial {
            reply: Reply {
                status,
                headers,
                body: received,
            },
            complete,
        })
    }

    /// True once the connection was closed (by either side).
    pub fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2(s) => s.is_closed(),
        }
    }
}

/// A response as far as it arrived: `complete` is false when its body broke off before the
/// end its framing announced, and `reply.body` then holds what came before the break.
#[derive(Debug)]
pub struct Partial {
    pub reply: Reply,
    pub complete: bool,
}

/// Reads one HTTP/1.1 response (head and `Content-Length` body) from `s`; the head as
/// lower-case text. Panics when the connection ends before a whole response.
pub async fn read_response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end + 4]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if got.len() >= end + 4 + length {
                return head;
            }
        }
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before a whole response: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// One request on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    Client::connect(addr).await.get(path).await
}

/// Sends raw bytes and reads until the server closes or `limit` passes.
pub async fn raw(addr: SocketAddr, bytes: &[u8], limit: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Upstream `app` with `backends` (weights as given, ids = the backends' names).
pub fn app(backends: &[(&Backend, f64)]) -> UpstreamBuilder {
    backends
        .iter()
        .fold(UpstreamBuilder::new("app"), |u, (b, w)| {
            u.backend(b.name(), b.addr(), *w)
        })
}

/// The usual test config: one listener `web` on port 0 in front of `upstream`, admin API on
/// port 0, a 5 s shutdown grace.
pub fn proxy_config(upstream: UpstreamBuilder) -> ConfigBuilder {
    ConfigBuilder::proxy(upstream).duration("shutdown_grace", Duration::from_secs(5))
}

/// [`proxy_config`] of [`app`]`(backends)`.
pub fn config(backends: &[(&Backend, f64)]) -> ConfigBuilder {
    proxy_config(app(backends))
}

/// A proxy running in-process; dropping it shuts it down (one second of grace).
#[derive(Debug)]
pub struct Proxy {
    running: Option<rondo::runtime::Running>,
}

impl std::ops::Deref for Proxy {
    type Target = rondo::runtime::Running;
    fn deref(&self) -> &rondo::runtime::Running {
        self.running.as_ref().expect("running until dropped")
    }
}

impl Proxy {
    /// Shuts down now with `grace` for requests in flight.
    pub fn shutdown(mut self, grace: Duration) {
        if let Some(r) = self.running.take() {
            r.shutdown(grace);
        }
    }
}

impl Proxy {
    /// Starts a graceful shutdown on a blocking thread, with a grace far longer than any test
    /// waits (600 s): a test that sees it end (with [`shutdown_ends`]) knows it ended because
    /// nothing was left in flight, not because the grace ran out.
    pub fn shutdown_in_background(self) -> tokio::task::JoinHandle<()> {
        tokio::task::spawn_blocking(move || self.shutdown(Duration::from_secs(600)))
    }
}

/// Waits up to 60 s for a shutdown from [`Proxy::shutdown_in_background`] to end; `why` says
/// what it should have waited for.
pub async fn shutdown_ends(shutdown: tokio::task::JoinHandle<()>, why: &str) {
    tokio::time::timeout(Duration::from_secs(60), shutdown)
        .await
        .unwrap_or_else(|_| panic!("the shutdown did not end: it should have {why}"))
        .unwrap();
}

/// Waits until `backend` holds one request, then shuts `proxy` down gracefully (see
/// [`Proxy::shutdown_in_background`]) and waits for the shutdown to end: it should have `why`.
pub async fn shut_down_with_one_in_flight(proxy: Proxy, backend: &Backend, why: &str) {
    eventually(
        Duration::from_secs(30),
        "the request reaches the backend",
        || backend.in_flight() == 1,
    )
    .await;
    shutdown_ends(proxy.shutdown_in_background(), why).await;
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown(Duration::from_secs(1));
        }
    }
}

/// Starts a proxy from a builder.
pub fn start(config: &ConfigBuilder) -> Proxy {
    start_text(&config.to_toml())
}

/// Starts a proxy from TOML text (for tests that edit the generated text). Without an
/// `[admin]` table the admin API takes a free port instead of the default 9901, so tests run
/// side by side.
pub fn start_text(toml: &str) -> Proxy {
    let mut cfg = rondo::config::parse(toml, "test.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"));
    if !toml.contains("[admin]") {
        cfg.admin.listen = "127.0.0.1:0".parse().unwrap();
    }
    Proxy {
        running: Some(rondo::runtime::start(&cfg).unwrap()),
    }
}

/// The config a builder describes.
pub fn parse(config: &ConfigBuilder) -> rondo::config::Config {
    config
        .parse()
        .unwrap_or_else(|e| panic!("{e}\n{}", config.to_toml()))
}

pub fn web(running: &rondo::runtime::Running) -> SocketAddr {
    running.addr("web").unwrap()
}

/// Polls `cond` every 10 ms until it holds (returns the time it took) or `limit` passes
/// (panics with `what`). The limit is a deadline against hangs, not a claim about speed:
/// make it generous.
pub async fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = std::time::Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`eventually`] for a condition that needs to await (an HTTP call, a scrape).
pub async fn eventually_async<F, Fut>(limit: Duration, what: &str, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if cond().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The health of backend `id` of upstream `upstream`.
pub fn health(running: &rondo::runtime::Running, upstream: &str, id: &str) -> balance::Health {
    backend_state(running, upstream, id).1
}

/// Backend `id` of upstream `upstream` as the balancer sees it now: its state (up, down,
/// ejected, breaker open…) and its health from the checks.
pub fn backend_state(
    running: &rondo::runtime::Running,
    upstream: &str,
    id: &str,
) -> (balance::BackendState, balance::Health) {
    let snapshot = running.upstream(upstream).unwrap().pool().snapshot();
    let backend = snapshot
        .backends()
        .iter()
        .find(|b| b.id() == id)
        .unwrap_or_else(|| panic!("no backend {id}"));
    (backend.state(), backend.health())
}

/// Runs the `rondo` binary with `args` to its end, on a blocking thread so the test's
/// servers keep running meanwhile; returns its exit status and output.
pub async fn rondo_output(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_rondo"))
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// `rondo` run as a real process with JSON logs on stderr; killed when dropped if it has
/// not exited.
pub struct Process {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl Process {
    /// Runs the `rondo` binary with `args` (stdout discarded, stderr read as JSON lines).
    pub fn spawn<I, S>(args: I) -> Process
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rondo"))
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            while let Some(Ok(line)) = lines.next() {
                let v = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Process { child, lines: rx }
    }

    /// `rondo serve --log-format json --config PATH`.
    pub fn serve(config: &std::path::Path) -> Process {
        Process::spawn([
            "serve".as_ref(),
            "--log-format".as_ref(),
            "json".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ])
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next log line that `matches` (blocking; a 30 s deadline against a hang, not a
    /// claim about speed). Call through `tokio::task::block_in_place` from async code.
    pub fn wait_for_line(
        &self,
        what: &str,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line: {what}"));
            if matches(&line) {
                return line;
            }
        }
    }

    /// The next log line whose message starts with `message`.
    pub fn wait_for(&self, message: &str) -> serde_json::Value {
        self.wait_for_line(message, |line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
        })
    }

    /// Sends `signal` (`TERM`, `HUP`…) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// Waits for the process to exit (30 s deadline) and returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("rondo did not exit within 30 s");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An HTTP/2 client connection with prior knowledge (h2c), as `curl --http2-prior-knowledge`.
pub struct H2Client {
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
}

/// An HTTP/2 connection with prior knowledge to `addr`, for requests with bodies of type `B`;
/// the connection runs on its own task.
pub async fn h2_sender<B>(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

impl H2Client {
    pub async fn connect(addr: SocketAddr) -> H2Client {
        H2Client {
            sender: h2_sender(addr).await,
        }
    }

    pub async fn send(&mut self, method: &str, path: &str, body: &[u8]) -> Reply {
        self.send_with(method, path, &[], body).await
    }

    /// [`send`](H2Client::send) with extra header fields.
    pub async fn send_with(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://test.local{path}"));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
        let res = self.sender.send_request(req).await.unwrap();
        let status = res.status().as_u16();
        let headers = header_list(res.headers());
        let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }
}

/// Upstream `name` with `backends` (weights 1), round robin in list order, no passive
/// ejection and no breaker: each attempt's outcome decides alone, so a test can say exactly
/// where each request goes.
pub fn plain(name: &str, backends: &[&Backend]) -> UpstreamBuilder {
    backends
        .iter()
        .fold(UpstreamBuilder::new(name), |u, b| {
            u.backend(b.name(), b.addr(), 1.0)
        })
        .algorithm("round-robin")
        .set("max_fails", 0)
        .circuit_breaker(Section::disabled())
        .health_check(Section::disabled())
}

/// A config as TOML text with one listener on port 0 in front of `backends` (weights as
/// given), plus `upstream_extra` lines in the upstream table and `extra` tables after it: for
/// tests that edit the text itself (reload tests replace lines of it).
pub fn config_text(backends: &[(&Backend, f64)], upstream_extra: &str, extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|(b, w)| {
            format!(
                "  {{ address = \"{}\", weight = {w}, id = \"{}\" }},",
                b.addr(),
                b.name()
            )
        })
        .collect();
    format!(
        "workers = 2\naccess_log = false\nshutdown_grace = \"5s\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\n\
         [[upstreams]]\nname = \"app\"\n{upstream_extra}\nbackends = [\n{}\n]\n{extra}\n",
        list.join("\n")
    )
}

/// A GET over one keep-alive client connection, HTTP/1.1 (rondo's own path) or HTTP/2
/// (hyper's, with its own backend pools).
pub enum KeptClient {
    Http1(Client),
    Http2(H2Client),
}

impl KeptClient {
    pub async fn connect(addr: SocketAddr, http2: bool) -> KeptClient {
        if http2 {
            KeptClient::Http2(H2Client::connect(addr).await)
        } else {
            KeptClient::Http1(Client::connect(addr).await)
        }
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        match self {
            KeptClient::Http1(c) => c.get(path).await,
            KeptClient::Http2(c) => c.send("GET", path, b"").await,
        }
    }
}

/// One request to the admin API: status and body.
pub async fn admin_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin.test");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    let res = sender
        .send_request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let text = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&text).into_owned())
}
