//! A minimal in-process HTTP/1.1 server, for the backends the demo and `rondo compare --live`
//! start on loopback: one task accepts, one task serves each connection, and stopping it
//! aborts them all, the way a crashed server drops its port and connections.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

/// A running server; dropping it stops it.
#[derive(Debug, Default)]
pub(crate) struct LocalServer {
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl LocalServer {
    /// Serves `listener`, answering every request with `handler(request)`.
    pub(crate) fn start<H, F>(listener: TcpListener, handler: H) -> LocalServer
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let conns = Arc::clone(&tasks);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                let conn = tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let answer = handler(req);
                        async move { Ok::<_, Infallible>(answer.await) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
                conns.lock().push(conn.abort_handle());
            }
        });
        tasks.lock().push(accept.abort_handle());
        LocalServer { tasks }
    }

    /// Stops listening and drops every connection.
    pub(crate) fn stop(&self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.stop();
    }
}
