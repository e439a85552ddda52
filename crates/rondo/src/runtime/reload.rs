//! Applying a new, already validated configuration to a running balancer without dropping a
//! request.
//!
//! | change | what happens |
//! |---|---|
//! | an upstream's backends, weights, algorithm, tries, timeouts, health checks… | applied in place ([`Upstream::reload`]): kept backends keep their state |
//! | an `[[upstreams]]` added | built, its timer and health-check loops started on the control thread |
//! | an `[[upstreams]]` removed | its listeners move first; then its loops stop and it leaves the admin API and metrics; requests in flight finish |
//! | a listener added, changed, removed | started, restarted on the same socket, or stopped; it may use an upstream added by the same reload; the old version's open connections finish their request and close (HTTP/2: GOAWAY) |
//! | `access_log` | every listener restarted with the new setting |
//! | `[admin]` | a new token serves the next request; a new `listen` address is bound, then the old one closed |
//! | `workers` | refused: worker threads are started once, each with its own event loop and connection pool |
//! | `shutdown_grace` | refused: each worker thread received it at start |
//! | `max_memory` | refused: the memory watch starts with the process |
//! | `[resolver]` | refused: every upstream's DNS loop holds the resolver |
//! | `[discovery.etcd]` | refused: one watch per process, started with it |
//! | an upstream's `discovery` | applied: it takes etcd's backends (or, set off, the file's) at once |
//! | an upstream's `queue_size`, `priority_header` | refused: the wait queue is built once, with requests waiting in it |
//!
//! A refused change is reported in one sentence and the old value keeps serving; the rest of
//! the file applies.

use std::sync::Arc;

use super::{Running, State};
use crate::config::Config;
use crate::upstream::Upstream;

/// What [`Running::reload`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Upstreams added, changed or removed.
    pub upstreams: Vec<String>,
    /// Listeners started, changed or stopped.
    pub listeners: Vec<String>,
    /// Whether a changed `[admin]` was applied.
    pub admin: bool,
    /// Changes that were not applied, one sentence each; the old configuration of those parts
    /// keeps serving.
    pub refused: Vec<String>,
}

impl Running {
    /// Applies a new, already validated configuration without dropping a request (see the
    /// module documentation for what each change does).
    ///
    /// Kept backends keep their health, breaker, counters, in-flight requests and the
    /// rotation's position; removed ones drain; new ones slow-start.
    pub fn reload(&self, new: &Config) -> Reloaded {
        let mut state = self.state.lock();
        let mut report = Reloaded::default();
        let mut live = self.upstreams.all().to_vec();
        self.add_and_update_upstreams(&mut state, &mut live, new, &mut report);
        // Listeners may now route to the new upstreams; the admin API shows them.
        self.upstreams.store(live.clone());
        self.apply_listeners(&mut state, &live, new, &mut report);
        self.remove_upstreams(&mut state, &mut live, new, &mut report);
        self.upstreams.store(live);
        if let Some(etcd) = &state.etcd {
            // Upstreams that now read etcd take its backends at once.
            etcd.refresh();
        }
        if state.applied.admin != new.admin {
            match state.admin.reconfigure(&self.control, &new.admin) {
                Ok(()) => {
                    state.applied.admin = new.admin.clone();
                    report.admin = true;
                }
                Err(e) => report
                    .refused
                    .push(format!("{e:#}; the admin API stays where it was")),
            }
        }
        if state.applied.workers != new.workers {
            report.refused.push(format!(
                "changing `workers` ({} → {}) needs a restart: worker threads are started once",
                state.applied.workers, new.workers
            ));
        }
        if state.applied.resolver != new.resolver {
            report.refused.push(
                "changing `[resolver]` needs a restart: every upstream's DNS loop holds the resolver"
                    .to_owned(),
            );
        }
        if state.applied.etcd != new.etcd {
            report.refused.push(
                "changing `[discovery.etcd]` needs a restart: its watch is started once".to_owned(),
            );
        }
        if state.applied.max_memory != new.max_memory {
            report.refused.push(
                "changing `max_memory` needs a restart: the memory watch starts with the process"
                    .to_owned(),
            );
        }
        if state.applied.shutdown_grace != new.shutdown_grace {
            report.refused.push(format!(
                "changing `shutdown_grace` ({:?} → {:?}) needs a restart: each worker thread received it at start",
                state.applied.shutdown_grace, new.shutdown_grace
            ));
        }
        report
    }

    /// Builds the upstreams new in `new` (starting their loops) and updates the kept ones.
    fn add_and_update_upstreams(
        &self,
        state: &mut State,
        live: &mut Vec<Arc<Upstream>>,
        new: &Config,
        report: &mut Reloaded,
    ) {
        for u in &new.upstreams {
            let Some(kept) = live.iter().find(|x| x.name() == u.name) else {
                let built = Upstream::new(u.clone(), self.clock)
                    .map_err(anyhow::Error::from)
                    .and_then(|up| {
                        up.set_tls(super::upstream_tls(u)?);
                        Ok(up)
                    });
                match built {
                    Ok(up) => {
                        let up = Arc::new(up);
                        let loops = self.control.spawn_upstream(&up, state.resolver.as_ref());
                        state.loops.insert(u.name.clone(), loops);
                        live.push(up);
                        state.applied.upstreams.push(u.clone());
                        report.upstreams.push(u.name.clone());
                    }
                    Err(e) => report
                        .refused
                        .push(format!("upstream `{}` not added: {e}", u.name)),
                }
                continue;
            };
            // CA and client certificate files are re-read even when the file is unchanged.
            match super::upstream_tls(u) {
                Ok(tls) => kept.set_tls(tls),
                Err(e) => {
                    report
                        .refused
                        .push(format!("{e:#}; it keeps its current settings"));
                    continue;
                }
            }
            if state.applied.upstream(&u.name) == Some(u) && !kept.has_admin_changes() {
                continue;
            }
            match kept.reload(u.clone()) {
                Ok(ignored) => {
                    for key in ignored {
                        report.refused.push(format!(
                            "upstream `{}`: changing `{key}` needs a restart: the wait queue is built once",
                            u.name
                        ));
                    }
                    let in_effect = (*kept.config()).clone();
                    if let Some(slot) = state
                        .applied
                        .upstreams
                        .iter_mut()
                        .find(|a| a.name == u.name)
                    {
                        *slot = in_effect;
                    }
                    report.upstreams.push(u.name.clone());
                }
                Err(e) => report.refused.push(format!("upstream `{}`: {e}", u.name)),
            }
        }
    }

    /// Starts, restarts or stops listeners to match `new` (all of them when `access_log`
    /// changed), routing to the `live` upstreams.
    fn apply_listeners(
        &self,
        state: &mut State,
        live: &[Arc<Upstream>],
        new: &Config,
        report: &mut Reloaded,
    ) {
        let mut access_log_changed = state.applied.access_log != new.access_log;
        let mut observe = state.observe.clone();
        if access_log_changed {
            match crate::access_log::AccessLog::open(&new.access_log) {
                Ok(log) => observe.access_log = log,
                Err(e) => {
                    access_log_changed = false;
                    report
                        .refused
                        .push(format!("`access_log`: {e}; the old setting keeps serving"));
                }
            }
        }
        let mut all_applied = true;
        for l in &new.listeners {
            if !access_log_changed && state.applied.listener(&l.name) == Some(l) {
                // Same settings, but the certificate files may have been renewed.
                if let Err(e) = self.reload_certificates(l) {
                    report.refused.push(format!("{e:#}"));
                }
                continue;
            }
            match self.apply_listener(l, live, &observe) {
                Ok(()) => {
                    report.listeners.push(l.name.clone());
                    match state
                        .applied
                        .listeners
                        .iter_mut()
                        .find(|a| a.name == l.name)
                    {
                        Some(slot) => *slot = l.clone(),
                        None => state.applied.listeners.push(l.clone()),
                    }
                }
                Err(e) => {
                    all_applied = false;
                    report.refused.push(format!("{e:#}"));
                    if state.applied.listener(&l.name).is_none() {
                        // A new listener that could not start has no counters to show.
                        observe.metrics.forget_listener(&l.name);
                    }
                }
            }
        }
        if access_log_changed {
            if all_applied {
                state.applied.access_log = new.access_log.clone();
                state.reopen = self.control.reopen_on_sigusr1(observe.access_log.clone());
                state.observe = observe;
            } else {
                report.refused.push(
                    "`access_log` applies to the listeners restarted above; the others keep the old setting"
                        .to_owned(),
                );
            }
        }
        let gone: Vec<String> = state
            .applied
            .listeners
            .iter()
            .filter(|l| new.listener(&l.name).is_none())
            .map(|l| l.name.clone())
            .collect();
        for name in gone {
            self.remove_listener(&name);
            state.observe.metrics.forget_listener(&name);
            state.applied.listeners.retain(|l| l.name != name);
            report.listeners.push(name);
        }
    }

    /// Removes the upstreams gone from `new`, unless a listener still routes to one (its own
    /// change was refused): then it keeps serving.
    fn remove_upstreams(
        &self,
        state: &mut State,
        live: &mut Vec<Arc<Upstream>>,
        new: &Config,
        report: &mut Reloaded,
    ) {
        let gone: Vec<String> = state
            .applied
            .upstreams
            .iter()
            .filter(|u| new.upstream(&u.name).is_none())
            .map(|u| u.name.clone())
            .collect();
        for name in gone {
            let user = state
                .applied
                .listeners
                .iter()
                .find(|l| l.upstream == name || l.routes.iter().any(|r| r.upstream == name));
            if let Some(l) = user {
                report.refused.push(format!(
                    "upstream `{name}` is still used by listener `{}`, whose change was refused; it keeps serving",
                    l.name
                ));
                continue;
            }
            live.retain(|u| u.name() != name);
            // Dropping the stopper ends its timer and health-check loops.
            state.loops.remove(&name);
            state.observe.metrics.forget_upstream(&name);
            state.applied.upstreams.retain(|u| u.name != name);
            report.upstreams.push(name);
        }
    }
}
