//! Loading certificates and reloading a listener's TLS, with certificates made by rcgen.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::test_certs::{self, Ca};
use super::*;
use crate::config::{CertificateConfig, ListenerTlsConfig, TlsVersion, UpstreamTlsConfig};

fn listener(certs: &[(PathBuf, PathBuf, &[&str])]) -> ListenerTlsConfig {
    ListenerTlsConfig {
        certificates: certs
            .iter()
            .map(|(cert, key, names)| CertificateConfig {
                cert: cert.clone(),
                key: key.clone(),
                server_names: names.iter().map(|n| (*n).to_owned()).collect(),
            })
            .collect(),
        min_version: TlsVersion::Tls12,
    }
}

fn build_error(tls: &ListenerTlsConfig) -> String {
    match server::build(tls, Alpn::Http, SystemTime::now()) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn a_matching_pair_loads_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = test_certs::self_signed(&["localhost"]).write(dir.path(), "site");
    let (_, warnings) = server::build(
        &listener(&[(cert, key, &[])]),
        Alpn::Http,
        SystemTime::now(),
    )
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn a_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = test_certs::self_signed(&["localhost"]).write(dir.path(), "site");
    let cert = dir.path().join("nope.pem");
    let err = build_error(&listener(&[(cert.clone(), key, &[])]));
    assert_eq!(err, format!("{}: no such file", shown(&cert)));
}

#[test]
fn a_key_file_without_a_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = test_certs::self_signed(&["localhost"]).write(dir.path(), "site");
    // The certificate given as the key too: PEM, but no key in it.
    let err = build_error(&listener(&[(cert.clone(), cert.clone(), &[])]));
    assert!(
        err.starts_with(&format!("{}: no private key in it", shown(&cert))),
        "{err}"
    );
}

#[test]
fn an_encrypted_key_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = test_certs::self_signed(&["localhost"]).write(dir.path(), "site");
    // What `openssl pkcs8 -topk8 -v2 aes256` writes (the body is not read: no key is found).
    let key = dir.path().join("encrypted.pem");
    std::fs::write(
        &key,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = build_error(&listener(&[(cert, key.clone(), &[])]));
    assert!(
        err.starts_with(&format!("{}: the private key is encrypted", shown(&key))),
        "{err}"
    );
}

#[test]
fn a_certificate_file_without_a_certificate_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = test_certs::self_signed(&["localhost"]).write(dir.path(), "site");
    let err = build_error(&listener(&[(key.clone(), key.clone(), &[])]));
    assert!(
        err.starts_with(&format!("{}: no certificate in it", shown(&key))),
        "{err}"
    );
}

#[test]
fn a_key_of_another_certificate_is_refused_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = test_certs::self_signed(&["localhost"]).write(dir.path(), "a");
    let (_, other_key) = test_certs::self_signed(&["localhost"]).write(dir.path(), "b");
    let err = build_error(&listener(&[(cert.clone(), other_key.clone(), &[])]));
    assert_eq!(
        err,
        format!(
            "{}: this private key does not match the certificate in {}",
            shown(&other_key),
            shown(&cert)
        )
    );
}

#[test]
fn an_expired_certificate_loads_with_a_warning_giving_the_date() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = test_certs::expired(&["localhost"]).write(dir.path(), "old");
    let (_, warnings) = server::build(
        &listener(&[(cert.clone(), key, &[])]),
        Alpn::Http,
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with(&format!(
            "{}: the certificate expired on 2020-01-01T00:00:00Z",
            shown(&cert)
        )),
        "{}",
        warnings[0]
    );
}

#[test]
fn a_bad_reload_keeps_the_certificate_in_service() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = test_certs::self_signed(&["localhost"]).write(dir.path(), "site");
    let good = listener(&[(cert, key.clone(), &[])]);
    let (terminator, _) = Terminator::new(&good, Alpn::Http).unwrap();
    let before = terminator.acceptor().config().clone();
    let bad = listener(&[(dir.path().join("gone.pem"), key, &[])]);
    let err = terminator.reload(&bad).unwrap_err().to_string();
    assert!(err.contains("gone.pem: no such file"), "{err}");
    assert!(std::sync::Arc::ptr_eq(
        &before,
        terminator.acceptor().config()
    ));
    terminator.reload(&good).unwrap();
    assert!(!std::sync::Arc::ptr_eq(
        &before,
        terminator.acceptor().config()
    ));
}

#[test]
fn upstream_tls_reads_its_ca_and_refuses_a_file_without_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let ca_path = ca.write(dir.path(), "ca");
    let mut config = UpstreamTlsConfig {
        server_name: Some("backend.test".into()),
        ca: Some(ca_path),
        verify: true,
        client_cert: None,
    };
    UpstreamTls::new(&config, SystemTime::now()).unwrap();
    let (_, key) = ca.leaf(&["backend.test"]).write(dir.path(), "leaf");
    config.ca = Some(key.clone());
    let err = UpstreamTls::new(&config, SystemTime::now())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("{}: no certificate in it", shown(&key))),
        "{err}"
    );
}
