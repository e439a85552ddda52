//! The configuration file: TOML, loaded in two layers, with errors a user can act on.
//!
//! 1. [`raw`] mirrors the file with serde (`deny_unknown_fields`), keeping the place of each
//!    value that validation looks at (`toml::Spanned`);
//! 2. [`validate`] fills in [`defaults`], checks every value and reference, and builds the
//!    typed structs of [`model`] ([`Config`] and friends: `SocketAddr`, `Duration`,
//!    `NonZeroU32`, `balance::PoolConfig`) that the rest of the program codes against.
//!
//! A bad file never starts and never replaces a running configuration. Every problem is
//! reported as `FILE:LINE:COL: what was wrong and what was expected`, followed by the line
//! and a caret under the column, like rustc and the toml crate; semantic problems (an
//! unknown upstream, a duplicate name, a bad weight) point at the offending value too, and
//! all of them are reported at once. An unknown key gets the closest known one suggested.
//! The keys, their defaults and the reasons for them are in `docs/configuration.md`.
//!
//! ```
//! let config = rondo::config::parse(
//!     r#"
//!     [[listeners]]
//!     name = "web"
//!     bind = "127.0.0.1:8080"
//!     upstream = "app"
//!
//!     [[upstreams]]
//!     name = "app"
//!     backends = [{ address = "127.0.0.1:9001" }, { address = "127.0.0.1:9002", weight = 1.5 }]
//!     "#,
//!     "rondo.toml",
//! )?;
//! assert_eq!(config.upstreams[0].backends[1].weight.thousandths(), 1500);
//!
//! let err = rondo::config::parse("workers = 0\n", "rondo.toml").unwrap_err();
//! assert!(err.to_string().starts_with("rondo.toml:1:11: `workers` must be at least 1, got 0"));
//! # Ok::<(), rondo::config::ConfigError>(())
//! ```

mod access_log;
pub mod defaults;
mod error;
mod header_rules;
mod model;
mod named;
mod raw;
mod tls;
pub mod units;
mod validate;

use std::path::Path;

pub use error::{ConfigError, Diagnostic};
pub use model::{
    AdminConfig, CertificateConfig, CheckKind, Config, Discovery, DnsTarget, EtcdConfig,
    EtcdEndpoint, GrpcConfig, H2Config, HashKey, HealthCheckConfig, ListenerConfig, ListenerMode,
    ListenerTlsConfig, NamedBackend, QueueConfig, ResolverConfig, RetryBudget, RouteConfig,
    StickyConfig, TlsVersion, UpstreamConfig, UpstreamProtocol, UpstreamTlsConfig,
};

use error::{SourceMap, humanize};
use validate::Env;

/// Reads and validates the configuration file at `path`. Diagnostics name the file as
/// `path` is written.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let bytes = std::fs::read(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })?;
    let file_name = path.display().to_string();
    match String::from_utf8(bytes) {
        Ok(text) => {
            let mut config = parse(&text, &file_name)?;
            config.resolve_paths(path.parent().unwrap_or(Path::new("")));
            Ok(config)
        }
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(e.as_bytes());
            let map = SourceMap::new(&file_name, &text);
            let d = map.diagnostic(
                Some(at..at + 1),
                "this is not UTF-8 text; a TOML file must be encoded in UTF-8",
            );
            Err(ConfigError::Invalid {
                diagnostics: vec![d],
            })
        }
    }
}

/// Validates configuration `text`; `file_name` is used in diagnostics. `token_env` is read
/// from the process's environment.
pub fn parse(text: &str, file_name: &str) -> Result<Config, ConfigError> {
    parse_with_env(text, file_name, &|name| std::env::var(name).ok())
}

/// [`parse`] with environment variables looked up by `env`.
pub(crate) fn parse_with_env(
    text: &str,
    file_name: &str,
    env: Env<'_>,
) -> Result<Config, ConfigError> {
    let map = SourceMap::new(file_name, text);
    let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
        let mut message = humanize(e.message());
        if message == "duplicate key"
            && let Some(key) = e.span().and_then(|s| text.get(s))
        {
            message = format!("duplicate key `{key}`: a key is set once per table");
        }
        ConfigError::Invalid {
            diagnostics: vec![map.diagnostic(e.span(), message)],
        }
    })?;
    validate::validate(&raw, &map, env).map_err(|diagnostics| ConfigError::Invalid { diagnostics })
}

#[cfg(test)]
mod tests;
