//! The validated configuration: what the rest of the program codes against. Every value
//! here has been checked and has its final type; defaults are filled in.
//!
//! Longer than ~500 lines because it is only type definitions with their documentation: the
//! whole typed configuration in one place, the page `docs/configuration.md` mirrors.

use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use balance::{BackendSpec, PoolConfig};

use crate::access_log::AccessLogConfig;
use crate::header_rules::Headers;

/// A whole configuration file, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Runtime worker threads.
    pub workers: NonZeroUsize,
    /// On SIGTERM/SIGINT, how long in-flight requests may finish.
    pub shutdown_grace: Duration,
    /// Where the access log goes.
    pub access_log: AccessLogConfig,
    /// The admin listener.
    pub admin: AdminConfig,
    /// The proxy listeners, in file order (at least one).
    pub listeners: Vec<ListenerConfig>,
    /// The upstreams, in file order (at least one).
    pub upstreams: Vec<UpstreamConfig>,
    /// How backend names are resolved.
    pub resolver: ResolverConfig,
    /// Resident memory (bytes) past which new connections are refused and idle ones closed;
    /// `None`: no limit.
    pub max_memory: Option<u64>,
    /// The etcd cluster that upstreams with `discovery = "etcd"` read; `None` without
    /// `[discovery.etcd]`.
    pub etcd: Option<EtcdConfig>,
}

/// `[discovery.etcd]`: the etcd cluster a fleet of rondo instances shares its backends
/// through (see `docs/fleet.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs as written (`http://127.0.0.1:2379`), tried in turn.
    pub endpoints: Vec<EtcdEndpoint>,
    /// Key prefix, without a trailing `/`: backends are at
    /// `{prefix}/upstreams/{upstream}/backends/{id}`.
    pub prefix: String,
}

/// One etcd client URL: plain HTTP to `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdEndpoint {
    /// The URL as written, for logs and stats.
    pub url: String,
    /// `host:port` to connect to (a name is resolved at each connection).
    pub authority: String,
}

/// Where an upstream's backends come from at run time, besides its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// The keys under `{prefix}/upstreams/{upstream}/backends/` in etcd; the file's
    /// backends serve until etcd is first read.
    Etcd,
}

/// `[resolver]`: where backend names are resolved and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Name servers to ask; empty: the system's (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// A name is resolved again after its records' TTL, but never sooner than this.
    pub min_ttl: Duration,
    /// …and never later than this.
    pub max_ttl: Duration,
}

/// A backend given by a DNS name rather than an address: every address the name resolves to
/// is a backend with these settings (see `upstream::dns`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedBackend {
    /// The id as written (default: the name as written); each resolved backend's id is
    /// `{id}@{address}`.
    pub id: String,
    /// What to resolve.
    pub target: DnsTarget,
    /// Each resolved backend's weight (for SRV: multiplied by the record's relative weight).
    pub weight: balance::Weight,
    /// Each resolved backend is a backup.
    pub backup: bool,
    /// Each resolved backend's connection limit.
    pub max_connections: Option<NonZeroU32>,
}

/// A DNS name to resolve into backend addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsTarget {
    /// A/AAAA records of `host`, each with `port`.
    Host {
        /// The host name.
        host: String,
        /// The port every address gets.
        port: u16,
    },
    /// SRV records of `name` (`_service._proto.domain`): targets, ports and weights.
    Srv {
        /// The SRV name.
        name: String,
    },
}

impl Config {
    /// The upstream with this name.
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// The listener with this name.
    pub fn listener(&self, name: &str) -> Option<&ListenerConfig> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// How many backends all upstreams have together.
    pub fn backend_count(&self) -> usize {
        self.upstreams.iter().map(|u| u.backends.len()).sum()
    }

    /// "2 listeners, 2 upstreams, 5 backends": what `rondo check` reports.
    pub fn summary(&self) -> String {
        fn count(n: usize, what: &str) -> String {
            format!("{n} {what}{}", if n == 1 { "" } else { "s" })
        }
        format!(
            "{}, {}, {}",
            count(self.listeners.len(), "listener"),
            count(self.upstreams.len(), "upstream"),
            count(self.backend_count(), "backend"),
        )
    }
}

/// The admin API's listener.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Whether the admin API runs at all: off, nothing listens (a second instance on the
    /// same machine, or a host where nothing should listen besides the proxy).
    pub enabled: bool,
    /// Where the admin API listens.
    pub listen: SocketAddr,
    /// The bearer token mutations (and, off loopback, every request) must carry; `None` when
    /// none is set, which is allowed only on a loopback address.
    pub token: Option<String>,
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("enabled", &self.enabled)
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// One proxy listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// Address to bind.
    pub bind: SocketAddr,
    /// The upstream requests go to when no route matches.
    pub upstream: String,
    /// Routes, tried in order; the first match wins.
    pub routes: Vec<RouteConfig>,
    /// A client that has not sent a whole request head by then gets 408.
    pub header_timeout: Duration,
    /// How long an idle keep-alive connection is kept open.
    pub idle_timeout: Duration,
    /// Largest request head in bytes: larger heads get 431, a longer request line 414.
    pub max_header_bytes: usize,
    /// Largest request body in bytes (413 beyond); `None` for no limit.
    pub max_body_size: Option<u64>,
    /// HTTP requests, or raw TCP relayed to one backend per connection.
    pub mode: ListenerMode,
    /// TLS termination; `None` for plain text.
    pub tls: Option<ListenerTlsConfig>,
    /// A plain HTTP listener that only redirects to `https://` (308, same host and path), so
    /// `http://` links keep working once a site moves to TLS.
    pub redirect_https: bool,
    /// Headers set or removed on requests and responses through this listener.
    pub headers: Headers,
    /// Client connections open at once; past it idle ones are closed to make room, else the
    /// new one is refused. `None`: derived from the open-file limit at start.
    pub max_client_connections: Option<usize>,
    /// Streams an HTTP/2 client may have open at once on one connection.
    pub http2_max_concurrent_streams: u32,
}

/// What a listener speaks to its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListenerMode {
    /// HTTP/1.1 and HTTP/2 (h2c, or h2 by ALPN over TLS), forwarded per request.
    #[default]
    Http,
    /// Bytes relayed both ways to one backend chosen per connection (HAProxy's `mode tcp`,
    /// nginx's `stream`), for protocols rondo does not parse.
    Tcp,
}

/// TLS termination on a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTlsConfig {
    /// The certificates; SNI picks one by `server_names`, and [`Self::default_certificate`]
    /// answers everything else.
    pub certificates: Vec<CertificateConfig>,
    /// The oldest TLS version accepted.
    pub min_version: TlsVersion,
}

impl ListenerTlsConfig {
    /// Index of the certificate served when no name matches (or the client sends no SNI):
    /// the one without `server_names`, else the first, as nginx's first `server`.
    pub fn default_certificate(&self) -> usize {
        self.certificates
            .iter()
            .position(|c| c.server_names.is_empty())
            .unwrap_or(0)
    }
}

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateConfig {
    /// The chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Names (lower-case; `*.example.com` matches one label) this certificate answers by SNI.
    pub server_names: Vec<String>,
}

/// A TLS protocol version, the floor a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246): still needed by older clients.
    Tls12,
    /// TLS 1.3 (RFC 8446).
    Tls13,
}

impl TlsVersion {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        }
    }
}

/// TLS from rondo to an upstream's backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTlsConfig {
    /// Name sent by SNI and checked against the backend's certificate; `None`: the backend's
    /// IP address (checked against the certificate's IP addresses).
    pub server_name: Option<String>,
    /// PEM file of the CAs trusted for backends; `None`: Mozilla's roots (webpki-roots).
    pub ca: Option<PathBuf>,
    /// Whether the backend's certificate is verified. Turning it off is for tests only.
    pub verify: bool,
    /// A client certificate and key (PEM) presented to backends that ask for one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl Config {
    /// Every certificate, key and CA file the configuration names: what `rondo serve
    /// --watch` watches besides the configuration file, so a renewed certificate is picked
    /// up without touching the configuration.
    pub fn tls_files(&self) -> Vec<PathBuf> {
        let listeners = self.listeners.iter().filter_map(|l| l.tls.as_ref());
        let upstreams = self.upstreams.iter().filter_map(|u| u.tls.as_ref());
        listeners
            .flat_map(|t| {
                t.certificates
                    .iter()
                    .flat_map(|c| [c.cert.clone(), c.key.clone()])
            })
            .chain(upstreams.flat_map(|t| {
                t.ca.iter().cloned().chain(
                    t.client_cert
                        .iter()
                        .flat_map(|(c, k)| [c.clone(), k.clone()]),
                )
            }))
            .collect()
    }

    /// Makes relative certificate and CA paths relative to `dir` (the configuration file's
    /// directory), as a user reading the file expects.
    pub(crate) fn resolve_paths(&mut self, dir: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        for tls in self.listeners.iter_mut().filter_map(|l| l.tls.as_mut()) {
            for c in &mut tls.certificates {
                fix(&mut c.cert);
                fix(&mut c.key);
            }
        }
        for tls in self.upstreams.iter_mut().filter_map(|u| u.tls.as_mut()) {
            tls.ca.iter_mut().for_each(fix);
            if let Some((cert, key)) = &mut tls.client_cert {
                fix(cert);
                fix(key);
            }
        }
    }
}

/// A route of a listener: requests that match go to `upstream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// Exact host to match, lower-cased, without port (the request's port is ignored);
    /// `None` matches any host.
    pub host: Option<String>,
    /// Path prefix to match (starts with `/`); `None` matches any path.
    pub path_prefix: Option<String>,
    /// Where matching requests go.
    pub upstream: String,
    /// Header rules applied after the listener's to requests this route matches.
    pub headers: Headers,
}

impl RouteConfig {
    /// Whether a request for `host` (with or without port, any case) and `path` matches.
    pub fn matches(&self, host: Option<&str>, path: &str) -> bool {
        let host_ok = match (&self.host, host) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(want), Some(got)) => strip_port(got).eq_ignore_ascii_case(want),
        };
        host_ok
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|prefix| path.starts_with(prefix))
    }
}

/// `example.com:8080` → `example.com`, `[::1]:80` → `[::1]`, `[::1]` → `[::1]`.
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i)
            if !host[i..].contains(']') && host[i + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            &host[..i]
        }
        _ => host,
    }
}

/// One upstream: a pool of backends and how to talk to them.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// Unique name, used by listeners, routes, the admin API and metrics.
    pub name: String,
    /// Algorithm, health rise/fall, breaker (`None` when disabled), passive ejection
    /// (`None` when `max_fails = 0`), slow start, panic threshold and start position. The
    /// seed is 0: the program sets it.
    pub pool: PoolConfig,
    /// The backends given by address, in file order.
    pub backends: Vec<BackendSpec>,
    /// The backends given by DNS name, in file order; with `backends`, at least one (unless
    /// `discovery` is set).
    pub named: Vec<NamedBackend>,
    /// Where backends come from at run time; `None`: the file only.
    pub discovery: Option<Discovery>,
    /// Attempts per request in all, the first included (1 when `failover = false`).
    pub tries: NonZeroU32,
    /// Response statuses that count as a failed attempt and are retried.
    pub retry_on_status: Vec<u16>,
    /// How many retries may be in flight at once.
    pub retry_budget: RetryBudget,
    /// Request bodies up to this many bytes are buffered so they can be replayed on a retry;
    /// larger ones are streamed and not retried once sent.
    pub retry_body_limit: usize,
    /// Time allowed to connect to a backend.
    pub connect_timeout: Duration,
    /// Time allowed for a backend's response head to arrive (504 beyond).
    pub response_timeout: Duration,
    /// Idle pooled connections kept per backend; 0 disables pooling.
    pub keepalive: usize,
    /// How long an idle pooled connection is kept.
    pub keepalive_timeout: Duration,
    /// A relayed connection (TCP mode, WebSocket and other upgrades) with no byte either way
    /// for this long is closed at both ends.
    pub tunnel_timeout: Duration,
    /// The queue for requests that find every backend at its connection limit.
    pub queue: QueueConfig,
    /// Active health checks.
    pub health_check: HealthCheckConfig,
    /// TLS to the backends (requests and health checks); `None`: plain text.
    pub tls: Option<UpstreamTlsConfig>,
    /// What a `consistent-hash` upstream hashes; `None` for the other algorithms.
    pub hash_key: Option<HashKey>,
    /// Sticky sessions by cookie; `None` when off.
    pub sticky: Option<StickyConfig>,
    /// What rondo speaks to the backends.
    pub protocol: UpstreamProtocol,
    /// HTTP/2 connections to the backends, when `protocol` allows HTTP/2.
    pub h2: H2Config,
    /// How gRPC calls are retried.
    pub grpc: GrpcConfig,
}

/// The protocol rondo speaks to an upstream's backends, whatever its clients speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (the default, as in nginx and HAProxy).
    #[default]
    Http1,
    /// HTTP/2 over cleartext with prior knowledge.
    H2c,
    /// HTTP/2 over TLS, negotiated by ALPN (`tls` is required).
    H2,
    /// HTTP/2 when the backend's TLS handshake selects it by ALPN, else HTTP/1.1; HTTP/1.1
    /// without TLS.
    Auto,
}

impl UpstreamProtocol {
    /// The configuration names, in the order `docs/configuration.md` lists them.
    pub const NAMES: [&str; 4] = ["http1", "h2c", "h2", "auto"];

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2c => "h2c",
            UpstreamProtocol::H2 => "h2",
            UpstreamProtocol::Auto => "auto",
        }
    }

    /// True when requests may go to the backends over HTTP/2 (not plain `http1`, and not
    /// `auto` without TLS, which is HTTP/1.1).
    pub fn may_use_h2(self, tls: bool) -> bool {
        match self {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::H2c | UpstreamProtocol::H2 => true,
            UpstreamProtocol::Auto => tls,
        }
    }
}

/// HTTP/2 connections to one upstream's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Config {
    /// Connections per backend and worker thread. Streams share a connection up to the
    /// backend's `SETTINGS_MAX_CONCURRENT_STREAMS`, then a new one opens, up to this cap;
    /// past it, streams wait on the least busy connection.
    pub max_connections: usize,
    /// Time between PINGs on a connection; a connection whose PING is not answered within
    /// the same time is closed. `None`: no PINGs.
    pub ping_interval: Option<Duration>,
}

/// How gRPC calls (`content-type: application/grpc`) are retried.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrpcConfig {
    /// `grpc-status` codes that send an idempotent call to another backend, when the
    /// backend answered with that status alone (nothing was streamed back).
    pub retry_on: Vec<u8>,
    /// Method paths (`/package.Service/Method`), or prefixes ending in `/`, whose calls are
    /// safe to send twice: gRPC calls are POSTs, so none is idempotent unless named here.
    pub idempotent: Vec<String>,
}

impl GrpcConfig {
    /// Whether a call to `path` is safe to send twice.
    pub fn is_idempotent(&self, path: &str) -> bool {
        self.idempotent
            .iter()
            .any(|m| path == m || (m.ends_with('/') && path.starts_with(m.as_str())))
    }
}

/// The part of a request a `consistent-hash` upstream hashes, so that equal keys go to the
/// same backend (nginx `hash`, HAProxy `balance source|uri|hdr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address (nginx `ip_hash`, HAProxy `balance source`).
    ClientIp,
    /// The request target, path and query.
    Uri,
    /// A request header's value; the name is lower-case.
    Header(String),
    /// A cookie's value.
    Cookie(String),
    /// A query parameter's value.
    Query(String),
}

/// Sticky sessions: the first response sets a cookie naming its backend (an opaque id),
/// later requests carrying it go to that backend while it can take them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyConfig {
    /// Cookie name.
    pub cookie: String,
    /// `Max-Age`; `None` for a session cookie.
    pub ttl: Option<Duration>,
    /// `Secure` attribute: browsers send it over HTTPS only.
    pub secure: bool,
    /// `HttpOnly` attribute: scripts cannot read it.
    pub http_only: bool,
}

/// Envoy's retry budget: retries in flight may be at most `percent` of the requests in
/// flight, or `min`, whichever is larger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudget {
    /// Percent of active requests (0–100).
    pub percent: u8,
    /// Retries always allowed at once.
    pub min: u32,
}

/// Requests waiting for a backend under its connection limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// Requests that may wait; 0: none, answer 503 at once.
    pub size: usize,
    /// How long a request may wait before it gets 503.
    pub timeout: Duration,
    /// Request header (lower-cased) whose integer value orders the queue, higher first.
    pub priority_header: String,
}

/// How a health check probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// An HTTP GET of `path`; passes on an expected status.
    Http,
    /// A TCP connect; passes when the connection is accepted.
    Tcp,
    /// A gRPC `grpc.health.v1.Health/Check` call over HTTP/2; passes when the backend
    /// answers SERVING.
    Grpc,
}

impl CheckKind {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Http => "http",
            CheckKind::Tcp => "tcp",
            CheckKind::Grpc => "grpc",
        }
    }
}

/// Active health checks of an upstream's backends. Rise and fall are in
/// [`UpstreamConfig::pool`].
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    /// Whether checks run at all.
    pub enabled: bool,
    /// HTTP or TCP.
    pub kind: CheckKind,
    /// Path requested by an HTTP check (starts with `/`).
    pub path: String,
    /// Service a gRPC check asks about ("": the server as a whole).
    pub service: String,
    /// Host header of an HTTP check; `None`: the backend's address.
    pub host: Option<String>,
    /// Statuses that pass an HTTP check.
    pub expected_status: Vec<RangeInclusive<u16>>,
    /// Time between checks of one backend (before jitter).
    pub interval: Duration,
    /// Time allowed for one check; always shorter than `interval`.
    pub timeout: Duration,
    /// Each check fires up to `jitter × interval` early, never late; 0 ≤ jitter < 1.
    pub jitter: f64,
}

impl HealthCheckConfig {
    /// Whether `status` passes an HTTP check.
    pub fn accepts(&self, status: u16) -> bool {
        self.expected_status.iter().any(|r| r.contains(&status))
    }

    /// What a backend must do to pass, in words an operator recognises: `GET /health →
    /// 200-399` or `TCP connect`. For `rondo check`, start-up and the log line of a 503
    /// when every backend failed its checks: a newcomer whose backends have no `/health`
    /// learns why they are all down.
    pub fn describe(&self) -> String {
        match self.kind {
            CheckKind::Tcp => self.probe(),
            CheckKind::Grpc => format!("{} → SERVING", self.probe()),
            CheckKind::Http => format!("{} → {}", self.probe(), self.expected()),
        }
    }

    /// What a check does, without what it expects: `GET /health` or `TCP connect`.
    pub fn probe(&self) -> String {
        match self.kind {
            CheckKind::Tcp => "TCP connect".to_owned(),
            CheckKind::Grpc => format!("gRPC Health/Check \"{}\"", self.service),
            CheckKind::Http => format!("GET {}", self.path),
        }
    }

    /// The statuses that pass an HTTP check, as configured: `200-399` or `200, 204`.
    pub fn expected(&self) -> String {
        let statuses: Vec<String> = self
            .expected_status
            .iter()
            .map(|r| match r.start() == r.end() {
                true => r.start().to_string(),
                false => format!("{}-{}", r.start(), r.end()),
            })
            .collect();
        statuses.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_admin_token() {
        let admin = AdminConfig {
            enabled: true,
            listen: "127.0.0.1:9901".parse().unwrap(),
            token: Some("s3cret".into()),
        };
        let shown = format!("{admin:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn routes_match_host_without_port_in_any_case_and_path_prefix() {
        let r = RouteConfig {
            host: Some("api.example.com".into()),
            path_prefix: Some("/v1/".into()),
            upstream: "api".into(),
            headers: Default::default(),
        };
        assert!(r.matches(Some("API.example.com:8080"), "/v1/users"));
        assert!(r.matches(Some("api.example.com"), "/v1/"));
        assert!(!r.matches(Some("api.example.com"), "/v2/users"));
        assert!(!r.matches(Some("www.example.com"), "/v1/users"));
        assert!(!r.matches(None, "/v1/users"));
        let any_host = RouteConfig { host: None, ..r };
        assert!(any_host.matches(None, "/v1/x"));
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("example.com"), "example.com");
    }
}
