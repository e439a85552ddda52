//! A minimal HTTP/1.1 client connection, built for sending the same request over and over.
//!
//! The request bytes are serialised once (see [`Prepared`](super::spec::Prepared)) and written
//! with one `write_all`. The response head is parsed in place with `httparse` from a buffer the
//! connection owns and reuses; the body is skipped, not stored, whether framed by
//! `Content-Length`, chunked, or delimited by the end of the connection. Nothing is allocated
//! per request: the buffer grows only if a response head does not fit (up to
//! [`MAX_BUFFER`]), and the backend header value is copied into a reused `Vec`.
//!
//! Lifecycle of the TCP connection:
//!
//! | state | event | next |
//! |---|---|---|
//! | none | request | connect, then send |
//! | open | response complete, keep-alive | open (reused) |
//! | open | response with `Connection: close`, HTTP/1.0 without keep-alive, body to EOF | none |
//! | open | any error or timeout | none (the next request reconnects) |
//! | reused | closed before the first response byte | reconnect and send once more |
//!
//! The last row is the race every keep-alive client has with a server closing an idle
//! connection (a keep-alive timeout): the request almost certainly never reached the
//! server's application, so an idempotent request (GET, HEAD, PUT, DELETE, OPTIONS, TRACE)
//! is resent once on a fresh connection rather than counted as an error. Other methods are
//! not resent (the server might have acted on them): the failure is a `closed` error.

use std::net::SocketAddr;

use super::tls::{Stream, Tls, connect};
use http::HeaderName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::error::{ErrorKind, RequestError};
use super::spec::Prepared;

/// Initial size of a connection's read buffer, as wrk's. A response head of a few hundred
/// bytes and a small body fit in one read; larger bodies are read through it in 8 KiB steps.
/// Thousands of connections keep it small.
const INITIAL_BUFFER: usize = 8 * 1024;

/// Largest response head accepted. A head that does not fit in 1 MiB is not a response a
/// load test should keep reading; it is counted as an `other` error.
pub(crate) const MAX_BUFFER: usize = 1024 * 1024;

/// Most response headers parsed. More is an `other` error (httparse's `TooManyHeaders`).
const MAX_HEADERS: usize = 100;

/// What a connection was doing, so that a timeout that cancels it can be classified: a
/// timeout while connecting is a connect error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Connecting,
    Exchanging,
}

/// A completed response.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// Whether the backend header was present; its value is in the caller's buffer.
    pub(crate) has_backend: bool,
    /// The `grpc-status` of a gRPC call (from the headers or the trailers); `None` when
    /// the response had none, or the run is not gRPC.
    pub(crate) grpc_status: Option<u32>,
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy)]
enum Body {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// The parsed response head, owned (no borrow of the buffer).
#[derive(Debug)]
struct Head {
    status: u16,
    body: Body,
    close: bool,
    has_backend: bool,
}

/// One HTTP/1.1 connection to the target, reconnecting as needed.
#[derive(Debug)]
pub(crate) struct H1Conn {
    addr: SocketAddr,
    /// TLS settings of an `https://` target.
    tls: Option<Tls>,
    stream: Option<Stream>,
    /// Requests completed on the current stream.
    served: u64,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// Every byte read from the network on this connection (all streams).
    pub(crate) bytes_read: u64,
    pub(crate) phase: Phase,
}

impl H1Conn {
    pub(crate) fn new(addr: SocketAddr, tls: Option<Tls>) -> Self {
        H1Conn {
            addr,
            tls,
            stream: None,
            served: 0,
            buf: vec![0; INITIAL_BUFFER],
            start: 0,
            end: 0,
            bytes_read: 0,
            phase: Phase::Exchanging,
        }
    }

    /// Forgets the current stream (after a timeout or when the run ends mid-request).
    pub(crate) fn discard(&mut self) {
        self.stream = None;
    }

    /// Sends the prepared request and reads the whole response. When the spec names a
    /// backend header, its value is copied into `backend_value`.
    pub(crate) async fn request(
        &mut self,
        p: &Prepared,
        key: Option<u32>,
        backend_value: &mut Vec<u8>,
    ) -> Result<Response, RequestError> {
        let keyed = key.map(|k| p.h1_keyed(k));
        let request = keyed.as_deref().unwrap_or(&p.h1_request[..]);
        let (head, backend) = (p.head, p.backend_header.as_ref());
        let mut resent = false;
        loop {
            let fresh = self.stream.is_none();
            if fresh {
                self.phase = Phase::Connecting;
                let stream = connect(self.addr, self.tls.as_ref())
                    .await
                    .map_err(RequestError::connect)?;
                self.phase = Phase::Exchanging;
                self.stream = Some(stream);
                self.served = 0;
                self.start = 0;
                self.end = 0;
            }
            let before = self.bytes_read;
            match self.exchange(request, head, backend, backend_value).await {
                Ok(response) => return Ok(response),
                Err(err) => {
                    self.stream = None;
                    let idle_close = !fresh
                        && !resent
                        && p.idempotent
                        && err.kind == ErrorKind::Closed
                        && self.bytes_read == before;
                    if idle_close {
                        resent = true;
                        continue;
                    }
                    return Err(err);
                }
            }
        }
    }

    async fn exchange(
        &mut self,
        request: &[u8],
        head: bool,
        backend: Option<&HeaderName>,
        backend_value: &mut Vec<u8>,
    ) -> Result<Response, RequestError> {
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| RequestError::new(ErrorKind::Closed, "not connected"))?;
        stream.write_all(request).await.map_err(RequestError::io)?;
        // TLS keeps the records in rustls until flushed (a no-op on TCP).
        stream.flush().await.map_err(RequestError::io)?;

        let head = loop {
            match self.parse_head(head, backend, backend_value)? {
                Some(h) => break h,
                None => self.need_more().await?,
            }
        };
        match head.body {
            Body::None => {}
            Body::Length(n) => self.skip(n).await?,
            Body::Chunked => self.skip_chunked().await?,
            Body::UntilClose => self.skip_to_eof().await?,
        }
        if head.close {
            self.stream = None;
        } else {
            self.served += 1;
        }
        Ok(Response {
            status: head.status,
            has_backend: head.has_backend,
            grpc_status: None,
        })
    }

    /// Parses a response head from the buffer, or returns `None` if more bytes are needed.
    /// Interim (1xx) responses are consumed and skipped.
    fn parse_head(
        &mut self,
        head_request: bool,
        backend: Option<&HeaderName>,
        backend_value: &mut Vec<u8>,
    ) -> Result<Option<Head>, RequestError> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            let used = match response.parse(&self.buf[self.start..self.end]) {
                Ok(httparse::Status::Complete(used)) => used,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(e) => return Err(RequestError::parse(e)),
            };
            let status = response.code.unwrap_or(0);
            let http10 = response.version == Some(0);
            let mut length: Option<u64> = None;
            let mut chunked = false;
            let mut other_coding = false;
            let mut close = http10;
            let mut has_backend = false;
            for h in response.headers.iter() {
                let name = h.name.as_bytes();
                if name.eq_ignore_ascii_case(b"content-length") {
                    let n = parse_length(h.value).ok_or_else(|| {
                        RequestError::new(ErrorKind::Other, "malformed Content-Length")
                    })?;
                    if length.is_some_and(|l| l != n) {
                        return Err(RequestError::new(
                            ErrorKind::Other,
                            "conflicting Content-Length headers",
                        ));
                    }
                    length = Some(n);
                } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                    // Chunked counts only as the last coding.
                    let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
                    chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
                    other_coding = !chunked;
                } else if name.eq_ignore_ascii_case(b"connection") {
                    for token in h.value.split(|&b| b == b',') {
                        let token = token.trim_ascii();
                        if token.eq_ignore_ascii_case(b"close") {
                            close = true;
                        } else if token.eq_ignore_ascii_case(b"keep-alive") && http10 {
                            close = false;
                        }
                    }
                }
                if let Some(backend) = backend
                    && name.eq_ignore_ascii_case(backend.as_str().as_bytes())
                {
                    backend_value.clear();
                    backend_value.extend_from_slice(h.value);
                    has_backend = true;
                }
            }
            self.start += used;
            if (100..200).contains(&status) {
                if status == 101 {
                    return Err(RequestError::new(
                        ErrorKind::Other,
                        "the server switched protocols (101), which rondo bench does not follow",
                    ));
                }
                continue;
            }
            let body = if head_request || status == 204 || status == 304 {
                Body::None
            } else if chunked {
                Body::Chunked
            } else if other_coding {
                Body::UntilClose
            } else if let Some(n) = length {
                Body::Length(n)
            } else {
                Body::UntilClose
            };
            if matches!(body, Body::UntilClose) {
                close = true;
            }
            return Ok(Some(Head {
                status,
                body,
                close,
                has_backend,
            }));
        }
    }

    /// Reads more bytes into the buffer, making room first. Returns 0 at end of stream.
    async fn read_more(&mut self) -> Result<usize, RequestError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() < MAX_BUFFER {
                let len = (self.buf.len() * 2).min(MAX_BUFFER);
                self.buf.resize(len, 0);
            } else {
                return Err(RequestError::new(
                    ErrorKind::Other,
                    "response head or chunk line larger than 1 MiB",
                ));
            }
        }
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| RequestError::new(ErrorKind::Closed, "not connected"))?;
        let n = stream
            .read(&mut self.buf[self.end..])
            .await
            .map_err(RequestError::io)?;
        self.end += n;
        self.bytes_read += n as u64;
        Ok(n)
    }

    /// Reads more bytes; the end of the stream here is an error.
    async fn need_more(&mut self) -> Result<(), RequestError> {
        match self.read_more().await? {
            0 => Err(RequestError::new(
                ErrorKind::Closed,
                "the server closed the connection before the response was complete",
            )),
            _ => Ok(()),
        }
    }

    /// Consumes `n` body bytes.
    async fn skip(&mut self, mut n: u64) -> Result<(), RequestError> {
        loop {
            let available = (self.end - self.start) as u64;
            if available >= n {
                // n <= available, which is a usize.
                self.start += n as usize;
                return Ok(());
            }
            n -= available;
            self.start = self.end;
            self.need_more().await?;
        }
    }

    async fn skip_chunked(&mut self) -> Result<(), RequestError> {
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.buf[self.start..self.end]) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.start += used;
                        break size;
                    }
                    Ok(httparse::Status::Partial) => self.need_more().await?,
                    Err(_) => {
                        return Err(RequestError::new(
                            ErrorKind::Other,
                            "malformed chunk size in a chunked body",
                        ));
                    }
                }
            };
            if size == 0 {
                break;
            }
            // The chunk and its CRLF.
            self.skip(size.saturating_add(2)).await?;
        }
        // Trailer fields, then the empty line.
        loop {
            let pending = &self.buf[self.start..self.end];
            match pending.windows(2).position(|w| w == b"\r\n") {
                Some(0) => {
                    self.start += 2;
                    return Ok(());
                }
                Some(i) => self.start += i + 2,
                None => self.need_more().await?,
            }
        }
    }

    async fn skip_to_eof(&mut self) -> Result<(), RequestError> {
        loop {
            self.start = self.end;
            if self.read_more().await? == 0 {
                return Ok(());
            }
        }
    }
}

/// Parses a Content-Length value without allocating.
fn parse_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_lengths() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b" 42 "), Some(42));
        assert_eq!(parse_length(b""), None);
        assert_eq!(parse_length(b"4x"), None);
        assert_eq!(parse_length(b"-1"), None);
        assert_eq!(parse_length(b"99999999999999999999"), None);
    }
}
