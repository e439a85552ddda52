//! The live set of upstreams, shared by the runtime (which changes it on reload) and its
//! readers (the admin API, metrics, the dashboard): one `ArcSwap` of an immutable list, so a
//! reader takes a consistent list with one load and no lock, and an upstream added or removed
//! by a reload appears or disappears everywhere at once.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::Upstream;

/// Every live upstream, in configuration order.
#[derive(Debug, Default)]
pub struct UpstreamSet(ArcSwap<Vec<Arc<Upstream>>>);

impl UpstreamSet {
    /// A set holding `upstreams`.
    pub fn new(upstreams: Vec<Arc<Upstream>>) -> UpstreamSet {
        UpstreamSet(ArcSwap::from_pointee(upstreams))
    }

    /// The current list; it does not change under the caller.
    pub fn all(&self) -> Arc<Vec<Arc<Upstream>>> {
        self.0.load_full()
    }

    /// An upstream by name.
    pub fn get(&self, name: &str) -> Option<Arc<Upstream>> {
        self.0.load().iter().find(|u| u.name() == name).cloned()
    }

    /// Replaces the whole list (the runtime does, on reload).
    pub fn store(&self, upstreams: Vec<Arc<Upstream>>) {
        self.0.store(Arc::new(upstreams));
    }
}
