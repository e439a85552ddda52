//! `max_memory`: new work is refused before the kernel's out-of-memory killer ends the process
//! (and every connection with it). Envoy's overload manager in small: past the limit rondo
//! answers new requests `503` with `Retry-After` instead of forwarding them, closes the idle
//! connections and its pooled backend connections, frees its spare buffers, and stops keeping
//! connections alive (`Connection: close` on every response), until memory falls back under
//! 90 % of the limit. Requests already in progress finish.
//!
//! New connections are still accepted while over, so that their first request learns why (a
//! closed socket tells a client nothing), with one hard floor: past [`floor`] (a quarter over
//! the limit) even that is not affordable, and new connections are closed at once.
//!
//! What is measured is the process's resident set (`VmRSS`), read every
//! [`SAMPLE_EVERY`] by one background thread: it is what the kernel's OOM killer and a
//! container's memory limit count, and it includes what a counter of rondo's own buffers would
//! miss (hyper's HTTP/2 buffers, TLS records, the allocator's overhead). The request path pays
//! one relaxed atomic load per new connection and per request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::respond::ErrorPage;
use super::{Frontend, Worker};
use crate::counters::Source;

/// How often the resident set is read: often enough that a burst of new connections meets the
/// limit within a fraction of a second, rarely enough to cost nothing (one small read).
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// How far over `max_memory` the process is, as the last reading found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pressure {
    /// Under the limit, or no limit: normal service.
    Normal = 0,
    /// Over the limit: new requests are answered 503, nothing is kept alive.
    Over = 1,
    /// Over the [`floor`]: new connections are also closed at once, unanswered.
    Critical = 2,
}

/// Resident memory past which new connections are closed without an answer: a quarter over
/// `max`. Answering a new connection 503 costs its task and a read buffer until its request
/// arrives (up to `header_timeout`); under a flood of connections that never send one, that
/// cost grows with the flood, and this bounds it.
pub(crate) fn floor(max: u64) -> u64 {
    max.saturating_add(max / 4)
}

/// Whether the process is over `max_memory`, shared by every worker.
#[derive(Debug, Default)]
pub(crate) struct MemoryLimit {
    /// The limit in bytes; `None`: no limit, never over.
    max: Option<u64>,
    /// A [`Pressure`], as its discriminant.
    pressure: AtomicU8,
    /// Episodes of being over so far: a worker sheds what it holds once per episode.
    episodes: AtomicU64,
    /// Requests and connections refused in the current episode.
    refused: AtomicUsize,
}

/// A change of state seen by one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Over the limit (a new episode), and whether already past the floor.
    Over { critical: bool },
    /// Past the floor during an episode that started under it.
    Critical,
    /// Back under the floor, still over the limit.
    Eased,
    /// Back under 90 % of the limit: the episode is over.
    Under,
}

impl MemoryLimit {
    /// A limit of `max` bytes (none when `None`), watched by a background thread while any
    /// worker holds it.
    pub(crate) fn start(max: Option<u64>) -> Arc<MemoryLimit> {
        let limit = Arc::new(MemoryLimit {
            max,
            ..MemoryLimit::default()
        });
        if max.is_some() {
            let weak = Arc::downgrade(&limit);
            let spawned = std::thread::Builder::new()
                .name("rondo-memory".to_owned())
                .spawn(move || watch(&weak));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the max_memory watch: no memory limit");
            }
        }
        limit
    }

    /// How far over the limit the process is now.
    pub(crate) fn pressure(&self) -> Pressure {
        match self.pressure.load(Ordering::Relaxed) {
            0 => Pressure::Normal,
            1 => Pressure::Over,
            _ => Pressure::Critical,
        }
    }

    /// True while resident memory is over the limit.
    pub(crate) fn over(&self) -> bool {
        self.pressure() != Pressure::Normal
    }

    /// The current (or last) episode of being over the limit.
    pub(crate) fn episode(&self) -> u64 {
        self.episodes.load(Ordering::Relaxed)
    }

    /// Counts a request or connection refused for memory; true when it should be logged (the
    /// 1st, 2nd, 4th, 8th… of the episode).
    pub(crate) fn refuse(&self) -> bool {
        (self.refused.fetch_add(1, Ordering::Relaxed) + 1).is_power_of_two()
    }

    /// Requests and connections refused for memory in the current (or last) episode.
    pub(crate) fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }

    /// The limit in bytes, if any.
    pub(crate) fn max(&self) -> Option<u64> {
        self.max
    }

    fn set(&self, pressure: Pressure) {
        self.pressure.store(pressure as u8, Ordering::Relaxed);
    }

    /// Takes one reading of resident memory: over the limit, past the floor, or back under
    /// 90 % of the limit (the gap keeps a process that hovers at the limit from flapping).
    fn update(&self, resident: u64) -> Option<Change> {
        let max = self.max?;
        let critical = resident > floor(max);
        match self.pressure() {
            Pressure::Normal if resident > max => {
                self.refused.store(0, Ordering::Relaxed);
                self.episodes.fetch_add(1, Ordering::Relaxed);
                self.set(if critical {
                    Pressure::Critical
                } else {
                    Pressure::Over
                });
                Some(Change::Over { critical })
            }
            Pressure::Normal => None,
            _ if resident < max / 10 * 9 => {
                self.set(Pressure::Normal);
                Some(Change::Under)
            }
            Pressure::Over if critical => {
                self.set(Pressure::Critical);
                Some(Change::Critical)
            }
            Pressure::Critical if !critical => {
                self.set(Pressure::Over);
                Some(Change::Eased)
            }
            Pressure::Over | Pressure::Critical => None,
        }
    }
}

/// Whether a new connection may be served now: always under the limit; over it, yes (its
/// first request is answered 503) unless past the [`floor`] or the listener relays TCP,
/// whose clients could not be told. A refused connection is counted and logged (the 1st,
/// 2nd, 4th… of the episode) and the caller closes it; either way, over the limit the
/// worker sheds what it can.
pub(super) fn admit(frontend: &Frontend, worker: &Worker, peer: SocketAddr) -> bool {
    let pressure = worker.memory.pressure();
    if pressure == Pressure::Normal {
        return true;
    }
    worker.shed();
    let tcp = matches!(frontend.config.mode, crate::config::ListenerMode::Tcp);
    if pressure == Pressure::Over && !tcp {
        return true;
    }
    frontend.reports[0]
        .listener
        .refused
        .fetch_add(1, Ordering::Relaxed);
    if worker.memory.refuse() {
        tracing::warn!(
            listener = frontend.config.name.as_str(),
            client = %peer,
            max_memory = worker.memory.max().unwrap_or(0),
            refused = worker.memory.refused(),
            "connection closed unanswered: the process is over max_memory"
        );
    }
    false
}

/// Counts a request that will be answered 503 unforwarded because the process is over the
/// limit (in `rondo_requests_refused_total` and as a response of rondo's own to the
/// request's `upstream`), sheds what the worker can, and logs the 1st, 2nd, 4th… of the
/// episode. The caller writes the answer ([`refused_page`]).
pub(super) fn refuse_request(frontend: &Frontend, worker: &Worker, upstream: usize) {
    worker.shed();
    let report = &frontend.reports[upstream];
    report.responses.record(503, Source::Proxy);
    report
        .listener
        .refused_requests
        .fetch_add(1, Ordering::Relaxed);
    if worker.memory.refuse() {
        tracing::warn!(
            listener = frontend.config.name.as_str(),
            upstream = frontend.upstreams[upstream].name(),
            max_memory = worker.memory.max().unwrap_or(0),
            refused = worker.memory.refused(),
            "request answered 503: the process is over max_memory"
        );
    }
}

/// The page of a request refused for memory: no upstream named, since none is to blame.
pub(super) fn refused_page(request_id: &str) -> ErrorPage<'_> {
    ErrorPage {
        request_id: Some(request_id),
        ..ErrorPage::default()
    }
}

/// The watch thread: reads resident memory until every holder of the limit is gone.
fn watch(limit: &Weak<MemoryLimit>) {
    loop {
        let Some(limit) = limit.upgrade() else { return };
        let Some(resident) = resident_bytes() else {
            tracing::warn!("cannot read /proc/self/status: max_memory is not enforced");
            return;
        };
        let max_memory = limit.max.unwrap_or(0);
        match limit.update(resident) {
            Some(Change::Over { critical: false }) => tracing::warn!(
                resident_bytes = resident,
                max_memory,
                "over max_memory: answering new requests 503 and closing idle connections"
            ),
            Some(Change::Over { critical: true }) | Some(Change::Critical) => tracing::warn!(
                resident_bytes = resident,
                max_memory,
                "more than a quarter over max_memory: closing new connections unanswered"
            ),
            Some(Change::Eased) => tracing::info!(
                resident_bytes = resident,
                max_memory,
                "less than a quarter over max_memory: answering new connections 503 again"
            ),
            Some(Change::Under) => tracing::info!(
                resident_bytes = resident,
                refused = limit.refused(),
                "back under max_memory: serving requests again"
            ),
            None => {}
        }
        drop(limit);
        std::thread::sleep(SAMPLE_EVERY);
    }
}

/// The process's resident set now, from `/proc/self/status`.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    vm_rss(&status)
}

/// `VmRSS` of a `/proc/PID/status` text, in bytes.
fn vm_rss(status: &str) -> Option<u64> {
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit_of(max: u64) -> MemoryLimit {
        MemoryLimit {
            max: Some(max),
            ..MemoryLimit::default()
        }
    }

    #[test]
    fn over_past_the_limit_and_under_again_below_ninety_percent() {
        let limit = limit_of(1000);
        assert_eq!(limit.update(1000), None, "at the limit is not over it");
        assert!(!limit.over());
        assert_eq!(limit.update(1001), Some(Change::Over { critical: false }));
        assert_eq!(limit.pressure(), Pressure::Over);
        assert_eq!(limit.update(950), None, "still over until under 90 %");
        assert!(limit.over());
        assert_eq!(limit.update(899), Some(Change::Under));
        assert!(!limit.over());
        assert_eq!(limit.episode(), 1);
    }

    #[test]
    fn past_a_quarter_over_the_limit_new_connections_are_closed() {
        let limit = limit_of(1000);
        assert_eq!(floor(1000), 1250);
        assert_eq!(limit.update(1251), Some(Change::Over { critical: true }));
        assert_eq!(limit.pressure(), Pressure::Critical);
        assert_eq!(limit.update(1250), Some(Change::Eased));
        assert_eq!(limit.pressure(), Pressure::Over);
        assert_eq!(limit.update(1300), Some(Change::Critical));
        assert_eq!(limit.update(899), Some(Change::Under));
        assert_eq!(limit.pressure(), Pressure::Normal);
        assert_eq!(limit.episode(), 1, "one episode from over to under");
        assert_eq!(floor(u64::MAX), u64::MAX);
    }

    #[test]
    fn no_limit_is_never_over() {
        let limit = MemoryLimit::default();
        assert_eq!(limit.update(u64::MAX), None);
        assert!(!limit.over());
    }

    #[test]
    fn refusals_are_logged_at_powers_of_two() {
        let limit = MemoryLimit::default();
        let logged: Vec<bool> = (0..5).map(|_| limit.refuse()).collect();
        assert_eq!(logged, [true, true, false, true, false]);
        assert_eq!(limit.refused(), 5);
    }

    #[test]
    fn each_episode_logs_its_own_first_refusals() {
        let limit = limit_of(1000);
        limit.update(1001);
        assert!(limit.refuse() && limit.refuse() && !limit.refuse());
        limit.update(10);
        limit.update(1001);
        assert_eq!(limit.episode(), 2);
        assert!(
            limit.refuse(),
            "the first refusal of a new episode is logged"
        );
    }

    #[test]
    fn resident_memory_is_read_in_bytes() {
        assert_eq!(
            vm_rss("Name:\trondo\nVmRSS:\t    5120 kB\n"),
            Some(5120 * 1024)
        );
        assert_eq!(vm_rss("Name:\trondo\n"), None);
        assert!(resident_bytes().is_some_and(|b| b > 0));
    }
}
