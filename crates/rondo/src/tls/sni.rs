//! Picks a listener's certificate by SNI: an exact name first, then a `*.` wildcard covering
//! exactly one more label (RFC 6125 §6.4.3, as browsers match), else the default — like
//! nginx's `server_name` lookup, without regular expressions.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Names to certificates, built once per (re)load and never changed.
#[derive(Debug)]
pub(crate) struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` stored as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    /// A resolver answering `default` when no name matches.
    pub(crate) fn new(default: Arc<CertifiedKey>) -> Self {
        SniResolver {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default,
        }
    }

    /// Serves `key` for `name` (lower case, exact or `*.` wildcard).
    pub(crate) fn add(&mut self, name: &str, key: Arc<CertifiedKey>) {
        match name.strip_prefix("*.") {
            Some(parent) => self.wildcard.insert(parent.to_owned(), key),
            None => self.exact.insert(name.to_owned(), key),
        };
    }

    /// The certificate for a client that asked for `name` (any case), or sent no SNI.
    pub(crate) fn pick(&self, name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = name else {
            return &self.default;
        };
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            &lower
        } else {
            name
        };
        self.exact
            .get(name)
            .or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)
            })
            .unwrap_or(&self.default)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(self.pick(hello.server_name())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Arc<CertifiedKey> {
        let provider = rustls::crypto::ring::default_provider();
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let der =
            rustls_pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        Arc::new(CertifiedKey::from_der(vec![cert.cert.der().clone()], der, &provider).unwrap())
    }

    fn is(got: &Arc<CertifiedKey>, want: &Arc<CertifiedKey>) -> bool {
        Arc::ptr_eq(got, want)
    }

    #[test]
    fn exact_names_beat_wildcards_which_beat_the_default() {
        let (default, api, any) = (key("site"), key("api.example.com"), key("*.example.com"));
        let mut r = SniResolver::new(default.clone());
        r.add("api.example.com", api.clone());
        r.add("*.example.com", any.clone());
        assert!(is(r.pick(Some("api.example.com")), &api));
        assert!(is(r.pick(Some("API.Example.com")), &api));
        assert!(is(r.pick(Some("www.example.com")), &any));
        assert!(is(r.pick(None), &default));
        assert!(is(r.pick(Some("other.org")), &default));
    }

    #[test]
    fn a_wildcard_covers_exactly_one_label() {
        let (default, any) = (key("site"), key("*.example.com"));
        let mut r = SniResolver::new(default.clone());
        r.add("*.example.com", any.clone());
        assert!(is(r.pick(Some("example.com")), &default));
        assert!(is(r.pick(Some("a.b.example.com")), &default));
        assert!(is(r.pick(Some("a.example.com")), &any));
    }
}
