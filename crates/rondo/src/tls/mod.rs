//! TLS on both sides of the proxy, with rustls (no system OpenSSL; the `ring` provider so a
//! plain `cargo build` needs only the Rust toolchain and a C compiler).
//!
//! - [`files`] reads PEM certificates and keys and says precisely what is wrong with them
//!   (missing, unreadable, no key, key does not match, expired);
//! - [`sni`] picks a listener's certificate by the name the client asked for;
//! - [`server`] builds a listener's rustls configuration and holds it in an `ArcSwap`, so a
//!   reload changes the certificate for new handshakes while open connections go on with
//!   theirs (Pingora still lacks this: cloudflare/pingora#619);
//! - [`client`] speaks TLS to an upstream's backends, verifying them by default.

pub mod client;
pub mod files;
pub mod server;
mod sni;
#[cfg(test)]
mod test_certs;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use client::{BackendAlpn, BackendConn, UpstreamTls};
pub use files::check;
pub use server::{Alpn, Terminator};

/// What can be wrong with a TLS set-up. Every variant names the file concerned, since the
/// user's next step is to open it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file does not exist.
    #[error("{}: no such file", path.display())]
    Missing {
        /// The file as configured.
        path: PathBuf,
    },
    /// The file exists but cannot be read (permissions, a directory, …).
    #[error("{}: cannot read it: {source}", path.display())]
    Unreadable {
        /// The file as configured.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file holds no PEM section of the kind expected, or a broken one.
    #[error("{}: {what}", path.display())]
    BadPem {
        /// The file as configured.
        path: PathBuf,
        /// What was expected and not found.
        what: String,
    },
    /// The private key is not the one of the certificate's public key.
    #[error("{}: this private key does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the configuration built from valid files.
    #[error("TLS set-up refused: {0}")]
    Rustls(#[from] rustls::Error),
}
