//! The integration harness: mock backends on 127.0.0.1:0 with switchable behaviour, a proxy
//! started in-process from a TOML config, and a plain HTTP/1.1 client.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Header fields as owned (name, value) pairs.
pub fn header_list(headers: &hyper::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// What a mock backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    /// When the request head arrived.
    pub at: std::time::Instant,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    hits: AtomicUsize,
    status: AtomicU16,
    health_status: AtomicU16,
    delay_ms: AtomicU64,
    seen: Mutex<Vec<Seen>>,
    tasks: Mutex<Vec<AbortHandle>>,
}

/// A backend that answers `name` with header `x-backend: name`.
/// - `GET /health`: the health status (200 unless set);
/// - `GET /bytes/N`: N bytes generated while streaming;
/// - `POST`/`PUT`: reads the body without keeping it and answers `name:LEN`.
pub struct MockBackend {
    pub addr: SocketAddr,
    pub name: String,
    state: Arc<State>,
}

type Body = BoxBody<Bytes, Infallible>;

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into()).map_err(|e| match e {}).boxed()
}

async fn handle(
    name: Arc<str>,
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let at = std::time::Instant::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let headers = header_list(req.headers());
    let mut body = req.into_body();
    let mut body_len = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_len += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    state.seen.lock().push(Seen {
        method: method.clone(),
        path: path.clone(),
        headers,
        body_len,
        at,
    });
    if path == "/health" {
        let s = state.health_status.load(Ordering::SeqCst);
        let s = if s == 0 { 200 } else { s };
        return Ok(Response::builder().status(s).body(full("health")).unwrap());
    }
    state.hits.fetch_add(1, Ordering::SeqCst);
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = match state.status.load(Ordering::SeqCst) {
        0 => 200,
        s => s,
    };
    let builder = Response::builder()
        .status(status)
        .header("x-backend", &*name);
    if let Some(n) = path.strip_prefix("/bytes/") {
        let total: u64 = n.parse().unwrap_or(0);
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let stream = generated(total, chunk);
        return Ok(builder
            .header("content-length", total)
            .body(stream.boxed())
            .unwrap());
    }
    let text = if method == "POST" || method == "PUT" {
        format!("{name}:{body_len}")
    } else {
        name.to_string()
    };
    Ok(builder.body(full(text)).unwrap())
}

/// A stream of `total` bytes in `chunk`-sized frames, generated lazily.
pub fn generated(
    total: u64,
    chunk: Bytes,
) -> impl hyper::body::Body<Data = Bytes, Error = Infallible> {
    struct Gen {
        left: u64,
        chunk: Bytes,
    }
    impl hyper::body::Body for Gen {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            if self.left == 0 {
                return std::task::Poll::Ready(None);
            }
            let n = self.left.min(self.chunk.len() as u64) as usize;
            self.left -= n as u64;
            std::task::Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
        }
    }
    Gen { left: total, chunk }
}

impl MockBackend {
    pub async fn start(name: &str) -> MockBackend {
        MockBackend::start_on("127.0.0.1:0".parse().unwrap(), name).await
    }

    /// Starts on a given address (to bring a stopped backend back on its port).
    pub async fn start_on(addr: SocketAddr, name: &str) -> MockBackend {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let name_arc: Arc<str> = name.into();
        let (st, nm) = (Arc::clone(&state), Arc::clone(&name_arc));
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (st2, nm2) = (Arc::clone(&st), Arc::clone(&nm));
                let conn = tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle(Arc::clone(&nm2), Arc::clone(&st2), req)
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
                st.tasks.lock().push(conn.abort_handle());
            }
        });
        state.tasks.lock().push(accept.abort_handle());
        MockBackend {
            addr,
            name: name.to_owned(),
            state,
        }
    }

    /// Requests served, not counting health checks.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    pub fn set_health(&self, status: u16) {
        self.state.health_status.store(status, Ordering::SeqCst);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().clone()
    }

    /// Stops listening and drops every connection, as a crashed server would.
    pub fn kill(&self) {
        for t in self.state.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

impl Drop for MockBackend {
    fn drop(&mut self) {
        self.kill();
    }
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

/// A keep-alive HTTP/1.1 client connection.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        Client { sender }
    }

    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Reply, hyper::Error> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "test.local")
            .body(Full::new(Bytes::copy_from_slice(body)))
            .unwrap();
        self.sender.ready().await?;
        let res = self.sender.send_request(req).await?;
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

/// A config with one listener on port 0 in front of `backends` (weights as given), plus
/// `upstream_extra` lines in the upstream table and `extra` tables after it.
pub fn config(backends: &[(&MockBackend, f64)], upstream_extra: &str, extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|(b, w)| {
            format!(
                "  {{ address = \"{}\", weight = {w}, id = \"{}\" }},",
                b.addr, b.name
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

/// Starts a proxy from TOML text. Without an `[admin]` table the admin API takes a free port
/// instead of the default 9901, so tests run side by side.
pub fn start(toml: &str) -> rondo::runtime::Running {
    let mut cfg = rondo::config::parse(toml, "test.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"));
    if !toml.contains("[admin]") {
        cfg.admin.listen = "127.0.0.1:0".parse().unwrap();
    }
    rondo::runtime::start(&cfg).unwrap()
}

pub fn web(running: &rondo::runtime::Running) -> SocketAddr {
    running.addr("web").unwrap()
}

/// Polls `cond` every 10 ms until it holds (returns the time it took) or `limit` passes
/// (panics with `what`).
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

/// The health of backend `id` of upstream `upstream`.
pub fn health(running: &rondo::runtime::Running, upstream: &str, id: &str) -> balance::Health {
    running
        .upstream(upstream)
        .unwrap()
        .pool()
        .snapshot()
        .backends()
        .iter()
        .find(|b| b.id() == id)
        .unwrap_or_else(|| panic!("no backend {id}"))
        .health()
}
