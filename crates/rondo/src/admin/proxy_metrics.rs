//! The `/metrics` families of the proxy's own counters ([`ProxyMetrics`]), of the process
//! ([`ProcessStats`]) and of the build, read at scrape time like the upstream families of
//! [`super::metrics`].
//!
//! | family | type | labels |
//! |---|---|---|
//! | `rondo_responses_total` | counter | `listener`, `upstream` (`""` before routing), `code`, `source` (`backend` or `proxy`) |
//! | `rondo_connections_active` | gauge | `listener` |
//! | `rondo_worker_connections` | gauge | `worker` (its index, from 0) |
//! | `rondo_connections_accepted_total` | counter | `listener` |
//! | `rondo_connections_refused_total` | counter | `listener` |
//! | `rondo_requests_refused_total` | counter | `listener` |
//! | `rondo_received_bytes_total` | counter | `listener` |
//! | `rondo_sent_bytes_total` | counter | `listener` |
//! | `rondo_upstream_connections_idle` | gauge | `upstream` |
//! | `rondo_upstream_connections_opened_total` | counter | `upstream` |
//! | `rondo_upstream_connections_reused_total` | counter | `upstream` |
//! | `rondo_retries_total` | counter | `upstream`, `reason` (`connect`, `reset`, `timeout`, `status`) |
//! | `rondo_access_log_dropped_total` | counter | none |
//! | `rondo_build_info` | gauge (1) | `version` |
//! | `process_*` | the standard process families | none |

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use super::process::ProcessStats;
use crate::access_log::AccessLog;
use crate::counters::{ListenerCounters, ProxyMetrics, RetryReason, UpstreamCounters};

/// Adds the proxy's, the process's and the build's families to `registry`.
pub fn register(registry: &mut Registry, metrics: Arc<ProxyMetrics>, access_log: AccessLog) {
    registry.register_collector(Box::new(ProxyCollector {
        metrics,
        access_log,
    }));
}

#[derive(Debug)]
struct ProxyCollector {
    metrics: Arc<ProxyMetrics>,
    access_log: AccessLog,
}

/// A listener counter and how to describe it.
type ListenerField = (
    &'static str,
    &'static str,
    Option<&'static Unit>,
    fn(&ListenerCounters) -> &AtomicU64,
);
/// An upstream counter and how to describe it.
type UpstreamField = (
    &'static str,
    &'static str,
    fn(&UpstreamCounters) -> &AtomicU64,
);

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    rows: impl Iterator<Item = (Vec<(&'static str, String)>, u64)>,
) -> std::fmt::Result {
    let mut m = encoder.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (labels, n) in rows {
        ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge<T: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    rows: impl Iterator<Item = (Vec<(&'static str, String)>, T)>,
) -> std::fmt::Result
where
    ConstGauge<T>: EncodeMetric,
{
    let mut m = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for ProxyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let listeners = self.metrics.listeners();
        let upstreams = self.metrics.upstreams();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let load_i = |a: &AtomicI64| a.load(Ordering::Relaxed);
        let by_listener = |l: &ListenerCounters| vec![("listener", l.name().to_owned())];
        let by_upstream = |u: &UpstreamCounters| vec![("upstream", u.name().to_owned())];

        {
            let mut m = encoder.encode_descriptor(
                "rondo_responses",
                "Responses sent to clients, whoever made them: source=\"backend\" forwarded, \
                 source=\"proxy\" written by rondo (503 no backend, 502, 504, 4xx).",
                None,
                MetricType::Counter,
            )?;
            for l in &listeners {
                for r in l.all_responses() {
                    for (code, source, n) in r.nonzero() {
                        let labels = [
                            ("listener", l.name()),
                            ("upstream", r.upstream()),
                            ("code", &code.to_string()),
                            ("source", source.as_str()),
                        ];
                        ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
                    }
                }
            }
        }
        gauge(
            &mut encoder,
            "rondo_connections_active",
            "Client connections open now.",
            None,
            listeners
                .iter()
                .map(|l| (by_listener(l), load_i(&l.active))),
        )?;
        gauge(
            &mut encoder,
            "rondo_worker_connections",
            "Client connections each worker thread serves now, whichever worker accepted them.",
            None,
            self.metrics.workers().iter().enumerate().map(|(i, n)| {
                (
                    vec![("worker", i.to_string())],
                    n.load(Ordering::Relaxed) as i64,
                )
            }),
        )?;
        let listener_counters: [ListenerField; 5] = [
            (
                "rondo_connections_accepted",
                "Client connections accepted.",
                None,
                |l| &l.accepted,
            ),
            (
                "rondo_connections_refused",
                "Client connections refused or dropped at accept.",
                None,
                |l| &l.refused,
            ),
            (
                "rondo_requests_refused",
                "Requests answered 503 without being forwarded: the process was over max_memory.",
                None,
                |l| &l.refused_requests,
            ),
            (
                "rondo_received",
                "Bytes read from clients.",
                Some(&Unit::Bytes),
                |l| &l.bytes_in,
            ),
            (
                "rondo_sent",
                "Bytes written to clients.",
                Some(&Unit::Bytes),
                |l| &l.bytes_out,
            ),
        ];
        for (name, help, unit, field) in listener_counters {
            counter(
                &mut encoder,
                name,
                help,
                unit,
                listeners.iter().map(|l| (by_listener(l), load(field(l)))),
            )?;
        }
        gauge(
            &mut encoder,
            "rondo_upstream_connections_idle",
            "Idle pooled backend connections, all workers together.",
            None,
            upstreams
                .iter()
                .map(|u| (by_upstream(u), load_i(&u.pool_idle))),
        )?;
        let upstream_counters: [UpstreamField; 2] = [
            (
                "rondo_upstream_connections_opened",
                "Backend connections opened.",
                |u| &u.pool_opened,
            ),
            (
                "rondo_upstream_connections_reused",
                "Requests sent on a pooled backend connection.",
                |u| &u.pool_reused,
            ),
        ];
        for (name, help, field) in upstream_counters {
            counter(
                &mut encoder,
                name,
                help,
                None,
                upstreams.iter().map(|u| (by_upstream(u), load(field(u)))),
            )?;
        }
        counter(
            &mut encoder,
            "rondo_retries",
            "Retries on another backend, by what made the previous attempt fail.",
            None,
            upstreams.iter().flat_map(|u| {
                RetryReason::ALL.into_iter().map(move |reason| {
                    (
                        vec![
                            ("upstream", u.name().to_owned()),
                            ("reason", reason.as_str().to_owned()),
                        ],
                        u.retries(reason),
                    )
                })
            }),
        )?;
        counter(
            &mut encoder,
            "rondo_access_log_dropped",
            "Access log lines dropped because the writer could not keep up.",
            None,
            std::iter::once((Vec::new(), self.access_log.dropped())),
        )?;
        gauge(
            &mut encoder,
            "rondo_build_info",
            "Always 1; the labels say which rondo this is.",
            None,
            std::iter::once((
                vec![("version", env!("CARGO_PKG_VERSION").to_owned())],
                1i64,
            )),
        )?;
        if let Some(p) = ProcessStats::read() {
            encode_process(&mut encoder, &p)?;
        }
        Ok(())
    }
}

fn encode_process(encoder: &mut DescriptorEncoder<'_>, p: &ProcessStats) -> std::fmt::Result {
    let m = encoder.encode_descriptor(
        "process_cpu",
        "User and system CPU time spent.",
        Some(&Unit::Seconds),
        MetricType::Counter,
    )?;
    ConstCounter::new(p.cpu_seconds).encode(m)?;
    let gauges: [(&str, &str, Option<&Unit>, f64); 4] = [
        (
            "process_resident_memory",
            "Resident memory size.",
            Some(&Unit::Bytes),
            p.resident_bytes as f64,
        ),
        (
            "process_virtual_memory",
            "Virtual memory size.",
            Some(&Unit::Bytes),
            p.virtual_bytes as f64,
        ),
        (
            "process_open_fds",
            "Open file descriptors.",
            None,
            p.open_fds as f64,
        ),
        (
            "process_start_time",
            "Start time of the process since the Unix epoch.",
            Some(&Unit::Seconds),
            p.start_time_seconds,
        ),
    ];
    for (name, help, unit, value) in gauges {
        gauge(
            encoder,
            name,
            help,
            unit,
            std::iter::once((Vec::new(), value)),
        )?;
    }
    if let Some(max) = p.max_fds {
        gauge(
            encoder,
            "process_max_fds",
            "Limit on open file descriptors.",
            None,
            std::iter::once((Vec::new(), max as f64)),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::Source;

    fn scrape(metrics: Arc<ProxyMetrics>) -> prometheus_parse::Scrape {
        let mut registry = Registry::default();
        register(&mut registry, metrics, AccessLog::off());
        let text = super::super::metrics::encode(&registry);
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        prometheus_parse::Scrape::parse(lines).unwrap()
    }

    fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)));
        match found.map(|s| &s.value) {
            Some(prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v)) => *v,
            other => panic!("{name} {labels:?}: {other:?}"),
        }
    }

    #[test]
    fn every_response_is_counted_by_listener_upstream_code_and_source() {
        let m = Arc::new(ProxyMetrics::default());
        let web = m.listener("web");
        web.responses("app").record(200, Source::Backend);
        web.responses("app").record(503, Source::Proxy);
        web.responses("").record(400, Source::Proxy);
        let _open = web.connection();
        web.bytes_out.fetch_add(1234, Ordering::Relaxed);
        let app = m.upstream("app");
        app.retry(RetryReason::Connect);
        app.pool_reused.fetch_add(3, Ordering::Relaxed);
        let s = scrape(m);
        let r = "rondo_responses_total";
        let labels = |u, c, s| {
            [
                ("listener", "web"),
                ("upstream", u),
                ("code", c),
                ("source", s),
            ]
        };
        assert_eq!(value(&s, r, &labels("app", "200", "backend")), 1.0);
        assert_eq!(value(&s, r, &labels("app", "503", "proxy")), 1.0);
        assert_eq!(value(&s, r, &labels("", "400", "proxy")), 1.0);
        assert_eq!(
            value(&s, "rondo_connections_active", &[("listener", "web")]),
            1.0
        );
        assert_eq!(
            value(
                &s,
                "rondo_connections_accepted_total",
                &[("listener", "web")]
            ),
            1.0
        );
        assert_eq!(
            value(&s, "rondo_sent_bytes_total", &[("listener", "web")]),
            1234.0
        );
        let retries = [("upstream", "app"), ("reason", "connect")];
        assert_eq!(value(&s, "rondo_retries_total", &retries), 1.0);
        assert_eq!(
            value(
                &s,
                "rondo_upstream_connections_reused_total",
                &[("upstream", "app")]
            ),
            3.0
        );
        assert_eq!(
            value(
                &s,
                "rondo_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))]
            ),
            1.0
        );
        if cfg!(target_os = "linux") {
            assert!(value(&s, "process_resident_memory_bytes", &[]) > 0.0);
            assert!(value(&s, "process_start_time_seconds", &[]) > 1.0e9);
            assert!(value(&s, "process_open_fds", &[]) > 0.0);
        }
    }
}
