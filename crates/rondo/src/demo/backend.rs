//! The demo's backends: small HTTP servers on 127.0.0.1 that answer with their name (and an
//! `x-backend` header), take a few milliseconds like a real application, answer `/health`,
//! and can be stopped and started again on the same port to show failover.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

/// One demo backend.
#[derive(Debug)]
pub(crate) struct DemoBackend {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    service_time: Duration,
    tasks: Arc<parking_lot::Mutex<Vec<AbortHandle>>>,
}

impl DemoBackend {
    /// Starts a backend on `addr` (port 0 for any) answering after `service_time`.
    pub(crate) async fn start(
        name: &str,
        addr: SocketAddr,
        service_time: Duration,
    ) -> std::io::Result<DemoBackend> {
        let listener = TcpListener::bind(addr).await?;
        let mut backend = DemoBackend {
            name: name.to_owned(),
            addr: listener.local_addr()?,
            service_time,
            tasks: Arc::default(),
        };
        backend.serve(listener);
        Ok(backend)
    }

    fn serve(&mut self, listener: TcpListener) {
        let (name, delay, tasks) = (
            Arc::<str>::from(self.name.as_str()),
            self.service_time,
            Arc::clone(&self.tasks),
        );
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let name = Arc::clone(&name);
                let conn = tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let name = Arc::clone(&name);
                            async move {
                                if req.uri().path() != "/health" {
                                    tokio::time::sleep(delay).await;
                                }
                                let res = Response::builder()
                                    .header("x-backend", &*name)
                                    .body(Full::new(Bytes::from(format!("hello from {name}\n"))))
                                    .unwrap_or_default();
                                Ok::<_, Infallible>(res)
                            }
                        });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
                tasks.lock().push(conn.abort_handle());
            }
        });
        self.tasks.lock().push(accept.abort_handle());
    }

    /// Stops it the way a crash would: the port closes and open connections drop.
    pub(crate) fn stop(&self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }

    /// Starts it again on the same port.
    pub(crate) async fn restart(&mut self) -> std::io::Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }
}

impl Drop for DemoBackend {
    fn drop(&mut self) {
        self.stop();
    }
}
