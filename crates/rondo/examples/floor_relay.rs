//! The least work a proxy on sockets and readiness can do per request, to measure against:
//! every client connection gets its own backend connection, and bytes read on one are written
//! to the other, unparsed. No HTTP, no pool, no timer, no task: one `epoll_wait` loop, and per
//! request the same four system calls rondo, nginx and HAProxy make (a read and a write each
//! way). `bench/proxies.sh` and `bench/proxies-profiles.sh` run it as one more proxy with
//! `FLOOR=target/release/examples/floor_relay`: its CPU per request is the kernel's share
//! every such proxy pays, so a target below it cannot be met from user space. (It holds one
//! backend connection per client, where a pooling proxy holds one per request in flight.)
//!
//! ```text
//! cargo build --release --example floor_relay
//! target/release/examples/floor_relay LISTEN BACKEND   # e.g. 127.0.0.1:8080 127.0.0.1:9001
//! ```
//!
//! Not a proxy to use: it speaks no protocol, so it cannot balance, retry or see a request;
//! a client and its backend connection live and close together.

use std::convert::Infallible;
use std::io::{ErrorKind, Read};
use std::net::SocketAddr;

use anyhow::Context as _;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Poll, Token};
use rustc_hash::FxHashMap;

mod floor_common;
mod floor_readiness;

use floor_readiness::write_some;

/// Bytes read in one call: 64 KiB, a loopback segment, so a 16 KiB response is one read.
const READ_SIZE: usize = 64 * 1024;

/// One side of a client–backend pair.
struct Side {
    stream: TcpStream,
    /// The other side's token.
    peer: Token,
    /// Bytes read from the peer that this side's socket did not take yet; while there are
    /// some, the peer is not read from.
    unsent: Vec<u8>,
}

/// The pairs, and the one read buffer they share.
struct Relay {
    poll: Poll,
    sockets: FxHashMap<Token, Side>,
    next: usize,
    buf: Vec<u8>,
    backend: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let (listener, backend) = floor_common::listener_and_backend("floor_relay")?;
    match relay(floor_readiness::mio_listener(listener)?, backend)? {}
}

/// Relays every client `listener` accepts to a connection of its own to `backend`, until the
/// poll fails.
fn relay(listener: TcpListener, backend: SocketAddr) -> anyhow::Result<Infallible> {
    let mut relay = Relay {
        poll: Poll::new().context("creating the poll")?,
        sockets: FxHashMap::default(),
        next: 0,
        buf: vec![0; READ_SIZE],
        backend,
    };
    floor_readiness::run(listener, &mut relay)
}

impl floor_readiness::Handler for Relay {
    fn poll(&mut self) -> &mut Poll {
        &mut self.poll
    }
    fn accept_all(&mut self, listener: &TcpListener) {
        Relay::accept_all(self, listener);
    }
    fn writable(&mut self, token: Token) {
        self.flush(token);
    }
    fn readable(&mut self, token: Token) {
        self.pump(token);
    }
}

impl Relay {
    /// Accepts every waiting client and connects its backend (loopback: the connect completes
    /// before the first write, which the kernel queues until it does).
    fn accept_all(&mut self, listener: &TcpListener) {
        loop {
            let client = match listener.accept() {
                Ok((client, _)) => client,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    eprintln!("floor_relay: accept: {e}");
                    return;
                }
            };
            let backend = match TcpStream::connect(self.backend) {
                Ok(backend) => backend,
                Err(e) => {
                    eprintln!("floor_relay: connect to {}: {e}", self.backend);
                    continue;
                }
            };
            let _ = client.set_nodelay(true);
            let _ = backend.set_nodelay(true);
            let (a, b) = (Token(self.next), Token(self.next + 1));
            self.next += 2;
            for (token, peer, mut stream) in [(a, b, client), (b, a, backend)] {
                let both = Interest::READABLE | Interest::WRITABLE;
                if self
                    .poll
                    .registry()
                    .register(&mut stream, token, both)
                    .is_err()
                {
                    self.close(a);
                    break;
                }
                let unsent = Vec::new();
                self.sockets.insert(
                    token,
                    Side {
                        stream,
                        peer,
                        unsent,
                    },
                );
            }
        }
    }

    /// Moves what `from` has to read to its peer, until a short read (the kernel had no more)
    /// or the peer stops taking bytes.
    fn pump(&mut self, from: Token) {
        loop {
            let Some(peer) = self.sockets.get(&from).map(|side| side.peer) else {
                return;
            };
            if self.sockets.get(&peer).is_none_or(|p| !p.unsent.is_empty()) {
                return;
            }
            let Some(side) = self.sockets.get_mut(&from) else {
                return;
            };
            let n = match side.stream.read(&mut self.buf) {
                Ok(0) => return self.close(from),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.close(from),
            };
            let Some(to) = self.sockets.get_mut(&peer) else {
                return;
            };
            match write_some(&mut to.stream, &self.buf[..n]) {
                Ok(written) if written == n => {}
                Ok(written) => to.unsent.extend_from_slice(&self.buf[written..n]),
                Err(_) => return self.close(from),
            }
            if n < self.buf.len() {
                return;
            }
        }
    }

    /// Writes what `to` still owes, and reads its peer again once it owes nothing.
    fn flush(&mut self, to: Token) {
        let Some(side) = self.sockets.get_mut(&to) else {
            return;
        };
        if side.unsent.is_empty() {
            return;
        }
        match write_some(&mut side.stream, &side.unsent) {
            Ok(written) => drop(side.unsent.drain(..written)),
            Err(_) => return self.close(to),
        }
        if side.unsent.is_empty() {
            let peer = side.peer;
            self.pump(peer);
        }
    }

    /// Closes both sides of a pair.
    fn close(&mut self, token: Token) {
        if let Some(mut side) = self.sockets.remove(&token) {
            let _ = self.poll.registry().deregister(&mut side.stream);
            if let Some(mut peer) = self.sockets.remove(&side.peer) {
                let _ = self.poll.registry().deregister(&mut peer.stream);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;

    #[test]
    fn bytes_cross_both_ways_unchanged_and_a_close_reaches_the_other_side() {
        floor_common::round_trip_through(|listener, backend| {
            let listener = floor_readiness::mio_listener(listener).unwrap();
            thread::spawn(move || relay(listener, backend));
        });
    }
}
