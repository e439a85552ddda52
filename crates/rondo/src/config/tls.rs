//! The TLS tables: `[listeners.tls]` (termination) and an upstream's `tls = { … }` (TLS to
//! backends), as written and as validated. Only the file's shape is checked here; the
//! certificate files themselves are read by [`crate::tls`] at start, on reload and by
//! `rondo check`, so a configuration can be parsed where its certificates do not exist.

use std::collections::HashMap;
use std::path::PathBuf;

use rustls_pki_types::ServerName;
use serde::Deserialize;

use super::model::{CertificateConfig, ListenerTlsConfig, TlsVersion, UpstreamTlsConfig};
use super::validate::Validator;
use toml::Spanned;

/// `[listeners.tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListenerTls {
    /// Certificates, at least one, required.
    pub(crate) certificates: Option<Spanned<Vec<Spanned<RawCertificate>>>>,
    /// "1.2" or "1.3". Default "1.2".
    pub(crate) min_version: Option<Spanned<String>>,
}

/// One entry of `certificates`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCertificate {
    /// PEM chain, leaf first, path, required.
    pub(crate) cert: Spanned<String>,
    /// PEM private key, path, required.
    pub(crate) key: Spanned<String>,
    /// SNI names, exact or `*.`; default: none (the default certificate).
    #[serde(default)]
    pub(crate) server_names: Vec<Spanned<String>>,
}

/// An upstream's `tls = { … }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstreamTls {
    /// SNI and verified name. Default: the backend's IP address.
    pub(crate) server_name: Option<Spanned<String>>,
    /// PEM file of trusted CAs. Default: Mozilla's roots.
    pub(crate) ca: Option<Spanned<String>>,
    /// Verify the backend's certificate, bool. Default true.
    pub(crate) verify: Option<Spanned<bool>>,
    /// Client certificate, PEM path. Default: none.
    pub(crate) cert: Option<Spanned<String>>,
    /// Client certificate's key, PEM path. Default: none.
    pub(crate) key: Option<Spanned<String>>,
}

impl Validator<'_> {
    /// `[listeners.tls]`.
    pub(super) fn listener_tls(
        &mut self,
        raw: &Spanned<RawListenerTls>,
    ) -> Option<ListenerTlsConfig> {
        let (span, raw) = (raw.span(), raw.get_ref());
        let min_version = match &raw.min_version {
            None => TlsVersion::Tls12,
            Some(v) => match v.get_ref().trim() {
                "1.2" => TlsVersion::Tls12,
                "1.3" => TlsVersion::Tls13,
                other => self.fail(
                    v.span(),
                    format!(
                        "`min_version` must be \"1.2\" or \"1.3\", got \"{other}\" (older \
                         versions are broken and rustls does not speak them)"
                    ),
                )?,
            },
        };
        let list = match &raw.certificates {
            Some(list) if !list.get_ref().is_empty() => list,
            other => {
                let span = other.as_ref().map_or(span, |l| l.span());
                return self.fail(
                    span,
                    "`tls` needs at least one certificate: certificates = [{ cert = \
                     \"site.pem\", key = \"site.key\" }]",
                );
            }
        };
        let mut certificates = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut default_seen = false;
        let mut ok = true;
        for c in list.get_ref() {
            let (entry_span, c) = (c.span(), c.get_ref());
            if c.server_names.is_empty() {
                if default_seen {
                    ok = false;
                    self.error(
                        Some(entry_span),
                        "two certificates without `server_names`: only one can be the default; \
                         give this one the names it serves",
                    );
                }
                default_seen = true;
            }
            let mut server_names = Vec::new();
            for n in &c.server_names {
                let Some(name) = self.server_name(n) else {
                    ok = false;
                    continue;
                };
                let line = self.line_of(n.span());
                if let Some(first) = names.insert(name.clone(), line) {
                    ok = false;
                    self.error(
                        Some(n.span()),
                        format!(
                            "server name `{name}` is already served by the certificate on line \
                             {first}; SNI can pick only one"
                        ),
                    );
                }
                server_names.push(name);
            }
            let cert = self.path(&c.cert, "cert");
            let key = self.path(&c.key, "key");
            match (cert, key) {
                (Some(cert), Some(key)) => certificates.push(CertificateConfig {
                    cert,
                    key,
                    server_names,
                }),
                _ => ok = false,
            }
        }
        ok.then_some(ListenerTlsConfig {
            certificates,
            min_version,
        })
    }

    /// An SNI name: a DNS name, lower-cased, possibly `*.` followed by one.
    fn server_name(&mut self, value: &Spanned<String>) -> Option<String> {
        let name = value
            .get_ref()
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let bare = name.strip_prefix("*.").unwrap_or(&name);
        let why = if name.is_empty() {
            Some("it is empty")
        } else if bare.contains('*') {
            Some("a wildcard is allowed only as a whole first label, as in `*.example.com`")
        } else if !matches!(ServerName::try_from(bare), Ok(ServerName::DnsName(_))) {
            Some("it is not a DNS name (SNI carries names, not addresses)")
        } else {
            None
        };
        match why {
            Some(why) => self.fail(
                value.span(),
                format!("invalid server name \"{name}\": {why}"),
            ),
            None => Some(name),
        }
    }

    /// A file path; must not be empty.
    fn path(&mut self, value: &Spanned<String>, key: &str) -> Option<PathBuf> {
        let path = value.get_ref().trim();
        if path.is_empty() {
            return self.fail(
                value.span(),
                format!("`{key}` is empty: give a PEM file's path"),
            );
        }
        Some(PathBuf::from(path))
    }

    /// An upstream's `tls = { … }`.
    pub(super) fn upstream_tls(
        &mut self,
        raw: &Spanned<RawUpstreamTls>,
    ) -> Option<UpstreamTlsConfig> {
        let (span, raw) = (raw.span(), raw.get_ref());
        let server_name = match &raw.server_name {
            None => None,
            Some(n) => {
                let name = n.get_ref().trim();
                if ServerName::try_from(name).is_err() {
                    self.fail(
                        n.span(),
                        format!(
                            "invalid `server_name` \"{name}\": give the DNS name (or IP address) \
                             on the backends' certificate"
                        ),
                    )?
                }
                Some(name.to_ascii_lowercase())
            }
        };
        let verify = raw.verify.as_ref().is_none_or(|v| *v.get_ref());
        let ca = match &raw.ca {
            Some(ca) if !verify => self.fail(
                ca.span(),
                "`ca` is unused with `verify = false`: remove one of them",
            )?,
            Some(ca) => Some(self.path(ca, "ca")?),
            None => None,
        };
        let client_cert = match (&raw.cert, &raw.key) {
            (Some(cert), Some(key)) => Some((self.path(cert, "cert")?, self.path(key, "key")?)),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                self.fail(span, "a client certificate needs both `cert` and `key`")?
            }
        };
        Some(UpstreamTlsConfig {
            server_name,
            ca,
            verify,
            client_cert,
        })
    }
}
