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

    /// Whether an idle connection of this kind can wait without its task (a bare TCP socket,
    /// see [`super::parked`]; a TLS session keeps its task).
    const PARKS: bool;

    /// The bare TCP socket, to park; `Err` (the stream back) when there is more to it.
    fn into_plain(self) -> Result<TcpStream, Self>
    where
        Self: Sized;
}

impl ClientIo for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }

    fn buffered(&self) -> bool {
        false
    }

    const PARKS: bool = true;

    fn into_plain(self) -> Result<TcpStream, Self> {
        Ok(self)
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

    const PARKS: bool = false;

    fn into_plain(self) -> Result<TcpStream, Self> {
        Err(self)
    }
}
