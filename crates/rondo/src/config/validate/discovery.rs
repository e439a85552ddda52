//! `[discovery.etcd]` and an upstream's `discovery = "etcd"`: the etcd cluster a fleet shares
//! its backends through, and which upstreams read it.

use super::Validator;
use crate::config::defaults;
use crate::config::model::{Discovery, EtcdConfig, EtcdEndpoint};
use crate::config::raw::{RawDiscovery, RawUpstream};
use toml::Spanned;

impl Validator<'_> {
    /// `[discovery]`: the etcd cluster, if one is configured.
    pub(super) fn discovery(&mut self, raw: Option<&Spanned<RawDiscovery>>) -> Option<EtcdConfig> {
        let etcd = raw?.get_ref().etcd.as_ref()?;
        let endpoints = match &etcd.get_ref().endpoints {
            None => {
                self.error(
                    Some(etcd.span()),
                    "`[discovery.etcd]` has no `endpoints`: add e.g. endpoints = \
                     [\"http://127.0.0.1:2379\"]",
                );
                Vec::new()
            }
            Some(list) if list.get_ref().is_empty() => {
                self.error(
                    Some(list.span()),
                    "`endpoints` is empty: at least one etcd client URL is required",
                );
                Vec::new()
            }
            Some(list) => list
                .get_ref()
                .iter()
                .filter_map(|e| self.etcd_endpoint(e))
                .collect(),
        };
        let prefix = match &etcd.get_ref().prefix {
            None => defaults::ETCD_PREFIX.to_owned(),
            Some(p) => {
                let text = p.get_ref();
                if !text.starts_with('/') || text.len() < 2 {
                    self.error(
                        Some(p.span()),
                        format!("`prefix` \"{text}\" must start with `/` and name a key, e.g. \"/rondo\""),
                    );
                }
                text.trim_end_matches('/').to_owned()
            }
        };
        Some(EtcdConfig { endpoints, prefix })
    }

    /// One `endpoints` entry: `http://host:port` (etcd's client URL as `etcdctl` takes it).
    fn etcd_endpoint(&mut self, value: &Spanned<String>) -> Option<EtcdEndpoint> {
        let url = value.get_ref().trim();
        if url.starts_with("https://") {
            return self.fail(
                value.span(),
                format!(
                    "\"{url}\": TLS to etcd is not supported yet; use an `http://` client URL \
                     on a trusted network"
                ),
            );
        }
        let authority = url
            .strip_prefix("http://")
            .unwrap_or(url)
            .trim_end_matches('/');
        let port = authority
            .rsplit_once(':')
            .and_then(|(host, port)| (!host.is_empty()).then_some(port))
            .and_then(|p| p.parse::<u16>().ok());
        if authority.contains('/') || port.is_none_or(|p| p == 0) {
            return self.fail(
                value.span(),
                format!("\"{url}\" is not an etcd client URL such as \"http://127.0.0.1:2379\""),
            );
        }
        Some(EtcdEndpoint {
            url: url.to_owned(),
            authority: authority.to_owned(),
        })
    }

    /// An upstream's `discovery`; `etcd` says whether `[discovery.etcd]` exists.
    pub(super) fn upstream_discovery(
        &mut self,
        raw: &RawUpstream,
        etcd: bool,
    ) -> Option<Discovery> {
        let value = raw.discovery.as_ref()?;
        match value.get_ref().as_str() {
            "etcd" if etcd => Some(Discovery::Etcd),
            "etcd" => self.fail(
                value.span(),
                "`discovery = \"etcd\"` needs a `[discovery.etcd]` table with the cluster's \
                 `endpoints`",
            ),
            other => self.fail(
                value.span(),
                format!("unknown discovery `{other}`; expected `etcd`"),
            ),
        }
    }
}
