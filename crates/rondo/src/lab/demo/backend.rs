//! The demo's backends: small HTTP servers on 127.0.0.1 that answer with their name (and an
//! `x-backend` header), take a few milliseconds like a real application, answer `/health`,
//! and can be stopped and started again on the same port to show failover.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use tokio::net::TcpListener;

use crate::lab::local_http::LocalServer;

/// One demo backend.
#[derive(Debug)]
pub(crate) struct DemoBackend {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    service_time: Duration,
    server: LocalServer,
}

impl DemoBackend {
    /// Starts a backend on `addr` (port 0 for any) answering after `service_time`.
    pub(crate) async fn start(
        name: &str,
        addr: SocketAddr,
        service_time: Duration,
    ) -> std::io::Result<DemoBackend> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let server = serve(listener, name, service_time);
        Ok(DemoBackend {
            name: name.to_owned(),
            addr,
            service_time,
            server,
        })
    }

    /// Stops it the way a crash would: the port closes and open connections drop.
    pub(crate) fn stop(&self) {
        self.server.stop();
    }

    /// Starts it again on the same port.
    pub(crate) async fn restart(&mut self) -> std::io::Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        self.server = serve(listener, &self.name, self.service_time);
        Ok(())
    }
}

fn serve(listener: TcpListener, name: &str, delay: Duration) -> LocalServer {
    let name = Arc::<str>::from(name);
    LocalServer::start(listener, move |req: Request<hyper::body::Incoming>| {
        let name = Arc::clone(&name);
        async move {
            if req.uri().path() != "/health" {
                tokio::time::sleep(delay).await;
            }
            Response::builder()
                .header("x-backend", &*name)
                .body(Full::new(Bytes::from(format!("hello from {name}\n"))))
                .unwrap_or_default()
        }
    })
}
