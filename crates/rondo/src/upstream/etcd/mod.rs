//! A fleet sharing its backends through etcd (`[discovery.etcd]`, `discovery = "etcd"` on an
//! upstream): every rondo instance reads the keys under `{prefix}/upstreams/`, then watches
//! them from the revision after that read, so a put or a delete reaches every instance in
//! milliseconds and is applied through the same `Pool::update` a reload uses (kept backends
//! keep their state, new ones slow-start, removed ones drain). Each instance keeps its own
//! health checks, breakers and counters (as Envoy does with its EDS membership).
//!
//! When etcd cannot be reached the last known backends keep serving; the loop retries with
//! capped exponential backoff and jitter, and stats, metrics, the dashboard and `rondo status`
//! say "stale since …". On return it reads the whole prefix again and watches from that read's
//! revision: no change is missed (the read holds every change made meanwhile) and no backend
//! flaps (an unchanged backend is kept by `Pool::update`). A watch whose revision was compacted
//! away is handled the same way.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`Etcd`]: the membership, its status, the read-and-watch loop |
//! | `member.rs` | the key schema and the JSON value (a contract with operators) |
//! | `gateway.rs` | etcd's v3 JSON gateway over hyper (why not gRPC: see there) |
//! | `write.rs` | admin API changes written to etcd |

mod gateway;
pub mod member;
mod write;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Notify, watch};

pub use gateway::GatewayError;
pub use member::{Keys, Member};
pub use write::WriteError;

use super::health::Jitter;
use super::{Upstream, UpstreamSet};
use crate::config::{Discovery, EtcdConfig};
use gateway::Gateway;

/// First retry after a failure; doubled at each failure in a row…
const RETRY_FIRST: Duration = Duration::from_millis(100);

/// …up to this (etcd's own clients cap their backoff in seconds too): an outage of minutes
/// costs each instance a request every few seconds, and a returning etcd is seen within 5 s.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// How often a watching instance checks that etcd still answers. A watch over a connection
/// that a partition silently cut never ends by itself; a probe that gets no answer within
/// the gateway's 3 s call timeout ends it, so an instance knows it is stale within 8 s.
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// The state of the membership, as stats, metrics, the dashboard and `rondo status` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EtcdStatus {
    /// The client URLs, as configured.
    pub endpoints: Vec<String>,
    /// The key prefix.
    pub prefix: String,
    /// `connecting` (never read yet: the file's backends serve), `synced` (read and watching)
    /// or `stale` (etcd unreachable: the last known backends serve).
    pub state: String,
    /// The etcd revision the membership reflects (0 before the first read).
    pub revision: i64,
    /// Since when the membership may be out of date, milliseconds since the Unix epoch.
    pub stale_since_ms: Option<u64>,
    /// Why, while stale.
    pub error: Option<String>,
    /// Keys whose value was refused (the backend keeps its last good value, or is left out).
    pub refused: Vec<RefusedKey>,
    /// Whole reads of the prefix that succeeded.
    pub reads: u64,
    /// Attempts that failed (connect, read or a broken watch).
    pub failures: u64,
}

/// A key under the prefix whose value rondo could not use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedKey {
    /// The whole key.
    pub key: String,
    /// What is wrong with it.
    pub error: String,
}

/// What ends a read-and-watch session.
enum Lost {
    /// The watch's revision was compacted away: read again at once.
    Compacted(i64),
    /// etcd could not be reached or answered with an error: read again after a backoff.
    Failed(GatewayError),
}

impl From<GatewayError> for Lost {
    fn from(e: GatewayError) -> Lost {
        Lost::Failed(e)
    }
}

/// The membership as etcd last said it.
#[derive(Debug, Default)]
struct Known {
    /// Upstream → backend id → its member.
    members: BTreeMap<String, BTreeMap<String, Member>>,
    /// Key → why its value was refused.
    refused: BTreeMap<String, String>,
}

/// The etcd cluster of `[discovery.etcd]`, shared by the loop that reads it, the upstreams it
/// feeds and the admin API that writes to it.
#[derive(Debug)]
pub struct Etcd {
    keys: Keys,
    gateway: Gateway,
    known: parking_lot::Mutex<Known>,
    status: parking_lot::Mutex<EtcdStatus>,
    /// The revision applied to the upstreams; the admin API waits on it after a write.
    applied: watch::Sender<i64>,
    /// Wakes the loop to apply the membership again (a reload changed the upstreams).
    refresh: Notify,
}

impl Etcd {
    /// A client of `config`'s cluster; nothing is read until [`Etcd::run`].
    pub fn new(config: &EtcdConfig) -> Etcd {
        Etcd {
            keys: Keys::new(&config.prefix),
            gateway: Gateway::new(config.endpoints.clone()),
            known: parking_lot::Mutex::default(),
            status: parking_lot::Mutex::new(EtcdStatus {
                endpoints: config.endpoints.iter().map(|e| e.url.clone()).collect(),
                prefix: config.prefix.clone(),
                state: "connecting".to_owned(),
                revision: 0,
                stale_since_ms: None,
                error: None,
                refused: Vec::new(),
                reads: 0,
                failures: 0,
            }),
            applied: watch::channel(0).0,
            refresh: Notify::new(),
        }
    }

    /// The membership's state now.
    pub fn status(&self) -> EtcdStatus {
        let mut status = self.status.lock().clone();
        status.refused = self
            .known
            .lock()
            .refused
            .iter()
            .map(|(key, error)| RefusedKey {
                key: key.clone(),
                error: error.clone(),
            })
            .collect();
        status
    }

    /// Applies the membership again to every upstream that reads etcd (after a reload).
    pub fn refresh(&self) {
        self.refresh.notify_one();
    }

    /// Reads and watches the prefix, applying every change to the upstreams of `upstreams`
    /// that read etcd, until `stop` resolves.
    pub async fn run(self: Arc<Self>, upstreams: Arc<UpstreamSet>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut failures: u32 = 0;
        let mut jitter = Jitter(super::random_seed());
        loop {
            let lost = tokio::select! {
                () = &mut stop => return,
                lost = self.session(&upstreams, &mut failures) => lost,
            };
            match lost {
                Lost::Compacted(revision) => tracing::info!(
                    compacted = revision,
                    "etcd compacted the watched revision: reading every backend again"
                ),
                Lost::Failed(e) => {
                    self.failed(&e);
                    let backoff = RETRY_FIRST
                        .saturating_mul(1 << failures.min(16))
                        .min(RETRY_MAX);
                    failures = failures.saturating_add(1);
                    // Half fixed, half random: instances that lost etcd together do not all
                    // come back in the same millisecond.
                    let wait = backoff.mul_f64(0.5 + 0.5 * jitter.next_unit());
                    tokio::select! {
                        () = &mut stop => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// One read of the whole prefix, then its watch until something breaks.
    async fn session(&self, upstreams: &UpstreamSet, failures: &mut u32) -> Lost {
        let root = self.keys.root();
        let end = member::range_end(root);
        let (kvs, mut revision) = match self.gateway.range(root, &end).await {
            Ok(read) => read,
            Err(e) => return e.into(),
        };
        self.replace(kvs);
        self.synced(revision);
        self.apply(upstreams, None);
        self.applied.send_replace(revision);
        *failures = 0;
        let mut stream = match self.gateway.watch(root, &end, revision + 1).await {
            Ok(s) => s,
            Err(e) => return e.into(),
        };
        let mut probe = tokio::time::interval(PROBE_EVERY);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        probe.tick().await;
        loop {
            tokio::select! {
                result = stream.next() => {
                    let result = match result {
                        Ok(r) => r,
                        Err(e) => return e.into(),
                    };
                    let compacted = gateway::number(&result["compact_revision"]);
                    if compacted > 0 {
                        return Lost::Compacted(compacted);
                    }
                    if result["canceled"].as_bool() == Some(true) {
                        let reason = result["cancel_reason"].as_str().unwrap_or("no reason given");
                        return Lost::Failed(GatewayError::Refused {
                            url: String::new(),
                            message: format!("etcd cancelled the watch: {reason}"),
                        });
                    }
                    let events = result["events"].as_array().map(Vec::as_slice).unwrap_or_default();
                    let touched = self.events(events);
                    revision = revision.max(gateway::number(&result["header"]["revision"]));
                    self.status.lock().revision = revision;
                    if !touched.is_empty() {
                        self.apply(upstreams, Some(&touched));
                    }
                    self.applied.send_replace(revision);
                }
                _ = probe.tick() => {
                    if let Err(e) = self.gateway.get(root).await {
                        return e.into();
                    }
                }
                () = self.refresh.notified() => self.apply(upstreams, None),
            }
        }
    }

    /// Replaces the membership with a whole read of the prefix. A key whose value is bad keeps
    /// the member it had, if any.
    fn replace(&self, kvs: Vec<gateway::Kv>) {
        let mut known = self.known.lock();
        let old = std::mem::take(&mut known.members);
        let keys: BTreeSet<String> = kvs.iter().map(|kv| kv.key.clone()).collect();
        known.refused.retain(|key, _| keys.contains(key));
        for kv in kvs {
            let (upstream, id) = match self.keys.parse(&kv.key) {
                Ok(names) => names,
                Err(e) => {
                    refuse(&mut known, &kv.key, e, false);
                    continue;
                }
            };
            let member = match Member::parse(&kv.value) {
                Ok(m) => {
                    known.refused.remove(&kv.key);
                    m
                }
                Err(e) => {
                    let kept = old.get(upstream).and_then(|m| m.get(id)).cloned();
                    refuse(&mut known, &kv.key, e, kept.is_some());
                    match kept {
                        Some(m) => m,
                        None => continue,
                    }
                }
            };
            known
                .members
                .entry(upstream.to_owned())
                .or_default()
                .insert(id.to_owned(), member);
        }
    }

    /// Applies watch events; returns the upstreams whose members changed.
    fn events(&self, events: &[Value]) -> BTreeSet<String> {
        let mut known = self.known.lock();
        let mut touched = BTreeSet::new();
        for event in events {
            let kv = gateway::kv(&event["kv"]);
            let deleted = event["type"].as_str() == Some("DELETE");
            let (upstream, id) = match self.keys.parse(&kv.key) {
                Ok(names) => names,
                Err(_) if deleted => {
                    known.refused.remove(&kv.key);
                    continue;
                }
                Err(e) => {
                    refuse(&mut known, &kv.key, e, false);
                    continue;
                }
            };
            if deleted {
                known.refused.remove(&kv.key);
                let members = known.members.entry(upstream.to_owned()).or_default();
                if members.remove(id).is_some() {
                    touched.insert(upstream.to_owned());
                }
                continue;
            }
            match Member::parse(&kv.value) {
                Ok(member) => {
                    known.refused.remove(&kv.key);
                    let members = known.members.entry(upstream.to_owned()).or_default();
                    if members.insert(id.to_owned(), member.clone()) != Some(member) {
                        touched.insert(upstream.to_owned());
                    }
                }
                Err(e) => {
                    let kept = known
                        .members
                        .get(upstream)
                        .is_some_and(|m| m.contains_key(id));
                    refuse(&mut known, &kv.key, e, kept);
                }
            }
        }
        touched
    }

    /// Gives each upstream that reads etcd its members (only those in `only`, if given).
    fn apply(&self, upstreams: &UpstreamSet, only: Option<&BTreeSet<String>>) {
        let known = self.known.lock();
        for upstream in upstreams.all().iter() {
            if upstream.config().discovery != Some(Discovery::Etcd)
                || only.is_some_and(|o| !o.contains(upstream.name()))
            {
                continue;
            }
            let none = BTreeMap::new();
            upstream.apply_etcd(known.members.get(upstream.name()).unwrap_or(&none));
        }
    }

    /// Records a successful read at `revision`.
    fn synced(&self, revision: i64) {
        let mut status = self.status.lock();
        if status.state == "stale" {
            tracing::info!(
                revision,
                "etcd reachable again: every backend read again, watching for changes"
            );
        }
        status.state = "synced".to_owned();
        status.revision = revision;
        status.stale_since_ms = None;
        status.error = None;
        status.reads += 1;
    }

    /// Records a failure: the membership is stale from now (if it was not already).
    fn failed(&self, e: &GatewayError) {
        let mut status = self.status.lock();
        status.failures += 1;
        let error = e.to_string();
        if status.state != "stale" {
            status.stale_since_ms = Some(super::events::millis(SystemTime::now()));
            status.state = "stale".to_owned();
        }
        if status.error.as_deref() != Some(error.as_str()) {
            tracing::warn!(
                error = error.as_str(),
                "etcd unreachable: the last known backends keep serving; retrying"
            );
            status.error = Some(error);
        }
    }

    /// Waits (at most `limit`) until the revision `revision` is applied locally, so an admin
    /// change answered "done" shows in this instance's stats at once.
    async fn wait_applied(&self, revision: i64, limit: Duration) {
        let mut rx = self.applied.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|r| *r >= revision)).await;
    }
}

/// Records a refused key, and logs it unless the same error was logged for it already (a
/// re-read after an outage does not repeat every known problem).
fn refuse(known: &mut Known, key: &str, error: String, kept: bool) {
    if known.refused.get(key) == Some(&error) {
        return;
    }
    let consequence = if kept {
        "the backend keeps its last good value"
    } else {
        "no backend for it"
    };
    tracing::warn!(
        key,
        error = error.as_str(),
        "etcd value refused: {consequence}"
    );
    known.refused.insert(key.to_owned(), error);
}

impl Upstream {
    /// Takes etcd's members as the upstream's backends (the file's fallback list leaves
    /// the pool), and sets each one's drain flag as etcd says.
    fn apply_etcd(&self, members: &BTreeMap<String, Member>) {
        let specs = members.iter().map(|(id, m)| m.spec(id)).collect();
        if self.discovered.lock().set_etcd(Some(specs)) {
            self.apply_discovered("etcd");
        }
        let now = self.clock.now();
        super::events::caused_by("etcd", || {
            for (id, member) in members {
                let _ = if member.drain {
                    self.pool.drain(id, now)
                } else {
                    self.pool.enable(id, now)
                };
            }
        });
    }
}
