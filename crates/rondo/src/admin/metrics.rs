//! `GET /metrics`: Prometheus text exposition, encoded by `prometheus-client` from a
//! [`Registry`] built at start and handed to the admin server (nothing global).
//!
//! The request path does not touch the registry: it records into the upstreams' lock-free
//! [`Recorder`](crate::upstream::Recorder)s and the pools' atomics, and a [`Collector`] reads
//! them at scrape time. So a scrape costs the reader, never a request, and backends added or
//! removed at run time appear and disappear without registering anything.
//!
//! | family | type | labels |
//! |---|---|---|
//! | `rondo_requests_total` | counter | `upstream`, `backend`, `code` |
//! | `rondo_request_duration_seconds` | histogram | `upstream`, `backend` |
//! | `rondo_backend_up` | gauge (1 in rotation, else 0) | `upstream`, `backend` |
//! | `rondo_backend_in_flight` | gauge | `upstream`, `backend` |
//! | `rondo_circuit_breaker_state` | gauge (0 closed, 1 half-open, 2 open) | `upstream`, `backend` |
//! | `rondo_backend_http2_connections` | gauge (HTTP/2 connections open to it) | `upstream`, `backend` |
//! | `rondo_backend_http2_streams` | gauge (HTTP/2 streams open on them) | `upstream`, `backend` |
//! | `rondo_retries_total` | counter | `upstream`, `reason` (see [`super::proxy_metrics`]) |
//! | `rondo_backend_healthy` | gauge (1 when health checks call it up) | `upstream`, `backend` |
//! | `rondo_backend_health_changed_timestamp_seconds` | gauge | `upstream`, `backend` |
//! | `rondo_health_checks_total` | counter | `upstream`, `backend`, `result` (`passed`, `bad_status`, `timeout`, `refused`, `error`) |
//! | `rondo_dns_resolutions_total` | counter | `upstream`, `name`, `result` (`ok`, `error`) |
//! | `rondo_etcd_synced` | gauge (1 read and watching, 0 connecting or stale) | |
//! | `rondo_etcd_stale_since_timestamp_seconds` | gauge (0 while synced) | |
//! | `rondo_etcd_revision` | gauge (the revision the backends reflect) | |
//! | `rondo_etcd_refused_keys` | gauge (keys whose value was refused) | |
//! | `rondo_etcd_failures_total` | counter (failed reads and broken watches) | |

use std::sync::Arc;

use balance::{BackendState, BreakerState};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::upstream::UpstreamSet;
use crate::upstream::etcd::Etcd;

/// The registry the admin server encodes: rondo's families over the live upstreams (read at
/// each scrape, so upstreams added or removed by a reload follow).
pub fn registry(upstreams: Arc<UpstreamSet>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(UpstreamCollector { upstreams }));
    registry
}

/// Adds the etcd membership's families (with `[discovery.etcd]`).
pub fn register_etcd(registry: &mut Registry, etcd: Arc<Etcd>) {
    registry.register_collector(Box::new(EtcdCollector { etcd }));
}

/// Reads the etcd membership's state at scrape time.
#[derive(Debug)]
struct EtcdCollector {
    etcd: Arc<Etcd>,
}

impl Collector for EtcdCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = self.etcd.status();
        let stale_since = s.stale_since_ms.map_or(0, |ms| ms / 1000);
        let gauges = [
            (
                "rondo_etcd_synced",
                "1 when the backends were read from etcd and are watched, 0 while connecting or stale.",
                i64::from(s.state == "synced"),
            ),
            (
                "rondo_etcd_stale_since_timestamp_seconds",
                "Since when etcd could not be reached (the last known backends serve); 0 while synced.",
                i64::try_from(stale_since).unwrap_or(i64::MAX),
            ),
            (
                "rondo_etcd_revision",
                "The etcd revision the backends reflect.",
                s.revision,
            ),
            (
                "rondo_etcd_refused_keys",
                "Keys under the prefix whose value was refused.",
                i64::try_from(s.refused.len()).unwrap_or(i64::MAX),
            ),
        ];
        for (name, help, value) in gauges {
            let m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value).encode(m)?;
        }
        let m = encoder.encode_descriptor(
            "rondo_etcd_failures",
            "Failed reads of etcd and broken watches.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(s.failures).encode(m)
    }
}

/// The registry in Prometheus' text format (version 0.0.4).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}

/// Reads one backend gauge's value.
type GaugeFn = fn(&balance::Backend) -> i64;

/// Picks one of a backend's HTTP/2 gauges from (connections, streams).
type Http2GaugeFn = fn((u64, u64)) -> u64;

/// Reads the upstreams' pools and recorders at scrape time.
#[derive(Debug)]
struct UpstreamCollector {
    upstreams: Arc<UpstreamSet>,
}

fn breaker_value(s: BreakerState) -> i64 {
    match s {
        BreakerState::Closed => 0,
        BreakerState::HalfOpen => 1,
        BreakerState::Open => 2,
    }
}

impl Collector for UpstreamCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let upstreams = self.upstreams.all();
        let snaps: Vec<_> = upstreams.iter().map(|u| (u, u.pool().snapshot())).collect();
        // Members first, then removed backends still finishing requests.
        let backends = || {
            snaps.iter().flat_map(|(u, s)| {
                s.backends()
                    .iter()
                    .chain(s.retiring())
                    .map(move |b| (u.as_ref(), Arc::clone(b)))
            })
        };

        {
            let mut m = encoder.encode_descriptor(
                "rondo_requests",
                "Attempts sent to a backend, by the status they produced (502/504 when the proxy made one of a failure).",
                None,
                MetricType::Counter,
            )?;
            for (u, b) in backends() {
                let Some(r) = u.recorder().get(b.id()) else {
                    continue;
                };
                for (code, n) in r.codes() {
                    let code = code.to_string();
                    let labels = [
                        ("upstream", u.name()),
                        ("backend", b.id()),
                        ("code", code.as_str()),
                    ];
                    ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        let http2: [(&str, &str, Http2GaugeFn); 2] = [
            (
                "rondo_backend_http2_connections",
                "HTTP/2 connections open to the backend, over every worker.",
                |(connections, _)| connections,
            ),
            (
                "rondo_backend_http2_streams",
                "HTTP/2 streams open to the backend: requests in flight on its connections.",
                |(_, streams)| streams,
            ),
        ];
        for (name, help, value) in http2 {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (u, b) in backends() {
                let Some(r) = u.recorder().get(b.id()) else {
                    continue;
                };
                let labels = [("upstream", u.name()), ("backend", b.id())];
                let n = i64::try_from(value(r.http2.read())).unwrap_or(i64::MAX);
                ConstGauge::new(n).encode(m.encode_family(&labels)?)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "rondo_request_duration_seconds",
                "Time from sending a request to a backend to the end of its answer, per attempt.",
                None,
                MetricType::Histogram,
            )?;
            for (u, b) in backends() {
                let Some(r) = u.recorder().get(b.id()) else {
                    continue;
                };
                let labels = [("upstream", u.name()), ("backend", b.id())];
                let buckets = r.latency.buckets();
                m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                    r.latency.sum().as_secs_f64(),
                    r.latency.count(),
                    &buckets,
                    None,
                )?;
            }
        }
        let gauges: [(&str, &str, GaugeFn); 4] = [
            (
                "rondo_backend_healthy",
                "1 when health checks call the backend up (whatever its breaker), else 0.",
                |b| i64::from(b.health() == balance::Health::Up),
            ),
            (
                "rondo_backend_up",
                "1 when the backend is in rotation (up, breaker not open, not ejected, not draining), else 0.",
                |b| i64::from(b.state() == BackendState::Up),
            ),
            (
                "rondo_backend_in_flight",
                "Requests in flight to the backend.",
                |b| i64::from(b.in_flight()),
            ),
            (
                "rondo_circuit_breaker_state",
                "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
                |b| breaker_value(b.breaker_state()),
            ),
        ];
        for (name, help, value) in gauges {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (u, s) in &snaps {
                for b in s.backends() {
                    let labels = [("upstream", u.name()), ("backend", b.id())];
                    ConstGauge::new(value(b)).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "rondo_backend_health_changed_timestamp",
                "When health checks last changed the backend's health (absent: not since start).",
                Some(&prometheus_client::registry::Unit::Seconds),
                MetricType::Gauge,
            )?;
            for (u, snap) in &snaps {
                for b in snap.backends() {
                    let Some(at) = u.events().health_changed(b.id()) else {
                        continue;
                    };
                    let secs = at
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64());
                    let labels = [("upstream", u.name()), ("backend", b.id())];
                    ConstGauge::new(secs).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "rondo_hash_key_missing",
                "Requests to a consistent-hash upstream without its hash_key, picked from the \
                 round-robin cycle instead.",
                None,
                MetricType::Counter,
            )?;
            for (u, _) in &snaps {
                let labels = [("upstream", u.name())];
                ConstCounter::new(u.recorder().unkeyed_requests())
                    .encode(m.encode_family(&labels)?)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "rondo_health_checks",
                "Active health checks, by backend and result.",
                None,
                MetricType::Counter,
            )?;
            for (u, snap) in &snaps {
                for b in snap.backends() {
                    let Some(c) = u.check_counters(b.id()) else {
                        continue;
                    };
                    let results = [
                        ("passed", c.passed()),
                        ("bad_status", c.bad_status()),
                        ("timeout", c.timed_out()),
                        ("refused", c.refused()),
                        ("error", c.errors()),
                    ];
                    for (result, n) in results {
                        let labels = [
                            ("upstream", u.name()),
                            ("backend", b.id()),
                            ("result", result),
                        ];
                        ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
                    }
                }
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "rondo_dns_resolutions",
                "Resolutions of backend names, by name and result (ok, error).",
                None,
                MetricType::Counter,
            )?;
            for (u, _) in &snaps {
                for source in u.discovery() {
                    for (result, n) in [("ok", source.successes), ("error", source.failures)] {
                        let labels = [
                            ("upstream", u.name()),
                            ("name", source.name.as_str()),
                            ("result", result),
                        ];
                        ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}
