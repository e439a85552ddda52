//! Applying a new, already validated configuration to a running balancer without dropping a
//! request.

use super::Running;
use crate::config::Config;

/// What [`Running::reload`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Upstreams whose changes were applied.
    pub upstreams: Vec<String>,
    /// Listeners started, changed or stopped.
    pub listeners: Vec<String>,
    /// Changes that need a restart, one sentence each; the old configuration of those parts
    /// keeps serving.
    pub refused: Vec<String>,
}

impl Running {
    /// Applies a new, already validated configuration without dropping a request.
    ///
    /// Every upstream present in both configurations is updated in place
    /// ([`Upstream::reload`](crate::upstream::Upstream::reload)): kept backends keep their
    /// health, breaker, counters, in-flight requests and the rotation's position; removed ones
    /// drain; new ones slow-start; the per-request settings (tries, timeouts, keep-alive,
    /// health checks…) are swapped.
    ///
    /// Listeners are started, restarted with new settings or stopped to match the new file.
    ///
    /// What needs a restart is refused and listed in [`Reloaded::refused`], and the old
    /// configuration of that part keeps serving: adding or removing upstreams (and a listener
    /// that would need a new one), `workers`, `admin`, `access_log`, `shutdown_grace`, and an
    /// upstream's `queue_size` and `priority_header`.
    pub fn reload(&self, new: &Config) -> Reloaded {
        let mut applied = self.applied.lock();
        let mut report = Reloaded::default();
        let upstreams = self.upstreams();
        for l in &new.listeners {
            if applied.listener(&l.name) == Some(l) {
                // Same settings, but the certificate files may have been renewed.
                if let Err(e) = self.reload_certificates(l) {
                    report.refused.push(format!("{e:#}"));
                }
                continue;
            }
            match self.apply_listener(l, &upstreams, applied.access_log) {
                Ok(()) => {
                    report.listeners.push(l.name.clone());
                    match applied.listeners.iter_mut().find(|a| a.name == l.name) {
                        Some(slot) => *slot = l.clone(),
                        None => applied.listeners.push(l.clone()),
                    }
                }
                Err(e) => report
                    .refused
                    .push(format!("{e:#} (adding upstreams needs a restart)")),
            }
        }
        let gone: Vec<String> = applied
            .listeners
            .iter()
            .filter(|l| new.listener(&l.name).is_none())
            .map(|l| l.name.clone())
            .collect();
        for name in gone {
            self.remove_listener(&name);
            applied.listeners.retain(|l| l.name != name);
            report.listeners.push(name);
        }
        let mut refuse = |what: String| report.refused.push(what);
        for u in &applied.upstreams {
            if new.upstream(&u.name).is_none() {
                refuse(format!(
                    "upstream `{}` is gone: removing upstreams needs a restart; it keeps serving",
                    u.name
                ));
            }
        }
        let mut changed_upstreams = Vec::new();
        for u in &new.upstreams {
            let Some(live) = self.upstream(&u.name) else {
                refuse(format!(
                    "upstream `{}` is new: adding upstreams needs a restart",
                    u.name
                ));
                continue;
            };
            // CA and client certificate files are re-read even when the file is unchanged.
            match super::upstream_tls(u) {
                Ok(tls) => live.set_tls(tls),
                Err(e) => {
                    refuse(format!("{e:#}; it keeps its current settings"));
                    continue;
                }
            }
            if applied.upstream(&u.name) == Some(u) {
                continue;
            }
            match live.reload(u.clone()) {
                Ok(ignored) => {
                    for key in ignored {
                        refuse(format!(
                            "upstream `{}`: changing `{key}` needs a restart",
                            u.name
                        ));
                    }
                    report.upstreams.push(u.name.clone());
                    changed_upstreams.push(live.config());
                }
                Err(e) => refuse(format!("upstream `{}`: {e}", u.name)),
            }
        }
        for (what, differs) in [
            ("workers", applied.workers != new.workers),
            ("admin", applied.admin != new.admin),
            ("access_log", applied.access_log != new.access_log),
            (
                "shutdown_grace",
                applied.shutdown_grace != new.shutdown_grace,
            ),
        ] {
            if differs {
                refuse(format!("changing `{what}` needs a restart"));
            }
        }
        for u in changed_upstreams {
            if let Some(slot) = applied.upstreams.iter_mut().find(|a| a.name == u.name) {
                *slot = (*u).clone();
            }
        }
        report
    }
}
