//! Request and response heads: parsed with `httparse` straight out of the read buffer and
//! rewritten in one pass into the buffer that goes out, so a proxied head costs one scan and
//! one copy, no allocation.
//!
//! What the rewrite does (RFC 9110 §7.6.1, nginx's and HAProxy's conventions):
//! - drops hop-by-hop headers (`Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`,
//!   `Trailer`, `Upgrade` unless upgrading, and every header `Connection` names);
//! - requests: appends the client to `X-Forwarded-For`, sets `X-Forwarded-Proto` and
//!   `X-Forwarded-Host` (a client's own values for these two are not trusted), appends
//!   `1.1 rondo` to `Via`, keeps `Host` (an HTTP/1.0 request without one gets the upstream's
//!   name, as nginx sends its `proxy_host`), and forwards as HTTP/1.1;
//! - refuses what would let a request be read two ways (both `Content-Length` and
//!   `Transfer-Encoding`, repeated differing lengths, a transfer coding other than chunked).

use std::mem::MaybeUninit;

use super::affinity::{Affinity, RequestParts};
use super::protocol::{is_forwarding, is_hop_by_hop, is_idempotent};
use crate::request_id::{self, Id};

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding, forwarded as is.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// Why a request head was refused, with the status it earns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeadError {
    /// Not valid HTTP/1.x.
    #[error("malformed request")]
    Malformed,
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2: a server must answer 400).
    #[error("request without a Host header")]
    MissingHost,
    /// A line ended by a bare LF: rondo re-frames heads with CRLF, so a head another parser
    /// could split differently is refused rather than guessed at (RFC 9112 §2.2).
    #[error("line ending without CR")]
    BareLf,
    /// The request line alone is longer than the head limit.
    #[error("request line too long")]
    UriTooLong,
    /// The head is longer than the limit, or has too many fields.
    #[error("request header fields too large")]
    TooLarge,
    /// The declared body is larger than the limit.
    #[error("request body too large")]
    BodyTooLarge,
    /// A transfer coding other than chunked.
    #[error("transfer coding not implemented")]
    UnsupportedCoding,
}

impl HeadError {
    /// The status the client gets.
    pub(crate) fn status(self) -> u16 {
        match self {
            HeadError::Malformed | HeadError::MissingHost | HeadError::BareLf => 400,
            HeadError::UriTooLong => 414,
            HeadError::TooLarge => 431,
            HeadError::BodyTooLarge => 413,
            HeadError::UnsupportedCoding => 501,
        }
    }
}

/// Most header fields accepted in one head; more is a 431 (nginx and HAProxy allow ~100).
/// Under 128: a response's kept fields are noted as bits of a `u128`.
pub(crate) const MAX_HEADERS: usize = 100;
const _: () = assert!(MAX_HEADERS <= 128);

/// What the proxy needs to know about a parsed request after its head is gone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestInfo {
    /// Length of the head in the input buffer.
    pub(crate) head_len: usize,
    /// How the body is delimited.
    pub(crate) framing: Framing,
    /// Safe to send twice (RFC 9110 §9.2.2): GET, HEAD, OPTIONS, TRACE, PUT, DELETE.
    pub(crate) idempotent: bool,
    /// A HEAD request: the response has no body whatever it says.
    pub(crate) is_head: bool,
    /// The client wants the connection kept open.
    pub(crate) keep_alive: bool,
    /// An HTTP/1.0 client: no `100 Continue`, no chunked response, and a kept connection
    /// says so (`Connection: keep-alive`).
    pub(crate) http10: bool,
    /// The client waits for `100 Continue` before sending its body (HTTP/1.1 only).
    pub(crate) expect_continue: bool,
    /// The route's upstream (index into the listener's table).
    pub(crate) upstream: usize,
    /// The seed's `Request.priority`, from the upstream's priority header; 0 when absent.
    pub(crate) priority: i32,
    /// Its hash key and sticky cookie, read for the route's upstream.
    pub(crate) affinity: Affinity,
    /// The client's `X-Request-Id`, read while parsing so the head is not searched again.
    pub(crate) sent_id: SentId,
}

/// What the first `X-Request-Id` header forwarded to the backend held (one that
/// `Connection` names is dropped, not forwarded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SentId {
    /// No such header is forwarded.
    Absent,
    /// An id to keep ([`Id::from_client`]).
    Valid(Id),
    /// A value that is not a usable id: it is replaced.
    Invalid,
}

/// Facts about the client connection that go into forwarded headers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Client<'a> {
    /// The client's IP, already formatted.
    pub(crate) ip: &'a str,
    /// Whether the client connected over TLS (`X-Forwarded-Proto: https`).
    pub(crate) tls: bool,
    /// Head size limit.
    pub(crate) max_header_bytes: usize,
    /// Body size limit.
    pub(crate) max_body_size: Option<u64>,
}

fn is(name: &str, lower: &str) -> bool {
    name.eq_ignore_ascii_case(lower)
}

/// Room for the headers of one head, left uninitialised: httparse fills what it reads, and
/// setting all 100 first (3.2 KB) cost 600 instructions per head parsed.
fn no_headers<'b>() -> [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS] {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// Where `part` (a slice httparse returned) starts in `input`.
fn offset(input: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - input.as_ptr() as usize
}

/// True when a line of the parsed head `input[..head_len]` ends with LF alone; `first` is
/// where the request line starts, `headers` what httparse read.
///
/// Only the line ends are looked at, not every byte: httparse puts every LF of a head at the
/// end of a line (none can be inside a field), and each line ends just before the next one
/// starts. Before the request line there may be empty lines (RFC 9112 §2.2 lets a server skip
/// them); they must be CRLFs too.
fn has_bare_lf(
    input: &[u8],
    head_len: usize,
    first: usize,
    headers: &[httparse::Header<'_>],
) -> bool {
    let head = &input[..head_len];
    if head[..first].chunks(2).any(|pair| pair != b"\r\n") {
        return true;
    }
    // The blank line that ends the head, then every line before it.
    let Some(blank) = head_len.checked_sub(2).filter(|&b| head[b] == b'\r') else {
        return true;
    };
    headers
        .iter()
        .map(|h| offset(input, h.name.as_bytes()))
        .chain([blank])
        .any(|end| end < 2 || head[end - 2] != b'\r')
}

/// Comma-separated tokens of a `Connection` header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

fn token_eq(t: &[u8], lower: &str) -> bool {
    t.eq_ignore_ascii_case(lower.as_bytes())
}

fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The fields both requests and responses are framed and kept alive by.
#[derive(Debug, Default)]
struct Fields<'h> {
    content_length: Option<u64>,
    /// `Content-Length` came on more than one line (all equal, or the head is refused).
    repeated_length: bool,
    chunked: bool,
    /// What `Connection` said about keep-alive, if anything.
    keep_alive: Option<bool>,
    /// `Connection: upgrade`.
    upgrade: bool,
    /// Header names listed in `Connection` (hop-by-hop), up to 8.
    named: [&'h [u8]; 8],
    n_named: usize,
}

/// Why the framing fields cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldError {
    /// A bad or conflicting `Content-Length`.
    Length,
    /// A transfer coding other than one `chunked`.
    Coding,
}

impl<'h> Fields<'h> {
    /// Reads `Content-Length`, `Transfer-Encoding` and `Connection` from `headers`.
    fn read(headers: &[httparse::Header<'h>]) -> Result<Fields<'h>, FieldError> {
        let mut f = Fields::default();
        for h in headers {
            let name = h.name;
            if is(name, "content-length") {
                let n = parse_length(h.value).ok_or(FieldError::Length)?;
                if f.content_length.is_some_and(|c| c != n) {
                    return Err(FieldError::Length);
                }
                f.repeated_length = f.content_length.is_some();
                f.content_length = Some(n);
            } else if is(name, "transfer-encoding") {
                let mut codings = tokens(h.value);
                match (codings.next(), codings.next()) {
                    (Some(t), None) if token_eq(t, "chunked") && !f.chunked => f.chunked = true,
                    _ => return Err(FieldError::Coding),
                }
            } else if is(name, "connection") {
                for t in tokens(h.value) {
                    if token_eq(t, "close") {
                        f.keep_alive = Some(false);
                    } else if token_eq(t, "keep-alive") {
                        f.keep_alive = Some(true);
                    } else if token_eq(t, "upgrade") {
                        f.upgrade = true;
                    }
                    // Never the fields a message is framed or routed by, which rondo reads
                    // itself: dropping one while the body goes on would leave the next hop
                    // framing the body as a message of its own (smuggling); nginx and
                    // HAProxy keep them too.
                    let framing = token_eq(t, "content-length")
                        || token_eq(t, "transfer-encoding")
                        || token_eq(t, "host");
                    if f.n_named < f.named.len() && !framing {
                        f.named[f.n_named] = t;
                        f.n_named += 1;
                    }
                }
            }
        }
        Ok(f)
    }

    /// True when `Connection` names this header, so it is not forwarded (never one of the
    /// framing fields, see [`Fields::read`]).
    fn names(&self, name: &str) -> bool {
        self.named[..self.n_named]
            .iter()
            .any(|t| name.as_bytes().eq_ignore_ascii_case(t))
    }
}

/// The authority and the rest (path and query; empty, or starting with `?`, when the target
/// has none) of an absolute-form request target; `None` for any other form. An authority
/// that is empty or carries user information (deprecated, RFC 9110 §4.2.4) is refused.
fn absolute_form(target: &str) -> Result<Option<(&str, &str)>, HeadError> {
    let scheme_len = match target.as_bytes() {
        [h, t1, t2, p, b':', b'/', b'/', ..]
            if b"http".eq_ignore_ascii_case(&[*h, *t1, *t2, *p]) =>
        {
            7
        }
        [h, t1, t2, p, s, b':', b'/', b'/', ..]
            if b"https".eq_ignore_ascii_case(&[*h, *t1, *t2, *p, *s]) =>
        {
            8
        }
        _ => return Ok(None),
    };
    let rest = &target[scheme_len..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return Err(HeadError::Malformed);
    }
    Ok(Some((authority, if path.is_empty() { "/" } else { path })))
}

/// What rewriting a request head needs of the upstream it was routed to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Routed<'r> {
    /// The header field that carries a request's priority in the upstream's wait queue.
    pub(crate) priority_header: &'r str,
    /// The upstream's name: the `Host` of a request that came without one.
    pub(crate) name: &'r str,
}

/// Parses a request head at the start of `input` and writes the head to forward into `out`.
///
/// `route(host, path)` chooses the upstream; `routed(upstream)` says what the rest of the
/// head needs of it; `affinity(upstream, request)` reads its hash key and sticky cookie.
/// Returns `Ok(None)` while the head is incomplete.
pub(crate) fn parse_request<'r>(
    input: &[u8],
    client: &Client<'_>,
    route: impl FnOnce(Option<&str>, &str) -> usize,
    routed: impl FnOnce(usize) -> Routed<'r>,
    affinity: impl FnOnce(usize, &RequestParts<'_, [httparse::Header<'_>]>) -> Affinity,
    out: &mut Vec<u8>,
) -> Result<Option<RequestInfo>, HeadError> {
    let mut headers = no_headers();
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(input, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if input.len() >= client.max_header_bytes {
                let line_done = input.windows(2).any(|w| w == b"\r\n");
                return Err(if line_done {
                    HeadError::TooLarge
                } else {
                    HeadError::UriTooLong
                });
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    if head_len > client.max_header_bytes {
        return Err(HeadError::TooLarge);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed);
    };
    // An absolute-form target (`GET http://host/path`) names its host: it is routed by that
    // host and path and forwarded in origin form with that `Host`, the client's own `Host`
    // ignored (RFC 9112 §3.2.2), as nginx does.
    let absolute = absolute_form(target)?;
    let path = absolute.map_or(target, |(_, path)| path);

    // First pass: what the head says about framing, connection and routing.
    let fields = Fields::read(req.headers).map_err(|e| match e {
        FieldError::Length => HeadError::Malformed,
        FieldError::Coding => HeadError::UnsupportedCoding,
    })?;
    let (content_length, chunked) = (fields.content_length, fields.chunked);
    let keep_alive = fields.keep_alive.unwrap_or(version == 1);
    let mut host: Option<&str> = None;
    let mut expect_continue = false;
    let mut expect = false;
    let mut forwarded_for: Option<&[u8]> = None;
    // More than one `X-Forwarded-For` line: all of them are joined, in order, as nginx does.
    let mut more_forwarded_for = false;
    let mut via: Option<&[u8]> = None;
    for h in req.headers.iter() {
        let name = h.name;
        if is(name, "host") {
            if host.is_some() {
                return Err(HeadError::Malformed);
            }
            host = Some(std::str::from_utf8(h.value).map_err(|_| HeadError::Malformed)?);
        } else if is(name, "expect") {
            expect = h.value.eq_ignore_ascii_case(b"100-continue");
            // rondo answers it; never with a 1xx to an HTTP/1.0 client (RFC 9110 §15.2).
            expect_continue = expect && version == 1;
        } else if is(name, "x-forwarded-for") {
            more_forwarded_for = forwarded_for.is_some();
            forwarded_for = Some(h.value);
        } else if is(name, "via") {
            via = Some(h.value);
        }
    }
    // Both lengths, or a transfer coding in HTTP/1.0 (RFC 9112 §6.1): the framing cannot be
    // trusted.
    if chunked && (content_length.is_some() || version == 0) {
        return Err(HeadError::Malformed);
    }
    if version == 1 && host.is_none() && absolute.is_none() {
        return Err(HeadError::MissingHost);
    }
    if let Some((authority, _)) = absolute {
        host = Some(authority);
    }
    if has_bare_lf(
        input,
        head_len,
        offset(input, method.as_bytes()),
        req.headers,
    ) {
        return Err(HeadError::BareLf);
    }
    let upgrade = fields.upgrade && req.headers.iter().any(|h| is(h.name, "upgrade"));
    let framing = match (chunked, content_length) {
        (true, _) => Framing::Chunked,
        (false, Some(0)) | (false, None) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
    };
    if let (Framing::Length(n), Some(max)) = (framing, client.max_body_size)
        && n > max
    {
        return Err(HeadError::BodyTooLarge);
    }
    let upstream = route(host, path);
    let routed = routed(upstream);
    let priority_name = routed.priority_header;
    let priority = req
        .headers
        .iter()
        .find(|h| is(h.name, priority_name))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
        .unwrap_or(0);
    let affinity = affinity(
        upstream,
        &RequestParts {
            client: client.ip,
            target: path.as_bytes(),
            headers: &*req.headers,
        },
    );

    // Second pass: the head to forward.
    let mut sent_id: Option<&[u8]> = None;
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    if path.starts_with('?') {
        out.push(b'/');
    }
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut kept = KeptLines::new(input, head_len, req.headers);
    // Equal `Content-Length` lines go on as one, as HAProxy merges them (nginx refuses two).
    let mut length_kept = false;
    for (i, h) in req.headers.iter().enumerate() {
        let name = h.name;
        let skip = is_hop_by_hop(name)
            || fields.names(name)
            || is_forwarding(name)
            || (expect && is(name, "expect"))
            || (absolute.is_some() && is(name, "host"))
            || (fields.repeated_length
                && is(name, "content-length")
                && std::mem::replace(&mut length_kept, true));
        if skip {
            continue;
        }
        // The id forwarded is the first one the backend gets (one `Connection` names is not).
        if sent_id.is_none() && is(name, request_id::HEADER) {
            sent_id = Some(h.value);
        }
        kept.keep(out, i);
    }
    kept.flush(out);
    if let Some((authority, _)) = absolute {
        push_header(out, b"host", authority.as_bytes());
    } else if host.is_none() {
        // HTTP/1.0 without `Host`, forwarded as HTTP/1.1, which requires one (RFC 9112
        // §3.2): the upstream's name, as nginx sends its `proxy_host`.
        push_header(out, b"host", routed.name.as_bytes());
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if upgrade {
        if let Some(h) = req.headers.iter().find(|h| is(h.name, "upgrade")) {
            push_header(out, b"upgrade", h.value);
        }
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if more_forwarded_for {
        for h in req.headers.iter().filter(|h| is(h.name, "x-forwarded-for")) {
            out.extend_from_slice(h.value);
            out.extend_from_slice(b", ");
        }
    } else if let Some(prior) = forwarded_for {
        out.extend_from_slice(prior);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client.ip.as_bytes());
    out.extend_from_slice(if client.tls {
        b"\r\nx-forwarded-proto: https\r\n"
    } else {
        b"\r\nx-forwarded-proto: http\r\n"
    });
    if let Some(host) = host {
        push_header(out, b"x-forwarded-host", host.as_bytes());
    }
    out.extend_from_slice(b"via: ");
    if let Some(prior) = via {
        out.extend_from_slice(prior);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(b"1.1 rondo\r\n\r\n");

    let idempotent = is_idempotent(method);
    Ok(Some(RequestInfo {
        head_len,
        framing,
        idempotent,
        is_head: method == "HEAD",
        keep_alive,
        http10: version == 0,
        expect_continue,
        upstream,
        priority,
        affinity,
        sent_id: match sent_id {
            None => SentId::Absent,
            Some(v) => Id::from_client(v).map_or(SentId::Invalid, SentId::Valid),
        },
    }))
}

/// The header lines of a parsed head that go on unchanged, copied from the input as they came:
/// a run of consecutive kept lines is one copy, not four small ones per header.
///
/// A line is the bytes from its name to the next line's name (the last one: to the blank line
/// that ends the head), so it carries its own CRLF. A line that does not end in CRLF (a
/// backend's bare LF) is rebuilt from its name and value instead.
struct KeptLines<'h> {
    input: &'h [u8],
    headers: &'h [httparse::Header<'h>],
    /// Where the blank line ending the head starts.
    end: usize,
    /// The run not copied yet: `input[from..to]` (a line never starts at 0).
    from: usize,
    to: usize,
}

impl<'h> KeptLines<'h> {
    fn new(input: &'h [u8], head_len: usize, headers: &'h [httparse::Header<'h>]) -> Self {
        KeptLines {
            input,
            headers,
            end: head_len.saturating_sub(2),
            from: 0,
            to: 0,
        }
    }

    /// Keeps header `i`'s line.
    fn keep(&mut self, out: &mut Vec<u8>, i: usize) {
        let start = offset(self.input, self.headers[i].name.as_bytes());
        let end = self
            .headers
            .get(i + 1)
            .map_or(self.end, |h| offset(self.input, h.name.as_bytes()));
        if end > start + 2 && self.input[end - 2] == b'\r' {
            if start != self.to {
                self.flush(out);
                self.from = start;
            }
            self.to = end;
        } else {
            self.flush(out);
            let h = &self.headers[i];
            push_header(out, h.name.as_bytes(), h.value);
        }
    }

    /// Copies the run kept so far.
    fn flush(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.input[self.from..self.to]);
        (self.from, self.to) = (0, 0);
    }
}

/// Writes one field line, `name: value`, into a head being built.
pub(crate) fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A status code's three digits, without the formatting machinery.
fn three_digits(status: u16) -> [u8; 3] {
    let digit = |n: u16| b'0' + (n % 10) as u8;
    [digit(status / 100), digit(status / 10), digit(status)]
}

/// What the proxy needs to know about a parsed response.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResponseInfo {
    /// Length of the head in the input buffer.
    pub(crate) head_len: usize,
    /// Status code.
    pub(crate) status: u16,
    /// How the body is delimited.
    pub(crate) framing: Framing,
    /// The backend connection can carry another request afterwards.
    pub(crate) reusable: bool,
    /// The client connection must close after this response.
    pub(crate) close_client: bool,
    /// A chunked body goes to an HTTP/1.0 client as its data alone, delimited by the close
    /// (it cannot read chunked coding; nginx does the same).
    pub(crate) dechunk: bool,
}

/// The client a response head is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ForClient {
    /// Its connection may stay open after the response.
    pub(crate) keep_alive: bool,
    /// It spoke HTTP/1.0.
    pub(crate) http10: bool,
}

/// A response head the proxy cannot use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid response head from backend")]
pub(crate) struct BadResponse;

/// Longest response head accepted from a backend (nginx's `proxy_buffer_size` is 4-8 KiB;
/// HAProxy's `tune.bufsize` 16 KiB).
pub(crate) const MAX_RESPONSE_HEAD: usize = 32 * 1024;

/// A response head parsed out of the read buffer, for the two writers of what the client gets.
struct ResponseHead<'a, 'h> {
    /// Its length in the input.
    len: usize,
    status: u16,
    /// The minor version: `HTTP/1.0` or `HTTP/1.1`.
    version: u8,
    reason: &'h str,
    headers: &'a [httparse::Header<'h>],
    fields: Fields<'h>,
}

/// Parses the response head at the start of `input` and hands it to `use_head`; `Ok(None)`
/// while it is incomplete, [`BadResponse`] when it is malformed, framed two ways or over
/// [`MAX_RESPONSE_HEAD`].
fn parse_response_head<T>(
    input: &[u8],
    use_head: impl FnOnce(ResponseHead<'_, '_>) -> Result<T, BadResponse>,
) -> Result<Option<T>, BadResponse> {
    let mut headers = no_headers();
    let mut res = httparse::Response::new(&mut []);
    let parser = httparse::ParserConfig::default();
    let len = match parser.parse_response_with_uninit_headers(&mut res, input, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if input.len() < MAX_RESPONSE_HEAD => return Ok(None),
        _ => return Err(BadResponse),
    };
    let (Some(status), Some(version)) = (res.code, res.version) else {
        return Err(BadResponse);
    };
    let fields = Fields::read(res.headers).map_err(|_| BadResponse)?;
    use_head(ResponseHead {
        len,
        status,
        version,
        reason: res.reason.unwrap_or(""),
        headers: res.headers,
        fields,
    })
    .map(Some)
}

/// How a response's body is delimited, and whether its connection can carry another request
/// afterwards (RFC 9112 §6.3): no body after HEAD, 1xx, 204 and 304; chunked before a length;
/// without either, until the backend closes.
fn response_framing(
    status: u16,
    version: u8,
    fields: &Fields<'_>,
    request_is_head: bool,
) -> (Framing, bool) {
    let reusable = fields.keep_alive.unwrap_or(version == 1);
    let bodiless =
        request_is_head || (100..200).contains(&status) || status == 204 || status == 304;
    if bodiless {
        (Framing::Empty, reusable)
    } else if fields.chunked {
        (Framing::Chunked, reusable)
    } else if let Some(n) = fields.content_length {
        let framing = if n == 0 {
            Framing::Empty
        } else {
            Framing::Length(n)
        };
        (framing, reusable)
    } else {
        (Framing::UntilClose, false)
    }
}

/// True for a response field that describes the backend's hop only: hop-by-hop, named in
/// `Connection`, or a `Content-Length` beside chunked coding (which wins, RFC 9112 §6.3).
/// Inlined into both callers: called once per field, it cost the HTTP/1.1 path ~100
/// instructions per response as a call.
#[inline(always)]
fn stays_behind(name: &str, fields: &Fields<'_>) -> bool {
    is_hop_by_hop(name) || fields.names(name) || (fields.chunked && is(name, "content-length"))
}

/// Parses a response head at the start of `input` into the head a client served by hyper
/// gets (HTTP/2, or HTTP/1.1 through hyper): status and fields, without those of the
/// backend's hop. Interim (1xx) responses come back like any other, for the caller to skip.
/// Returns `Ok(None)` while incomplete.
pub(crate) fn parse_response_parts(
    input: &[u8],
    request_is_head: bool,
) -> Result<Option<(ResponseInfo, http::response::Parts)>, BadResponse> {
    parse_response_head(input, |head| {
        let (status, fields) = (head.status, &head.fields);
        let (framing, reusable) = response_framing(status, head.version, fields, request_is_head);
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = http::StatusCode::from_u16(status).map_err(|_| BadResponse)?;
        // The kept values are copied into one allocation that they share (as
        // `relay_head::own_values` does for HTTP/2 backends' heads): one allocation per
        // head, not one per value, and nothing of the read buffer kept.
        // Which fields are kept, one bit each (at most `MAX_HEADERS`, under 128).
        let (mut kept, mut total) = (0u128, 0);
        for (i, h) in head.headers.iter().enumerate() {
            if !stays_behind(h.name, fields) {
                kept |= 1 << i;
                total += h.value.len();
            }
        }
        let kept = || {
            let fields = head.headers.iter().enumerate();
            fields.filter_map(move |(i, h)| (kept & 1 << i != 0).then_some(h))
        };
        let mut values = bytes::BytesMut::with_capacity(total);
        for h in kept() {
            values.extend_from_slice(h.value);
        }
        let mut values = values.freeze();
        parts.headers.reserve(head.headers.len());
        for h in kept() {
            let name = http::HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| BadResponse)?;
            let value = values.split_to(h.value.len());
            let value = http::HeaderValue::from_maybe_shared(value).map_err(|_| BadResponse)?;
            parts.headers.append(name, value);
        }
        let info = ResponseInfo {
            head_len: head.len,
            status,
            framing,
            reusable: reusable && status != 101,
            close_client: false,
            dechunk: false,
        };
        Ok((info, parts))
    })
}

/// Parses a response head at the start of `input` and writes the head to send the client into
/// `out`. `request_is_head` and `client` come from the request. Returns `Ok(None)` while
/// incomplete.
pub(crate) fn parse_response(
    input: &[u8],
    request_is_head: bool,
    client: ForClient,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseInfo>, BadResponse> {
    parse_response_head(input, |head| {
        let (status, fields) = (head.status, &head.fields);
        let (framing, reusable) = response_framing(status, head.version, fields, request_is_head);
        let dechunk = client.http10 && framing == Framing::Chunked;
        // Chunked coding goes on as it came, except to an HTTP/1.0 client.
        let chunked = fields.chunked && !dechunk;
        let switching = status == 101;
        let close_client = !client.keep_alive || framing == Framing::UntilClose || dechunk;

        out.extend_from_slice(b"HTTP/1.1 ");
        // httparse reads exactly three digits.
        out.extend_from_slice(&three_digits(status));
        out.push(b' ');
        out.extend_from_slice(head.reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut kept = KeptLines::new(input, head.len, head.headers);
        for (i, h) in head.headers.iter().enumerate() {
            let keep_anyway = (switching && is(h.name, "upgrade"))
                || (chunked && is(h.name, "transfer-encoding"));
            if stays_behind(h.name, fields) && !keep_anyway {
                continue;
            }
            kept.keep(out, i);
        }
        kept.flush(out);
        if switching {
            out.extend_from_slice(b"connection: upgrade\r\n");
        } else if close_client {
            out.extend_from_slice(b"connection: close\r\n");
        } else if client.http10 {
            // HTTP/1.0 closes unless told otherwise.
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        Ok(ResponseInfo {
            head_len: head.len,
            status,
            framing,
            reusable: reusable && !switching,
            close_client,
            dechunk,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keep-alive HTTP/1.1 client.
    const KEEP: ForClient = ForClient {
        keep_alive: true,
        http10: false,
    };

    const CLIENT: Client<'static> = Client {
        ip: "10.1.2.3",
        tls: false,
        max_header_bytes: 16 * 1024,
        max_body_size: None,
    };

    const ROUTED: Routed<'static> = Routed {
        priority_header: "x-priority",
        name: "app",
    };

    fn no_affinity(_: usize, _: &RequestParts<'_, [httparse::Header<'_>]>) -> Affinity {
        Affinity::default()
    }

    fn request(raw: &str) -> Result<Option<(RequestInfo, String)>, HeadError> {
        let mut out = Vec::new();
        let info = parse_request(
            raw.as_bytes(),
            &CLIENT,
            |_, _| 0,
            |_| ROUTED,
            no_affinity,
            &mut out,
        )?;
        Ok(info.map(|i| (i, String::from_utf8(out).unwrap())))
    }

    #[test]
    fn forwarded_headers_are_added_and_hop_by_hop_removed() {
        let raw = "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\
                   X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-Proto: https\r\nKeep-Alive: 5\r\nVia: 1.0 edge\r\nAccept: */*\r\n\r\n";
        let (info, out) = request(raw).unwrap().unwrap();
        assert_eq!(info.head_len, raw.len());
        assert_eq!(info.framing, Framing::Empty);
        assert!(info.keep_alive && info.idempotent && !info.is_head);
        assert_eq!(
            out,
            "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nx-forwarded-for: 1.1.1.1, 10.1.2.3\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: example.com\r\nvia: 1.0 edge, 1.1 rondo\r\n\r\n"
        );
    }

    #[test]
    fn the_first_request_id_header_is_read_while_parsing() {
        let sent = |headers: &str| {
            let raw = format!("GET / HTTP/1.1\r\nHost: a\r\n{headers}\r\n");
            request(&raw).unwrap().unwrap().0.sent_id
        };
        assert_eq!(sent(""), SentId::Absent);
        assert_eq!(
            sent("X-Request-ID: abc-123\r\nx-request-id: second\r\n"),
            SentId::Valid(Id::from_client(b"abc-123").unwrap())
        );
        assert_eq!(
            sent("x-request-id: a b\r\nx-request-id: valid\r\n"),
            SentId::Invalid
        );
        assert_eq!(sent("x-request-id:\r\n"), SentId::Invalid);
        // Named in `Connection`, it is not forwarded: the backend gets a generated one.
        assert_eq!(
            sent("Connection: x-request-id\r\nx-request-id: abc\r\n"),
            SentId::Absent
        );
    }

    #[test]
    fn an_http10_request_without_host_goes_on_with_the_upstreams_name() {
        let (info, out) = request("GET /a HTTP/1.0\r\nAccept: */*\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(info.http10);
        assert!(
            out.starts_with("GET /a HTTP/1.1\r\nAccept: */*\r\nhost: app\r\n"),
            "{out}"
        );
        assert!(!out.contains("x-forwarded-host"), "{out}");
        // With a Host of its own, that one goes on alone.
        let (_, out) = request("GET /a HTTP/1.0\r\nHost: b\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            out.matches("ost: ").count(),
            2,
            "Host and X-Forwarded-Host: {out}"
        );
        assert!(out.contains("\r\nHost: b\r\n") && out.contains("x-forwarded-host: b\r\n"));
    }

    #[test]
    fn an_absolute_form_target_is_routed_and_forwarded_by_its_own_host() {
        let mut routed = None;
        let mut out = Vec::new();
        let raw = "GET http://Admin.Example:8080/api/users?x=1 HTTP/1.1\r\nHost: other\r\n\r\n";
        let info = parse_request(
            raw.as_bytes(),
            &CLIENT,
            |host, path| {
                routed = Some((host.map(str::to_owned), path.to_owned()));
                0
            },
            |_| ROUTED,
            no_affinity,
            &mut out,
        )
        .unwrap()
        .unwrap();
        assert_eq!(info.head_len, raw.len());
        assert_eq!(
            routed,
            Some((
                Some("Admin.Example:8080".to_owned()),
                "/api/users?x=1".to_owned()
            ))
        );
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("GET /api/users?x=1 HTTP/1.1\r\n"), "{out}");
        assert!(out.contains("\r\nhost: Admin.Example:8080\r\n"), "{out}");
        assert!(
            !out.contains("other"),
            "the client's Host is not forwarded: {out}"
        );

        // No path: `/`; a query alone: `/?q`; HTTP/1.0 without Host is fine in this form.
        let (_, out) = request("GET https://a.test HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(out.starts_with("GET / HTTP/1.1\r\n"), "{out}");
        let (_, out) = request("GET http://a.test?q=1 HTTP/1.0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(
            out.starts_with("GET /?q=1 HTTP/1.1\r\nhost: a.test\r\n"),
            "{out}"
        );
        for bad in [
            "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert!(matches!(request(bad), Err(HeadError::Malformed)), "{bad}");
        }
    }

    #[test]
    fn connection_never_drops_the_fields_a_message_is_framed_or_routed_by() {
        // A client that names Content-Length in Connection: the length still goes on, so
        // the backend reads the body as a body, not as a second request.
        let body = "GET /admin HTTP/1.1\r\nHost: evil\r\n\r\n";
        let raw = format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nConnection: content-length, host, transfer-encoding, x-hop\r\n\
             X-Hop: 1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (info, out) = request(&raw).unwrap().unwrap();
        assert_eq!(info.framing, Framing::Length(body.len() as u64));
        assert!(
            out.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
            "{out}"
        );
        assert!(out.contains("\r\nHost: x\r\n"), "{out}");
        assert!(!out.contains("X-Hop"), "{out}");
        let chunked = "POST /a HTTP/1.1\r\nHost: x\r\nConnection: transfer-encoding\r\n\
                       Transfer-Encoding: chunked\r\n\r\n";
        let (info, out) = request(chunked).unwrap().unwrap();
        assert_eq!(info.framing, Framing::Chunked);
        assert!(
            out.to_ascii_lowercase()
                .contains("\r\ntransfer-encoding: chunked\r\n"),
            "{out}"
        );

        // The same from a backend: the response keeps its length.
        let raw =
            b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello";
        let mut out = Vec::new();
        let info = parse_response(raw, false, KEEP, &mut out).unwrap().unwrap();
        assert_eq!(info.framing, Framing::Length(5));
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.to_ascii_lowercase().contains("content-length: 5\r\n"),
            "{out}"
        );
        let (info, p) = parse_response_parts(raw, false).unwrap().unwrap();
        assert_eq!(info.framing, Framing::Length(5));
        assert_eq!(p.headers["content-length"], "5");
    }

    #[test]
    fn a_line_ending_in_lf_alone_is_found_anywhere_in_the_head() {
        let bare_lf = |raw: &str| matches!(request(raw), Err(HeadError::BareLf));
        for ok in [
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nB: \r\n\r\nBODY\n",
            "GET / HTTP/1.0\r\n\r\n",
        ] {
            assert!(request(ok).unwrap().is_some(), "{ok:?}");
        }
        for bad in [
            "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nB: 1\nC: 2\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n\n",
            "GET / HTTP/1.0\n\r\n",
            "GET / HTTP/1.0\r\n\n",
        ] {
            assert!(bare_lf(bad), "{bad:?}");
        }
    }

    #[test]
    fn framing_and_smuggling_rules() {
        let (info, out) =
            request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(info.framing, Framing::Chunked);
        assert!(!info.idempotent);
        assert!(out.contains("transfer-encoding: chunked\r\n"));
        let (info, _) = request("PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(info.framing, Framing::Length(5));
        assert_eq!(
            request("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap_err(),
            HeadError::Malformed
        );
        assert_eq!(
            request("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")
                .unwrap_err(),
            HeadError::Malformed
        );
        assert_eq!(
            request("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n").unwrap_err(),
            HeadError::Malformed
        );
        assert_eq!(
            request("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap_err(),
            HeadError::UnsupportedCoding
        );
        assert_eq!(
            request("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").unwrap_err(),
            HeadError::Malformed
        );
    }

    #[test]
    fn incomplete_heads_wait_and_oversized_heads_are_refused() {
        assert!(request("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        let client = Client {
            max_header_bytes: 64,
            ..CLIENT
        };
        let mut out = Vec::new();
        let long_line = format!("GET /{} HTTP/1.1", "a".repeat(100));
        let e = parse_request(
            long_line.as_bytes(),
            &client,
            |_, _| 0,
            |_| ROUTED,
            no_affinity,
            &mut out,
        )
        .unwrap_err();
        assert_eq!(e.status(), 414);
        let long_head = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(100));
        let e = parse_request(
            long_head.as_bytes(),
            &client,
            |_, _| 0,
            |_| ROUTED,
            no_affinity,
            &mut out,
        )
        .unwrap_err();
        assert_eq!(e.status(), 431);
        let limited = Client {
            max_body_size: Some(10),
            ..CLIENT
        };
        let e = parse_request(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n",
            &limited,
            |_, _| 0,
            |_| ROUTED,
            no_affinity,
            &mut out,
        );
        assert_eq!(e.unwrap_err().status(), 413);
        assert_eq!(request("NOT HTTP\r\n\r\n").unwrap_err().status(), 400);
    }

    #[test]
    fn heads_are_read_strictly_as_rfc_9112_says() {
        // (head, status): every one refused, none forwarded.
        let cases: &[(&str, u16)] = &[
            ("GET / HTTP/1.1\r\n\r\n", 400),                          // no Host
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),    // two Hosts
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400), // obs-fold
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),    // bare CR
            ("GET / HTTP/1.1\nHost: a\n\n", 400),                     // bare LF
            ("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400),         // one bare LF
            ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),              // space before colon
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400),  // control character
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400),  // DEL
            ("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),            // space in target
            ("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),               // bad method
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400),               // not HTTP/1.x
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400), // TE in 1.0
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,1\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                501,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
                501,
            ),
        ];
        for (head, status) in cases {
            let got = request(head).map(|r| r.map(|(_, out)| out));
            assert_eq!(
                got.map_err(HeadError::status),
                Err(*status),
                "{}",
                head.escape_debug()
            );
        }
        // HTTP/1.0 needs no Host.
        assert!(request("GET / HTTP/1.0\r\n\r\n").unwrap().is_some());
    }

    #[test]
    fn http10_closes_unless_asked_and_priority_is_read() {
        let (info, _) = request("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!info.keep_alive);
        let (info, _) =
            request("GET / HTTP/1.0\r\nConnection: keep-alive\r\nX-Priority: 7\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(info.keep_alive);
        assert_eq!(info.priority, 7);
    }

    #[test]
    fn responses_keep_their_framing_and_lose_hop_by_hop_headers() {
        let mut out = Vec::new();
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\n\r\nhi";
        let info = parse_response(raw, false, KEEP, &mut out).unwrap().unwrap();
        assert_eq!(
            (info.status, info.framing, info.reusable, info.close_client),
            (200, Framing::Length(2), true, false)
        );
        assert_eq!(info.head_len, raw.len() - 2);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
        );

        let mut out = Vec::new();
        let info = parse_response(b"HTTP/1.0 200 OK\r\n\r\n", false, KEEP, &mut out)
            .unwrap()
            .unwrap();
        assert_eq!(info.framing, Framing::UntilClose);
        assert!(!info.reusable && info.close_client);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with("connection: close\r\n\r\n")
        );

        let mut out = Vec::new();
        let info = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
            true,
            KEEP,
            &mut out,
        )
        .unwrap()
        .unwrap();
        assert_eq!(info.framing, Framing::Empty, "HEAD has no body");
        let mut out = Vec::new();
        let info = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            ForClient {
                keep_alive: false,
                http10: false,
            },
            &mut out,
        )
        .unwrap()
        .unwrap();
        assert_eq!(info.framing, Framing::Chunked);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("Transfer-Encoding: chunked\r\nconnection: close\r\n")
        );
        assert!(parse_response(b"garbage\r\n\r\n", false, KEEP, &mut Vec::new()).is_err());
    }

    #[test]
    fn response_parts_for_hypers_clients_keep_the_fields_the_h1_path_keeps() {
        let parts = |raw: &[u8], head: bool| parse_response_parts(raw, head);
        let raw = b"HTTP/1.1 201 Made\r\nX-A: 1\r\nConnection: x-hop\r\nX-Hop: 2\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n0\r\n";
        let (info, p) = parts(raw, false).unwrap().unwrap();
        assert_eq!((info.status, info.framing), (201, Framing::Chunked));
        assert!(info.reusable);
        assert_eq!(info.head_len, raw.len() - 3);
        assert_eq!(p.status, 201);
        let names: Vec<&str> = p.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-a", "set-cookie"]);
        assert_eq!(p.headers.get_all("set-cookie").iter().count(), 2);

        let (info, p) = parts(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(info.framing, Framing::Empty, "HEAD has no body");
        assert_eq!(p.headers["content-length"], "7");
        let (info, _) = parts(b"HTTP/1.0 200 OK\r\n\r\n", false).unwrap().unwrap();
        assert_eq!((info.framing, info.reusable), (Framing::UntilClose, false));
        let (info, _) = parts(b"HTTP/1.1 100 Continue\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!((info.status, info.framing), (100, Framing::Empty));
        assert!(
            parts(b"HTTP/1.1 200 OK\r\nContent-Len", false)
                .unwrap()
                .is_none()
        );
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert!(
                parts(bad, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn kept_lines_go_on_as_they_came_and_dropped_ones_leave_no_trace() {
        // Kept lines around dropped ones (hop-by-hop, named by `Connection`, forwarding),
        // first and last: each kept line exactly as sent, in order.
        let raw = "GET /p HTTP/1.1\r\nA: 1\r\nConnection: X-Drop\r\nB:  two \t\r\n\
                   X-Drop: y\r\nHost: h\r\nX-Forwarded-Proto: https\r\nC: 3\r\n\r\nBODY";
        let (info, forwarded) = request(raw).unwrap().unwrap();
        assert_eq!(info.head_len, raw.len() - 4);
        assert!(
            forwarded.starts_with(
                "GET /p HTTP/1.1\r\nA: 1\r\nB:  two \t\r\nHost: h\r\nC: 3\r\nx-forwarded-for: "
            ),
            "{forwarded:?}"
        );
        assert!(!forwarded.contains("X-Drop") && !forwarded.contains("https"));

        // A backend's line ending in LF alone is rebuilt with CRLF; its neighbours are copied.
        let mut out = Vec::new();
        let raw =
            b"HTTP/1.1 200 OK\r\nA: 1\nB: 2\r\nKeep-Alive: 5\r\nContent-Length: 0\r\nC: 3\r\n\r\n";
        parse_response(raw, false, KEEP, &mut out).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nContent-Length: 0\r\nC: 3\r\n\r\n"
        );
    }

    #[test]
    fn the_status_line_goes_on_with_its_code_and_reason() {
        for (code, reason) in [
            (100, "Continue"),
            (304, "Not Modified"),
            (599, ""),
            (999, "X"),
        ] {
            let raw = format!("HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\n\r\n");
            let mut out = Vec::new();
            let info = parse_response(raw.as_bytes(), false, KEEP, &mut out)
                .unwrap()
                .unwrap();
            assert_eq!(info.status, code);
            let line = format!("HTTP/1.1 {code} {reason}\r\n");
            assert!(
                out.starts_with(line.as_bytes()),
                "{:?}",
                String::from_utf8_lossy(&out)
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            std::env::var("RONDO_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000)
        ))]

        /// Fuzzing: any head made of HTTP-ish pieces is either refused, incomplete, or
        /// rewritten into a head that a strict parser reads back as one complete request with
        /// the same method and target, CRLF line ends only, and exactly one framing (what the
        /// backend sees can never be read two ways). Never a panic.
        #[test]
        fn accepted_heads_are_rewritten_into_one_unambiguous_request(
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                "GET", "POST", " ", "/", "/a?b=1", "HTTP/1.1", "HTTP/1.0", "\r\n", "\n", "\r",
                "Host: a", "Host: b", "Content-Length: 5", "Content-Length: 0", "Content-Length: 1,1",
                "Transfer-Encoding: chunked", "Transfer-Encoding: gzip", "Connection: close",
                "Connection: keep-alive, x-a", "x-a: 1", "Upgrade: websocket", ":", "\t", "\u{1}",
                "Expect: 100-continue", "X-Forwarded-For: 1.2.3.4", "Via: 1.0 x", " b",
            ]), 0..24),
        ) {
            let raw: String = pieces.concat();
            let mut out = Vec::new();
            let parsed = parse_request(raw.as_bytes(), &CLIENT, |_, _| 0, |_| ROUTED, no_affinity, &mut out);
            if let Ok(Some(info)) = parsed {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS + 8];
                let mut req = httparse::Request::new(&mut headers);
                let n = match req.parse(&out) {
                    Ok(httparse::Status::Complete(n)) => n,
                    other => return Err(proptest::test_runner::TestCaseError::fail(format!("{other:?}"))),
                };
                proptest::prop_assert_eq!(n, out.len());
                let bare_lf = out.iter().enumerate().any(|(i, &b)| b == b'\n' && (i == 0 || out[i - 1] != b'\r'));
                proptest::prop_assert!(!bare_lf);
                let lengths = req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("content-length")).count();
                let chunked = req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding")).count();
                proptest::prop_assert!(lengths + chunked <= 1, "{}", String::from_utf8_lossy(&out));
                proptest::prop_assert_eq!(chunked == 1, info.framing == Framing::Chunked);
                proptest::prop_assert!(raw.starts_with(req.method.unwrap_or("?")));
            }
        }
    }
}
