//! HTTP/1.1 to a backend for a request served by hyper (an HTTP/2 client, or an HTTP/1.1
//! client on a listener whose upstreams may speak HTTP/2): the head and body are written, and
//! the response head read, on the request's own task, over a connection from the worker's
//! pool, the pool the HTTP/1.1 path uses. The response body then streams to hyper from the
//! connection ([`ResponseBody`]), as its data and trailers, and the connection goes back to
//! the pool when the body is complete.
//!
//! hyper's HTTP/1.1 client did this before, at about 6,500 more instructions per HTTP/2
//! request (`bench/instructions.sh … -- h2c`): a task per connection, a channel and a copy of
//! the head per request, and a second parser.
//! Heads are parsed by [`super::head`] and chunked bodies read by [`super::chunked`], with the
//! HTTP/1.1 path's rules (a response framed two ways is refused).

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Method, header};
use hyper::body::{Body, Frame, SizeHint};
use std::io::Write as _;

use tokio::io::AsyncWriteExt;
use tokio::time::Sleep;

use super::Worker;
use super::body::{self, CHUNK};
use super::chunked::ChunkedDecoder;
use super::head::{self, Framing, ResponseInfo, push_header};
use super::replay::ReplayBody;
use crate::clock;
use crate::counters::UpstreamCounters;
use crate::tls::{BackendConn, UpstreamTls};

/// Room for a read of the response: a head and a 16 KiB body arrive in one read (as on the
/// HTTP/1.1 path). Pages are touched only as bytes arrive.
const READ_ROOM: usize = 2 * CHUNK;

/// Most bytes after a response head copied out of the worker's read buffer (see
/// [`after_head`]): a small body is copied faster than a fresh read buffer is allocated
/// (glibc's `malloc` consolidates its free lists for a request of that size).
const COPIED_AT_MOST: usize = 4096;

/// Most trailer fields taken from a chunked response; the decoder already bounds their bytes.
const MAX_TRAILERS: usize = 32;

/// Why an exchange with a backend got no usable response head.
#[derive(Debug)]
pub(crate) enum Failed {
    /// Writing the request to the backend failed.
    Write(io::Error),
    /// The client's body failed (it reset its stream or broke its connection).
    ClientBody,
    /// The backend closed the connection (`None`), or reading failed; `true` when no byte of
    /// a response had arrived.
    Closed(Option<io::Error>, bool),
    /// Not a response head rondo can use.
    BadHead,
}

/// Where a backend connection goes after a complete response: its worker's pool, under the
/// backend's address and TLS setup, counted in its upstream's idle gauge.
pub(crate) struct Home {
    pub(crate) worker: Rc<Worker>,
    pub(crate) addr: SocketAddr,
    pub(crate) tls: Option<Arc<UpstreamTls>>,
    pub(crate) counters: Arc<UpstreamCounters>,
    /// The upstream's `keepalive`: most idle connections kept per backend (0: none).
    pub(crate) keepalive: usize,
    /// The upstream's `keepalive_timeout`.
    pub(crate) keepalive_timeout: Duration,
}

impl Home {
    fn put(self, conn: BackendConn) {
        if self.keepalive > 0 {
            let key = (self.addr, self.tls);
            let (max, age) = (self.keepalive, self.keepalive_timeout);
            self.worker.conns.put(key, conn, &self.counters, max, age);
        }
    }
}

/// True for methods whose requests carry no body when they declare none (RFC 9110 §8.6: a
/// `Content-Length: 0` is sent for the others, as clients do).
fn bodiless_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// Writes `head` as an HTTP/1.1 request head into `out`, framed for `body`: its
/// `Content-Length` when the client sent one or the size is known, else chunked. Returns
/// whether the body goes chunked.
fn write_head(out: &mut Vec<u8>, head: &http::request::Parts, body: &ReplayBody) -> bool {
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut declared = false;
    for (name, value) in &head.headers {
        declared |= name == header::CONTENT_LENGTH;
        push_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let mut chunked = false;
    if !declared {
        let size = if body.is_end_stream() {
            Some(0)
        } else {
            body.size_hint().exact()
        };
        match size {
            Some(0) if bodiless_method(&head.method) => {}
            Some(n) => push_header(out, b"content-length", decimal(n, &mut [0; 20])),
            None => {
                push_header(out, b"transfer-encoding", b"chunked");
                chunked = true;
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    chunked
}

/// `n` in decimal, written at the end of `room`, without the formatting machinery.
fn decimal(mut n: u64, room: &mut [u8; 20]) -> &[u8] {
    let mut i = room.len();
    loop {
        i -= 1;
        room[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &room[i..];
        }
    }
}

/// Writes `out` to the backend and empties it.
async fn flush(conn: &mut BackendConn, out: &mut Vec<u8>) -> Result<(), Failed> {
    if !out.is_empty() {
        conn.write_all(out).await.map_err(Failed::Write)?;
        out.clear();
    }
    Ok(())
}

/// Sends `head` and `body` on `conn`, using `out` (empty) for the head and small frames so a
/// request and a body that has already arrived leave in one write. A frame the client has not
/// sent yet is waited for after what is ready has gone.
pub(crate) async fn send_request(
    conn: &mut BackendConn,
    head: &http::request::Parts,
    mut body: ReplayBody,
    out: &mut Vec<u8>,
) -> Result<(), Failed> {
    let chunked = write_head(out, head, &body);
    let mut trailers = None;
    if !body.is_end_stream() {
        loop {
            let polled = poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
            let frame = match polled {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    flush(conn, out).await?;
                    poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                }
            };
            let frame = match frame {
                None => break,
                Some(Err(_)) => return Err(Failed::ClientBody),
                Some(Ok(frame)) => frame,
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    trailers = frame.into_trailers().ok();
                    continue;
                }
            };
            if data.is_empty() {
                continue;
            }
            if chunked {
                // Writing to a `Vec` cannot fail.
                let _ = write!(out, "{:x}\r\n", data.len());
            }
            if out.len() + data.len() > CHUNK {
                flush(conn, out).await?;
                conn.write_all(&data).await.map_err(Failed::Write)?;
            } else {
                out.extend_from_slice(&data);
            }
            if chunked {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    if chunked {
        // The last chunk, the client's trailers (gRPC's, a checksum's), the end.
        out.extend_from_slice(b"0\r\n");
        for (name, value) in trailers.iter().flatten() {
            push_header(out, name.as_str().as_bytes(), value.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    flush(conn, out).await?;
    // A TLS stream may keep the last records in rustls's buffer (a no-op on TCP).
    conn.flush().await.map_err(Failed::Write)
}

/// Reads from `conn` into `buf`, keeping room for a read. Long bodies are read [`READ_ROOM`]
/// at a time here, not in the larger pieces of the HTTP/1.1 path: with 128 KiB reads the
/// proxy's CPU per 256 KiB response to HTTP/2 clients was 4 % and 10 % higher in two paired
/// runs, its kernel time the part that grew (likely the copies into the client's socket
/// reading memory no longer in the cache; docs/performance.md, sessions 19 and 20).
fn read_more(
    conn: &mut BackendConn,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < CHUNK {
        buf.reserve(READ_ROOM);
    }
    tokio_util::io::poll_read_buf(Pin::new(conn), cx, buf)
}

/// Reads the response head from `conn` into `buf` (empty, from the worker's spares),
/// skipping interim (1xx) responses; the head stays at the start of `buf` (its length is in
/// the [`ResponseInfo`]), what followed it after. `request_is_head`: the request was a HEAD,
/// so no body follows whatever the head says.
pub(crate) async fn read_response(
    conn: &mut BackendConn,
    buf: &mut Vec<u8>,
    request_is_head: bool,
) -> Result<(ResponseInfo, http::response::Parts), Failed> {
    body::make_room(buf, READ_ROOM);
    let mut nothing_yet = true;
    loop {
        if !buf.is_empty() {
            match head::parse_response_parts(buf, request_is_head) {
                Ok(Some((info, _))) if (100..200).contains(&info.status) && info.status != 101 => {
                    buf.drain(..info.head_len);
                    continue;
                }
                // A request from hyper's side never asks to switch protocols.
                Ok(Some((info, _))) if info.status == 101 => return Err(Failed::BadHead),
                Ok(Some(answer)) => return Ok(answer),
                Ok(None) => {}
                Err(_) => return Err(Failed::BadHead),
            }
        }
        match body::read_some(conn, buf).await {
            Ok(0) => return Err(Failed::Closed(None, nothing_yet)),
            Ok(_) => nothing_yet = false,
            Err(e) => return Err(Failed::Closed(Some(e), nothing_yet)),
        }
    }
}

/// What followed a response head of `head_len` bytes in `read`, as its body's buffer. Up to
/// [`COPIED_AT_MOST`] bytes are copied out and `read` goes back to `worker`'s spares (a small
/// allocation instead of a new buffer of [`READ_ROOM`] for the next response); more keep
/// `read`'s allocation, cut into the body's frames without a copy.
pub(crate) fn after_head(worker: &Worker, read: Vec<u8>, head_len: usize) -> BytesMut {
    if read.len() - head_len <= COPIED_AT_MOST {
        let rest = BytesMut::from(&read[head_len..]);
        worker.give_buffer(read);
        rest
    } else {
        let mut rest = BytesMut::from(Bytes::from(read));
        rest.advance(head_len);
        rest
    }
}

/// How much of a response body is still to come.
#[derive(Debug)]
enum Left {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// A backend's HTTP/1.1 response body, read from its connection as hyper asks for it: data
/// frames cut from the read buffer (no copy), then the trailers of a chunked body. When the
/// body is complete the connection goes back to the pool, if the response allows it and the
/// backend sent nothing more. A backend silent for the upstream's `response_timeout` in the
/// middle of a body ends it with an error (the client's stream is reset), as on the HTTP/1.1
/// path.
pub(crate) struct ResponseBody {
    /// The connection, until the body is complete or broken.
    conn: Option<BackendConn>,
    /// How long the backend may stay silent before the body's end.
    read_limit: Duration,
    /// Runs while a read waits: made by the first read that has to wait (a body that came
    /// with its head needs none), moved on by each read that brings bytes.
    silence: Option<Pin<Box<Sleep>>>,
    /// Bytes read and not yet handed out.
    buf: BytesMut,
    left: Left,
    /// Where the connection goes once the body is complete; `None` when the response does
    /// not let it carry another request.
    home: Option<Home>,
    /// The trailer section of a chunked body, as it arrives.
    trailer_bytes: Vec<u8>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("left", &self.left)
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

/// The error of a body whose bytes stopped short or broke their framing.
fn broken(detail: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, detail)
}

impl ResponseBody {
    /// The body of the response `info` describes, its first bytes in `buf`, read from
    /// `conn` (silent for `read_limit` at most), which goes to `home` once the body is
    /// complete. An empty body is complete now.
    pub(crate) fn new(
        conn: BackendConn,
        buf: BytesMut,
        info: &ResponseInfo,
        home: Home,
        read_limit: Duration,
    ) -> Self {
        let left = match info.framing {
            Framing::Empty => Left::Done,
            Framing::Length(n) => Left::Length(n),
            Framing::Chunked => Left::Chunked(ChunkedDecoder::default()),
            Framing::UntilClose => Left::UntilClose,
        };
        let mut body = ResponseBody {
            conn: Some(conn),
            read_limit,
            silence: None,
            buf,
            left,
            home: info.reusable.then_some(home),
            trailer_bytes: Vec::new(),
        };
        if matches!(body.left, Left::Done) {
            body.complete();
        }
        body
    }

    /// The body is whole: the connection goes home if it can carry another request.
    fn complete(&mut self) {
        self.left = Left::Done;
        if let (Some(conn), Some(home)) = (self.conn.take(), self.home.take())
            && self.buf.is_empty()
        {
            home.put(conn);
        }
    }

    /// Ends a body that broke before its end: the connection is closed, the error is the
    /// body's last frame.
    fn broke(&mut self, e: io::Error) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        self.conn = None;
        self.left = Left::Done;
        Poll::Ready(Some(Err(e)))
    }

    /// The next frame from what is buffered: `None` when more bytes are needed.
    fn next_frame(&mut self) -> Option<io::Result<Frame<Bytes>>> {
        match &mut self.left {
            Left::Done => None,
            Left::Length(_) | Left::UntilClose if self.buf.is_empty() => None,
            Left::Length(left) => {
                let take = usize::try_from(*left).map_or(self.buf.len(), |l| l.min(self.buf.len()));
                *left -= take as u64;
                let data = self.buf.split_to(take).freeze();
                if *left == 0 {
                    self.complete();
                }
                Some(Ok(Frame::data(data)))
            }
            Left::UntilClose => Some(Ok(Frame::data(self.buf.split().freeze()))),
            Left::Chunked(decoder) if decoder.in_trailers() => {
                let n = match decoder.feed(&self.buf) {
                    Ok(n) => n,
                    Err(_) => return Some(Err(broken("malformed chunked body"))),
                };
                self.trailer_bytes.extend_from_slice(&self.buf[..n]);
                self.buf.advance(n);
                if !decoder.is_done() {
                    return None;
                }
                let trailers = parse_trailers(&self.trailer_bytes);
                self.complete();
                match trailers {
                    Ok(Some(t)) => Some(Ok(Frame::trailers(t))),
                    Ok(None) => None,
                    Err(e) => Some(Err(e)),
                }
            }
            Left::Chunked(decoder) => loop {
                let (framing, n) = match decoder.next_data(&self.buf) {
                    Ok(found) => found,
                    Err(_) => return Some(Err(broken("malformed chunked body"))),
                };
                self.buf.advance(framing);
                if n > 0 {
                    return Some(Ok(Frame::data(self.buf.split_to(n).freeze())));
                }
                if decoder.in_trailers() {
                    return self.next_frame();
                }
                if framing == 0 {
                    return None;
                }
            },
        }
    }
}

/// The fields of a chunked body's trailer section (its bytes up to the empty line), `None`
/// when it has none.
fn parse_trailers(section: &[u8]) -> io::Result<Option<HeaderMap>> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILERS];
    let parsed = match httparse::parse_headers(section, &mut fields) {
        Ok(httparse::Status::Complete((_, parsed))) => parsed,
        _ => return Err(broken("malformed trailers")),
    };
    if parsed.is_empty() {
        return Ok(None);
    }
    let mut map = HeaderMap::with_capacity(parsed.len());
    for f in parsed {
        let name = http::HeaderName::from_bytes(f.name.as_bytes());
        let value = http::HeaderValue::from_bytes(f.value);
        if let (Ok(name), Ok(value)) = (name, value) {
            map.append(name, value);
        }
    }
    Ok(Some(map))
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = &mut *self;
        loop {
            if let Some(frame) = this.next_frame() {
                return Poll::Ready(Some(frame));
            }
            if matches!(this.left, Left::Done) {
                return Poll::Ready(None);
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let read = match read_more(conn, &mut this.buf, cx) {
                Poll::Ready(read) => read,
                Poll::Pending => {
                    let limit = this.read_limit;
                    let silence = this
                        .silence
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                    ready!(silence.as_mut().poll(cx));
                    let detail = format!("the backend sent nothing for {limit:?} in a body");
                    return this.broke(io::Error::new(io::ErrorKind::TimedOut, detail));
                }
            };
            if let (Ok(1..), Some(silence)) = (&read, this.silence.as_mut()) {
                silence.as_mut().reset(clock::loop_now() + this.read_limit);
            }
            match read {
                Ok(0) if matches!(this.left, Left::UntilClose) => {
                    this.complete();
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return this.broke(broken("the backend closed the connection in a body"));
                }
                Ok(_) => {}
                Err(e) => return this.broke(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.left, Left::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Left::Done => SizeHint::with_exact(0),
            Left::Length(n) => SizeHint::with_exact(n),
            Left::Chunked(_) | Left::UntilClose => SizeHint::default(),
        }
    }
}
