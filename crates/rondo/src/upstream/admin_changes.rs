//! The admin API's changes to an upstream's membership (a backend added or removed, a weight
//! changed), kept so that they survive the next DNS re-resolution. A DNS change rebuilds the
//! pool from the file's backends and every name's records; without this record, a backend
//! added through the API to an upstream with DNS names would vanish at the next changed
//! record, and a removed one would come back. HAProxy keeps servers added on its runtime API
//! across `server-template` resolutions in the same way.
//!
//! The changes last until the next reload, which applies the file as written (as the admin
//! API's documentation promises: "a reload of the unchanged file brings back what the file
//! says", also for an upstream whose section did not change). A drain needs no record: it is
//! the backend's own state, which `Pool::update` keeps, so an unrelated reload does not end a
//! maintenance drain.

use std::collections::{BTreeMap, BTreeSet};

use balance::{BackendSpec, PoolError, Weight};

use super::Upstream;

/// What the admin API changed, applied over the file's and the names' backends.
#[derive(Debug, Default)]
pub(super) struct AdminChanges {
    /// Backends the API added, in the order it added them.
    added: Vec<BackendSpec>,
    /// Ids of file or DNS backends the API removed.
    removed: BTreeSet<String>,
    /// Weights the API set on file or DNS backends, by id.
    weights: BTreeMap<String, Weight>,
}

impl AdminChanges {
    /// `members` (the file's and the names' backends) with the changes applied: removed ones
    /// left out, changed weights set, added ones at the end (an added backend replaces a
    /// listed one of the same id, since the API was asked for it explicitly).
    pub(super) fn apply(&self, members: &mut Vec<BackendSpec>) {
        members
            .retain(|b| !self.removed.contains(&b.id) && !self.added.iter().any(|a| a.id == b.id));
        for b in members.iter_mut() {
            if let Some(w) = self.weights.get(&b.id) {
                b.weight = *w;
            }
        }
        members.extend(self.added.iter().cloned());
    }

    /// True when the admin API changed nothing since the last reload.
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.weights.is_empty()
    }

    fn added(&mut self, spec: &BackendSpec) {
        self.removed.remove(&spec.id);
        self.weights.remove(&spec.id);
        self.added.push(spec.clone());
    }

    fn removed(&mut self, id: &str) {
        let before = self.added.len();
        self.added.retain(|a| a.id != id);
        if self.added.len() == before {
            self.removed.insert(id.to_owned());
        }
        self.weights.remove(id);
    }

    fn weight(&mut self, id: &str, weight: Weight) {
        match self.added.iter_mut().find(|a| a.id == id) {
            Some(a) => a.weight = weight,
            None => {
                self.weights.insert(id.to_owned(), weight);
            }
        }
    }
}

impl Upstream {
    /// True when the admin API added, removed or re-weighted a backend since the last
    /// reload: a reload then applies the file again even where its section is unchanged.
    pub fn has_admin_changes(&self) -> bool {
        !self.discovered.lock().admin.is_empty()
    }

    /// Adds a backend for the admin API; it stays across DNS re-resolutions until a reload.
    pub fn admin_add(&self, spec: &BackendSpec) -> Result<(), PoolError> {
        let mut discovered = self.discovered.lock();
        self.pool.add(spec, self.clock.now())?;
        discovered.admin.added(spec);
        Ok(())
    }

    /// Removes a backend for the admin API (it drains); it stays out across DNS
    /// re-resolutions until a reload.
    pub fn admin_remove(&self, id: &str) -> Result<(), PoolError> {
        let mut discovered = self.discovered.lock();
        self.pool.remove(id, self.clock.now())?;
        discovered.admin.removed(id);
        Ok(())
    }

    /// Changes a backend's weight for the admin API; it stays across DNS re-resolutions until
    /// a reload.
    pub fn admin_set_weight(&self, id: &str, weight: Weight) -> Result<(), PoolError> {
        let mut discovered = self.discovered.lock();
        self.pool.set_weight(id, weight, self.clock.now())?;
        discovered.admin.weight(id, weight);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, port: u16) -> BackendSpec {
        BackendSpec::new(([127, 0, 0, 1], port).into()).id(id)
    }

    fn ids(list: &[BackendSpec]) -> Vec<(&str, f64)> {
        list.iter()
            .map(|b| (b.id.as_str(), b.weight.as_f64()))
            .collect()
    }

    #[test]
    fn added_backends_follow_the_listed_ones_and_replace_a_namesake() {
        let mut changes = AdminChanges::default();
        changes.added(&spec("extra", 9));
        changes.added(&spec("b", 7));
        let mut members = vec![spec("a", 1), spec("b", 2)];
        changes.apply(&mut members);
        assert_eq!(ids(&members), [("a", 1.0), ("extra", 1.0), ("b", 1.0)]);
        assert_eq!(members[2].address.port(), 7);
    }

    #[test]
    fn removed_and_reweighted_listed_backends_stay_so() {
        let mut changes = AdminChanges::default();
        changes.removed("a");
        let two = Weight::new(2.0).expect("a valid weight");
        changes.weight("b", two);
        let mut members = vec![spec("a", 1), spec("b", 2), spec("c", 3)];
        changes.apply(&mut members);
        assert_eq!(ids(&members), [("b", 2.0), ("c", 1.0)]);
    }

    #[test]
    fn removing_an_added_backend_forgets_it_and_hides_no_listed_one() {
        let mut changes = AdminChanges::default();
        changes.added(&spec("extra", 9));
        changes.weight("extra", Weight::new(3.0).expect("a valid weight"));
        changes.removed("extra");
        let mut members = vec![spec("a", 1)];
        changes.apply(&mut members);
        assert_eq!(ids(&members), [("a", 1.0)]);
        assert!(changes.removed.is_empty());
    }
}
