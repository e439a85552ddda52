//! The client side's byte streams: plain TCP or TLS over TCP, served by the same HTTP/1.1,
//! HTTP/2 and TCP-mode code.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A byte stream the proxy reads and writes: TCP, TLS, or a wrapper of either.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin {}

impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// A client connection: a stream whose TCP socket can be waited on, cheaply, for the
/// client's next bytes. An idle keep-alive connection waits on the socket's readiness alone,
/// holding no read buffer, for TLS too.
pub(crate) trait ClientIo: Io {
    /// The TCP socket underneath.
    fn tcp(&self) -> &TcpStream;

    /// True when bytes were already received and decrypted (TLS): the next read returns at
    /// once, so waiting on the socket would wait for nothing.
    fn buffered(&self) -> bool;
}

impl ClientIo for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }

    fn buffered(&self) -> bool {
        false
    }
}

impl ClientIo for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }

    fn buffered(&self) -> bool {
        // rustls wants to read unless it holds plaintext (or saw the peer's close_notify).
        !self.get_ref().1.wants_read()
    }
}
