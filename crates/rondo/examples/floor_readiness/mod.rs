//! What the two floor programs on readiness (`floor_relay.rs`, `floor_http.rs`) share: the mio
//! event loop that hands each connection's events to them, and the write that takes what a
//! socket will take now.

use std::convert::Infallible;
use std::io::{self, ErrorKind, Write};

use anyhow::Context as _;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

/// The listener's token; connections get the others.
pub(crate) const LISTENER: Token = Token(usize::MAX);

/// A program driven by [`run`].
pub(crate) trait Handler {
    /// The poll its connections are registered with.
    fn poll(&mut self) -> &mut Poll;
    /// The listener has clients waiting.
    fn accept_all(&mut self, listener: &TcpListener);
    /// A connection can take bytes again.
    fn writable(&mut self, token: Token);
    /// A connection has bytes, an end or an error to read.
    fn readable(&mut self, token: Token);
}

/// `listener` made non-blocking, for mio.
pub(crate) fn mio_listener(listener: std::net::TcpListener) -> anyhow::Result<TcpListener> {
    listener
        .set_nonblocking(true)
        .context("making the listener non-blocking")?;
    Ok(TcpListener::from_std(listener))
}

/// Hands `handler` the events of `listener` and of the connections it registers, until the
/// poll fails.
pub(crate) fn run(
    mut listener: TcpListener,
    handler: &mut impl Handler,
) -> anyhow::Result<Infallible> {
    handler
        .poll()
        .registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .context("registering the listener")?;
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(e) = handler.poll().poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("waiting for events");
        }
        for event in &events {
            let token = event.token();
            if token == LISTENER {
                handler.accept_all(&listener);
                continue;
            }
            if event.is_writable() {
                handler.writable(token);
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                handler.readable(token);
            }
        }
    }
}

/// Writes as much of `bytes` as the socket takes now (0 when it takes none).
pub(crate) fn write_some(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}
