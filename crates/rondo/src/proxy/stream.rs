//! The client side's byte streams: plain TCP or TLS over TCP, served by the same HTTP/1.1,
//! HTTP/2 and TCP-mode code.

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A byte stream the proxy reads and writes: TCP, TLS, or a wrapper of either.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin {}

impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// A client connection: a stream that can also wait, cheaply, for the client's next bytes.
pub(crate) trait ClientIo: Io {
    /// Resolves when the client may have sent something. An idle keep-alive connection waits
    /// here on the TCP socket's readiness alone, holding no read buffer (for TLS too:
    /// rustls is asked first whether it already holds decrypted bytes).
    fn client_readable(&self) -> impl Future<Output = io::Result<()>>;
}

impl ClientIo for TcpStream {
    fn client_readable(&self) -> impl Future<Output = io::Result<()>> {
        self.readable()
    }
}

impl ClientIo for tokio_rustls::server::TlsStream<TcpStream> {
    async fn client_readable(&self) -> io::Result<()> {
        let (tcp, tls) = self.get_ref();
        if tls.wants_read() {
            tcp.readable().await
        } else {
            // Plaintext already decrypted (or a close_notify): the next read returns at once.
            Ok(())
        }
    }
}
