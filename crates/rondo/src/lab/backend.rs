//! The one mock backend: a small HTTP/1.1 server on loopback whose behaviour a test, the demo
//! or `rondo compare --live` scripts — service time (fixed, or exponential from a seed, with a
//! bounded number of workers), status, health status, and faults a real server shows (hang,
//! close without answering, reset, close after the head) — and which counts what it saw:
//! requests, connections, the raw bytes received, how many were in flight at most.
//!
//! It answers every request with header `x-backend: NAME`:
//! - `GET /health`: the health status (200 unless set), not counted as a request;
//! - `GET /bytes/N`: N bytes, generated while streaming (nothing held in memory);
//! - `POST`/`PUT`: reads the body without keeping it and answers `NAME:LEN`;
//! - anything else: `NAME`.
//!
//! It speaks HTTP/1.1, or HTTP/2 with prior knowledge (h2c) when built with
//! [`BackendBuilder::http2`]; [`BackendBuilder::requests_per_connection`] retires each
//! connection after that many requests, as nginx's `keepalive_requests` does (GOAWAY over
//! HTTP/2, a close after the answer over HTTP/1.1).
//!
//! Stopping it ([`Backend::kill`], or dropping it) aborts the listener and every connection,
//! the way a crashed server drops its port; [`Backend::restart`] binds the same port again.
//!
//! Longer than ~500 lines because it is the one scriptable mock every test, the demo and
//! `compare --live` share (faults, delays, recording): one type, no twins.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use rand::SeedableRng;
use rand_distr::{Distribution, Exp1};
use rand_pcg::Pcg64;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

/// What the backend does with a request (other than `/health`), switchable at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Answer normally.
    #[default]
    None,
    /// Read the request, count it, and never answer (a stuck application).
    Hang,
    /// Read the request, count it, and close the connection without a byte of answer (a
    /// crash between reading and answering, or a keep-alive race).
    Close,
    /// Read the request, count it, and reset the connection (TCP RST).
    Reset,
    /// Send the response head announcing a body, then close before the body (a crash
    /// mid-response).
    CloseAfterHead,
    /// Send the response head announcing [`BROKEN_BODY_LEN`] bytes and the first
    /// [`BROKEN_BODY_SENT`] of them, then reset the connection (a crash mid-body).
    ResetMidBody,
    /// Send the response head announcing [`BROKEN_BODY_LEN`] bytes and the first
    /// [`BROKEN_BODY_SENT`] of them, then send nothing more and keep the connection open (an
    /// application stuck mid-body).
    StallMidBody,
}

/// The body length a [`Fault::ResetMidBody`] or [`Fault::StallMidBody`] response announces.
pub const BROKEN_BODY_LEN: u64 = 64 * 1024;

/// The body bytes a [`Fault::ResetMidBody`] or [`Fault::StallMidBody`] response sends before
/// it breaks: enough to prove the body had started, far from its announced end.
pub const BROKEN_BODY_SENT: usize = 1024;

/// How long a request takes to serve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ServiceTime {
    /// Every request takes this long.
    Fixed(Duration),
    /// Exponentially distributed with this mean (an M/M/c server), drawn from a seeded
    /// generator so a run can be repeated.
    Exponential {
        /// Mean service time.
        mean: Duration,
        /// Seed of the draws.
        seed: u64,
    },
}

/// Configures a [`Backend`] before it starts.
#[derive(Debug, Clone)]
pub struct BackendBuilder {
    name: String,
    addr: SocketAddr,
    service: ServiceTime,
    workers: Option<usize>,
    record_raw: bool,
    http2: bool,
    requests_per_connection: Option<u64>,
}

impl BackendBuilder {
    /// Listens on `addr` instead of a free loopback port.
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// How long each request takes.
    pub fn service_time(mut self, service: ServiceTime) -> Self {
        self.service = service;
        self
    }

    /// Serves at most `workers` requests at once; the rest wait in a FIFO queue (as an
    /// application with a fixed thread pool does).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers.max(1));
        self
    }

    /// Keeps every byte received, for tests that check what went over the wire.
    pub fn record_raw(mut self) -> Self {
        self.record_raw = true;
        self
    }

    /// Speaks HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1, as a gRPC server or an
    /// h2c application server does. The faults [`Fault::Close`] and [`Fault::Reset`] then end
    /// the whole connection, every stream on it.
    pub fn http2(mut self) -> Self {
        self.http2 = true;
        self
    }

    /// Retires each connection gracefully once it has received `n` requests (health checks
    /// included), as nginx's `keepalive_requests` does: over HTTP/2 with GOAWAY (streams
    /// already sent are answered, later requests need a new connection), over HTTP/1.1 by
    /// closing after the answer.
    pub fn requests_per_connection(mut self, n: u64) -> Self {
        self.requests_per_connection = Some(n.max(1));
        self
    }

    /// Binds and starts serving.
    pub async fn start(self) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(self.addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            name: self.name.as_str().into(),
            service: Mutex::new(self.service),
            rng: Mutex::new(Pcg64::seed_from_u64(match self.service {
                ServiceTime::Exponential { seed, .. } => seed,
                ServiceTime::Fixed(_) => 0,
            })),
            workers: self.workers.map(|n| Arc::new(Semaphore::new(n))),
            record_raw: self.record_raw,
            http2: self.http2,
            requests_per_connection: self.requests_per_connection,
            status: AtomicU16::new(0),
            health_status: AtomicU16::new(0),
            fault: Mutex::new(Fault::None),
            received: AtomicUsize::new(0),
            hits: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            open_connections: AtomicUsize::new(0),
            in_flight: AtomicU32::new(0),
            peak_in_flight: AtomicU32::new(0),
            total_micros: AtomicU64::new(0),
            seen: Mutex::default(),
            raw: Mutex::default(),
            tasks: Mutex::default(),
        });
        let backend = Backend { addr, state };
        backend.serve(listener);
        Ok(backend)
    }
}

/// What the backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Request method.
    pub method: String,
    /// Request path (without the query).
    pub path: String,
    /// Header fields in arrival order.
    pub headers: Vec<(String, String)>,
    /// Bytes of body received.
    pub body_len: u64,
    /// When the request head arrived.
    pub at: std::time::Instant,
}

impl Seen {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
struct State {
    name: Arc<str>,
    service: Mutex<ServiceTime>,
    rng: Mutex<Pcg64>,
    workers: Option<Arc<Semaphore>>,
    record_raw: bool,
    http2: bool,
    requests_per_connection: Option<u64>,
    status: AtomicU16,
    health_status: AtomicU16,
    fault: Mutex<Fault>,
    /// Requests received (not health checks), whatever was done with them.
    received: AtomicUsize,
    /// Requests answered normally (not health checks).
    hits: AtomicUsize,
    connections: AtomicUsize,
    open_connections: AtomicUsize,
    in_flight: AtomicU32,
    peak_in_flight: AtomicU32,
    total_micros: AtomicU64,
    seen: Mutex<Vec<Seen>>,
    raw: Mutex<Vec<u8>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A running mock backend; dropping it stops it.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    state: Arc<State>,
}

type Body = BoxBody<Bytes, std::io::Error>;

/// What the connection task must do after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    KeepGoing,
    /// Finish what was received, then close (GOAWAY over HTTP/2).
    Retire,
    Close,
    Reset,
}

impl Backend {
    /// A backend named `name` on a free loopback port, answering at once.
    pub fn builder(name: &str) -> BackendBuilder {
        BackendBuilder {
            name: name.to_owned(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            service: ServiceTime::Fixed(Duration::ZERO),
            workers: None,
            record_raw: false,
            http2: false,
            requests_per_connection: None,
        }
    }

    /// Starts a backend named `name` on a free loopback port, answering at once.
    pub async fn start(name: &str) -> std::io::Result<Backend> {
        Backend::builder(name).start().await
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its name, sent in `x-backend`.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Answers requests with `status` from now on (0 or 200: normal).
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// Answers `/health` with `status` from now on.
    pub fn set_health(&self, status: u16) {
        self.state.health_status.store(status, Ordering::SeqCst);
    }

    /// Every request takes `delay` from now on.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.service.lock() = ServiceTime::Fixed(delay);
    }

    /// Misbehaves as `fault` says from now on.
    pub fn set_fault(&self, fault: Fault) {
        *self.state.fault.lock() = fault;
    }

    /// Requests answered normally, not counting health checks.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Requests received, answered or not, not counting health checks.
    pub fn received(&self) -> usize {
        self.state.received.load(Ordering::SeqCst)
    }

    /// Connections accepted since the start.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.state.open_connections.load(Ordering::SeqCst)
    }

    /// Requests being served now (health checks excluded).
    pub fn in_flight(&self) -> u32 {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests it held at once (health checks excluded).
    pub fn peak_in_flight(&self) -> u32 {
        self.state.peak_in_flight.load(Ordering::SeqCst)
    }

    /// Mean time from a request's arrival to its answer, queueing included.
    pub fn mean_latency(&self) -> Duration {
        let n = self.hits().max(1) as u64;
        Duration::from_micros(self.state.total_micros.load(Ordering::SeqCst) / n)
    }

    /// Every request seen, health checks included, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().clone()
    }

    /// Every byte received, when started with [`BackendBuilder::record_raw`].
    pub fn raw(&self) -> Vec<u8> {
        self.state.raw.lock().clone()
    }

    /// Stops listening and drops every connection, as a crashed server would, and returns
    /// once they are closed: a request sent afterwards finds the backend gone (aborting a
    /// task only asks for it to stop; its sockets close when the runtime gets to it).
    pub async fn kill(&self) {
        loop {
            let tasks = std::mem::take(&mut *self.state.tasks.lock());
            if tasks.is_empty() {
                return;
            }
            for t in &tasks {
                t.abort();
            }
            // A connection accepted meanwhile was added to the list: the next turn stops it.
            for t in tasks {
                let _ = t.await;
            }
        }
    }

    /// Starts again on the same port after [`kill`](Backend::kill), keeping its counts.
    pub async fn restart(&self) -> std::io::Result<()> {
        self.kill().await;
        let listener = TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }

    fn serve(&self, listener: TcpListener) {
        let state = Arc::clone(&self.state);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                state.connections.fetch_add(1, Ordering::SeqCst);
                let conn = tokio::spawn(connection(Arc::clone(&state), stream));
                state.tasks.lock().push(conn);
            }
        });
        self.state.tasks.lock().push(accept);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        for t in self.state.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

/// Decrements the open-connection count however the connection task ends (abort included).
struct OpenGuard(Arc<State>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn connection(state: Arc<State>, stream: TcpStream) {
    state.open_connections.fetch_add(1, Ordering::SeqCst);
    let _open = OpenGuard(Arc::clone(&state));
    let _ = stream.set_nodelay(true);
    // A second handle on the socket, to turn the close into a reset (SO_LINGER 0) while
    // hyper owns the stream.
    let Ok(std) = stream.into_std() else { return };
    let Ok(handle_for_reset) = std.try_clone() else {
        return;
    };
    let Ok(stream) = TcpStream::from_std(std) else {
        return;
    };
    let (end_tx, mut end_rx) = watch::channel(Ending::KeepGoing);
    let end_tx = Arc::new(end_tx);
    let io = Recording {
        inner: stream,
        state: Arc::clone(&state),
    };
    let service_state = Arc::clone(&state);
    let on_connection = AtomicU64::new(0);
    let service = hyper::service::service_fn(move |req| {
        let n = on_connection.fetch_add(1, Ordering::SeqCst) + 1;
        if service_state.requests_per_connection == Some(n) {
            end_tx.send_if_modified(|e| {
                let retire = *e == Ending::KeepGoing;
                if retire {
                    *e = Ending::Retire;
                }
                retire
            });
        }
        handle(Arc::clone(&service_state), Arc::clone(&end_tx), req)
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder = if state.http2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let mut retiring = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            ending = end_rx.wait_for(|e| match e {
                Ending::KeepGoing => false,
                Ending::Retire => !retiring,
                Ending::Close | Ending::Reset => true,
            }) => match ending.map(|e| *e) {
                Ok(Ending::Retire) => {
                    retiring = true;
                    conn.as_mut().graceful_shutdown();
                }
                Ok(Ending::Reset) => {
                    let _ = socket2::SockRef::from(&handle_for_reset).set_linger(Some(Duration::ZERO));
                    return;
                }
                _ => return,
            },
        }
    }
}

async fn handle(
    state: Arc<State>,
    end: Arc<watch::Sender<Ending>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let at = std::time::Instant::now();
    let arrived = tokio::time::Instant::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let headers = header_pairs(req.headers());
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
    let name = Arc::clone(&state.name);
    if path == "/health" {
        let status = match state.health_status.load(Ordering::SeqCst) {
            0 => 200,
            s => s,
        };
        return Ok(answer(status, &name, full("health")));
    }
    state.received.fetch_add(1, Ordering::SeqCst);
    let fault = *state.fault.lock();
    match fault {
        Fault::None | Fault::CloseAfterHead | Fault::ResetMidBody | Fault::StallMidBody => {}
        Fault::Hang => std::future::pending::<()>().await,
        Fault::Close | Fault::Reset => {
            let ending = if fault == Fault::Close {
                Ending::Close
            } else {
                Ending::Reset
            };
            let _ = end.send(ending);
            std::future::pending::<()>().await;
        }
    }
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.peak_in_flight.fetch_max(now, Ordering::SeqCst);
    let permit = match &state.workers {
        Some(w) => Arc::clone(w).acquire_owned().await.ok(),
        None => None,
    };
    let delay = match *state.service.lock() {
        ServiceTime::Fixed(d) => d,
        ServiceTime::Exponential { mean, .. } => {
            let draw: f64 = Exp1.sample(&mut *state.rng.lock());
            mean.mul_f64(draw)
        }
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    drop(permit);
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    state.hits.fetch_add(1, Ordering::SeqCst);
    let micros = u64::try_from(arrived.elapsed().as_micros()).unwrap_or(u64::MAX);
    state.total_micros.fetch_add(micros, Ordering::SeqCst);
    let status = match state.status.load(Ordering::SeqCst) {
        0 => 200,
        s => s,
    };
    if fault == Fault::CloseAfterHead {
        let mut response = answer(status, &name, Cut.boxed());
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_LENGTH, 1024.into());
        return Ok(response);
    }
    if matches!(fault, Fault::ResetMidBody | Fault::StallMidBody) {
        let reset = (fault == Fault::ResetMidBody).then_some(end);
        let mut response = answer(status, &name, Broken { sent: false, reset }.boxed());
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_LENGTH, BROKEN_BODY_LEN.into());
        return Ok(response);
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let total: u64 = n.parse().unwrap_or(0);
        let mut response = answer(status, &name, Generated::new(total).boxed());
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_LENGTH, total.into());
        return Ok(response);
    }
    let text = if method == "POST" || method == "PUT" {
        format!("{name}:{body_len}")
    } else {
        name.to_string()
    };
    Ok(answer(status, &name, full(text)))
}

fn answer(status: u16, name: &str, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = hyper::header::HeaderValue::from_str(name) {
        response.headers_mut().insert("x-backend", v);
    }
    response
}

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into()).map_err(|e| match e {}).boxed()
}

/// A body that fails at once: hyper has sent the head and then closes the connection.
#[derive(Debug)]
struct Cut;

impl hyper::body::Body for Cut {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(Some(Err(std::io::Error::other("cut after the head"))))
    }
}

/// A body that breaks after its first [`BROKEN_BODY_SENT`] bytes: then it resets the
/// connection (when `reset` holds the connection's ending) or never yields again.
#[derive(Debug)]
struct Broken {
    sent: bool,
    reset: Option<Arc<watch::Sender<Ending>>>,
}

impl hyper::body::Body for Broken {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if !self.sent {
            self.sent = true;
            let start = Bytes::from(vec![b'x'; BROKEN_BODY_SENT]);
            return Poll::Ready(Some(Ok(Frame::data(start))));
        }
        // hyper flushes what it has written before it polls the connection's ending, so
        // the head and the first bytes are on the wire before the reset.
        if let Some(end) = &self.reset {
            let _ = end.send(Ending::Reset);
        }
        Poll::Pending
    }
}

/// Header fields as owned (name, value) pairs.
pub fn header_pairs(headers: &hyper::HeaderMap) -> Vec<(String, String)> {
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

/// A body of `left` bytes in 64 KiB frames of `x`, generated lazily.
#[derive(Debug)]
pub struct Generated {
    left: u64,
    chunk: Bytes,
}

impl Generated {
    /// `total` bytes.
    pub fn new(total: u64) -> Generated {
        Generated {
            left: total,
            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
        }
    }
}

impl hyper::body::Body for Generated {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left)
    }
}

/// A connection that copies what it reads into the backend's raw record when asked to.
struct Recording {
    inner: TcpStream,
    state: Arc<State>,
}

impl AsyncRead for Recording {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.state.record_raw {
            this.state
                .raw
                .lock()
                .extend_from_slice(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for Recording {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
