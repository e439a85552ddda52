//! `GET /api/v1/stats`: the seed's `get_statistics()`, per upstream and backend, read from
//! the pools' snapshots and the upstreams' recorders. The same types deserialize the answer
//! in `rondo status`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use balance::{Backend, BackendState, BreakerState, Health, Snapshot};
use serde::{Deserialize, Serialize};

use std::sync::atomic::Ordering;

use crate::counters::{ProxyMetrics, Source};
use crate::upstream::etcd::EtcdStatus;
use crate::upstream::events::millis;
use crate::upstream::{SourceStatus, Upstream};

/// Everything `GET /api/v1/stats` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Seconds since the proxy started.
    pub uptime_seconds: f64,
    /// One entry per upstream, in configuration order.
    pub upstreams: Vec<UpstreamStats>,
    /// One entry per listener (absent from older versions' answers).
    #[serde(default)]
    pub listeners: Vec<ListenerStats>,
    /// The etcd membership's state, with `[discovery.etcd]`: `synced`, or `stale` since
    /// when and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdStatus>,
}

/// One listener's connections and traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenerStats {
    /// Its name.
    pub name: String,
    /// Client connections open now.
    pub active_connections: i64,
    /// Client connections accepted since start.
    pub accepted_connections: u64,
    /// Connections refused at accept since start.
    pub refused_connections: u64,
    /// Requests answered 503 without being forwarded (over `max_memory`) since start.
    /// Defaults to 0 when absent, so `rondo status` reads a server older than the field.
    #[serde(default)]
    pub refused_requests: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Responses rondo made itself (no backend, 502, 504, 4xx), since start.
    pub proxy_responses: u64,
    /// Responses forwarded from backends, since start.
    pub backend_responses: u64,
}

/// Every listener's counters.
pub fn listeners(metrics: &ProxyMetrics) -> Vec<ListenerStats> {
    metrics
        .listeners()
        .iter()
        .map(|l| {
            let (mut proxy, mut backend) = (0, 0);
            for r in l.all_responses() {
                for (_, source, n) in r.nonzero() {
                    match source {
                        Source::Proxy => proxy += n,
                        Source::Backend => backend += n,
                    }
                }
            }
            ListenerStats {
                name: l.name().to_owned(),
                active_connections: l.active.load(Ordering::Relaxed),
                accepted_connections: l.accepted.load(Ordering::Relaxed),
                refused_connections: l.refused.load(Ordering::Relaxed),
                refused_requests: l.refused_requests.load(Ordering::Relaxed),
                bytes_in: l.bytes_in.load(Ordering::Relaxed),
                bytes_out: l.bytes_out.load(Ordering::Relaxed),
                proxy_responses: proxy,
                backend_responses: backend,
            }
        })
        .collect()
}

/// One upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamStats {
    /// Its name.
    pub name: String,
    /// The selection algorithm (`smooth-weighted`, `p2c`, …).
    pub algorithm: String,
    /// Which backends take traffic: `primary`, `backup` (no primary available), `panic`
    /// (too few healthy, balancing over all) or `empty` (none can).
    pub mode: String,
    /// Backends in the pool (not counting removed ones still finishing requests).
    pub total_servers: usize,
    /// Backends that health checks, breaker and ejection all consider fine (draining ones
    /// included: they are healthy, just not taking new requests).
    pub healthy_servers: usize,
    /// Requests sent to its backends (attempts: a retried request counts once per attempt).
    pub total_requests: u64,
    /// Seconds since the proxy started.
    pub uptime_seconds: f64,
    /// `total_requests / uptime_seconds`, the seed's definition: an average since start.
    /// Clients wanting the current rate take the difference of two polls.
    pub requests_per_second: f64,
    /// Retries made (second and later attempts).
    pub retries: u64,
    /// Connections that stopped being HTTP (WebSocket and other `Upgrade`s) or were relayed
    /// in TCP mode.
    #[serde(default)]
    pub upgraded_connections: u64,
    /// Backend id → breaker state (`closed`, `open`, `half_open`).
    pub circuit_breaker_states: BTreeMap<String, String>,
    /// Its backends, in configuration order, then removed ones still finishing requests.
    pub backends: Vec<BackendStats>,
    /// Its backends given by DNS name: the addresses in use and the last error. A name that
    /// never resolved has `resolved: false` and no backends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<SourceStatus>,
    /// When failed health checks keep every backend out, which check failed and how:
    /// `GET /health got status 404 from all 3 backends (expected 200-399)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_by_checks: Option<String>,
    /// Where its backends come from at run time: `etcd`, or absent (the file only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<String>,
}

/// One backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendStats {
    /// Unique within the upstream.
    pub id: String,
    /// Where requests go.
    pub address: String,
    /// Configured weight (fractional weights allowed).
    pub weight: f64,
    /// Whether it is a backup.
    pub backup: bool,
    /// Health checks up, breaker not open, not ejected.
    pub healthy: bool,
    /// `up`, `down`, `draining`, `ejected`, `breaker_open`, or `backup` (a backup that is
    /// available and waiting for the primaries to fail); `removed` for a backend removed
    /// from the pool that still finishes requests.
    pub state: String,
    /// Requests sent to it (attempts).
    pub total_requests: u64,
    /// Requests that ended well (any answer below 500).
    pub successful_requests: u64,
    /// Requests that failed (connect error, timeout, 5xx, reset).
    pub failed_requests: u64,
    /// `successful / (successful + failed)`; 1 before any outcome.
    pub success_rate: f64,
    /// Mean latency of every finished attempt, milliseconds; 0 before any.
    pub avg_response_time_ms: f64,
    /// Median latency, milliseconds (histogram bucket midpoint, within about 6%).
    pub p50_latency_ms: f64,
    /// 95th percentile latency, milliseconds.
    pub p95_latency_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_latency_ms: f64,
    /// Requests in flight now.
    pub current_connections: u32,
    /// The most requests it had in flight at once since it joined the pool (HAProxy's
    /// "max sessions"): how close it came to its limit.
    #[serde(default)]
    pub peak_connections: u32,
    /// Seconds it has spent down by health checks since it joined the pool (HAProxy's
    /// "downtime"), the current spell included.
    #[serde(default)]
    pub downtime_seconds: f64,
    /// The weight it takes traffic with now (slow start applied); 0 when not in rotation.
    pub current_weight: f64,
    /// Its load score (peak-EWMA latency × (in flight + 1), what `p2c` compares).
    pub load_score: f64,
    /// Circuit breaker state: `closed`, `open` or `half_open`.
    pub breaker: String,
    /// Answers by status code (the 502/504 the proxy made of failures included).
    pub status_codes: BTreeMap<String, u64>,
    /// Bytes relayed to it on TCP-mode connections.
    #[serde(default)]
    pub bytes_sent: u64,
    /// Bytes relayed from it on TCP-mode connections.
    #[serde(default)]
    pub bytes_received: u64,
    /// HTTP/2 connections open to it now (upstreams speaking `h2c`, `h2` or `auto`).
    #[serde(default)]
    pub http2_connections: u64,
    /// HTTP/2 streams open to it now: requests in flight on those connections.
    #[serde(default)]
    pub http2_streams: u64,
    /// The last health check's result in words ("status 200", "timeout"); `None` before
    /// the first or with checks off.
    #[serde(default)]
    pub last_check: Option<String>,
    /// When the last health check ended, milliseconds since the Unix epoch.
    #[serde(default)]
    pub last_check_ms: Option<u64>,
    /// When health checks last changed its health, milliseconds since the Unix epoch.
    #[serde(default)]
    pub health_changed_ms: Option<u64>,
}

/// Reads every upstream's current statistics.
pub fn collect(upstreams: &[Arc<Upstream>], uptime: Duration) -> Stats {
    let uptime_seconds = uptime.as_secs_f64();
    Stats {
        uptime_seconds,
        upstreams: upstreams
            .iter()
            .map(|u| upstream(u, uptime_seconds))
            .collect(),
        listeners: Vec::new(),
        etcd: None,
    }
}

fn upstream(u: &Upstream, uptime_seconds: f64) -> UpstreamStats {
    let snap = u.pool().snapshot();
    let mut backends: Vec<BackendStats> = snap
        .backends()
        .iter()
        .enumerate()
        .map(|(i, b)| backend(u, &snap, Some(i), b))
        .collect();
    backends.extend(snap.retiring().iter().map(|b| backend(u, &snap, None, b)));
    let members = &backends[..snap.backends().len()];
    // Backends that left count too: the total never goes down (admin-api.md).
    let total_requests =
        backends.iter().map(|b| b.total_requests).sum::<u64>() + snap.departed_requests();
    UpstreamStats {
        name: u.name().to_owned(),
        algorithm: snap.config().algorithm.name().to_owned(),
        mode: snap.mode().as_str().to_owned(),
        total_servers: members.len(),
        healthy_servers: members.iter().filter(|b| b.healthy).count(),
        total_requests,
        uptime_seconds,
        requests_per_second: if uptime_seconds > 0.0 {
            total_requests as f64 / uptime_seconds
        } else {
            0.0
        },
        retries: u.recorder().retries(),
        upgraded_connections: u.recorder().upgrades(),
        circuit_breaker_states: members
            .iter()
            .map(|b| (b.id.clone(), b.breaker.clone()))
            .collect(),
        backends,
        dns: u.discovery(),
        down_by_checks: u.down_by_checks(),
        discovery: u.config().discovery.map(|_| "etcd".to_owned()),
    }
}

/// Whether health checks, the breaker and passive ejection all consider it fine.
pub(crate) fn is_healthy(b: &Backend) -> bool {
    b.health() == Health::Up && b.breaker_state() != BreakerState::Open && !b.is_ejected()
}

/// The reported state name (see [`BackendStats::state`]).
pub(crate) fn state_name(b: &Backend, member: bool) -> &'static str {
    match b.state() {
        _ if !member => "removed",
        BackendState::Up if b.is_backup() => "backup",
        s => s.as_str(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn backend(u: &Upstream, snap: &Snapshot, index: Option<usize>, b: &Backend) -> BackendStats {
    let now = u.clock().now();
    let s = b.stats().snapshot(now);
    let recorded = u.recorder().get(b.id());
    let checks = u.check_counters(b.id());
    let (avg, p50, p95, p99, codes) = match &recorded {
        Some(r) if r.latency.count() > 0 => (
            ms(r.latency.sum()) / r.latency.count() as f64,
            ms(r.latency.quantile(0.50)),
            ms(r.latency.quantile(0.95)),
            ms(r.latency.quantile(0.99)),
            r.codes(),
        ),
        _ => (0.0, 0.0, 0.0, 0.0, Vec::new()),
    };
    let (bytes_sent, bytes_received) = recorded.as_ref().map_or((0, 0), |r| r.bytes());
    let (http2_connections, http2_streams) = recorded.as_ref().map_or((0, 0), |r| r.http2.read());
    BackendStats {
        id: b.id().to_owned(),
        address: b.address().to_string(),
        weight: b.weight().as_f64(),
        backup: b.is_backup(),
        healthy: is_healthy(b),
        state: state_name(b, index.is_some()).to_owned(),
        total_requests: s.requests,
        successful_requests: s.successes,
        failed_requests: s.failures,
        success_rate: s.success_rate,
        avg_response_time_ms: avg,
        p50_latency_ms: p50,
        p95_latency_ms: p95,
        p99_latency_ms: p99,
        current_connections: s.in_flight,
        peak_connections: s.peak_in_flight,
        downtime_seconds: b.downtime(now).as_secs_f64(),
        current_weight: index
            .and_then(|i| snap.effective_weight(i))
            .map_or(0.0, |w| w.as_f64()),
        load_score: if s.load_score.is_finite() {
            s.load_score
        } else {
            0.0
        },
        breaker: b.breaker_state().as_str().to_owned(),
        status_codes: codes
            .into_iter()
            .map(|(code, n)| (code.to_string(), n))
            .collect(),
        bytes_sent,
        bytes_received,
        http2_connections,
        http2_streams,
        last_check: checks.as_ref().and_then(|c| c.last_result()),
        last_check_ms: checks.and_then(|c| c.last_checked()).map(millis),
        health_changed_ms: u.events().health_changed(b.id()).map(millis),
    }
}
