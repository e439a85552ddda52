//! The file as written: serde structs that mirror the TOML, with no defaults filled in and
//! no meaning checked. Absent keys are `None` (the defaults live in [`super::defaults`]);
//! values that validation checks keep their place in the file ([`Spanned`]) so a semantic
//! error can point at them. Unknown keys are errors.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

pub(crate) use super::access_log::RawAccessLog;
pub(crate) use super::header_rules::RawHeaderRules;
use super::units::{DurationValue, SizeValue};

/// The top level of the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    /// Runtime worker threads, integer ≥ 1. Default: the number of cores.
    pub(crate) workers: Option<Spanned<i64>>,
    /// Duration in-flight requests may take to finish on SIGTERM/SIGINT. Default "30s".
    pub(crate) shutdown_grace: Option<Spanned<DurationValue>>,
    /// true/false (process log), or a table `{ path, format }`. Default true.
    pub(crate) access_log: Option<RawAccessLog>,
    /// `[admin]`. Default: listen on 127.0.0.1:9901 without a token.
    pub(crate) admin: Option<Spanned<RawAdmin>>,
    /// `[[listeners]]`, at least one.
    pub(crate) listeners: Option<Spanned<Vec<Spanned<RawListener>>>>,
    /// `[[upstreams]]`, at least one.
    pub(crate) upstreams: Option<Spanned<Vec<Spanned<RawUpstream>>>>,
    /// `[resolver]`. Default: the system's resolver configuration.
    pub(crate) resolver: Option<Spanned<RawResolver>>,
    /// Size (bytes) of resident memory past which new connections are refused. Default: none.
    pub(crate) max_memory: Option<Spanned<SizeValue>>,
    /// `[discovery]`. Default: no discovery source besides DNS names.
    pub(crate) discovery: Option<Spanned<RawDiscovery>>,
}

/// `[discovery]`: where upstreams with `discovery = "…"` take their backends from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDiscovery {
    /// `[discovery.etcd]`. Default: none.
    pub(crate) etcd: Option<Spanned<RawEtcd>>,
}

/// `[discovery.etcd]`: an etcd cluster holding the fleet's backends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEtcd {
    /// Client URLs, `http://host:port`, at least one, required.
    pub(crate) endpoints: Option<Spanned<Vec<Spanned<String>>>>,
    /// Key prefix, starting with `/`. Default "/rondo".
    pub(crate) prefix: Option<Spanned<String>>,
}

/// `[resolver]`: how backend names are resolved.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResolver {
    /// Name servers, socket addresses. Default: those of `/etc/resolv.conf`.
    pub(crate) nameservers: Option<Spanned<Vec<Spanned<String>>>>,
    /// Shortest time between two resolutions of a name, duration. Default "5s".
    pub(crate) min_ttl: Option<Spanned<DurationValue>>,
    /// Longest time between two resolutions of a name, duration. Default "300s".
    pub(crate) max_ttl: Option<Spanned<DurationValue>>,
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    /// Whether the admin API runs, bool. Default true.
    pub(crate) enabled: Option<bool>,
    /// Socket address, e.g. "127.0.0.1:9901". Default "127.0.0.1:9901".
    pub(crate) listen: Option<Spanned<String>>,
    /// Bearer token, string. No default.
    pub(crate) token: Option<Spanned<String>>,
    /// Name of an environment variable holding the token. No default.
    pub(crate) token_env: Option<Spanned<String>>,
}

/// `[[listeners]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListener {
    /// Unique name, required.
    pub(crate) name: Spanned<String>,
    /// Socket address to bind, required.
    pub(crate) bind: Spanned<String>,
    /// Default upstream's name, required.
    pub(crate) upstream: Spanned<String>,
    /// Duration to receive a whole request head (408 beyond). Default "10s".
    pub(crate) header_timeout: Option<Spanned<DurationValue>>,
    /// Keep-alive idle duration. Default "60s".
    pub(crate) idle_timeout: Option<Spanned<DurationValue>>,
    /// Size (bytes) of the largest request head. Default "16KiB".
    pub(crate) max_header_bytes: Option<Spanned<SizeValue>>,
    /// Size (bytes) of the largest request body. Default: no limit.
    pub(crate) max_body_size: Option<Spanned<SizeValue>>,
    /// Open client connections accepted at once. Default: (open-file limit − 64) / 2.
    pub(crate) max_client_connections: Option<Spanned<i64>>,
    /// Streams one HTTP/2 connection may have open at once. Default 128.
    pub(crate) http2_max_concurrent_streams: Option<Spanned<i64>>,
    /// `[[listeners.routes]]`. Default: none.
    #[serde(default)]
    pub(crate) routes: Vec<Spanned<RawRoute>>,
    /// "http" or "tcp". Default "http".
    pub(crate) mode: Option<Spanned<RawMode>>,
    /// `[listeners.tls]`. Default: plain text.
    pub(crate) tls: Option<Spanned<super::tls::RawListenerTls>>,
    /// Answer every request with a 308 to `https://` on the same host and path, bool.
    /// Default false.
    pub(crate) redirect_https: Option<Spanned<bool>>,
    /// Headers set/removed on forwarded requests. Default: none.
    pub(crate) request_headers: Option<RawHeaderRules>,
    /// Headers set/removed on responses. Default: none.
    pub(crate) response_headers: Option<RawHeaderRules>,
}

/// `mode` of a listener.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawMode {
    /// HTTP/1.1 and HTTP/2 requests.
    Http,
    /// Raw bytes to one backend per connection.
    Tcp,
}

/// `[[listeners.routes]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    /// Exact host to match (case-insensitive, no port). Default: any host.
    pub(crate) host: Option<Spanned<String>>,
    /// Path prefix to match, starting with `/`. Default: any path.
    pub(crate) path_prefix: Option<Spanned<String>>,
    /// Upstream name, required.
    pub(crate) upstream: Spanned<String>,
    /// Headers set/removed on forwarded requests, after the listener's. Default: none.
    pub(crate) request_headers: Option<RawHeaderRules>,
    /// Headers set/removed on responses, after the listener's. Default: none.
    pub(crate) response_headers: Option<RawHeaderRules>,
}

/// `[[upstreams]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    /// Unique name, required.
    pub(crate) name: Spanned<String>,
    /// One of balance's `Algorithm::NAMES`. Default "smooth-weighted".
    pub(crate) algorithm: Option<Spanned<String>>,
    /// The backends, at least one, required (optional with `discovery`).
    pub(crate) backends: Option<Spanned<Vec<Spanned<BackendEntry>>>>,
    /// Where the backends come from at run time: "etcd". Default: the file only.
    pub(crate) discovery: Option<Spanned<String>>,
    /// Slow-start window, duration. Default: off.
    pub(crate) slow_start: Option<Spanned<DurationValue>>,
    /// Panic threshold, integer percent 0–100. Default 0 (off).
    pub(crate) panic_threshold: Option<Spanned<i64>>,
    /// Where the cycle starts. Default "first".
    pub(crate) start: Option<RawStart>,
    /// Attempts per request, integer ≥ 1. Default 3.
    pub(crate) tries: Option<Spanned<i64>>,
    /// Whether failed attempts move on to another backend, bool. Default true.
    pub(crate) failover: Option<Spanned<bool>>,
    /// Statuses retried: codes 100–599, "500-504" ranges or "5xx" classes. Default [502,
    /// 503, 504].
    pub(crate) retry_on_status: Option<Spanned<Vec<Spanned<StatusItem>>>>,
    /// Retry budget, integer percent 0–100. Default 20.
    pub(crate) retry_budget_percent: Option<Spanned<i64>>,
    /// Retries always allowed, integer ≥ 0. Default 3.
    pub(crate) retry_budget_min: Option<Spanned<i64>>,
    /// Size (bytes) of request bodies kept for replay. Default "64KiB".
    pub(crate) retry_body_limit: Option<Spanned<SizeValue>>,
    /// Connect timeout, duration. Default "5s".
    pub(crate) connect_timeout: Option<Spanned<DurationValue>>,
    /// Response head timeout, duration. Default "60s".
    pub(crate) response_timeout: Option<Spanned<DurationValue>>,
    /// Idle pooled connections per backend, integer ≥ 0. Default 32.
    pub(crate) keepalive: Option<Spanned<i64>>,
    /// Idle pooled connection lifetime, duration. Default "60s".
    pub(crate) keepalive_timeout: Option<Spanned<DurationValue>>,
    /// Idle time that closes a relayed connection (TCP mode, WebSocket). Default "10m".
    pub(crate) tunnel_timeout: Option<Spanned<DurationValue>>,
    /// Failures that eject a backend, integer ≥ 0 (0: off). Default 1.
    pub(crate) max_fails: Option<Spanned<i64>>,
    /// Ejection window and time out, duration. Default "10s".
    pub(crate) fail_timeout: Option<Spanned<DurationValue>>,
    /// Whether 5xx answers count toward `max_fails`, bool. Default false.
    pub(crate) fail_on_5xx: Option<bool>,
    /// Requests that may wait for a backend, integer ≥ 0. Default 0.
    pub(crate) queue_size: Option<Spanned<i64>>,
    /// How long a request may wait, duration. Default "5s".
    pub(crate) queue_timeout: Option<Spanned<DurationValue>>,
    /// Header carrying a request's priority, header name. Default "x-priority".
    pub(crate) priority_header: Option<Spanned<String>>,
    /// What `consistent-hash` hashes: "client-ip", "uri", "header:NAME", "cookie:NAME",
    /// "query:NAME". Default "client-ip".
    pub(crate) hash_key: Option<Spanned<String>>,
    /// Bounded load of `consistent-hash`, number > 1. Default: off.
    pub(crate) hash_balance_factor: Option<Spanned<f64>>,
    /// Sticky sessions by cookie, inline table. Default: off.
    pub(crate) sticky: Option<Spanned<RawSticky>>,
    /// `[upstreams.health_check]`. Default: HTTP checks with the seed's settings.
    pub(crate) health_check: Option<RawHealthCheck>,
    /// `[upstreams.circuit_breaker]`. Default: on, with the seed's settings.
    pub(crate) circuit_breaker: Option<RawBreaker>,
    /// `tls = { … }`: speak TLS to the backends. Default: plain text.
    pub(crate) tls: Option<Spanned<super::tls::RawUpstreamTls>>,
    /// What rondo speaks to the backends: "http1", "h2c", "h2" or "auto". Default "http1".
    pub(crate) protocol: Option<Spanned<String>>,
    /// HTTP/2 connections per backend and worker, integer ≥ 1. Default 8.
    pub(crate) h2_max_connections: Option<Spanned<i64>>,
    /// HTTP/2 PING interval, duration ("0s": off). Default "30s".
    pub(crate) h2_ping_interval: Option<Spanned<DurationValue>>,
    /// gRPC statuses retried for idempotent calls: codes 0–16 or names. Default
    /// ["unavailable"].
    pub(crate) grpc_retry_on: Option<Spanned<Vec<Spanned<StatusItem>>>>,
    /// gRPC method paths (or prefixes ending in `/`) safe to send twice. Default: none.
    pub(crate) grpc_idempotent: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `sticky`, an inline table on an upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSticky {
    /// Cookie name, token. Default "rondo_srv".
    pub(crate) cookie: Option<Spanned<String>>,
    /// Cookie lifetime, duration. Default: a session cookie.
    pub(crate) ttl: Option<Spanned<DurationValue>>,
    /// `Secure` attribute, bool. Default false.
    pub(crate) secure: Option<bool>,
    /// `HttpOnly` attribute, bool. Default true.
    pub(crate) http_only: Option<bool>,
}

/// A backend, an inline table in `backends`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    /// Socket address ("127.0.0.1:9001", "[::1]:9001"), DNS name and port
    /// ("app.internal:9001") or SRV name ("_http._tcp.app.internal"), required.
    pub(crate) address: Spanned<String>,
    /// Relative weight, number > 0 with at most three decimals. Default 1.
    pub(crate) weight: Option<Spanned<f64>>,
    /// Receives traffic only when no primary can, bool. Default false.
    pub(crate) backup: Option<bool>,
    /// Requests in flight at most, integer ≥ 1. Default: no limit.
    pub(crate) max_connections: Option<Spanned<i64>>,
    /// Unique id within the upstream, string. Default: the address as written.
    pub(crate) id: Option<Spanned<String>>,
}

/// An entry of `backends`: a [`RawBackend`] table. A bare address string, the usual slip
/// (nginx writes `server 127.0.0.1:9001;`), is refused with the table to write instead of
/// serde's "expected a table".
#[derive(Debug)]
pub(crate) struct BackendEntry(pub(crate) RawBackend);

impl<'de> Deserialize<'de> for BackendEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BackendEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a backend table such as { address = \"127.0.0.1:9001\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BackendEntry, E> {
                Err(E::custom(format!(
                    "a backend is a table, not a string: write {{ address = \"{v}\" }}"
                )))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<BackendEntry, A::Error> {
                RawBackend::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(BackendEntry)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `start`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawStart {
    /// Where nginx starts.
    First,
    /// A random offset.
    Random,
}

/// `health_check.kind`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawKind {
    /// HTTP GET.
    Http,
    /// TCP connect.
    Tcp,
    /// `grpc.health.v1.Health/Check`.
    Grpc,
}

/// `[upstreams.health_check]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealthCheck {
    /// Whether checks run, bool. Default true.
    pub(crate) enabled: Option<bool>,
    /// "http", "tcp" or "grpc". Default "http".
    pub(crate) kind: Option<RawKind>,
    /// Service name a gRPC check asks about. Default "" (the whole server).
    pub(crate) service: Option<Spanned<String>>,
    /// HTTP path, starting with `/`. Default "/health".
    pub(crate) path: Option<Spanned<String>>,
    /// Host header. Default: the backend's address.
    pub(crate) host: Option<Spanned<String>>,
    /// Passing statuses: codes or "200-399" ranges. Default 200–399.
    pub(crate) expected_status: Option<Spanned<Vec<Spanned<StatusItem>>>>,
    /// Time between checks, duration. Default "30s".
    pub(crate) interval: Option<Spanned<DurationValue>>,
    /// Time allowed per check, duration shorter than `interval`. Default "5s".
    pub(crate) timeout: Option<Spanned<DurationValue>>,
    /// Failed checks that take a backend out, integer ≥ 1. Default 3.
    pub(crate) fall: Option<Spanned<i64>>,
    /// Passed checks that bring it back, integer ≥ 1. Default 2.
    pub(crate) rise: Option<Spanned<i64>>,
    /// Fraction 0 ≤ j < 1 of interval to vary by. Default 0.1.
    pub(crate) jitter: Option<Spanned<f64>>,
}

/// `[upstreams.circuit_breaker]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBreaker {
    /// Whether breakers are on, bool. Default true.
    pub(crate) enabled: Option<bool>,
    /// Consecutive failures that open, integer ≥ 1. Default 5.
    pub(crate) failure_threshold: Option<Spanned<i64>>,
    /// Time open before probing, duration. Default "60s".
    pub(crate) recovery_timeout: Option<Spanned<DurationValue>>,
    /// Probes at once while half-open, integer ≥ 1. Default 1.
    pub(crate) half_open_requests: Option<Spanned<i64>>,
    /// Whether every 5xx counts (500 too), bool. Default false: a 500 counts only against a
    /// backend that is the odd one out.
    pub(crate) count_all_5xx: Option<bool>,
}

/// One entry of `expected_status` or `retry_on_status`: `200`, `"200-399"`, `"5xx"` (or
/// `"204"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StatusItem {
    /// A single code.
    Code(i64),
    /// A range as written, parsed by validation.
    Range(String),
}

impl<'de> Deserialize<'de> for StatusItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StatusItem;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status code such as 200 or a range such as \"200-399\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusItem, E> {
                Ok(StatusItem::Code(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusItem, E> {
                Ok(StatusItem::Code(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusItem, E> {
                Ok(StatusItem::Range(v.to_owned()))
            }
        }
        deserializer.deserialize_any(V)
    }
}
