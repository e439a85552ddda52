//! Backends by DNS name: an upstream's `address = "app.internal:8080"` (A/AAAA) or
//! `"_http._tcp.app.internal"` (SRV) entries, resolved with hickory-resolver and re-resolved
//! when the records' TTL runs out, bounded by `[resolver] min_ttl`/`max_ttl` (Envoy's
//! `STRICT_DNS` with `respect_dns_ttl`, nginx's `server … resolve`).
//!
//! Every address a name resolves to is a backend with the entry's weight (kept per record, not
//! split: a record is a server, as in nginx, HAProxy and Envoy). The list is published through
//! [`Discovered`](super::discovered) and applied with the same `Pool::update` a reload uses.
//! A failed resolution keeps the last known addresses, is logged once per change of error and
//! counted; a name that never resolved has no backends, with its error in the stats.
//!
//! One loop per upstream on the control thread; hickory's own cache is off, so each due name
//! is asked again and a changed record is seen at the next refresh.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use balance::{BackendSpec, Weight};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig as Servers};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use tokio::time::Instant;

use super::Upstream;
use crate::config::{DnsTarget, NamedBackend, ResolverConfig};

/// Resolves backend names: the name servers and the TTL bounds of `[resolver]`.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
    min_ttl: Duration,
    max_ttl: Duration,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("min_ttl", &self.min_ttl)
            .field("max_ttl", &self.max_ttl)
            .finish_non_exhaustive()
    }
}

/// A resolver that cannot be built (an unreadable `/etc/resolv.conf`).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up DNS resolution: {0}")]
pub struct ResolverError(String);

/// One resolved address: where, and the SRV record's weight and priority rank (A/AAAA: 1, 0).
struct Found {
    address: SocketAddr,
    weight: u16,
    backup: bool,
}

impl Resolver {
    /// A resolver for `config`: its name servers, or the system's when it lists none.
    pub fn new(config: &ResolverConfig) -> Result<Resolver, ResolverError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if config.nameservers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| ResolverError(e.to_string()))?
        } else {
            let servers = config
                .nameservers
                .iter()
                .map(|s| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = s.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = s.port();
                    NameServerConfig::new(s.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(Servers::from_name_servers(servers), provider)
        };
        let options = builder.options_mut();
        // rondo schedules its own refreshes from the TTL; a cache would hide changes.
        options.cache_size = 0;
        // A silent server costs a name at most 2 × 2 s before the last known addresses are
        // kept and the failure counted (the system default, 5 s × 2, would hold every other
        // name of the upstream behind it for 10 s).
        options.attempts = 2;
        options.timeout = Duration::from_secs(2);
        let inner = builder.build().map_err(|e| ResolverError(e.to_string()))?;
        Ok(Resolver {
            inner,
            min_ttl: config.min_ttl,
            max_ttl: config.max_ttl,
        })
    }

    /// The addresses `target` stands for now, and how long they are valid (the smallest TTL,
    /// within the bounds).
    async fn resolve(&self, target: &DnsTarget) -> Result<(Vec<Found>, Duration), String> {
        let (found, ttl) = match target {
            DnsTarget::Host { host, port } => self.host(host, *port, 1, false).await?,
            DnsTarget::Srv { name } => {
                let lookup = self
                    .inner
                    .srv_lookup(name.as_str())
                    .await
                    .map_err(|e| e.to_string())?;
                let records: Vec<_> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::SRV(srv) => Some((srv.clone(), r.ttl)),
                        _ => None,
                    })
                    .collect();
                let best = records.iter().map(|(s, _)| s.priority).min();
                let mut ttl = records.iter().map(|(_, t)| *t).min().unwrap_or(0);
                let mut found = Vec::new();
                for (srv, _) in &records {
                    let target = srv.target.to_ascii();
                    let backup = Some(srv.priority) != best;
                    let (more, t) = self.host(&target, srv.port, srv.weight, backup).await?;
                    ttl = ttl.min(t);
                    found.extend(more);
                }
                (found, ttl)
            }
        };
        let ttl = Duration::from_secs(u64::from(ttl)).clamp(self.min_ttl, self.max_ttl);
        Ok((found, ttl))
    }

    /// The A/AAAA records of `host`, each on `port`, and their smallest TTL.
    async fn host(
        &self,
        host: &str,
        port: u16,
        weight: u16,
        backup: bool,
    ) -> Result<(Vec<Found>, u32), String> {
        let lookup = self
            .inner
            .lookup_ip(host)
            .await
            .map_err(|e| e.to_string())?;
        let ttl = lookup
            .as_lookup()
            .answers()
            .iter()
            .map(|r| r.ttl)
            .min()
            .unwrap_or(0);
        let found = lookup
            .iter()
            .map(|ip| Found {
                address: SocketAddr::new(ip, port),
                weight,
                backup,
            })
            .collect();
        Ok((found, ttl))
    }
}

/// The backends for `entry` from what its name resolved to: id `{id}@{address}`, the entry's
/// settings, an SRV record's weight multiplying the entry's (capped at the largest weight).
fn backends(entry: &NamedBackend, found: &[Found]) -> Vec<BackendSpec> {
    let mut out: Vec<BackendSpec> = Vec::new();
    for f in found {
        if out.iter().any(|b| b.address == f.address) {
            continue;
        }
        let weight = if f.weight == 1 {
            entry.weight
        } else {
            // An SRV weight of 0 means "rarely"; the smallest share rondo has is 1.
            let scaled =
                f64::from(entry.weight.thousandths()) / 1000.0 * f64::from(f.weight.max(1));
            Weight::new(scaled.min(f64::from(balance::MAX_WEIGHT))).unwrap_or(entry.weight)
        };
        out.push(BackendSpec {
            id: format!("{}@{}", entry.id, f.address),
            address: f.address,
            weight,
            backup: entry.backup || f.backup,
            max_connections: entry.max_connections,
        });
    }
    out
}

impl Upstream {
    /// Resolves the upstream's named backends when due and applies what they resolve to,
    /// until `stop` resolves. A reload that changes the named entries wakes it.
    pub async fn run_dns(self: Arc<Self>, resolver: Resolver, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut due: Vec<(String, Instant)> = Vec::new();
        loop {
            let named = self.config().named.clone();
            due.retain(|(id, _)| named.iter().any(|n| &n.id == id));
            if self
                .discovered
                .lock()
                .retain(|id| named.iter().any(|n| n.id == id))
            {
                self.apply_discovered("DNS");
            }
            let now = Instant::now();
            for entry in &named {
                let next = due.iter().find(|(id, _)| *id == entry.id).map(|(_, t)| *t);
                if next.is_some_and(|t| t > now) {
                    continue;
                }
                let wait = self.resolve_entry(&resolver, entry).await;
                due.retain(|(id, _)| *id != entry.id);
                due.push((entry.id.clone(), Instant::now() + wait));
            }
            let next = due.iter().map(|(_, t)| *t).min();
            let sleep = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = &mut stop => return,
                () = sleep => {}
                // A reload may have changed an entry's weight or flags: resolve all again.
                () = self.named_changed.notified() => due.clear(),
            }
        }
    }

    /// Resolves one entry and applies the result; returns when to resolve it again.
    async fn resolve_entry(&self, resolver: &Resolver, entry: &NamedBackend) -> Duration {
        let upstream = self.name.as_str();
        match resolver.resolve(&entry.target).await {
            Ok((found, ttl)) => {
                let list = backends(entry, &found);
                let changed = self.discovered.lock().succeeded(&entry.id, list);
                if changed {
                    let addresses: Vec<String> =
                        found.iter().map(|f| f.address.to_string()).collect();
                    tracing::info!(
                        upstream,
                        name = entry.id.as_str(),
                        ?addresses,
                        "name resolved"
                    );
                    self.apply_discovered("DNS");
                }
                ttl
            }
            Err(error) => {
                let new = self.discovered.lock().failed(&entry.id, error.clone());
                if new {
                    tracing::warn!(
                        upstream,
                        name = entry.id.as_str(),
                        error,
                        "name not resolved: the last known addresses keep serving"
                    );
                }
                resolver.min_ttl
            }
        }
    }
}

/// For `rondo check`: resolves every backend name of `config` once and returns one line per
/// name that does not resolve (empty: all do). A warning by default, since the machine
/// running `check` may not see the DNS the balancer will.
pub fn check_names(config: &crate::config::Config) -> Vec<String> {
    let named: Vec<(&str, &NamedBackend)> = config
        .upstreams
        .iter()
        .flat_map(|u| u.named.iter().map(move |n| (u.name.as_str(), n)))
        .collect();
    if named.is_empty() {
        return Vec::new();
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return vec!["cannot start a runtime to resolve backend names".to_owned()];
    };
    rt.block_on(async {
        let resolver = match Resolver::new(&config.resolver) {
            Ok(r) => r,
            Err(e) => return vec![e.to_string()],
        };
        let mut problems = Vec::new();
        for (upstream, entry) in named {
            if let Err(e) = resolver.resolve(&entry.target).await {
                problems.push(format!(
                    "upstream `{upstream}`: backend `{}` does not resolve: {e}",
                    entry.id
                ));
            }
        }
        problems
    })
}
