//! Certificates for tests, made with rcgen when the test runs, so no private key is ever
//! committed. Shared by the unit tests and (through `#[path]`) the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The certificate (a chain of one).
    pub cert: String,
    /// The private key, PKCS#8.
    pub key: String,
}

impl Pair {
    /// Writes `STEM.pem` and `STEM.key` in `dir`; returns their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert).unwrap();
        std::fs::write(&key, &self.key).unwrap();
        (cert, key)
    }
}

fn pair(params: &CertificateParams, key: &KeyPair, issuer: Option<&Issuer<'_, KeyPair>>) -> Pair {
    let cert = match issuer {
        Some(issuer) => params.signed_by(key, issuer).unwrap(),
        None => params.self_signed(key).unwrap(),
    };
    Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

fn params(names: &[&str]) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    CertificateParams::new(names).unwrap()
}

/// A self-signed certificate for `names` (DNS names or IP addresses).
pub fn self_signed(names: &[&str]) -> Pair {
    pair(&params(names), &KeyPair::generate().unwrap(), None)
}

/// A self-signed certificate for `names` that expired on 2020-01-01.
pub fn expired(names: &[&str]) -> Pair {
    let mut p = params(names);
    p.not_before = rcgen::date_time_ymd(2019, 1, 1);
    p.not_after = rcgen::date_time_ymd(2020, 1, 1);
    pair(&p, &KeyPair::generate().unwrap(), None)
}

/// A certificate authority that signs leaf certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's own certificate, PEM: what a client trusts.
    pub cert: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A new CA, its name in the subject.
    pub fn new(name: &str) -> Ca {
        let mut p = params(&[]);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_owned());
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(p, key),
            cert,
        }
    }

    /// A leaf certificate for `names`, signed by this CA.
    pub fn leaf(&self, names: &[&str]) -> Pair {
        pair(
            &params(names),
            &KeyPair::generate().unwrap(),
            Some(&self.issuer),
        )
    }

    /// Writes the CA certificate as `STEM.pem` in `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> PathBuf {
        let path = dir.join(format!("{stem}.pem"));
        std::fs::write(&path, &self.cert).unwrap();
        path
    }
}
