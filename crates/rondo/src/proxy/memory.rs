//! `max_memory`: new work is refused before the kernel's out-of-memory killer ends the process
//! (and every connection with it). Envoy's overload manager in small: past the limit rondo
//! stops admitting connections, closes the idle ones and its pooled backend connections, frees
//! its spare buffers, and stops keeping connections alive (`Connection: close` on every
//! response), until memory falls back under 90 % of the limit.
//!
//! What is measured is the process's resident set (`VmRSS`), read every
//! [`SAMPLE_EVERY`] by one background thread: it is what the kernel's OOM killer and a
//! container's memory limit count, and it includes what a counter of rondo's own buffers would
//! miss (hyper's HTTP/2 buffers, TLS records, the allocator's overhead). The request path pays
//! one relaxed atomic load per new connection and per response.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often the resident set is read: often enough that a burst of new connections meets the
/// limit within a fraction of a second, rarely enough to cost nothing (one small read).
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Whether the process is over `max_memory`, shared by every worker.
#[derive(Debug, Default)]
pub(crate) struct MemoryLimit {
    /// The limit in bytes; `None`: no limit, never over.
    max: Option<u64>,
    over: AtomicBool,
    /// Connections refused while over.
    refused: AtomicUsize,
}

/// A change of state seen by one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Over,
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

    /// True while resident memory is over the limit.
    pub(crate) fn over(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }

    /// Counts a connection refused for memory; true when it should be logged (the 1st, 2nd,
    /// 4th, 8th… of the process).
    pub(crate) fn refuse(&self) -> bool {
        (self.refused.fetch_add(1, Ordering::Relaxed) + 1).is_power_of_two()
    }

    /// Connections refused for memory so far.
    pub(crate) fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }

    /// The limit in bytes, if any.
    pub(crate) fn max(&self) -> Option<u64> {
        self.max
    }

    /// Takes one reading of resident memory: over the limit, or back under 90 % of it (the
    /// gap keeps a process that hovers at the limit from flapping).
    fn update(&self, resident: u64) -> Option<Change> {
        let max = self.max?;
        let was = self.over();
        if !was && resident > max {
            self.over.store(true, Ordering::Relaxed);
            return Some(Change::Over);
        }
        if was && resident < max / 10 * 9 {
            self.over.store(false, Ordering::Relaxed);
            return Some(Change::Under);
        }
        None
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
        match limit.update(resident) {
            Some(Change::Over) => tracing::warn!(
                resident_bytes = resident,
                max_memory = limit.max.unwrap_or(0),
                "over max_memory: refusing new connections and closing idle ones"
            ),
            Some(Change::Under) => tracing::info!(
                resident_bytes = resident,
                refused = limit.refused(),
                "back under max_memory: accepting connections again"
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

    #[test]
    fn over_past_the_limit_and_under_again_below_ninety_percent() {
        let limit = MemoryLimit {
            max: Some(1000),
            ..MemoryLimit::default()
        };
        assert_eq!(limit.update(1000), None, "at the limit is not over it");
        assert!(!limit.over());
        assert_eq!(limit.update(1001), Some(Change::Over));
        assert!(limit.over());
        assert_eq!(limit.update(950), None, "still over until under 90 %");
        assert!(limit.over());
        assert_eq!(limit.update(899), Some(Change::Under));
        assert!(!limit.over());
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
    fn resident_memory_is_read_in_bytes() {
        assert_eq!(
            vm_rss("Name:\trondo\nVmRSS:\t    5120 kB\n"),
            Some(5120 * 1024)
        );
        assert_eq!(vm_rss("Name:\trondo\n"), None);
        assert!(resident_bytes().is_some_and(|b| b > 0));
    }
}
