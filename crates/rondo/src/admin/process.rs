//! Process metrics read from `/proc/self` at scrape time, under the names every Prometheus
//! client library uses (`process_cpu_seconds_total`, `process_resident_memory_bytes`, …), so
//! the dashboards and alerts written for them work unchanged. On a system without `/proc`
//! the families are simply absent.

use std::time::{SystemTime, UNIX_EPOCH};

/// Clock ticks per second of `/proc/<pid>/stat` times: the kernel's `USER_HZ`, which is 100
/// on every architecture Linux supports (it is part of the user-space ABI, unlike `HZ`).
const USER_HZ: f64 = 100.0;

/// One reading of the process's resources.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub resident_bytes: u64,
    /// Virtual memory size, bytes.
    pub virtual_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on file descriptors, if known.
    pub max_fds: Option<u64>,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

impl ProcessStats {
    /// Reads `/proc/self`; `None` when it is not there (not Linux).
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        parse(&stat, &status, &boot, &limits, open_fds)
    }
}

/// The parsing half of [`ProcessStats::read`], testable on fixed text.
fn parse(
    stat: &str,
    status: &str,
    boot: &str,
    limits: &str,
    open_fds: u64,
) -> Option<ProcessStats> {
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let cpu_ticks = field(14)? + field(15)?;
    let start_ticks = field(22)?;
    let virtual_bytes = field(23)?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let btime = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<u64>().ok())?;
    let max_fds = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok());
    Some(ProcessStats {
        cpu_seconds: cpu_ticks as f64 / USER_HZ,
        resident_bytes: kib("VmRSS:").unwrap_or(0) * 1024,
        virtual_bytes,
        open_fds,
        max_fds,
        start_time_seconds: btime as f64 + start_ticks as f64 / USER_HZ,
    })
}

/// Seconds since the Unix epoch now (for comparing with the start time in tests).
pub fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_after_a_command_name_with_spaces() {
        let stat = "42 (rondo (w 1)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000 \
                    123456789 1234 18446744073709551615";
        let status = "Name:\trondo\nVmRSS:\t    5120 kB\n";
        let boot = "cpu  1 2 3\nbtime 1700000000\n";
        let limits = "Limit Soft Hard Units\nMax open files            1024                 \
                      524288               files\n";
        let s = parse(stat, status, boot, limits, 12).unwrap();
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.start_time_seconds, 1_700_000_010.0);
        assert_eq!(s.virtual_bytes, 123_456_789);
        assert_eq!(s.resident_bytes, 5120 * 1024);
        assert_eq!((s.open_fds, s.max_fds), (12, Some(1024)));
    }

    #[test]
    fn this_process_is_readable_on_linux() {
        if cfg!(target_os = "linux") {
            let s = ProcessStats::read().unwrap();
            assert!(s.resident_bytes > 0 && s.open_fds > 0);
            assert!(s.start_time_seconds <= now_seconds());
        }
    }
}
