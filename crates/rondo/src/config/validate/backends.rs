//! `backends = [{ address, weight, backup, max_connections, id }]`: the servers of an
//! upstream, each with a unique id.

use std::collections::HashMap;
use std::num::NonZeroU32;

use balance::{BackendSpec, Weight};

use super::Validator;
use crate::config::defaults;
use crate::config::model::NamedBackend;
use crate::config::raw::BackendEntry;
use toml::Spanned;

impl Validator<'_> {
    /// The backends given by address; those given by DNS name go to `named`.
    pub(super) fn backends(
        &mut self,
        raw: &[Spanned<BackendEntry>],
        upstream: &str,
        named: &mut Vec<NamedBackend>,
    ) -> Vec<BackendSpec> {
        let mut ids = HashMap::new();
        let mut specs = Vec::new();
        for b in raw {
            let b = &b.get_ref().0;
            let target = crate::config::named::dns_target(b.address.get_ref().trim());
            let address = match target {
                Some(_) => None,
                None => match self.address(&b.address, "address") {
                    // Port 0 means "any port" to a listener; nothing can be reached there.
                    Some(a) if a.port() == 0 => self.fail(
                        b.address.span(),
                        format!("backend `address` \"{a}\" has port 0, where nothing listens: give the port the backend serves on"),
                    ),
                    address => address,
                },
            };
            let weight = match &b.weight {
                None => Some(defaults::WEIGHT),
                Some(w) => match Weight::new(*w.get_ref()) {
                    Ok(weight) => Some(weight),
                    Err(e) => self.fail(w.span(), e.to_string()),
                },
            };
            let max_connections = b
                .max_connections
                .as_ref()
                .and_then(|m| self.int(m, "max_connections", 1..=i64::from(u32::MAX)))
                .and_then(|n| u32::try_from(n).ok())
                .and_then(NonZeroU32::new);
            let (id, span, hint) = match &b.id {
                Some(id) if id.get_ref().is_empty() => {
                    self.error(Some(id.span()), "backend `id` is empty");
                    (String::new(), id.span(), "")
                }
                Some(id) => (id.get_ref().clone(), id.span(), ""),
                None => (
                    b.address.get_ref().trim().to_owned(),
                    b.address.span(),
                    "; give one of them a distinct `id`",
                ),
            };
            let what = format!("backend id `{{}}` in upstream `{upstream}`");
            self.unique(&mut ids, &id, span, &what, hint);
            let backup = b.backup.unwrap_or(defaults::BACKUP);
            if let (Some(target), Some(weight)) = (target, weight) {
                named.push(NamedBackend {
                    id: id.clone(),
                    target,
                    weight,
                    backup,
                    max_connections,
                });
            }
            if let (Some(address), Some(weight)) = (address, weight) {
                specs.push(BackendSpec {
                    id,
                    address,
                    weight,
                    backup,
                    max_connections,
                });
            }
        }
        specs
    }
}
