//! The floor relay ([`floor_relay`](floor_relay.rs)) plus the HTTP work no proxy can skip:
//! request and response heads parsed (httparse, as rondo does), backend connections pooled and
//! reused, responses framed by their `Content-Length`. Nothing else: heads go on as they came
//! (no forwarding fields, no request id, no hop-by-hop rewriting), and there are no timeouts,
//! retries, balancing, statistics or access log. One mio loop on one thread, one shared read
//! buffer. `bench/proxies.sh` and `bench/proxies-profiles.sh` run it as "floor-http" with
//! `FLOOR_HTTP=target/release/examples/floor_http`: the cost of a lean HTTP/1.1 proxy, between
//! the floor and rondo.
//!
//! ```text
//! cargo build --release --example floor_http
//! target/release/examples/floor_http LISTEN BACKEND   # e.g. 127.0.0.1:8080 127.0.0.1:9001
//! ```
//!
//! Not a proxy to use: requests with a body, responses without a `Content-Length` and anything
//! it cannot parse close the connection.

use std::convert::Infallible;
use std::io::{ErrorKind, Read};
use std::mem::MaybeUninit;
use std::net::SocketAddr;

use anyhow::Context as _;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Poll, Token};
use rustc_hash::FxHashMap;

mod floor_common;
mod floor_readiness;

use floor_readiness::write_some;

/// Bytes read in one call (the floor relay's read size).
const READ_SIZE: usize = 64 * 1024;

/// Headers a head may have (rondo's default limit is 100); the room is left uninitialised,
/// as rondo leaves it, so a parse costs what it reads.
const MAX_HEADERS: usize = 100;

/// One client or backend connection.
struct Conn {
    stream: TcpStream,
    /// Where a backend's response stands; `None` for a client.
    response: Option<Response>,
    /// A client's bytes read and not forwarded yet: part of a head, or the next request.
    pending: Vec<u8>,
    /// Bytes this socket did not take yet; while there are some, its peer is not read from.
    unsent: Vec<u8>,
    /// The other side of the exchange in progress.
    peer: Option<Token>,
    /// A client that became readable while its exchange was in progress, to read once it ends.
    woke_busy: bool,
}

/// A backend's response in progress.
#[derive(Default)]
struct Response {
    /// The head read so far, while it is incomplete.
    head: Vec<u8>,
    /// Whether the head is complete.
    head_done: bool,
    /// Body bytes still to come.
    remaining: usize,
}

/// The connections, the idle backend connections, and the one read buffer.
struct Proxy {
    poll: Poll,
    conns: FxHashMap<Token, Conn>,
    idle: Vec<Token>,
    next: usize,
    buf: Vec<u8>,
    backend: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let (listener, backend) = floor_common::listener_and_backend("floor_http")?;
    match proxy(floor_readiness::mio_listener(listener)?, backend)? {}
}

/// Proxies every client `listener` accepts to `backend`, until the poll fails.
fn proxy(listener: TcpListener, backend: SocketAddr) -> anyhow::Result<Infallible> {
    let mut proxy = Proxy {
        poll: Poll::new().context("creating the poll")?,
        conns: FxHashMap::default(),
        idle: Vec::new(),
        next: 0,
        buf: vec![0; READ_SIZE],
        backend,
    };
    floor_readiness::run(listener, &mut proxy)
}

impl floor_readiness::Handler for Proxy {
    fn poll(&mut self) -> &mut Poll {
        &mut self.poll
    }
    fn accept_all(&mut self, listener: &TcpListener) {
        Proxy::accept_all(self, listener);
    }
    fn writable(&mut self, token: Token) {
        self.flush(token);
    }
    fn readable(&mut self, token: Token) {
        Proxy::readable(self, token);
    }
}

impl Proxy {
    /// Registers a connection and returns its token.
    fn add(&mut self, mut stream: TcpStream, response: Option<Response>) -> Option<Token> {
        let token = Token(self.next);
        self.next += 1;
        let _ = stream.set_nodelay(true);
        let both = Interest::READABLE | Interest::WRITABLE;
        self.poll
            .registry()
            .register(&mut stream, token, both)
            .ok()?;
        self.conns.insert(
            token,
            Conn {
                stream,
                response,
                pending: Vec::new(),
                unsent: Vec::new(),
                peer: None,
                woke_busy: false,
            },
        );
        Some(token)
    }

    fn accept_all(&mut self, listener: &TcpListener) {
        loop {
            match listener.accept() {
                Ok((client, _)) => {
                    self.add(client, None);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    eprintln!("floor_http: accept: {e}");
                    return;
                }
            }
        }
    }

    /// An idle pooled backend connection, or a new one (loopback: made before this returns).
    fn backend_conn(&mut self) -> Option<Token> {
        if let Some(token) = self.idle.pop() {
            return Some(token);
        }
        let stream = std::net::TcpStream::connect(self.backend)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|e| eprintln!("floor_http: connect to {}: {e}", self.backend))
            .ok()?;
        self.add(TcpStream::from_std(stream), Some(Response::default()))
    }

    /// Closes a connection and the other side of its exchange, if any.
    fn close(&mut self, token: Token) {
        let Some(mut conn) = self.conns.remove(&token) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.idle.retain(|&t| t != token);
        if let Some(peer) = conn.peer {
            self.close(peer);
        }
    }

    fn readable(&mut self, token: Token) {
        match self.conns.get(&token) {
            Some(conn) if conn.response.is_some() => self.backend_readable(token),
            Some(_) => self.client_readable(token),
            None => {}
        }
    }

    /// Writes what `token` still owes, and reads its peer again once it owes nothing.
    fn flush(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if conn.unsent.is_empty() {
            return;
        }
        match write_some(&mut conn.stream, &conn.unsent) {
            Ok(written) => drop(conn.unsent.drain(..written)),
            Err(_) => return self.close(token),
        }
        if let (true, Some(peer)) = (conn.unsent.is_empty(), conn.peer) {
            self.readable(peer);
        }
    }

    /// Reads a client's next request head and sends it to a backend connection.
    fn client_readable(&mut self, client: Token) {
        loop {
            let Some(conn) = self.conns.get_mut(&client) else {
                return;
            };
            if conn.peer.is_some() {
                // Its exchange is in progress: read when it ends.
                conn.woke_busy = true;
                return;
            }
            let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
            let mut request = httparse::Request::new(&mut []);
            let parsed = match request.parse_with_uninit_headers(&conn.pending, &mut headers) {
                Ok(httparse::Status::Complete(len)) => Some(len),
                Ok(httparse::Status::Partial) => None,
                Err(_) => return self.close(client),
            };
            let Some(head_len) = parsed else {
                match conn.stream.read(&mut self.buf) {
                    Ok(0) => return self.close(client),
                    Ok(n) => conn.pending.extend_from_slice(&self.buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => return self.close(client),
                }
                continue;
            };
            let has_body = request.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("content-length")
                    || h.name.eq_ignore_ascii_case("transfer-encoding")
            });
            if has_body {
                return self.close(client);
            }
            let Some(backend) = self.backend_conn() else {
                return self.close(client);
            };
            let [Some(conn), Some(back)] = self.conns.get_disjoint_mut([&client, &backend]) else {
                return self.close(client);
            };
            conn.peer = Some(backend);
            back.peer = Some(client);
            back.response = Some(Response::default());
            let sent = send(back, &conn.pending[..head_len]);
            conn.pending.drain(..head_len);
            if !sent {
                self.close(client);
            }
            return;
        }
    }

    /// Reads a backend's response and sends it to its client; at its end, the backend goes
    /// back to the pool and the client's next request is read.
    fn backend_readable(&mut self, backend: Token) {
        loop {
            let Some(peer) = self.conns.get(&backend).map(|c| c.peer) else {
                return;
            };
            let Some(client) = peer else {
                // Idle in the pool: anything readable is the backend closing or misbehaving.
                return self.close(backend);
            };
            if self.conns.get(&client).is_none_or(|c| !c.unsent.is_empty()) {
                return;
            }
            let Some(conn) = self.conns.get_mut(&backend) else {
                return;
            };
            let n = match conn.stream.read(&mut self.buf) {
                Ok(0) => return self.close(backend),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.close(backend),
            };
            let Some(response) = conn.response.as_mut() else {
                return;
            };
            if response.head_done {
                response.remaining = response.remaining.saturating_sub(n);
            } else {
                // A head that came in pieces is gathered in `head`; one that came whole is
                // parsed where it was read.
                if !response.head.is_empty() {
                    response.head.extend_from_slice(&self.buf[..n]);
                }
                let seen = if response.head.is_empty() {
                    &self.buf[..n]
                } else {
                    &response.head[..]
                };
                match framed_length(seen) {
                    Ok(Some(total)) => {
                        response.head_done = true;
                        response.remaining = total.saturating_sub(seen.len());
                    }
                    Ok(None) => {
                        if response.head.is_empty() {
                            response.head.extend_from_slice(&self.buf[..n]);
                        }
                        continue;
                    }
                    Err(()) => return self.close(backend),
                }
            }
            let done = response.remaining == 0;
            // Empty (and free to take) unless the head came in pieces.
            let gathered = std::mem::take(&mut response.head);
            let Some(to) = self.conns.get_mut(&client) else {
                return self.close(backend);
            };
            let sent = if gathered.is_empty() {
                send(to, &self.buf[..n])
            } else {
                send(to, &gathered)
            };
            if !sent {
                return self.close(backend);
            }
            if done {
                return self.exchange_done(backend, client);
            }
            if n < self.buf.len() {
                return;
            }
        }
    }

    /// A response was forwarded whole: the backend connection goes back to the pool and the
    /// client's next request is read if it already came.
    fn exchange_done(&mut self, backend: Token, client: Token) {
        let [Some(conn), Some(back)] = self.conns.get_disjoint_mut([&client, &backend]) else {
            return;
        };
        back.peer = None;
        conn.peer = None;
        self.idle.push(backend);
        if std::mem::take(&mut conn.woke_busy) || !conn.pending.is_empty() {
            self.client_readable(client);
        }
    }
}

/// The length of a response, head and body, once its head is complete (`None` before);
/// `Err` for a response it cannot frame (no `Content-Length`) or cannot parse.
fn framed_length(bytes: &[u8]) -> Result<Option<usize>, ()> {
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        bytes,
        &mut headers,
    );
    let head_len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let body = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .ok_or(())?;
    Ok(Some(head_len + body))
}

/// Sends `bytes` to `conn`, keeping what its socket does not take now for its writable event;
/// false when the connection failed.
fn send(conn: &mut Conn, bytes: &[u8]) -> bool {
    if !conn.unsent.is_empty() {
        conn.unsent.extend_from_slice(bytes);
        return true;
    }
    match write_some(&mut conn.stream, bytes) {
        Ok(written) => {
            conn.unsent.extend_from_slice(&bytes[written..]);
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream as StdStream;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;
    use std::time::Duration;

    use super::*;

    /// The body the test backend sends for `/big`: more than the sockets between hold.
    const BIG: usize = 8 << 20;

    /// A keep-alive HTTP/1.1 backend on a free port: "ok" for every path but `/big`, which
    /// gets [`BIG`] bytes; `/split` gets its head in two writes. Counts the connections it
    /// accepted.
    fn backend() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&accepted);
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                counted.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || serve(conn));
            }
        });
        (addr, accepted)
    }

    fn serve(conn: std::net::TcpStream) {
        let mut writer = conn.try_clone().unwrap();
        let mut reader = BufReader::new(conn);
        loop {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                return;
            }
            header_lines(&mut reader);
            let body = if request_line.starts_with("GET /big ") {
                vec![b'x'; BIG]
            } else {
                b"ok".to_vec()
            };
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            if request_line.starts_with("GET /split ") {
                // The head in two pieces, far enough apart that the proxy reads them apart.
                let (first, rest) = head.as_bytes().split_at(10);
                writer.write_all(first).unwrap();
                thread::sleep(Duration::from_millis(50));
                writer.write_all(rest).unwrap();
            } else {
                writer.write_all(head.as_bytes()).unwrap();
            }
            writer.write_all(&body).unwrap();
        }
    }

    /// The header lines of a head whose first line was read, up to and without the empty line
    /// that ends it. Panics when the stream ends first (a test fails rather than spins).
    fn header_lines(reader: &mut impl BufRead) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "the head ended early"
            );
            if line == "\r\n" {
                return lines;
            }
            lines.push(line);
        }
    }

    /// The proxy on a free loopback port in front of `backend`, on a thread of its own.
    fn start_proxy(backend: SocketAddr) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = floor_readiness::mio_listener(listener).unwrap();
        thread::spawn(move || proxy(listener, backend));
        addr
    }

    /// Reads one response and returns its body.
    fn response(reader: &mut BufReader<StdStream>) -> Vec<u8> {
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK\r\n", "the status line came apart");
        let length = header_lines(reader)
            .iter()
            .find_map(|line| line.strip_prefix("Content-Length: "))
            .map(|value| value.trim().parse::<usize>().unwrap());
        let mut body = vec![0; length.unwrap()];
        reader.read_exact(&mut body).unwrap();
        body
    }

    #[test]
    fn responses_arrive_whole_in_order_over_one_pooled_backend_connection() {
        let (backend, accepted) = backend();
        let addr = start_proxy(backend);

        let mut client = StdStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut reader = BufReader::new(client.try_clone().unwrap());
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        assert_eq!(response(&mut reader), b"ok");
        // A head that arrives in two reads is gathered, then sent on whole with its body.
        client
            .write_all(b"GET /split HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        assert_eq!(response(&mut reader), b"ok");
        // A body larger than the sockets hold, read late: the proxy's sends to the client are
        // cut short and finished as it drains.
        client
            .write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        thread::sleep(Duration::from_millis(100));
        let big = response(&mut reader);
        assert!(big.len() == BIG && big.iter().all(|&b| b == b'x'));
        // Two requests in one write (pipelined): two answers, in order.
        client
            .write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        assert_eq!(response(&mut reader).len(), BIG);
        assert_eq!(response(&mut reader), b"ok");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "the backend connection was not reused"
        );
    }

    #[test]
    fn a_request_with_a_body_closes_the_connection() {
        let (backend, _) = backend();
        let addr = start_proxy(backend);
        let mut client = StdStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        client
            .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
            .unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "a request with a body was forwarded");
    }
}
