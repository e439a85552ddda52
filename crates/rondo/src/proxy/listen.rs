//! Listening sockets: bound once, cloned for every worker, and set up so that what every
//! accepted connection needs is decided on the listener rather than paid per connection.
//!
//! - `TCP_NODELAY` is set on the listener: Linux copies it into each connection the listener
//!   accepts (a test below checks), so no connection needs a `setsockopt` of its own
//!   (responses leave at once rather than waiting for the client's delayed ACK). The admin
//!   API's listener has it too.
//! - `TCP_DEFER_ACCEPT` ([`defer_accept`]) on listeners whose clients speak first: the kernel
//!   hands over a connection once its first bytes have arrived, so the worker is woken once,
//!   with the request ready to read, instead of once to accept and again to read it. nginx
//!   calls it `listen … deferred`, HAProxy `defer-accept`.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Listen backlog: nginx's default on Linux is 511; the kernel caps it at `somaxconn`.
const BACKLOG: i32 = 1024;

/// How long the kernel holds a connection that has sent nothing before handing it over
/// anyway: one second, nginx's choice for `deferred` (the kernel counts it in SYN-ACK
/// retransmissions, and one second is the first of them). A client that connects and waits
/// is therefore accepted a second late, and `header_timeout` runs from then.
pub(crate) const DEFER_ACCEPT: Duration = Duration::from_secs(1);

/// A listening socket on `addr`, non-blocking, with `TCP_NODELAY` for the connections it
/// accepts, ready to be cloned for every worker.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    Ok(socket.into())
}

/// Sets (or, with `Duration::ZERO`, clears) `TCP_DEFER_ACCEPT` on a listening socket: a
/// connection is accepted once it has bytes to read, or after `hold` if it sends nothing.
/// Only for protocols where the client speaks first: a server-first protocol relayed in TCP
/// mode (SMTP, MySQL) would wait `hold` for its greeting. The option is Linux's; elsewhere
/// connections are accepted as they come.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn defer_accept(socket: &std::net::TcpListener, hold: Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let seconds = libc::c_int::try_from(hold.as_secs()).unwrap_or(libc::c_int::MAX);
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `socket` is borrowed, so its descriptor stays open for the call; the option
    // value points to a live `c_int` on this stack frame and `len` is its size, which is what
    // the kernel reads for TCP_DEFER_ACCEPT. Nothing is written through the pointer. (Neither
    // std, where it is unstable, nor socket2 offers this option.)
    #[allow(unsafe_code)]
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            std::ptr::from_ref(&seconds).cast::<libc::c_void>(),
            len,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Without `TCP_DEFER_ACCEPT`, connections are accepted as they come.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn defer_accept(_socket: &std::net::TcpListener, _hold: Duration) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;

    /// Accepts from a non-blocking listener, waiting for a connection to come.
    fn accept(listener: &std::net::TcpListener) -> (std::net::TcpStream, SocketAddr) {
        for _ in 0..1_000 {
            match listener.accept() {
                Ok(accepted) => return accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
        panic!("no connection accepted in 10 s");
    }

    #[test]
    fn accepted_connections_inherit_nodelay_from_the_listener() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = accept(&listener);
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY not inherited");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_deferred_listener_hands_over_a_connection_once_it_has_spoken() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        // Long enough that the silent client cannot be handed over during the test.
        defer_accept(&listener, Duration::from_secs(60)).unwrap();
        let addr = listener.local_addr().unwrap();
        let silent = TcpStream::connect(addr).unwrap();
        let mut speaker = TcpStream::connect(addr).unwrap();
        speaker.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        let (mut first, peer) = accept(&listener);
        assert_eq!(
            peer,
            speaker.local_addr().unwrap(),
            "the silent client came first"
        );
        let mut bytes = [0; 16];
        first.read_exact(&mut bytes).unwrap();
        assert_eq!(&bytes, b"GET / HTTP/1.1\r\n");
        assert!(matches!(listener.accept(), Err(e) if e.kind() == io::ErrorKind::WouldBlock));
        drop(silent);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_listener_no_longer_deferred_hands_over_silent_connections_at_once() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        defer_accept(&listener, Duration::from_secs(60)).unwrap();
        defer_accept(&listener, Duration::ZERO).unwrap();
        let silent = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_, peer) = accept(&listener);
        assert_eq!(peer, silent.local_addr().unwrap());
    }
}
