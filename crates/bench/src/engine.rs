//! The run: one task per connection, each with its own statistics, merged at the end.
//!
//! Nothing on the per-request path is shared between connections except, when the run is
//! bounded by a request count or paced by a rate, one atomic counter that hands out request
//! numbers. Each task keeps its own HDR histogram, status counts, error counts and backend
//! counts, and publishes two numbers for the progress display into a cache-line-sized slot
//! only it writes.
//!
//! Timeouts and the end of a `-d` run are checked with one lazily re-armed timer per task
//! instead of a timer per request: the timer is set to the earliest moment the current
//! request could time out (or the run end); when it fires early because the request it was
//! set for has finished, it is re-armed for the request in flight. That is one timer
//! operation per timeout period instead of two per request.
//!
//! Longer than ~500 lines because the open- and closed-loop engines share the connection tasks
//! and the accounting; the wire is in `h1`/`h2`, the report in `report`.

use std::collections::{BTreeMap, HashMap};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::error::{BenchError, ErrorKind, RequestError};
use super::h1::{H1Conn, Phase, Response};
use super::h2::H2Conn;
use super::progress;
use super::report::{BackendShare, ErrorCounts, GrpcStatus, Latency, Report};
use super::spec::Prepared;

/// Lowest latency the histograms tell apart, in nanoseconds: 1 µs. Loopback responses take
/// tens of microseconds; finer resolution would only cost memory.
const HISTOGRAM_LOW_NS: u64 = 1_000;

/// Initial highest latency of a histogram, in nanoseconds: 10 ms. Histograms grow (rarely)
/// when a slower response arrives; starting small keeps a run with thousands of connections
/// in tens of megabytes.
const HISTOGRAM_HIGH_NS: u64 = 10_000_000;

/// Connections up to which histograms keep three significant digits (0.1 %). A histogram
/// with three digits takes 4 KiB per doubling of its range, some 40 KiB once it spans
/// a second; with more connections than this, two digits (1 %, 0.5 KiB per doubling) keep
/// ten thousand connections in tens of megabytes.
const PRECISE_UP_TO: usize = 1000;

/// Significant digits of the latency histograms for a run with `connections`.
fn histogram_digits(connections: usize) -> u8 {
    if connections <= PRECISE_UP_TO { 3 } else { 2 }
}

/// Progress counters of one connection, written only by its task. Aligned to 128 bytes so
/// that two connections' slots never share a cache line (adjacent-line prefetch included).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Slot {
    pub(crate) finished: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// The request counter, alone on its cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Counter(AtomicU64);

/// What every connection task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) prepared: Prepared,
    pub(crate) start: Instant,
    pub(crate) deadline: Option<Instant>,
    issued: Counter,
    /// Whether requests are numbered (a request limit or a rate needs it).
    numbered: bool,
    pub(crate) slots: Box<[Slot]>,
    /// Signalled once when every connection task has ended.
    pub(crate) done: tokio::sync::Notify,
}

enum Claim {
    /// Send a request; `due` is when it was due under a rate.
    Go {
        due: Option<Instant>,
        /// The request's number (0 when requests are not numbered).
        index: u64,
    },
    Stop,
}

impl Shared {
    fn claim(&self) -> Claim {
        let p = &self.prepared;
        if p.stop.is_stopped() {
            return Claim::Stop;
        }
        let index = if self.numbered {
            let i = self.issued.0.fetch_add(1, Ordering::Relaxed);
            if p.requests.is_some_and(|n| i >= n) {
                return Claim::Stop;
            }
            i
        } else {
            0
        };
        match p.rate {
            Some(rate) => {
                let due = self.start + Duration::from_secs_f64(index as f64 / rate);
                if self.deadline.is_some_and(|d| due >= d) {
                    Claim::Stop
                } else {
                    Claim::Go {
                        due: Some(due),
                        index,
                    }
                }
            }
            None => {
                if self.deadline.is_some_and(|d| Instant::now() >= d) {
                    Claim::Stop
                } else {
                    Claim::Go { due: None, index }
                }
            }
        }
    }

    /// Requests finished so far over all connections, and errors among them.
    pub(crate) fn progress(&self) -> (u64, u64) {
        self.slots.iter().fold((0, 0), |(f, e), s| {
            (
                f + s.finished.load(Ordering::Relaxed),
                e + s.errors.load(Ordering::Relaxed),
            )
        })
    }
}

/// Statistics of one connection.
#[derive(Debug)]
struct ConnStats {
    histogram: Histogram<u32>,
    latency_sum_ns: u128,
    latency_min_ns: u64,
    latency_max_ns: u64,
    responses: u64,
    successes: u64,
    /// Responses per status code, the most recently seen first. A run sees a handful of
    /// codes, so a short scan beats hashing and costs no memory for codes never seen.
    statuses: Vec<(u16, u64)>,
    errors: [u64; 4],
    examples: [Option<String>; 4],
    backends: HashMap<Vec<u8>, u64>,
    backend_missing: u64,
    /// gRPC calls by `grpc-status` (`None`: the response had none), as `statuses`.
    grpc_statuses: Vec<(Option<u32>, u64)>,
    bytes_read: u64,
}

impl ConnStats {
    fn new(digits: u8) -> Result<Self, BenchError> {
        let mut histogram = Histogram::new_with_bounds(HISTOGRAM_LOW_NS, HISTOGRAM_HIGH_NS, digits)
            .map_err(|e| BenchError::Task(format!("histogram: {e}")))?;
        histogram.auto(true);
        Ok(ConnStats {
            histogram,
            latency_sum_ns: 0,
            latency_min_ns: u64::MAX,
            latency_max_ns: 0,
            responses: 0,
            successes: 0,
            statuses: Vec::new(),
            errors: [0; 4],
            examples: Default::default(),
            backends: HashMap::new(),
            backend_missing: 0,
            grpc_statuses: Vec::new(),
            bytes_read: 0,
        })
    }

    fn response(
        &mut self,
        response: Response,
        latency: Duration,
        backend: Option<&[u8]>,
        grpc: bool,
    ) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        if self.histogram.record(ns).is_err() {
            self.histogram.saturating_record(ns);
        }
        self.latency_sum_ns += u128::from(ns);
        self.latency_min_ns = self.latency_min_ns.min(ns);
        self.latency_max_ns = self.latency_max_ns.max(ns);
        self.responses += 1;
        let status = response.status;
        count(&mut self.statuses, status);
        let success = if grpc {
            count(&mut self.grpc_statuses, response.grpc_status);
            // gRPC reports a failed call in grpc-status, usually on an HTTP 200: a call
            // succeeded only with grpc-status 0 (OK) on a 200.
            status == 200 && response.grpc_status == Some(0)
        } else {
            (200..400).contains(&status)
        };
        if success {
            self.successes += 1;
        }
        match backend {
            Some(value) => match self.backends.get_mut(value) {
                Some(n) => *n += 1,
                None => {
                    self.backends.insert(value.to_vec(), 1);
                }
            },
            None => self.backend_missing += 1,
        }
    }

    fn error(&mut self, err: RequestError) {
        let i = err.kind.index();
        self.errors[i] += 1;
        if self.examples[i].is_none() {
            self.examples[i] = Some(err.message.to_string());
        }
    }

    fn finished(&self) -> u64 {
        self.responses + self.errors.iter().sum::<u64>()
    }
}

/// Adds one to `key`'s count in a short list kept most-recently-seen first: a run sees a
/// handful of keys, so a short scan beats hashing.
fn count<K: PartialEq>(counts: &mut Vec<(K, u64)>, key: K) {
    match counts.iter().position(|(k, _)| *k == key) {
        Some(0) => counts[0].1 += 1,
        Some(i) => {
            counts[i].1 += 1;
            counts.swap(0, i);
        }
        None => counts.insert(0, (key, 1)),
    }
}

/// The protocol client of one connection.
#[derive(Debug)]
enum Client {
    H1(H1Conn),
    H2(H2Conn),
}

impl Client {
    async fn request(
        &mut self,
        p: &Prepared,
        key: Option<u32>,
        backend_value: &mut Vec<u8>,
    ) -> Result<Response, RequestError> {
        match self {
            Client::H1(c) => c.request(p, key, backend_value).await,
            Client::H2(c) => c.request(p, key, backend_value).await,
        }
    }

    fn phase(&self) -> Phase {
        match self {
            Client::H1(c) => c.phase,
            Client::H2(c) => c.phase,
        }
    }

    fn discard(&mut self) {
        match self {
            Client::H1(c) => c.discard(),
            Client::H2(c) => c.discard(),
        }
    }

    fn bytes_read(&self) -> u64 {
        match self {
            Client::H1(c) => c.bytes_read,
            Client::H2(c) => c.bytes_read(),
        }
    }
}

enum Outcome {
    Done(Result<Response, RequestError>),
    TimedOut,
    RunOver,
}

/// One connection's loop: claim a request, send it, wait for the response (or the timeout,
/// or the end of the run), record, repeat.
async fn connection(shared: Arc<Shared>, index: usize) -> Result<ConnStats, BenchError> {
    let p = &shared.prepared;
    let mut stats = ConnStats::new(histogram_digits(p.connections))?;
    let mut client = if p.http2 {
        Client::H2(H2Conn::new(p.addr, p.tls.clone()))
    } else {
        Client::H1(H1Conn::new(p.addr, p.tls.clone()))
    };
    let mut backend_value = Vec::new();
    let slot = shared.slots.get(index);
    // Armed far away until the first request needs it.
    let mut timer = pin!(tokio::time::sleep_until(
        Instant::now() + Duration::from_secs(365 * 24 * 3600)
    ));

    loop {
        let (due, index) = match shared.claim() {
            Claim::Stop => break,
            Claim::Go { due, index } => (due, index),
        };
        let ahead = due.is_some_and(|due| due > Instant::now());
        if let Some(due) = due
            && ahead
        {
            tokio::time::sleep_until(due).await;
            if p.stop.is_stopped() {
                break;
            }
        }
        let started = Instant::now();
        let timeout_at = p.timeout.map(|t| started + t);
        let check_at = match (timeout_at, shared.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let outcome = {
            let request = client.request(p, p.key(index), &mut backend_value);
            let mut request = pin!(request);
            match check_at {
                None => Outcome::Done(request.await),
                Some(check_at) => {
                    if timer.deadline() > check_at {
                        timer.as_mut().reset(check_at);
                    }
                    loop {
                        tokio::select! {
                            biased;
                            result = &mut request => break Outcome::Done(result),
                            () = &mut timer => {
                                let now = Instant::now();
                                if shared.deadline.is_some_and(|d| now >= d) {
                                    break Outcome::RunOver;
                                }
                                if timeout_at.is_some_and(|t| now >= t) {
                                    break Outcome::TimedOut;
                                }
                                timer.as_mut().reset(check_at);
                            }
                        }
                    }
                }
            }
        };
        match outcome {
            Outcome::Done(Ok(response)) => {
                let from = latency_origin(due, started, ahead);
                let latency = Instant::now().saturating_duration_since(from);
                let backend = response.has_backend.then_some(&backend_value[..]);
                stats.response(response, latency, backend, p.grpc);
            }
            Outcome::Done(Err(err)) => stats.error(err),
            Outcome::TimedOut => {
                let err = if client.phase() == Phase::Connecting {
                    RequestError::new(ErrorKind::Connect, "connect timed out")
                } else {
                    RequestError::new(
                        ErrorKind::Timeout,
                        "no complete response within the timeout",
                    )
                };
                client.discard();
                stats.error(err);
            }
            Outcome::RunOver => {
                client.discard();
                break;
            }
        }
        if let Some(slot) = slot {
            slot.finished.store(stats.finished(), Ordering::Relaxed);
            slot.errors
                .store(stats.errors.iter().sum(), Ordering::Relaxed);
        }
    }
    stats.bytes_read = client.bytes_read();
    Ok(stats)
}

/// Where a request's latency is measured from: its send, or under a rate the moment it was
/// due when the connection was behind schedule (its previous response came late), so a
/// stalled server shows as latency (no coordinated omission). A connection ahead of schedule
/// waited for that moment on a timer, which wakes up to a millisecond late (tokio's
/// resolution): that lateness is the generator's, not the server's, so its request is
/// measured from the send.
fn latency_origin(due: Option<Instant>, started: Instant, waited_for_due: bool) -> Instant {
    match due {
        Some(due) if !waited_for_due => due.min(started),
        _ => started,
    }
}

/// Runs a prepared load to completion and builds the report.
pub(crate) async fn run(prepared: Prepared) -> Result<Report, BenchError> {
    let connections = prepared.connections;
    let start = Instant::now();
    let shared = Arc::new(Shared {
        deadline: prepared.duration.map(|d| start + d),
        numbered: prepared.requests.is_some() || prepared.rate.is_some() || prepared.keys.is_some(),
        issued: Counter::default(),
        slots: (0..connections).map(|_| Slot::default()).collect(),
        done: tokio::sync::Notify::new(),
        start,
        prepared,
    });
    let progress = progress::start(&shared);
    let mut tasks = JoinSet::new();
    for index in 0..connections {
        tasks.spawn(connection(Arc::clone(&shared), index));
    }
    let mut all = Vec::with_capacity(connections);
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(stats)) => all.push(stats),
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(BenchError::Task(e.to_string())),
        }
    }
    let elapsed = start.elapsed();
    shared.done.notify_one();
    if let Some(progress) = progress {
        let _ = progress.await;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(merge(&shared.prepared, all, elapsed))
}

fn merge(p: &Prepared, all: Vec<ConnStats>, elapsed: Duration) -> Report {
    let mut histogram: Option<Histogram<u64>> = Histogram::new_with_bounds(
        HISTOGRAM_LOW_NS,
        HISTOGRAM_HIGH_NS,
        histogram_digits(p.connections),
    )
    .ok();
    if let Some(h) = histogram.as_mut() {
        h.auto(true);
    }
    let mut sum_ns = 0u128;
    let mut min_ns = u64::MAX;
    let mut max_ns = 0u64;
    let mut responses = 0;
    let mut successes = 0;
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut errors = [0u64; 4];
    let mut examples: BTreeMap<ErrorKind, String> = BTreeMap::new();
    let mut backends: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut backend_missing = 0;
    let mut grpc_statuses: BTreeMap<GrpcStatus, u64> = BTreeMap::new();
    let mut bytes_read = 0;
    for stats in all {
        if let Some(h) = histogram.as_mut() {
            for v in stats.histogram.iter_recorded() {
                let _ = h.record_n(v.value_iterated_to(), u64::from(v.count_at_value()));
            }
        }
        sum_ns += stats.latency_sum_ns;
        min_ns = min_ns.min(stats.latency_min_ns);
        max_ns = max_ns.max(stats.latency_max_ns);
        responses += stats.responses;
        successes += stats.successes;
        for &(code, n) in &stats.statuses {
            *statuses.entry(code).or_default() += n;
        }
        for kind in ErrorKind::ALL {
            errors[kind.index()] += stats.errors[kind.index()];
            if let Some(message) = &stats.examples[kind.index()] {
                examples.entry(kind).or_insert_with(|| message.clone());
            }
        }
        for (value, n) in stats.backends {
            *backends.entry(value).or_default() += n;
        }
        backend_missing += stats.backend_missing;
        for &(code, n) in &stats.grpc_statuses {
            *grpc_statuses.entry(GrpcStatus::from(code)).or_default() += n;
        }
        bytes_read += stats.bytes_read;
    }
    let errors = ErrorCounts::from_array(errors);
    let requests = responses + errors.total;
    let latency = match (&histogram, responses) {
        (Some(h), n) if n > 0 => {
            let at = |q: f64| Duration::from_nanos(h.value_at_quantile(q));
            let mean_ns = sum_ns / u128::from(n);
            Latency {
                min: Duration::from_nanos(min_ns),
                mean: Duration::from_nanos(u64::try_from(mean_ns).unwrap_or(u64::MAX)),
                stdev: Duration::from_secs_f64(h.stdev() / 1e9),
                p50: at(0.50),
                p90: at(0.90),
                p95: at(0.95),
                p99: at(0.99),
                p999: at(0.999),
                // The histogram's highest equivalent value may exceed the exact maximum.
                max: Duration::from_nanos(max_ns),
            }
            .clamped()
        }
        _ => Latency::default(),
    };
    let mut shares: Vec<BackendShare> = backends
        .into_iter()
        .map(|(value, n)| BackendShare {
            value: String::from_utf8_lossy(&value).into_owned(),
            responses: n,
            share: if responses > 0 {
                n as f64 / responses as f64
            } else {
                0.0
            },
        })
        .collect();
    shares.sort_by(|a, b| b.responses.cmp(&a.responses).then(a.value.cmp(&b.value)));
    let secs = elapsed.as_secs_f64();
    Report {
        url: p.url.clone(),
        protocol: match (p.grpc, p.http2) {
            (true, _) => "gRPC over HTTP/2",
            (false, true) => "HTTP/2",
            (false, false) => "HTTP/1.1",
        }
        .into(),
        connections: p.connections,
        target_rate: p.rate,
        elapsed,
        interrupted: p.stop.is_stopped(),
        requests,
        responses,
        successes,
        success_rate: if requests > 0 {
            successes as f64 / requests as f64
        } else {
            0.0
        },
        requests_per_sec: if secs > 0.0 {
            responses as f64 / secs
        } else {
            0.0
        },
        status_counts: statuses,
        errors,
        error_examples: examples,
        latency,
        bytes_read,
        backend_header: p.backend_header.as_ref().map(|h| h.as_str().to_string()),
        backends: shares,
        backend_missing: if p.backend_header.is_some() {
            backend_missing
        } else {
            0
        },
        grpc_method: p.grpc.then(|| p.uri.path().to_owned()),
        grpc_status_counts: grpc_statuses,
    }
}

impl Latency {
    /// Keeps percentiles within the exact minimum and maximum: the histogram reports the
    /// highest value equivalent to a bucket, which can lie a little past either.
    fn clamped(mut self) -> Self {
        for p in [
            &mut self.p50,
            &mut self.p90,
            &mut self.p95,
            &mut self.p99,
            &mut self.p999,
        ] {
            *p = (*p).clamp(self.min, self.max);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_counts_a_late_send_only_when_the_connection_was_behind() {
        let due = Instant::now();
        let sent = due + Duration::from_micros(900);
        // Ahead of schedule: it waited for `due` on a timer that woke late; the lateness is
        // the generator's.
        assert_eq!(latency_origin(Some(due), sent, true), sent);
        // Behind: the previous response held the connection past `due`; the server's.
        assert_eq!(latency_origin(Some(due), sent, false), due);
        // Closed loop: from the send.
        assert_eq!(latency_origin(None, sent, false), sent);
    }
}
