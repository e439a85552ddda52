//! Validation of an upstream's affinity keys: `hash_key` and `hash_balance_factor` (only with
//! `algorithm = "consistent-hash"`) and the `sticky` cookie (on any upstream).

use std::time::Duration;

use balance::Algorithm;

use super::super::defaults;
use super::super::model::{HashKey, StickyConfig};
use super::super::raw::{RawSticky, RawUpstream};
use super::Validator;
use toml::Spanned;

/// What `hash_key` accepts, for error messages.
const HASH_KEY_FORMS: &str =
    "\"client-ip\", \"uri\", \"header:NAME\", \"cookie:NAME\" or \"query:NAME\"";

/// An upstream's affinity settings, validated.
pub(super) struct Affinity {
    pub(super) hash_key: Option<HashKey>,
    pub(super) balance_factor: Option<f64>,
    pub(super) sticky: Option<StickyConfig>,
}

/// True for an RFC 9110 token: a header or cookie name.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Validator<'_> {
    pub(super) fn affinity(&mut self, raw: &RawUpstream, algorithm: Algorithm) -> Affinity {
        let hashing = algorithm == Algorithm::ConsistentHash;
        let not_hashing = |key: &str| {
            format!(
                "`{key}` applies to `algorithm = \"consistent-hash\"` only; set that algorithm \
                 or remove `{key}`"
            )
        };
        if !hashing {
            if let Some(k) = &raw.hash_key {
                self.error(Some(k.span()), not_hashing("hash_key"));
            }
            if let Some(f) = &raw.hash_balance_factor {
                self.error(Some(f.span()), not_hashing("hash_balance_factor"));
            }
        }
        let hash_key = hashing.then(|| match &raw.hash_key {
            None => defaults::hash_key(),
            Some(k) => self.hash_key(k).unwrap_or_else(defaults::hash_key),
        });
        let balance_factor = match &raw.hash_balance_factor {
            Some(f) if hashing => self.balance_factor(f),
            _ => None,
        };
        let sticky = raw.sticky.as_ref().map(|s| self.sticky(s));
        Affinity {
            hash_key,
            balance_factor,
            sticky,
        }
    }

    fn hash_key(&mut self, value: &Spanned<String>) -> Option<HashKey> {
        let text = value.get_ref().trim();
        let named = |prefix: &str| text.strip_prefix(prefix).map(str::trim);
        let key = match text {
            "client-ip" => Some(HashKey::ClientIp),
            "uri" => Some(HashKey::Uri),
            _ => {
                if let Some(name) = named("header:") {
                    is_token(name).then(|| HashKey::Header(name.to_ascii_lowercase()))
                } else if let Some(name) = named("cookie:") {
                    is_token(name).then(|| HashKey::Cookie(name.to_owned()))
                } else if let Some(name) = named("query:") {
                    (!name.is_empty() && !name.contains(['&', '=', '#', ' ']))
                        .then(|| HashKey::Query(name.to_owned()))
                } else {
                    None
                }
            }
        };
        if key.is_none() {
            self.error(
                Some(value.span()),
                format!(
                    "`hash_key` \"{text}\" is not a key; expected {HASH_KEY_FORMS}, e.g. \
                     \"header:x-user\""
                ),
            );
        }
        key
    }

    fn balance_factor(&mut self, value: &Spanned<f64>) -> Option<f64> {
        let f = *value.get_ref();
        // Thousandths: the pool compares loads in integers.
        let exact = (f * 1000.0).round() / 1000.0;
        if f.is_finite() && f > 1.0 && f <= 100.0 && (f - exact).abs() < 1e-9 {
            return Some(f);
        }
        self.error(
            Some(value.span()),
            format!(
                "`hash_balance_factor` must be a number above 1 and at most 100 with at most \
                 three decimals, e.g. 1.25 (each backend takes up to 125% of its share), got {f}"
            ),
        );
        None
    }

    fn sticky(&mut self, raw: &Spanned<RawSticky>) -> StickyConfig {
        let s = raw.get_ref();
        let cookie = match &s.cookie {
            None => defaults::STICKY_COOKIE.to_owned(),
            Some(c) if is_token(c.get_ref()) => c.get_ref().clone(),
            Some(c) => {
                self.error(
                    Some(c.span()),
                    format!(
                        "sticky `cookie` \"{}\" is not a cookie name: letters, digits and \
                         !#$%&'*+-.^_`|~ only, e.g. \"{}\"",
                        c.get_ref(),
                        defaults::STICKY_COOKIE
                    ),
                );
                defaults::STICKY_COOKIE.to_owned()
            }
        };
        let ttl = self.duration(s.ttl.as_ref(), "ttl", Duration::ZERO, false);
        StickyConfig {
            cookie,
            ttl: (!ttl.is_zero()).then_some(ttl),
            secure: s.secure.unwrap_or(defaults::STICKY_SECURE),
            http_only: s.http_only.unwrap_or(defaults::STICKY_HTTP_ONLY),
        }
    }
}
