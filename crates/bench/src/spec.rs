//! [`LoadSpec`]: what to send, where, how hard and for how long; and its validation into the
//! prepared form the connection tasks use (the target resolved once, the HTTP/1.1 request
//! serialised once).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method, Uri};

use super::error::BenchError;
use super::grpc::{add_grpc_headers, grpc_call, grpc_message};

/// Default number of concurrent connections. Ten keeps a laptop-sized server busy without
/// queueing on the client side; raise it to find a server's saturation point.
pub const DEFAULT_CONNECTIONS: usize = 10;

/// Default run length when neither a request count nor a duration is given: ten seconds,
/// as wrk does, long enough to get past connection setup and warm-up.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Default time a request may take before it counts as a timeout error. Ten seconds is well
/// past any healthy response and short enough that a hung server shows up in a short run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How progress is shown while a run goes. [`LoadSpec::new`] sets `Off`; the command line
/// defaults to `Auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, nothing otherwise.
    Auto,
    /// Nothing.
    #[default]
    Off,
    /// A live progress bar on stderr.
    Bar,
    /// One plain line per second on stderr, for logs.
    Lines,
}

/// A load to generate: the library form of `rondo bench`'s options.
///
/// Build one with [`LoadSpec::new`], change the public fields, and pass it to
/// [`generate`](super::generate).
///
/// ```no_run
/// # async fn example() -> Result<(), rondo_bench::BenchError> {
/// use std::time::Duration;
/// let mut spec = rondo_bench::LoadSpec::new("http://127.0.0.1:8080/");
/// spec.connections = 50;
/// spec.requests = Some(10_000);
/// spec.backend_header = Some("x-backend".into());
/// let report = rondo_bench::generate(&spec).await?;
/// println!("{}", report.render_text());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The target, `http://host[:port][/path][?query]`. The host is resolved once, at the
    /// start; the first address is used.
    pub url: String,
    /// Number of concurrent connections (each a task sending one request at a time).
    pub connections: usize,
    /// Stop after this many requests in total (responses and errors alike).
    pub requests: Option<u64>,
    /// Stop after this long; requests in flight at that moment are abandoned, uncounted.
    /// When neither `requests` nor `duration` is set, the run lasts [`DEFAULT_DURATION`].
    pub duration: Option<Duration>,
    /// Request method, `GET` by default.
    pub method: String,
    /// Extra request headers, sent as given. `Host` replaces the one derived from the URL.
    /// `Content-Length` and `Transfer-Encoding` are rondo's to set and are refused.
    pub headers: Vec<(String, String)>,
    /// Request body, sent with every request with its `Content-Length`.
    pub body: Bytes,
    /// Speak HTTP/2 (h2c with prior knowledge, or h2 by ALPN over TLS) instead of HTTP/1.1.
    pub http2: bool,
    /// For `https://`: accept any certificate (self-signed targets).
    pub insecure: bool,
    /// A request without a complete response after this long is a timeout error. `None`
    /// waits forever.
    pub timeout: Option<Duration>,
    /// Open-loop rate in requests per second over all connections. Request `i` is due at
    /// `start + i / rate`; a request sent late because its connection was behind schedule
    /// has its latency measured from that due time, so a stalled server shows up in the
    /// latency instead of silently lowering the rate (coordinated omission); one sent on
    /// time is measured from its send (a timer's lateness is the generator's own). `None` is closed loop: each connection sends as fast as it gets answers.
    pub rate: Option<f64>,
    /// Count responses by the value of this response header (for example `x-backend`) and
    /// report each value's share.
    pub backend_header: Option<String>,
    /// gRPC unary calls to this method path (`/package.Service/Method`) instead of plain
    /// requests: HTTP/2, `POST`, `content-type: application/grpc`, `te: trailers`, and
    /// [`body`](Self::body) sent as one length-prefixed message (empty: the message with
    /// every field at its default, which any request type accepts). Calls are counted by
    /// their `grpc-status`; a call succeeds when it is 0. The URL gives only scheme, host
    /// and port; [`method`](Self::method) is not used.
    pub grpc_unary: Option<String>,
    /// Give each request an affinity key, in a header of its own (see [`RequestKeys`]).
    pub keys: Option<RequestKeys>,
    /// Progress display on stderr.
    pub progress: ProgressMode,
    /// Ends the run early when [stopped](StopHandle::stop): no new request is sent, the
    /// ones in flight finish (or time out), and the report says it was interrupted.
    pub stop: StopHandle,
}

/// A switch that ends a run early, for Ctrl-C or a caller that has seen enough.
///
/// Clones share the switch. Checking it costs each request one relaxed atomic load.
#[derive(Debug, Clone, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// A switch that is not yet thrown.
    pub fn new() -> Self {
        StopHandle::default()
    }

    /// Throws the switch: the runs using it send no new request.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl LoadSpec {
    /// A spec for `url` with the defaults: [`DEFAULT_CONNECTIONS`] connections,
    /// [`DEFAULT_DURATION`], `GET`, no body, HTTP/1.1, [`DEFAULT_TIMEOUT`], closed loop.
    pub fn new(url: impl Into<String>) -> Self {
        LoadSpec {
            url: url.into(),
            connections: DEFAULT_CONNECTIONS,
            requests: None,
            duration: None,
            method: "GET".into(),
            headers: Vec::new(),
            body: Bytes::new(),
            http2: false,
            insecure: false,
            timeout: Some(DEFAULT_TIMEOUT),
            rate: None,
            backend_header: None,
            grpc_unary: None,
            keys: None,
            progress: ProgressMode::Off,
            stop: StopHandle::new(),
        }
    }
}

/// Affinity keys for the requests, as users or sessions give them: request `i` (counted over
/// all connections) carries the header `header` with the decimal value
/// `sequence[i % sequence.len()]`. `rondo compare --live` sends its scenario's keys this way,
/// so a `consistent-hash` proxy has something to hash.
#[derive(Debug, Clone)]
pub struct RequestKeys {
    /// The header's name, e.g. `x-key`.
    pub header: String,
    /// The key of each request, in order; cycled when there are more requests.
    pub sequence: Arc<[u32]>,
}

/// A validated spec: everything the connection tasks need, computed once.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) url: String,
    pub(crate) addr: SocketAddr,
    pub(crate) connections: usize,
    pub(crate) requests: Option<u64>,
    pub(crate) duration: Option<Duration>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) rate: Option<f64>,
    /// `true` when responses carry no body whatever their headers say (`HEAD`).
    pub(crate) head: bool,
    /// Whether the method is idempotent, so a request lost to a keep-alive race may be sent
    /// again.
    pub(crate) idempotent: bool,
    /// Lower-cased name of the backend header.
    pub(crate) backend_header: Option<HeaderName>,
    /// The complete HTTP/1.1 request, head and body, serialised once.
    pub(crate) h1_request: Bytes,
    /// Where the request line of `h1_request` ends: a keyed request's header goes there.
    pub(crate) h1_line_end: usize,
    /// The key header's name and the keys, when requests carry keys.
    pub(crate) keys: Option<(HeaderName, Arc<[u32]>)>,
    /// The parts of an HTTP/2 request.
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: Bytes,
    pub(crate) http2: bool,
    /// gRPC unary calls: `body` is the framed message, the response's `grpc-status` counts.
    pub(crate) grpc: bool,
    /// TLS settings of an `https://` target.
    pub(crate) tls: Option<super::tls::Tls>,
    pub(crate) progress: ProgressMode,
    pub(crate) stop: StopHandle,
}

impl Prepared {
    /// The key request `index` carries, when requests carry keys.
    pub(crate) fn key(&self, index: u64) -> Option<u32> {
        let (_, sequence) = self.keys.as_ref()?;
        let at = usize::try_from(index % sequence.len() as u64).unwrap_or(0);
        sequence.get(at).copied()
    }

    /// The HTTP/1.1 request with the key header after its request line. Built per request,
    /// so only keyed runs pay for it.
    pub(crate) fn h1_keyed(&self, key: u32) -> Vec<u8> {
        let name = self.keys.as_ref().map_or("", |(n, _)| n.as_str());
        let (line, rest) = self.h1_request.split_at(self.h1_line_end);
        let mut out = Vec::with_capacity(self.h1_request.len() + name.len() + 16);
        out.extend_from_slice(line);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(key.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(rest);
        out
    }
}

impl LoadSpec {
    /// Checks every field, resolves the host and serialises the request.
    pub(crate) async fn prepare(&self) -> Result<Prepared, BenchError> {
        let invalid = |reason: &str| BenchError::InvalidUrl {
            url: self.url.clone(),
            reason: reason.into(),
        };
        let uri: Uri = self
            .url
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(_) => return Err(invalid("the scheme must be http:// or https://")),
            None => return Err(invalid("expected http://host[:port][/path]")),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| invalid("the URL has no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("user information in the URL is not supported"));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(invalid("the URL has no host"));
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let grpc = match &self.grpc_unary {
            Some(method) => Some(grpc_call(&uri, method).map_err(BenchError::InvalidOption)?),
            None => None,
        };
        // gRPC is HTTP/2 only.
        let http2 = self.http2 || grpc.is_some();
        let tls = match https {
            true => {
                Some(super::tls::Tls::new(host, self.insecure, http2).map_err(|e| invalid(&e))?)
            }
            false => None,
        };
        // `host()` keeps the brackets of an IPv6 literal, which lookup_host accepts.
        let lookup = format!("{host}:{port}");
        let addr = tokio::net::lookup_host(&lookup)
            .await
            .map_err(|source| BenchError::Resolve {
                host: lookup.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| BenchError::Resolve {
                host: lookup.clone(),
                source: std::io::Error::other("no address"),
            })?;
        let (uri, method_name) = match &grpc {
            Some(call) => (call.clone(), "POST"),
            None => (uri, self.method.as_str()),
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let path = if path.is_empty() { "/" } else { path };

        if self.connections == 0 {
            return Err(BenchError::InvalidOption(
                "connections must be at least 1".into(),
            ));
        }
        if self.requests == Some(0) {
            return Err(BenchError::InvalidOption(
                "the number of requests must be at least 1".into(),
            ));
        }
        if self.duration == Some(Duration::ZERO) {
            return Err(BenchError::InvalidOption(
                "the duration must be longer than zero".into(),
            ));
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(BenchError::InvalidOption(format!(
                "the rate must be a positive number of requests per second, not {rate}"
            )));
        }
        let method = Method::from_bytes(method_name.as_bytes())
            .map_err(|_| BenchError::InvalidMethod(method_name.to_owned()))?;
        let backend_header = match &self.backend_header {
            Some(name) => Some(HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                BenchError::InvalidOption(format!("{name:?} is not a header name"))
            })?),
            None => None,
        };

        let mut headers = Vec::with_capacity(self.headers.len());
        let mut has_host = false;
        for (name, value) in &self.headers {
            let bad = |reason: &str| BenchError::InvalidHeader {
                header: format!("{name}: {value}"),
                reason: reason.into(),
            };
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| bad("the name is not an HTTP token"))?;
            let value = HeaderValue::from_str(value.trim())
                .map_err(|_| bad("the value contains a control character"))?;
            if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
                return Err(bad(
                    "rondo sets Content-Length from the body; give the body with -b or --body-file",
                ));
            }
            if name == http::header::CONNECTION || name == http::header::UPGRADE {
                return Err(bad("rondo manages the connection itself (keep-alive)"));
            }
            has_host |= name == http::header::HOST;
            headers.push((name, value));
        }
        let body = if grpc.is_some() {
            add_grpc_headers(&mut headers);
            grpc_message(&self.body)?
        } else {
            self.body.clone()
        };

        let keys = match &self.keys {
            None => None,
            Some(k) if k.sequence.is_empty() => {
                return Err(BenchError::InvalidOption(
                    "the key sequence is empty".into(),
                ));
            }
            Some(k) => Some((
                HeaderName::from_bytes(k.header.as_bytes()).map_err(|_| {
                    BenchError::InvalidOption(format!("{:?} is not a header name", k.header))
                })?,
                Arc::clone(&k.sequence),
            )),
        };
        let h1_request = serialise_h1(
            &method,
            path,
            (!has_host).then_some(authority.as_str()),
            &headers,
            &body,
        );
        Ok(Prepared {
            url: self.url.clone(),
            addr,
            connections: self.connections,
            requests: self.requests,
            duration: match (self.requests, self.duration) {
                (None, None) => Some(DEFAULT_DURATION),
                (_, d) => d,
            },
            timeout: self.timeout.filter(|t| !t.is_zero()),
            rate: self.rate,
            head: method == Method::HEAD,
            idempotent: matches!(
                method,
                Method::GET
                    | Method::HEAD
                    | Method::PUT
                    | Method::DELETE
                    | Method::OPTIONS
                    | Method::TRACE
            ),
            backend_header,
            h1_line_end: h1_request
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(0, |at| at + 2),
            h1_request,
            keys,
            method,
            uri,
            headers,
            body,
            http2,
            grpc: grpc.is_some(),
            tls,
            progress: self.progress,
            stop: self.stop.clone(),
        })
    }
}

/// Writes the whole HTTP/1.1 request once; every connection sends these same bytes.
fn serialise_h1(
    method: &Method,
    path: &str,
    host: Option<&str>,
    headers: &[(HeaderName, HeaderValue)],
    body: &[u8],
) -> Bytes {
    let mut out = BytesMut::with_capacity(256 + body.len());
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(path.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    if let Some(host) = host {
        out.put_slice(b"host: ");
        out.put_slice(host.as_bytes());
        out.put_slice(b"\r\n");
    }
    for (name, value) in headers {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    let wants_length =
        !body.is_empty() || matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    if wants_length {
        out.put_slice(b"content-length: ");
        out.put_slice(body.len().to_string().as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    out.put_slice(body);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_a_post_with_body_and_host() {
        let headers = vec![(
            HeaderName::from_static("x-a"),
            HeaderValue::from_static("1"),
        )];
        let bytes = serialise_h1(&Method::POST, "/p?q=1", Some("h:8"), &headers, b"hi");
        assert_eq!(
            &bytes[..],
            b"POST /p?q=1 HTTP/1.1\r\nhost: h:8\r\nx-a: 1\r\ncontent-length: 2\r\n\r\nhi"
        );
    }

    #[test]
    fn a_get_without_body_has_no_content_length() {
        let bytes = serialise_h1(&Method::GET, "/", Some("h"), &[], b"");
        assert_eq!(&bytes[..], b"GET / HTTP/1.1\r\nhost: h\r\n\r\n");
    }

    #[tokio::test]
    async fn refuses_other_schemes_and_framing_headers() {
        let spec = LoadSpec::new("ftp://127.0.0.1/");
        assert!(matches!(
            spec.prepare().await,
            Err(BenchError::InvalidUrl { .. })
        ));
        let mut spec = LoadSpec::new("http://127.0.0.1:1/");
        spec.headers.push(("Content-Length".into(), "3".into()));
        assert!(matches!(
            spec.prepare().await,
            Err(BenchError::InvalidHeader { .. })
        ));
    }

    #[tokio::test]
    async fn a_grpc_call_is_a_post_to_the_method_path_with_grpc_headers() {
        let mut spec = LoadSpec::new("https://127.0.0.1:9");
        spec.grpc_unary = Some("echo.Echo/Say".into());
        spec.headers.push(("x-a".into(), "1".into()));
        let p = spec.prepare().await.unwrap();
        assert!(p.grpc && p.http2);
        assert_eq!(p.method, Method::POST);
        assert_eq!(p.uri.to_string(), "https://127.0.0.1:9/echo.Echo/Say");
        let names: Vec<&str> = p.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-a", "content-type", "te"]);
        assert_eq!(&p.body[..], b"\0\0\0\0\0");
        for (url, method) in [
            ("http://127.0.0.1:9/x", "/a.B/C"),
            ("http://127.0.0.1:9", "/a.B"),
            ("http://127.0.0.1:9", "/a.B/C/D"),
            ("http://127.0.0.1:9", "//C"),
        ] {
            let mut spec = LoadSpec::new(url);
            spec.grpc_unary = Some(method.into());
            assert!(
                matches!(spec.prepare().await, Err(BenchError::InvalidOption(_))),
                "{url} {method}"
            );
        }
    }

    #[tokio::test]
    async fn keyed_requests_carry_their_key_after_the_request_line_in_turn() {
        let mut spec = LoadSpec::new("http://127.0.0.1:9/k");
        spec.keys = Some(RequestKeys {
            header: "x-key".into(),
            sequence: Arc::from([7u32, 42]),
        });
        let p = spec.prepare().await.unwrap();
        assert_eq!((p.key(0), p.key(1), p.key(2)), (Some(7), Some(42), Some(7)));
        assert_eq!(
            p.h1_keyed(42),
            b"GET /k HTTP/1.1\r\nx-key: 42\r\nhost: 127.0.0.1:9\r\n\r\n"
        );
        spec.keys = Some(RequestKeys {
            header: "x-key".into(),
            sequence: Arc::from([]),
        });
        assert!(matches!(
            spec.prepare().await,
            Err(BenchError::InvalidOption(_))
        ));
        let unkeyed = LoadSpec::new("http://127.0.0.1:9/k")
            .prepare()
            .await
            .unwrap();
        assert_eq!(unkeyed.key(0), None);
    }

    #[tokio::test]
    async fn accepts_an_ipv6_literal() {
        let p = LoadSpec::new("http://[::1]:9/x").prepare().await.unwrap();
        assert_eq!(p.addr, "[::1]:9".parse().unwrap());
        assert!(
            p.h1_request
                .starts_with(b"GET /x HTTP/1.1\r\nhost: [::1]:9\r\n")
        );
    }

    #[tokio::test]
    async fn defaults_to_ten_seconds_and_root_path() {
        let p = LoadSpec::new("http://127.0.0.1:9").prepare().await.unwrap();
        assert_eq!(p.duration, Some(DEFAULT_DURATION));
        assert!(
            p.h1_request
                .starts_with(b"GET / HTTP/1.1\r\nhost: 127.0.0.1:9\r\n")
        );
    }
}
