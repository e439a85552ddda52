//! A real gRPC backend for the tests (tonic, with no protoc: the messages are hand-written
//! `prost` structs and the service is what tonic's generator would write), with tonic-health's
//! `grpc.health.v1` server beside it, and a tonic client. Included with `#[path]` by the test
//! files that need it, so the others do not compile tonic.
//!
//! `echo.Echo/Say` answers `EchoReply { text, backend }`, and the backend's name in header
//! `x-backend`. The backend counts calls, tracks
//! calls in flight (and the peak), can hold calls until released, answer a chosen
//! `grpc-status`, send GOAWAY (graceful shutdown) or die (every connection shut, the port
//! closed).
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::codegen::http;
use tonic_health::server::HealthReporter;

/// `echo.EchoRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub text: String,
}

/// `echo.EchoReply`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(string, tag = "2")]
    pub backend: String,
}

/// The method path of the echo call.
pub const SAY: &str = "/echo.Echo/Say";

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What one backend's echo service shares with the test.
#[derive(Debug, Default)]
struct State {
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    /// `grpc-status` to answer instead of a reply; 0 answers normally.
    status: AtomicI32,
}

/// The hand-written `echo.Echo` service.
#[derive(Clone)]
struct Echo {
    name: Arc<str>,
    state: Arc<State>,
    /// While false, calls wait.
    release: watch::Receiver<bool>,
}

impl tonic::server::NamedService for Echo {
    const NAME: &'static str = "echo.Echo";
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let say = Say(self.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(say, req).await)
        })
    }
}

/// The unary method `Say`.
struct Say(Echo);

impl tonic::server::UnaryService<EchoRequest> for Say {
    type Response = EchoReply;
    type Future = BoxFuture<Result<tonic::Response<EchoReply>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<EchoRequest>) -> Self::Future {
        let echo = self.0.clone();
        Box::pin(async move {
            let state = &echo.state;
            state.calls.fetch_add(1, Ordering::SeqCst);
            let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            state.peak.fetch_max(now, Ordering::SeqCst);
            let mut release = echo.release.clone();
            let _ = release.wait_for(|r| *r).await;
            state.in_flight.fetch_sub(1, Ordering::SeqCst);
            let status = state.status.load(Ordering::SeqCst);
            if status != 0 {
                return Err(tonic::Status::new(
                    tonic::Code::from_i32(status),
                    "scripted failure",
                ));
            }
            let mut response = tonic::Response::new(EchoReply {
                text: request.into_inner().text,
                backend: echo.name.to_string(),
            });
            // The backend's name in a header too, for clients that count by header
            // (`rondo bench --backend-header x-backend`).
            if let Ok(value) = echo.name.parse() {
                response.metadata_mut().insert("x-backend", value);
            }
            Ok(response)
        })
    }
}

/// A tonic server on a free loopback port serving `echo.Echo` and `grpc.health.v1.Health`.
pub struct GrpcBackend {
    name: String,
    addr: SocketAddr,
    state: Arc<State>,
    release: watch::Sender<bool>,
    health: HealthReporter,
    /// Duplicates of every accepted socket, to shut them all when the backend dies.
    sockets: Arc<Mutex<Vec<socket2::Socket>>>,
    goaway: Mutex<Option<oneshot::Sender<()>>>,
    /// The listening socket (a duplicate): shut to close the port at once.
    port: socket2::Socket,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcBackend {
    /// Starts a backend; `max_streams` is the `SETTINGS_MAX_CONCURRENT_STREAMS` it
    /// advertises (tonic's default when `None`).
    pub async fn start(name: &str, max_streams: Option<u32>) -> GrpcBackend {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        GrpcBackend::start_at(name, any_port, max_streams)
            .await
            .unwrap()
    }

    /// [`start`](Self::start) on a chosen address (the benchmark backend,
    /// `examples/grpc_backend.rs`).
    pub async fn start_at(
        name: &str,
        addr: SocketAddr,
        max_streams: Option<u32>,
    ) -> std::io::Result<GrpcBackend> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let port = socket2::SockRef::from(&listener).try_clone()?;
        let state = Arc::new(State::default());
        let (release, released) = watch::channel(true);
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status("echo.Echo", tonic_health::ServingStatus::Serving)
            .await;
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&sockets);
        let incoming = futures_util::stream::unfold(listener, move |listener| {
            let kept = Arc::clone(&kept);
            async move {
                let accepted = listener.accept().await.map(|(tcp, _)| {
                    let _ = tcp.set_nodelay(true);
                    if let Ok(dup) = socket2::SockRef::from(&tcp).try_clone() {
                        kept.lock().push(dup);
                    }
                    tcp
                });
                Some((accepted, listener))
            }
        });
        let echo = Echo {
            name: name.into(),
            state: Arc::clone(&state),
            release: released,
        };
        let (goaway, on_goaway) = oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .max_concurrent_streams(max_streams)
            .add_service(echo)
            .add_service(health_service);
        let task = tokio::spawn(async move {
            let _ = server
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = on_goaway.await;
                })
                .await;
        });
        Ok(GrpcBackend {
            name: name.to_owned(),
            addr,
            state,
            release,
            health,
            sockets,
            goaway: Mutex::new(Some(goaway)),
            port,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Calls answered (or being answered).
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// The most calls in flight at once.
    pub fn peak(&self) -> usize {
        self.state.peak.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.sockets.lock().len()
    }

    /// Calls wait (`false`) or go on (`true`).
    pub fn release(&self, go: bool) {
        self.release.send_replace(go);
    }

    /// Calls fail with this `grpc-status` (0: answer normally).
    pub fn fail_with(&self, code: i32) {
        self.state.status.store(code, Ordering::SeqCst);
    }

    /// What the health service says about `echo.Echo`.
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        self.health.set_service_status("echo.Echo", status).await;
    }

    /// Graceful shutdown: GOAWAY on every connection, calls in flight finish, the port
    /// closes.
    pub fn goaway(&self) {
        if let Some(tx) = self.goaway.lock().take() {
            let _ = tx.send(());
        }
        // As a real server's shutdown does, the port closes: new connections are refused.
        let _ = self.port.shutdown(std::net::Shutdown::Both);
    }

    /// Dies at once: the port closes and every connection is shut mid-call.
    pub fn kill(&self) {
        self.task.abort();
        let _ = self.port.shutdown(std::net::Shutdown::Both);
        for socket in self.sockets.lock().iter() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A tonic client on one HTTP/2 connection to `addr`.
pub async fn client(addr: SocketAddr) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

/// One `Say` call.
pub async fn say(
    client: &mut tonic::client::Grpc<tonic::transport::Channel>,
    text: &str,
) -> Result<EchoReply, tonic::Status> {
    client
        .ready()
        .await
        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
    let request = tonic::Request::new(EchoRequest {
        text: text.to_owned(),
    });
    let path = http::uri::PathAndQuery::from_static(SAY);
    client
        .unary(request, path, tonic_prost::ProstCodec::default())
        .await
        .map(tonic::Response::into_inner)
}
