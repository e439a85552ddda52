//! The last state changes of an upstream's backends, for the dashboard's events list and
//! `/api/v1/events`: ejections, breaker transitions, health changes, drains, additions and
//! removals (whether made by health checks, traffic, a reload or the admin API: the last two,
//! DNS and etcd labelled with `by`), each with
//! its time and reason. A bounded ring: the log keeps the full history.
//!
//! Fed by the upstream's pool observer, which runs only when something changes, never per
//! request; so a short lock here costs the request path nothing.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::time::SystemTime;

use parking_lot::Mutex;
use serde::Serialize;

/// Events one upstream keeps: enough for a screen of history on a busy day, 40 KB at most.
pub const CAPACITY: usize = 256;

/// One state change.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    /// When, in milliseconds since the Unix epoch (what the page's `Date` takes).
    pub time_ms: u64,
    /// The upstream; empty (and left out) for a `reload`, which concerns them all.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub upstream: String,
    /// The backend; empty (and left out) for a `reload`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub backend: String,
    /// What happened: `health`, `breaker`, `ejected`, `reinstated`, `draining`, `enabled`,
    /// `added`, `removed`, `full_weight`, or `reload` (the configuration, see
    /// `admin::reloads`).
    pub kind: &'static str,
    /// The new state or the reason, in words: "down: status 404", "open", …
    pub detail: String,
    /// Who asked for the change, when a person or a system did rather than rondo's own
    /// checks and traffic: `admin API`, `reload`, `DNS`, `etcd`; for a `reload` event, what
    /// set it off (`SIGHUP`, `file changed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<&'static str>,
}

thread_local! {
    /// The cause of the pool changes being made on this thread now (see [`caused_by`]).
    static CAUSE: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Runs `change` (a synchronous pool mutation) with the events it raises labelled as caused
/// `by` ("admin API", "reload", "DNS"). The pool reports events synchronously from inside the
/// mutation, on the caller's thread, so the label needs no plumbing through `balance`; keep
/// `change` free of `.await` so no other task's events can be labelled.
pub fn caused_by<T>(by: &'static str, change: impl FnOnce() -> T) -> T {
    let before = CAUSE.replace(Some(by));
    let out = change();
    CAUSE.set(before);
    out
}

/// A ring of events, and when each backend's health last changed.
#[derive(Debug, Default)]
pub struct Events {
    ring: Mutex<VecDeque<EventRecord>>,
    health_changed: Mutex<HashMap<String, SystemTime>>,
}

impl Events {
    /// Records an event now.
    pub fn push(&self, upstream: &str, backend: &str, kind: &'static str, detail: String) {
        let now = SystemTime::now();
        if kind == "health" {
            self.health_changed.lock().insert(backend.to_owned(), now);
        }
        let record = EventRecord {
            time_ms: millis(now),
            upstream: upstream.to_owned(),
            backend: backend.to_owned(),
            kind,
            detail,
            by: CAUSE.get(),
        };
        let mut ring = self.ring.lock();
        if ring.len() == CAPACITY {
            ring.pop_front();
        }
        ring.push_back(record);
    }

    /// The events kept, oldest first.
    pub fn list(&self) -> Vec<EventRecord> {
        self.ring.lock().iter().cloned().collect()
    }

    /// When `backend`'s health last changed (`None`: not since start).
    pub fn health_changed(&self, backend: &str) -> Option<SystemTime> {
        self.health_changed.lock().get(backend).copied()
    }
}

/// Milliseconds since the Unix epoch.
pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_latest_events_and_health_change_times() {
        let e = Events::default();
        for i in 0..CAPACITY + 3 {
            e.push("app", "a", "breaker", format!("{i}"));
        }
        let list = e.list();
        assert_eq!(list.len(), CAPACITY);
        assert_eq!(list[0].detail, "3");
        assert!(e.health_changed("a").is_none());
        e.push("app", "a", "health", "down: status 404".into());
        assert!(e.health_changed("a").is_some());
    }

    #[test]
    fn events_raised_inside_caused_by_carry_the_cause_and_no_other() {
        let e = Events::default();
        caused_by("admin API", || {
            e.push("app", "a", "draining", String::new())
        });
        e.push("app", "a", "breaker", "open".into());
        let list = e.list();
        assert_eq!(list[0].by, Some("admin API"));
        assert_eq!(list[1].by, None);
    }
}
