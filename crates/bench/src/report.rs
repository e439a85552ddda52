//! The outcome of a run: [`Report`], with its text rendering and its JSON form.
//!
//! The JSON field names are listed on [`Report`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::error::ErrorKind;

/// Results of a load generation.
///
/// JSON field names (all present in every report; `--json` prints exactly this object):
///
/// | field | meaning |
/// |---|---|
/// | `url` | the target |
/// | `protocol` | `"HTTP/1.1"` or `"HTTP/2"` |
/// | `connections` | concurrent connections |
/// | `target_rate` | `--rate` in requests/s, or `null` for closed loop |
/// | `duration_s` | wall-clock length of the run, seconds |
/// | `interrupted` | `true` when the run was stopped early (Ctrl-C) |
/// | `requests` | requests finished: `responses + errors.total` |
/// | `responses` | complete responses, any status |
/// | `successes` | responses with a 2xx or 3xx status |
/// | `success_rate` | `successes / requests`, from 0 to 1 |
/// | `requests_per_sec` | `responses / duration_s` |
/// | `status_counts` | object, status code (as a string) → count |
/// | `errors` | object: `connect`, `timeout`, `closed`, `other`, `total` |
/// | `error_examples` | object, error kind → the first message seen of that kind |
/// | `latency_ms` | object: `min`, `mean`, `stdev`, `p50`, `p90`, `p95`, `p99`, `p99_9`, `max`, milliseconds (float); over complete responses only |
/// | `bytes_read` | bytes received from the network, headers and framing included |
/// | `backend_header` | `--backend-header`, or `null` |
/// | `backends` | array of `{value, responses, share}`, most responses first; `share` from 0 to 1 of all responses |
/// | `backend_missing` | responses without the backend header |
/// | `grpc_method` | `--grpc-unary`'s method path, or `null` |
/// | `grpc_status_counts` | object, `grpc-status` (as a string, or `"missing"`) → calls; empty unless gRPC |
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The target URL.
    pub url: String,
    /// `"HTTP/1.1"` or `"HTTP/2"`.
    pub protocol: String,
    /// Number of concurrent connections.
    pub connections: usize,
    /// The open-loop rate asked for, requests per second; `None` for closed loop.
    pub target_rate: Option<f64>,
    /// Wall-clock length of the run.
    #[serde(rename = "duration_s", serialize_with = "secs")]
    pub elapsed: Duration,
    /// The run was stopped early (Ctrl-C, or a [`StopHandle`](super::StopHandle)).
    pub interrupted: bool,
    /// Requests finished, with a response or an error.
    pub requests: u64,
    /// Complete responses, whatever their status.
    pub responses: u64,
    /// Responses with a 2xx or 3xx status.
    pub successes: u64,
    /// `successes / requests`, between 0 and 1 (0 when nothing was sent).
    pub success_rate: f64,
    /// Complete responses per second of the run.
    pub requests_per_sec: f64,
    /// Responses by status code.
    pub status_counts: BTreeMap<u16, u64>,
    /// Failed requests by kind.
    pub errors: ErrorCounts,
    /// The first error message seen of each kind that occurred.
    pub error_examples: BTreeMap<ErrorKind, String>,
    /// Latency of complete responses, from the send (or, with a rate, from the time the
    /// request was due) to the last byte of the response.
    #[serde(rename = "latency_ms")]
    pub latency: Latency,
    /// Bytes received from the network, response heads, bodies and framing.
    pub bytes_read: u64,
    /// The response header responses were counted by, if any.
    pub backend_header: Option<String>,
    /// Responses per value of the backend header, most first.
    pub backends: Vec<BackendShare>,
    /// Responses that did not carry the backend header.
    pub backend_missing: u64,
    /// The gRPC method called (`/package.Service/Method`), for a gRPC run.
    pub grpc_method: Option<String>,
    /// Calls by `grpc-status`, for a gRPC run (empty otherwise).
    pub grpc_status_counts: BTreeMap<GrpcStatus, u64>,
}

/// The outcome of one gRPC call: its `grpc-status`, or none (a response from something
/// that does not speak gRPC, such as a proxy's plain 502 page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GrpcStatus {
    /// The `grpc-status` code: 0 OK, 14 UNAVAILABLE, … (see [`GrpcStatus::name`]).
    Code(u32),
    /// The response carried no `grpc-status` (or one that is not a number).
    Missing,
}

impl From<Option<u32>> for GrpcStatus {
    fn from(code: Option<u32>) -> Self {
        code.map_or(GrpcStatus::Missing, GrpcStatus::Code)
    }
}

impl GrpcStatus {
    /// The name gRPC gives the code (`OK`, `UNAVAILABLE`, …), `missing`, or `unknown code`
    /// past the 17 codes gRPC defines.
    pub fn name(self) -> &'static str {
        /// gRPC's status codes, by number (grpc/doc/statuscodes.md).
        const NAMES: [&str; 17] = [
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        ];
        match self {
            GrpcStatus::Code(code) => usize::try_from(code)
                .ok()
                .and_then(|i| NAMES.get(i))
                .copied()
                .unwrap_or("unknown code"),
            GrpcStatus::Missing => "missing",
        }
    }
}

/// As a JSON object key: the code as a string (`"14"`), or `"missing"`.
impl Serialize for GrpcStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            GrpcStatus::Code(code) => s.collect_str(code),
            GrpcStatus::Missing => s.serialize_str("missing"),
        }
    }
}

/// Failed requests by [`ErrorKind`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ErrorCounts {
    /// Connection could not be established.
    pub connect: u64,
    /// No complete response within the timeout.
    pub timeout: u64,
    /// Connection reset or closed before the response was complete.
    pub closed: u64,
    /// Anything else (malformed response, …).
    pub other: u64,
    /// The sum of the above.
    pub total: u64,
}

impl ErrorCounts {
    /// The count of one kind.
    pub fn get(&self, kind: ErrorKind) -> u64 {
        match kind {
            ErrorKind::Connect => self.connect,
            ErrorKind::Timeout => self.timeout,
            ErrorKind::Closed => self.closed,
            ErrorKind::Other => self.other,
        }
    }

    pub(crate) fn from_array(counts: [u64; 4]) -> Self {
        let [connect, timeout, closed, other] = counts;
        ErrorCounts {
            connect,
            timeout,
            closed,
            other,
            total: connect + timeout + closed + other,
        }
    }
}

/// Latency distribution of complete responses. All zero when there were none.
///
/// Percentiles come from HDR histograms with three significant digits (0.1 %; two, 1 %,
/// above 1000 connections, to bound memory) and about 1 µs resolution below 1 ms; `mean`,
/// `min` and `max` are exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Fastest response.
    #[serde(serialize_with = "millis")]
    pub min: Duration,
    /// Arithmetic mean.
    #[serde(serialize_with = "millis")]
    pub mean: Duration,
    /// Standard deviation.
    #[serde(serialize_with = "millis")]
    pub stdev: Duration,
    /// Median.
    #[serde(serialize_with = "millis")]
    pub p50: Duration,
    /// 90th percentile.
    #[serde(serialize_with = "millis")]
    pub p90: Duration,
    /// 95th percentile.
    #[serde(serialize_with = "millis")]
    pub p95: Duration,
    /// 99th percentile.
    #[serde(serialize_with = "millis")]
    pub p99: Duration,
    /// 99.9th percentile.
    #[serde(rename = "p99_9", serialize_with = "millis")]
    pub p999: Duration,
    /// Slowest response.
    #[serde(serialize_with = "millis")]
    pub max: Duration,
}

/// Responses that carried one value of the backend header.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendShare {
    /// The header value (invalid UTF-8 replaced).
    pub value: String,
    /// Responses with this value.
    pub responses: u64,
    /// `responses` over all responses, between 0 and 1.
    pub share: f64,
}

/// Milliseconds rounded to the microsecond: the histogram's resolution, and a number a reader
/// can take in (`6.171`, not `6.170977000000001`).
fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_micros() as f64 / 1e3)
}

/// Seconds rounded to the microsecond.
fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_micros() as f64 / 1e6)
}

impl Report {
    /// The report as one JSON object (the `--json` output).
    pub fn to_json(&self) -> String {
        // Serialising plain structs, string keys and finite floats cannot fail; a NaN would
        // become null.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report as aligned text, the way `rondo bench` prints it.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let mode = match self.target_rate {
            Some(rate) => format!("open loop at {rate} req/s"),
            None => "closed loop".to_string(),
        };
        match &self.grpc_method {
            Some(method) => {
                let _ = writeln!(out, "Target      {} calling {method}", self.url);
            }
            None => {
                let _ = writeln!(out, "Target      {}", self.url);
            }
        }
        let _ = writeln!(
            out,
            "            {}, {} connections, {}",
            self.protocol, self.connections, mode
        );
        let interrupted = if self.interrupted {
            " (interrupted)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "Duration    {:.2} s{interrupted}",
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "Requests    {} finished, {} responses, {:.1} responses/s",
            self.requests, self.responses, self.requests_per_sec
        );
        let _ = writeln!(
            out,
            "Success     {:.2} %  ({} of {} {})",
            self.success_rate * 100.0,
            self.successes,
            self.requests,
            if self.grpc_method.is_some() {
                "had grpc-status 0"
            } else {
                "were 2xx or 3xx"
            }
        );
        let statuses: Vec<String> = self
            .status_counts
            .iter()
            .map(|(code, n)| format!("{code}: {n}"))
            .collect();
        let _ = writeln!(
            out,
            "Status      {}",
            if statuses.is_empty() {
                "no responses".to_string()
            } else {
                statuses.join("   ")
            }
        );
        if self.grpc_method.is_some() {
            let codes: Vec<String> = self
                .grpc_status_counts
                .iter()
                .map(|(status, n)| match status {
                    GrpcStatus::Code(code) => format!("{code} {}: {n}", status.name()),
                    GrpcStatus::Missing => format!("missing: {n}"),
                })
                .collect();
            let _ = writeln!(
                out,
                "gRPC status {}",
                if codes.is_empty() {
                    "no responses".to_string()
                } else {
                    codes.join("   ")
                }
            );
        }
        if self.errors.total == 0 {
            let _ = writeln!(out, "Errors      none");
        } else {
            let _ = writeln!(
                out,
                "Errors      {} in all: connect {}, timeout {}, closed {}, other {}",
                self.errors.total,
                self.errors.connect,
                self.errors.timeout,
                self.errors.closed,
                self.errors.other
            );
            for (kind, message) in &self.error_examples {
                let _ = writeln!(out, "            {:<8} e.g. {message}", kind.name());
            }
        }
        if self.responses > 0 {
            let l = &self.latency;
            let _ = writeln!(
                out,
                "Latency     mean {}, stdev {}",
                fmt_duration(l.mean).trim_start(),
                fmt_duration(l.stdev).trim_start()
            );
            for (name, value) in [
                ("min", l.min),
                ("p50", l.p50),
                ("p90", l.p90),
                ("p95", l.p95),
                ("p99", l.p99),
                ("p99.9", l.p999),
                ("max", l.max),
            ] {
                let _ = writeln!(out, "            {name:<6}{}", fmt_duration(value));
            }
        }
        let secs = self.elapsed.as_secs_f64();
        let _ = writeln!(
            out,
            "Read        {} ({}/s)",
            fmt_bytes(self.bytes_read as f64),
            fmt_bytes(if secs > 0.0 {
                self.bytes_read as f64 / secs
            } else {
                0.0
            })
        );
        if let Some(header) = &self.backend_header {
            let _ = writeln!(out, "Backends    by response header {header}");
            let width = self
                .backends
                .iter()
                .map(|b| b.value.chars().count())
                .max()
                .unwrap_or(0)
                .max(9);
            for b in &self.backends {
                let _ = writeln!(
                    out,
                    "            {:<width$}  {:>6.2} %  {:>10}",
                    b.value,
                    b.share * 100.0,
                    b.responses
                );
            }
            if self.backend_missing > 0 || self.backends.is_empty() {
                let share = if self.responses > 0 {
                    self.backend_missing as f64 / self.responses as f64
                } else {
                    0.0
                };
                let _ = writeln!(
                    out,
                    "            {:<width$}  {:>6.2} %  {:>10}",
                    "(missing)",
                    share * 100.0,
                    self.backend_missing
                );
            }
        }
        out
    }
}

/// A duration right-aligned in 10 columns, in the unit that suits it.
fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1e-3 {
        format!("{:>7.1} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:>7.2} ms", s * 1e3)
    } else {
        format!("{:>7.2} s ", s)
    }
}

fn fmt_bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_durations_in_a_fitting_unit() {
        assert_eq!(fmt_duration(Duration::from_micros(250)), "  250.0 µs");
        assert_eq!(fmt_duration(Duration::from_micros(2500)), "   2.50 ms");
        assert_eq!(fmt_duration(Duration::from_millis(2500)), "   2.50 s ");
    }

    #[test]
    fn formats_bytes_in_binary_units() {
        assert_eq!(fmt_bytes(512.0), "512 B");
        assert_eq!(fmt_bytes(1536.0), "1.50 KiB");
    }

    #[test]
    fn json_durations_are_rounded_to_the_microsecond() {
        let d = Duration::from_nanos(6_170_977_001);
        let ms = millis(&d, serde_json::value::Serializer).unwrap();
        assert_eq!(ms.to_string(), "6170.977");
        let s = secs(
            &Duration::from_nanos(1_500_000_999),
            serde_json::value::Serializer,
        )
        .unwrap();
        assert_eq!(s.to_string(), "1.5");
    }
}
