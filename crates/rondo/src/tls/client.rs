//! TLS from rondo to an upstream's backends. Verification is on by default against
//! Mozilla's root store compiled in (webpki-roots) rather than the host's (rustls-native-certs):
//! the same trust on every machine and in scratch containers that ship no CA bundle, no file
//! read at start. Backends with a private CA name it with `ca`, which then replaces the
//! Mozilla roots (a private PKI should not also trust the public one).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use super::TlsError;
use super::files::{certificates, certified_key, private_key};
use crate::config::UpstreamTlsConfig;

/// A TLS stream to a backend.
pub type BackendStream = tokio_rustls::client::TlsStream<TcpStream>;

/// How to open TLS to an upstream's backends.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    config: Arc<ClientConfig>,
    /// `None`: each backend's IP address.
    server_name: Option<ServerName<'static>>,
}

impl UpstreamTls {
    /// Reads the CA and client certificate files; also returns warnings for the log.
    pub fn new(tls: &UpstreamTlsConfig, now: SystemTime) -> Result<(Self, Vec<String>), TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut warnings = Vec::new();
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        let builder = if tls.verify {
            builder.with_root_certificates(roots(tls)?)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(rondo_bench::AnyCertificate::new(
                    Arc::clone(&provider),
                )))
        };
        let config = match &tls.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                // Read through `certified_key` for its diagnostics (mismatch, expiry).
                certified_key(cert, key, &provider, now, &mut warnings)?;
                builder.with_client_auth_cert(certificates(cert)?, private_key(key)?)?
            }
        };
        let server_name = match &tls.server_name {
            None => None,
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
                TlsError::Rustls(rustls::Error::General(format!(
                    "invalid server name {name}"
                )))
            })?),
        };
        let upstream = UpstreamTls {
            config: Arc::new(config),
            server_name,
        };
        Ok((upstream, warnings))
    }

    /// Runs the TLS handshake over a fresh connection to the backend at `addr`.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
    ) -> std::io::Result<BackendStream> {
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
            .connect(name, tcp)
            .await
    }
}

/// The trust anchors: the `ca` file's, or Mozilla's.
fn roots(tls: &UpstreamTlsConfig) -> Result<RootCertStore, TlsError> {
    let Some(path) = &tls.ca else {
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(certificates(path)?);
    if added == 0 {
        return Err(TlsError::BadPem {
            path: path.clone(),
            what: "none of its certificates can be a trust anchor".to_owned(),
        });
    }
    Ok(store)
}

/// A connection to a backend, plain or TLS: what the proxy's pools keep and the health
/// checks probe through.
#[derive(Debug)]
pub enum BackendConn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed: rustls's state is large, and most pools are plain).
    Tls(Box<BackendStream>),
}

impl BackendConn {
    /// Connects to `addr`, then runs the TLS handshake when the upstream has `tls`.
    pub async fn connect(addr: SocketAddr, tls: Option<&UpstreamTls>) -> std::io::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        match tls {
            None => Ok(BackendConn::Plain(tcp)),
            Some(tls) => Ok(BackendConn::Tls(Box::new(tls.connect(tcp, addr).await?))),
        }
    }

    /// The TCP socket underneath, for readiness checks.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            BackendConn::Plain(s) => s,
            BackendConn::Tls(s) => s.get_ref().0,
        }
    }
}

impl tokio::io::AsyncRead for BackendConn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            BackendConn::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            BackendConn::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for BackendConn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            BackendConn::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            BackendConn::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            BackendConn::Plain(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
            BackendConn::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            BackendConn::Plain(s) => s.is_write_vectored(),
            BackendConn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            BackendConn::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            BackendConn::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            BackendConn::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            BackendConn::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
