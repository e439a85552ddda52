//! Backends an upstream learns at run time rather than from its file: each source (a DNS name,
//! or etcd) publishes its whole current list, and the upstream's pool is the file's backends
//! followed by every DNS name's, or, once etcd has been read, etcd's list alone (the file is
//! only the fallback until then). Either is applied through the same `Pool::update` a reload
//! uses, so kept backends keep their state, new ones slow-start and removed ones drain.
//!
//! Each source also keeps what it last did (addresses, error, counters) for the admin API,
//! metrics and `rondo status`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use balance::BackendSpec;
use serde::{Deserialize, Serialize};

use super::admin_changes::AdminChanges;

/// What one source last did, as the admin API shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// The entry's id (by default the name as written), e.g. `app.internal:8080`.
    pub name: String,
    /// The addresses in use (the last successful resolution), empty if it never succeeded.
    pub addresses: Vec<SocketAddr>,
    /// Whether it ever resolved; until then its backends are out of the pool.
    pub resolved: bool,
    /// The last resolution's error, if it failed (the last known addresses keep serving).
    pub error: Option<String>,
    /// Resolutions that succeeded.
    pub successes: u64,
    /// Resolutions that failed.
    pub failures: u64,
}

/// The sources and their backends, by source name (ordered, so the pool's order is stable).
#[derive(Debug, Default)]
pub(super) struct Discovered {
    sources: BTreeMap<String, (Vec<BackendSpec>, SourceStatus)>,
    /// The backends etcd lists for the upstream, once it has been read.
    etcd: Option<Vec<BackendSpec>>,
    /// The admin API's changes, applied over the file's and the names' backends (on an etcd
    /// upstream the API writes to etcd instead).
    pub(super) admin: AdminChanges,
}

impl Discovered {
    /// etcd's backends once read; until then the file's followed by every DNS name's, with
    /// the admin API's changes applied.
    pub(super) fn members(&self, file: &[BackendSpec]) -> Vec<BackendSpec> {
        if let Some(etcd) = &self.etcd {
            return etcd.clone();
        }
        let mut all = file.to_vec();
        all.extend(self.sources.values().flat_map(|(b, _)| b.iter().cloned()));
        self.admin.apply(&mut all);
        all
    }

    /// Records a successful resolution; returns whether the backends changed.
    pub(super) fn succeeded(&mut self, name: &str, backends: Vec<BackendSpec>) -> bool {
        let (old, status) = self.entry(name);
        let changed = *old != backends;
        status.addresses = backends.iter().map(|b| b.address).collect();
        status.resolved = true;
        status.error = None;
        status.successes += 1;
        *old = backends;
        changed
    }

    /// Records a failed resolution (the backends stay); returns whether the error is new, so
    /// it is logged once per change.
    pub(super) fn failed(&mut self, name: &str, error: String) -> bool {
        let (_, status) = self.entry(name);
        status.failures += 1;
        let new = status.error.as_deref() != Some(error.as_str());
        status.error = Some(error);
        new
    }

    /// Forgets the sources not in `keep`; returns whether any had backends.
    pub(super) fn retain(&mut self, keep: impl Fn(&str) -> bool) -> bool {
        let before = self.sources.values().map(|(b, _)| b.len()).sum::<usize>();
        self.sources.retain(|name, _| keep(name));
        before != self.sources.values().map(|(b, _)| b.len()).sum::<usize>()
    }

    /// Records what etcd lists (`None`: the upstream no longer reads etcd); returns whether
    /// the members changed.
    pub(super) fn set_etcd(&mut self, backends: Option<Vec<BackendSpec>>) -> bool {
        let changed = self.etcd != backends;
        self.etcd = backends;
        changed
    }

    /// Every source's status.
    pub(super) fn statuses(&self) -> Vec<SourceStatus> {
        self.sources.values().map(|(_, s)| s.clone()).collect()
    }

    fn entry(&mut self, name: &str) -> &mut (Vec<BackendSpec>, SourceStatus) {
        self.sources.entry(name.to_owned()).or_insert_with(|| {
            (
                Vec::new(),
                SourceStatus {
                    name: name.to_owned(),
                    ..SourceStatus::default()
                },
            )
        })
    }
}
