//! Every default of the configuration, each in one place with the reason for its value.
//!
//! Validation fills absent keys from here, `docs/configuration.md` quotes these values (a
//! test checks that it does), and defaults the seed fixed that live in the `balance` crate
//! (health rise/fall, breaker threshold and recovery) are read from balance's own `Default`
//! impls rather than repeated.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::ops::RangeInclusive;
use std::time::Duration;

use balance::{Algorithm, BreakerConfig, HealthConfig, StartPosition, Weight};

/// `workers`: one runtime worker thread per core the process may use, as nginx's
/// `worker_processes auto` and tokio's own default do. 1 when the count cannot be read.
pub fn workers() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// `shutdown_grace`: 30 s, Kubernetes' default `terminationGracePeriodSeconds`, so under
/// Kubernetes in-flight requests get all the time the pod is given before it is killed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// `[discovery.etcd] prefix`: every key rondo reads or writes starts with it, so one etcd
/// cluster can serve several fleets (or other programs) side by side.
pub const ETCD_PREFIX: &str = "/rondo";

/// `[resolver] min_ttl`: 5 s, Envoy's default DNS refresh rate; a record with a shorter (or
/// zero) TTL does not turn every balancer of a fleet into a DNS load generator.
pub const RESOLVER_MIN_TTL: Duration = Duration::from_secs(5);

/// `[resolver] max_ttl`: 5 minutes, so a record published with a TTL of a day still follows a
/// change within minutes (Kubernetes' and Consul's TTLs are seconds; cloud load balancers'
/// 60 s).
pub const RESOLVER_MAX_TTL: Duration = Duration::from_secs(300);

/// `access_log`: on, as in nginx (`access_log logs/access.log combined`): one line per
/// request is what an operator reaches for first.
pub const ACCESS_LOG: bool = true;

/// `access_log.format`: nginx's `combined`, the format log analysers (GoAccess, AWStats,
/// most SIEM parsers) read without configuration.
pub const ACCESS_LOG_FORMAT: &str = "combined";

/// `admin.enabled`: on, since `rondo status`, `rondo reload` and the dashboard need it; it
/// listens on loopback only.
pub const ADMIN_ENABLED: bool = true;

/// `admin.listen`: loopback, so a fresh install exposes nothing; port 9901 is the admin port
/// of Envoy's documentation and examples, familiar to operators.
pub const ADMIN_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9901);

/// `header_timeout`: 10 s to send a whole request head, HAProxy's recommended
/// `timeout http-request`: generous for real clients, short enough to starve slowloris.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// `idle_timeout`: 60 s of keep-alive idleness, the default of AWS's Application Load
/// Balancer (nginx: 75 s), so a client pool tuned for one behaves the same here.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// `max_header_bytes`: 16 KiB, Node.js's limit: twice nginx's 8 KiB request line, room for
/// large cookies and tokens, small enough to bound memory per connection.
pub const MAX_HEADER_BYTES: u64 = 16 * 1024;

/// `http2_max_concurrent_streams`: 128, nginx's `http2_max_concurrent_streams` (HAProxy and
/// Envoy: 100). hyper's own default is 200; a bound is what keeps one connection from holding
/// a worker's worth of backend requests.
pub const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 128;

/// `algorithm`: smooth weighted round robin, balance's default and nginx's: with equal
/// weights it is plain round robin, with unequal ones it interleaves.
pub fn algorithm() -> Algorithm {
    Algorithm::default()
}

/// `hash_key` of a `consistent-hash` upstream: the client's address, nginx's `ip_hash` and
/// HAProxy's `balance source`, the one key every request has.
pub fn hash_key() -> super::HashKey {
    super::HashKey::ClientIp
}

/// `sticky.cookie`: names the balancer, not the application, so it never collides with an
/// application's own cookie.
pub const STICKY_COOKIE: &str = "rondo_srv";

/// `sticky.secure`: off, so stickiness works on a plain-HTTP listener too (Traefik's
/// default); set it behind TLS.
pub const STICKY_SECURE: bool = false;

/// `sticky.http_only`: on. Scripts have no use for a backend id, and a cookie they cannot
/// read cannot leak through one.
pub const STICKY_HTTP_ONLY: bool = true;

/// `weight` of a backend: 1, as in nginx and the seed.
pub const WEIGHT: Weight = Weight::ONE;

/// `backup`: a backend is a primary unless marked (nginx's `backup`).
pub const BACKUP: bool = false;

/// `panic_threshold`: 0, off. nginx and HAProxy have no panic mode, and sending traffic to
/// backends health checks call down surprises their users; Envoy's 50% is one line away.
pub const PANIC_THRESHOLD: u8 = 0;

/// `start`: where nginx starts, so the first requests are reproducible.
pub fn start() -> StartPosition {
    StartPosition::default()
}

/// `tries`: 3 attempts in all, the first included: enough to get past one or two dead
/// backends without multiplying the load on a sick pool. Between Envoy (2: one retry) and
/// HAProxy (4: `retries 3`).
pub const TRIES: NonZeroU32 = match NonZeroU32::new(3) {
    Some(n) => n,
    None => NonZeroU32::MIN,
};

/// `failover`: on, the seed's `enable_failover = True`: a failed attempt moves on to another
/// backend.
pub const FAILOVER: bool = true;

/// `retry_on_status`: 502, 503 and 504, Envoy's `gateway-error`: answers that say the backend
/// did not handle the request, as opposed to an application's 500.
pub const RETRY_ON_STATUS: [u16; 3] = [502, 503, 504];

/// `retry_budget_percent`: retries may add at most 20% to the requests in flight, Envoy's
/// retry budget default, so retries cannot turn a brown-out into a retry storm.
pub const RETRY_BUDGET_PERCENT: u8 = 20;

/// `retry_budget_min`: 3 retries are always allowed, Envoy's `min_retry_concurrency`, so a
/// quiet upstream can still retry.
pub const RETRY_BUDGET_MIN: u32 = 3;

/// `retry_body_limit`: request bodies up to 64 KiB are kept to be replayed on a retry: most
/// API payloads fit, and memory per request stays bounded (nginx keeps 8–16 KiB in memory).
pub const RETRY_BODY_LIMIT: u64 = 64 * 1024;

/// `connect_timeout`: 5 s, Envoy's default: a backend that cannot accept a connection in 5 s
/// is better skipped for the next one.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `response_timeout`: 60 s for the response head, nginx's `proxy_read_timeout`.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// `keepalive`: idle connections kept per backend and worker. The pool sizes itself to
/// demand: a connection a request opened is kept while it is needed and closed by idle time
/// (`keepalive_timeout`) or when descriptors run short, never because a count was reached
/// (HAProxy keeps what it opened until it idles out; Envoy closes on idle time, not count).
/// The cap only guards against a runaway: 10,000 is more than one worker's clients can
/// keep busy on one backend. The old default, 32, made 256 clients over 4 backends open a
/// new connection for about one request in 16.
pub const KEEPALIVE: usize = 10_000;

/// `keepalive_timeout`: 60 s, nginx's upstream `keepalive_timeout`; shorter than most
/// servers' own idle timeout so the balancer closes first and never reuses a dying socket.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// `tunnel_timeout`: 10 minutes without a byte either way closes a relayed connection,
/// nginx's `proxy_timeout` for TCP (HAProxy's `timeout tunnel` has no default): long enough
/// for WebSocket and database clients that ping every minute or so, short enough that a peer
/// that vanished without a FIN does not hold two descriptors for ever.
pub const TUNNEL_TIMEOUT: Duration = Duration::from_secs(600);

/// `h2_max_connections`: 8 HTTP/2 connections per backend and worker. One connection
/// carries as many streams as the backend allows (100 is the usual
/// `SETTINGS_MAX_CONCURRENT_STREAMS`), so 8 is room for a backend that allows few, not a
/// pool to fill; it bounds the connections a burst can open.
pub const H2_MAX_CONNECTIONS: usize = 8;

/// `h2_ping_interval`: a PING every 30 s on each HTTP/2 connection (gRPC's keepalive
/// guidance: often enough to keep NAT and load-balancer state alive, rare enough that
/// servers do not see it as abuse); a PING unanswered for as long closes the connection.
pub const H2_PING_INTERVAL: Duration = Duration::from_secs(30);

/// `grpc_retry_on`: UNAVAILABLE (14), the one status gRPC defines as "the service is
/// currently unavailable, retry with backoff", Envoy's `unavailable` retry policy.
pub const GRPC_RETRY_ON: [u8; 1] = [14];

/// `max_fails`: 1 failure ejects, nginx's default.
pub const MAX_FAILS: u32 = 1;

/// `fail_timeout`: 10 s, nginx's default: the counting window and the time out of rotation.
pub const FAIL_TIMEOUT: Duration = Duration::from_secs(10);

/// `fail_on_5xx`: off, as in nginx (`proxy_next_upstream error timeout`): an application's
/// 500 does not take a server out; the circuit breaker counts 5xx either way.
pub const FAIL_ON_5XX: bool = false;

/// `queue_size`: 0, no queue: when every backend is at `max_connections` the answer is an
/// immediate 503, as in open-source nginx; a queue is opt-in (HAProxy queues by default).
pub const QUEUE_SIZE: usize = 0;

/// `queue_timeout`: 5 s, HAProxy's rule that `timeout queue` defaults to `timeout connect`
/// (ours is 5 s): waiting for a slot costs no more than waiting for a connection.
pub const QUEUE_TIMEOUT: Duration = CONNECT_TIMEOUT;

/// `priority_header`: the request header that carries the seed's `Request.priority` (higher
/// first) when requests wait in the queue.
pub const PRIORITY_HEADER: &str = "x-priority";

/// `health_check.enabled`: on, the seed runs health checks by default.
pub const HEALTH_ENABLED: bool = true;

/// `health_check.path`: the seed's `health_check_path`.
pub const HEALTH_PATH: &str = "/health";

/// `health_check.expected_status`: any 2xx or 3xx, HAProxy's `http-check` rule.
pub const HEALTH_EXPECTED_STATUS: RangeInclusive<u16> = 200..=399;

/// `health_check.interval`: the seed's `health_check_interval = 30`.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(30);

/// `health_check.timeout`: the seed's `health_check_timeout = 5`.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// `health_check.fall`: the seed's `max_failure_count = 3`, kept in balance's
/// [`HealthConfig`].
pub fn health_fall() -> NonZeroU32 {
    HealthConfig::default().fall
}

/// `health_check.rise`: the seed's `recovery_threshold = 2`, kept in balance's
/// [`HealthConfig`].
pub fn health_rise() -> NonZeroU32 {
    HealthConfig::default().rise
}

/// `health_check.jitter`: each check fires up to 10 % of the interval early (never late), so
/// a fleet of balancers (or many upstreams on one) does not probe a backend in synchronised
/// bursts.
pub const HEALTH_JITTER: f64 = 0.1;

/// `circuit_breaker.enabled`: on, the seed's `enable_circuit_breaker = True`.
pub const BREAKER_ENABLED: bool = true;

/// `circuit_breaker.failure_threshold`, `recovery_timeout`, `half_open_requests` and
/// `count_all_5xx`: the seed's 5 failures and 60 s, one probe at a time, and a 500 counted
/// only against a backend that is the odd one out, kept in balance's [`BreakerConfig`].
pub fn breaker() -> BreakerConfig {
    BreakerConfig::default()
}
