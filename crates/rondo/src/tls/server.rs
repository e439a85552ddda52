//! A listener's TLS termination: the rustls server configuration (SNI certificates, ALPN,
//! TLS 1.2/1.3 floor, session tickets) built from [`ListenerTlsConfig`], and the
//! [`Terminator`] that holds it in an `ArcSwap` so a reload swaps it for new handshakes
//! while open connections keep the configuration they started with.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::{ServerConfig, SupportedProtocolVersion};

use super::TlsError;
use super::files::certified_key;
use super::sni::SniResolver;
use crate::config::{ListenerTlsConfig, TlsVersion};

/// Which application protocols a listener offers by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `h2` then `http/1.1`: an HTTP listener, which serves whichever is negotiated.
    Http,
    /// None: a TCP-mode listener relays bytes and has no protocol to announce.
    None,
}

/// TLS sessions remembered for resumption by session id (TLS 1.2 clients without ticket
/// support); rustls's own default size. Tickets need no server memory.
const SESSION_CACHE: usize = 256;

/// The pieces kept across reloads so a new certificate does not cost every client a full
/// handshake: the ticket keys and the session cache.
#[derive(Debug, Clone)]
struct Resumption {
    ticketer: Arc<dyn ProducesTickets>,
    sessions: Arc<dyn StoresServerSessions>,
}

impl Resumption {
    fn new() -> Result<Self, TlsError> {
        Ok(Resumption {
            // Keys rotate every 6 hours, the previous one still accepted (rustls' rotator).
            ticketer: rustls::crypto::ring::Ticketer::new()?,
            sessions: ServerSessionMemoryCache::new(SESSION_CACHE),
        })
    }
}

/// Builds a listener's server configuration, with warnings about its certificates.
pub(crate) fn build(
    tls: &ListenerTlsConfig,
    alpn: Alpn,
    now: SystemTime,
) -> Result<(Arc<ServerConfig>, Vec<String>), TlsError> {
    build_with(tls, alpn, &Resumption::new()?, now)
}

fn build_with(
    tls: &ListenerTlsConfig,
    alpn: Alpn,
    resumption: &Resumption,
    now: SystemTime,
) -> Result<(Arc<ServerConfig>, Vec<String>), TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut warnings = Vec::new();
    let mut keys = Vec::with_capacity(tls.certificates.len());
    for c in &tls.certificates {
        keys.push(certified_key(
            &c.cert,
            &c.key,
            &provider,
            now,
            &mut warnings,
        )?);
    }
    let default = tls.default_certificate();
    let mut resolver = SniResolver::new(Arc::clone(&keys[default]));
    for (c, key) in tls.certificates.iter().zip(&keys) {
        for name in &c.server_names {
            resolver.add(name, Arc::clone(key));
        }
    }
    let versions: &[&'static SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = match alpn {
        Alpn::Http => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        Alpn::None => Vec::new(),
    };
    config.ticketer = Arc::clone(&resumption.ticketer);
    config.session_storage = Arc::clone(&resumption.sessions);
    Ok((Arc::new(config), warnings))
}

/// A listener's TLS termination, reloadable without dropping a connection.
#[derive(Debug)]
pub struct Terminator {
    current: ArcSwap<ServerConfig>,
    alpn: Alpn,
    resumption: Resumption,
}

impl Terminator {
    /// Reads the certificates and builds the configuration; also returns warnings (expired
    /// certificates) for the log.
    pub fn new(tls: &ListenerTlsConfig, alpn: Alpn) -> Result<(Self, Vec<String>), TlsError> {
        let resumption = Resumption::new()?;
        let (config, warnings) = build_with(tls, alpn, &resumption, SystemTime::now())?;
        let terminator = Terminator {
            current: ArcSwap::new(config),
            alpn,
            resumption,
        };
        Ok((terminator, warnings))
    }

    /// Re-reads the certificates: new handshakes use them, connections already open keep
    /// theirs. When a file is bad the error names it and the current certificates stay.
    pub fn reload(&self, tls: &ListenerTlsConfig) -> Result<Vec<String>, TlsError> {
        let (config, warnings) = build_with(tls, self.alpn, &self.resumption, SystemTime::now())?;
        self.current.store(config);
        Ok(warnings)
    }

    /// The acceptor for the next handshake.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }
}
