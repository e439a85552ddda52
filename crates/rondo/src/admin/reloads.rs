//! What the last configuration reload did, served as `GET /api/v1/reload`.
//!
//! A reload is asked for with a signal (SIGHUP), which carries no answer back. `rondo reload`
//! reads this report before and after sending the signal: a higher `generation` means the
//! reload it asked for ran, and `result` says whether it applied. An operator or a
//! deployment script can read it the same way (`curl 127.0.0.1:9901/api/v1/reload`).
//!
//! Each reload is also an event of its own in `/api/v1/events` (kind `reload`, `by` what set
//! it off, the outcome in `detail`), next to the backend changes it caused.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::upstream::events::{EventRecord, millis};

/// Reload events kept for `/api/v1/events`: reloads are rare, a screen of them is plenty.
const EVENTS: usize = 32;

/// Problems a reload event's detail quotes (all of them are in `GET /api/v1/reload`).
const QUOTED: usize = 3;

/// How a reload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadResult {
    /// No reload since the process started.
    #[default]
    None,
    /// The new file is in effect.
    Applied,
    /// The file was valid, but some changes were not made (a setting that needs a restart,
    /// a listener whose address could not be opened); the rest were.
    Partial,
    /// The file did not validate or could not be read: the running configuration goes on.
    Failed,
}

/// The answer of `GET /api/v1/reload`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// The serving process, so `rondo reload` can signal it without a pid file.
    pub pid: u32,
    /// Reloads attempted since the process started; 0 before the first.
    pub generation: u64,
    /// How the last one ended.
    pub result: ReloadResult,
    /// What set it off: `SIGHUP` or `file changed`; empty before the first.
    pub trigger: String,
    /// What was wrong (`FILE:LINE:COL: message`) or not applied, one line each.
    pub problems: Vec<String>,
}

/// The last reload's report, written by the process that reloads and read by the admin API.
#[derive(Debug, Default)]
pub struct Reloads {
    last: parking_lot::Mutex<ReloadReport>,
    events: parking_lot::Mutex<VecDeque<EventRecord>>,
}

impl Reloads {
    /// Records the end of a reload set off by `trigger` (`SIGHUP`, `file changed`).
    pub fn record(&self, trigger: &'static str, result: ReloadResult, problems: Vec<String>) {
        let outcome = match result {
            ReloadResult::Applied | ReloadResult::None => "applied",
            ReloadResult::Partial => "partly applied",
            ReloadResult::Failed => "failed",
        };
        let mut detail = outcome.to_owned();
        for (i, p) in problems.iter().take(QUOTED).enumerate() {
            detail.push_str(if i == 0 { ": " } else { "; " });
            detail.push_str(p);
        }
        if problems.len() > QUOTED {
            detail.push_str(&format!("; {} more", problems.len() - QUOTED));
        }
        {
            let mut events = self.events.lock();
            if events.len() == EVENTS {
                events.pop_front();
            }
            events.push_back(EventRecord {
                time_ms: millis(std::time::SystemTime::now()),
                upstream: String::new(),
                backend: String::new(),
                kind: "reload",
                detail,
                by: Some(trigger),
            });
        }
        let mut last = self.last.lock();
        last.generation += 1;
        last.result = result;
        last.trigger = trigger.to_owned();
        last.problems = problems;
    }

    /// The reload events kept, oldest first.
    pub fn events(&self) -> Vec<EventRecord> {
        self.events.lock().iter().cloned().collect()
    }

    /// The last reload, with this process's id.
    pub fn report(&self) -> ReloadReport {
        ReloadReport {
            pid: std::process::id(),
            ..self.last.lock().clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reload_moves_the_generation_and_replaces_the_result() {
        let r = Reloads::default();
        assert_eq!(r.report().generation, 0);
        assert_eq!(r.report().result, ReloadResult::None);
        r.record("SIGHUP", ReloadResult::Failed, vec!["f:1:1: bad".into()]);
        r.record("SIGHUP", ReloadResult::Applied, Vec::new());
        let last = r.report();
        assert_eq!((last.generation, last.result), (2, ReloadResult::Applied));
        assert!(last.problems.is_empty());
        assert_eq!(last.pid, std::process::id());
    }

    #[test]
    fn each_reload_is_an_event_with_its_trigger_and_outcome() {
        let r = Reloads::default();
        r.record("SIGHUP", ReloadResult::Failed, vec!["f:1:1: bad".into()]);
        let many = (1..=5).map(|i| format!("p{i}")).collect();
        r.record("file changed", ReloadResult::Partial, many);
        r.record("SIGHUP", ReloadResult::Applied, Vec::new());
        let seen: Vec<_> = r
            .events()
            .into_iter()
            .map(|e| (e.kind, e.by, e.detail))
            .collect();
        assert_eq!(
            seen,
            [
                ("reload", Some("SIGHUP"), "failed: f:1:1: bad".to_owned()),
                (
                    "reload",
                    Some("file changed"),
                    "partly applied: p1; p2; p3; 2 more".to_owned()
                ),
                ("reload", Some("SIGHUP"), "applied".to_owned()),
            ]
        );
        for _ in 0..EVENTS {
            r.record("SIGHUP", ReloadResult::Applied, Vec::new());
        }
        assert_eq!(r.events().len(), EVENTS, "bounded");
    }
}
