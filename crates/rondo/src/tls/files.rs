//! Certificate and key files: PEM read with `rustls-pki-types` (`PemObject`), each problem
//! reported with the file's name. An expired (or not yet valid) certificate is a warning,
//! not an error, as in nginx: the operator may be mid-renewal and clients decide.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;
use crate::config::Config;

/// Reads a file, telling a missing one from an unreadable one.
fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => TlsError::Missing {
            path: path.to_owned(),
        },
        _ => TlsError::Unreadable {
            path: path.to_owned(),
            source,
        },
    })
}

/// Every certificate of a PEM file, in order; at least one.
pub(crate) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: path.to_owned(),
            what: format!("broken PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::BadPem {
            path: path.to_owned(),
            what: "no certificate in it (expected a \"-----BEGIN CERTIFICATE-----\" section)"
                .to_owned(),
        });
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::BadPem {
        path: path.to_owned(),
        what: match e {
            // A passphrase-protected key: rondo starts unattended, with nothing to ask.
            rustls_pki_types::pem::Error::NoItemsFound
                if memchr::memmem::find(&pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
                    .is_some() =>
            {
                "the private key is encrypted (protected by a passphrase); decrypt it first, \
                 e.g. `openssl pkey -in KEY -out KEY.plain`"
                    .to_owned()
            }
            rustls_pki_types::pem::Error::NoItemsFound => "no private key in it (expected a \
                \"-----BEGIN PRIVATE KEY-----\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" section)"
                .to_owned(),
            e => format!("broken PEM: {e}"),
        },
    })
}

/// A certificate chain with its key, ready to serve, and what is worth a warning about it.
pub(crate) fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
    now: SystemTime,
    warnings: &mut Vec<String>,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certificates(cert)?;
    let der = private_key(key)?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsError::BadPem {
            path: key.to_owned(),
            what: format!("unusable private key: {e}"),
        })?;
    if let Some(warning) = validity_warning(cert, &chain[0], now) {
        warnings.push(warning);
    }
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            })
        }
        _ => Ok(Arc::new(certified)),
    }
}

/// "site.pem: the certificate expired on 2025-01-01T00:00:00Z …", or `None` when `now` is
/// within its validity (or it cannot be parsed, which rustls will report anyway).
fn validity_warning(path: &Path, cert: &CertificateDer<'_>, now: SystemTime) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let at = |t: &x509_parser::time::ASN1Time| {
        let secs = u64::try_from(t.timestamp()).unwrap_or(0);
        humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    };
    let validity = parsed.validity();
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    if now_secs > validity.not_after.timestamp() {
        Some(format!(
            "{}: the certificate expired on {}; clients will refuse it until it is renewed",
            path.display(),
            at(&validity.not_after)
        ))
    } else if now_secs < validity.not_before.timestamp() {
        Some(format!(
            "{}: the certificate is not valid before {}; clients will refuse it until then",
            path.display(),
            at(&validity.not_before)
        ))
    } else {
        None
    }
}

/// What `rondo check` and start-up learn by reading every certificate, key and CA file the
/// configuration names.
#[derive(Debug, Default)]
pub struct Report {
    /// Problems that stop the file from being used.
    pub errors: Vec<TlsError>,
    /// Problems worth telling (expired certificates).
    pub warnings: Vec<String>,
}

/// Reads every TLS file `config` names, as a start would.
pub fn check(config: &Config, now: SystemTime) -> Report {
    let mut report = Report::default();
    for tls in config.listeners.iter().filter_map(|l| l.tls.as_ref()) {
        match super::server::build(tls, super::Alpn::Http, now) {
            Ok((_, mut warnings)) => report.warnings.append(&mut warnings),
            Err(e) => report.errors.push(e),
        }
    }
    for tls in config.upstreams.iter().filter_map(|u| u.tls.as_ref()) {
        match super::UpstreamTls::new(tls, now) {
            Ok((_, mut warnings)) => report.warnings.append(&mut warnings),
            Err(e) => report.errors.push(e),
        }
    }
    report
}
