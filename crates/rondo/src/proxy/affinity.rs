//! Affinity: what ties a request to a backend.
//!
//! - **The hash key** of a `consistent-hash` upstream (client address, URI, a header, a
//!   cookie or a query parameter), read from the request and hashed with SipHash-1-3 under a
//!   fixed key: the same key gives the same hash on every balancer and every version, so a
//!   fleet of rondo instances sends a key to the same backend. A request without the key has
//!   no hash and follows the round-robin cycle.
//! - **The sticky cookie** of an upstream with `sticky`: an opaque id per backend, SipHash-2-4
//!   of the backend's id under a 128-bit secret drawn from the operating system at start.
//!   SipHash is a pseudo-random function, so an id reveals nothing about the backend (not its
//!   address) and no client can compute another backend's id; a forged cookie matches no
//!   backend and is simply rewritten.
//!
//! Both protocols read the same way: HTTP/1.1 passes httparse's headers and the request
//! target, HTTP/2 its `HeaderMap` and URI, each as `(name, value)` byte pairs. What is read
//! travels with the request as [`Affinity`]; the forwarding policy picks with it
//! ([`pick`]) and asks for the cookie to set on the response ([`set_cookie`]).

use std::hash::Hasher;
use std::sync::OnceLock;

use balance::{Backend, Lease, Pool, Timestamp};
use siphasher::sip::{SipHasher13, SipHasher24};

use crate::config::{HashKey, StickyConfig, UpstreamConfig};

/// What ties one request to a backend, read from it before the first attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Affinity {
    /// Hash of the upstream's `hash_key`; `None` when the upstream does not hash or the
    /// request lacks the key.
    pub(crate) key: Option<u64>,
    /// The sticky id the request's cookie names, when the upstream is sticky.
    pub(crate) sticky: Option<u64>,
}

/// Reads the request's affinity for the upstream with settings `cfg`.
pub(crate) fn read(
    cfg: &UpstreamConfig,
    request: &RequestParts<'_, impl Headers + ?Sized>,
) -> Affinity {
    Affinity {
        key: cfg.hash_key.as_ref().and_then(|k| key_hash(k, request)),
        sticky: cfg
            .sticky
            .as_ref()
            .and_then(|s| Sticky::new(s).requested(request.headers)),
    }
}

/// Picks for a request: the backend its sticky cookie names while that one is in rotation
/// and accepts, else by its key (a `consistent-hash` upstream), else in the cycle.
pub(crate) fn pick<'p, F: FnMut(&Backend) -> bool>(
    pool: &'p Pool,
    now: Timestamp,
    cfg: &UpstreamConfig,
    wanted: Affinity,
    mut accept: F,
) -> Option<Lease<'p>> {
    if let (Some(id), Some(sticky)) = (wanted.sticky, &cfg.sticky) {
        let sticky = Sticky::new(sticky);
        let lease = pool.pick_preferred(now, |b| sticky.id(b.id()) == id, &mut accept);
        if lease.is_some() {
            return lease;
        }
    }
    match wanted.key {
        Some(key) => pool.pick_keyed(now, key, accept),
        None => pool.pick(now, accept),
    }
}

/// The `Set-Cookie` value for a response from `backend`: when the upstream is sticky and the
/// request's cookie did not already name that backend (none, stale, or forged).
pub(crate) fn set_cookie(
    cfg: &UpstreamConfig,
    wanted: Affinity,
    backend: &Backend,
) -> Option<String> {
    let sticky = Sticky::new(cfg.sticky.as_ref()?);
    let id = sticky.id(backend.id());
    (wanted.sticky != Some(id)).then(|| sticky.set_cookie_value(id))
}

/// Hash of a key: SipHash-1-3 with a fixed key, so every balancer computes the same one.
fn hash(bytes: &[u8]) -> u64 {
    let mut h = SipHasher13::new_with_keys(0x726f_6e64_6f2d_6b65, 0x792d_6861_7368_0001);
    h.write(bytes);
    h.finish()
}

/// A request's headers, in either protocol: httparse's slice or an `http::HeaderMap`.
pub(crate) trait Headers {
    /// Calls `f` on each `(name, value)` in order until it answers `Some`.
    fn find<'s, T>(&'s self, f: impl FnMut(&'s [u8], &'s [u8]) -> Option<T>) -> Option<T>;
}

impl Headers for [httparse::Header<'_>] {
    fn find<'s, T>(&'s self, mut f: impl FnMut(&'s [u8], &'s [u8]) -> Option<T>) -> Option<T> {
        self.iter().find_map(|h| f(h.name.as_bytes(), h.value))
    }
}

impl Headers for http::HeaderMap {
    fn find<'s, T>(&'s self, mut f: impl FnMut(&'s [u8], &'s [u8]) -> Option<T>) -> Option<T> {
        self.iter()
            .find_map(|(n, v)| f(n.as_str().as_bytes(), v.as_bytes()))
    }
}

impl Headers for [(&[u8], &[u8])] {
    fn find<'s, T>(&'s self, mut f: impl FnMut(&'s [u8], &'s [u8]) -> Option<T>) -> Option<T> {
        self.iter().find_map(|&(n, v)| f(n, v))
    }
}

/// What an affinity key is read from: one request, in either protocol.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestParts<'a, H: ?Sized> {
    /// The client's address in canonical text form (an IPv4-mapped IPv6 address written as
    /// IPv4), as both protocol paths hold it.
    pub(crate) client: &'a str,
    /// The request target as sent: origin form (`/path?query`) or absolute form.
    pub(crate) target: &'a [u8],
    /// The headers.
    pub(crate) headers: &'a H,
}

/// The first value of header `name` (case-insensitive).
fn header<'a>(headers: &'a (impl Headers + ?Sized), name: &str) -> Option<&'a [u8]> {
    headers.find(|n, v| n.eq_ignore_ascii_case(name.as_bytes()).then_some(v))
}

/// The value of cookie `name` in the `Cookie` headers (HTTP/2 may split them over several).
fn cookie<'a>(headers: &'a (impl Headers + ?Sized), name: &str) -> Option<&'a [u8]> {
    headers.find(|n, v| {
        if !n.eq_ignore_ascii_case(b"cookie") {
            return None;
        }
        v.split(|&b| b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| {
                let value = pair[eq + 1..].trim_ascii();
                value
                    .strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(value)
            })
        })
    })
}

/// Path and query of a request target (the scheme and authority of an absolute-form target
/// removed), so `GET /a` and `GET http://host/a` hash alike.
fn path_and_query(target: &[u8]) -> &[u8] {
    if target.first() == Some(&b'/') {
        return target;
    }
    let Some(scheme_end) = target.windows(3).position(|w| w == b"://") else {
        return target;
    };
    let rest = &target[scheme_end + 3..];
    match rest.iter().position(|&b| b == b'/' || b == b'?') {
        Some(i) => &rest[i..],
        None => b"/",
    }
}

/// The raw value of query parameter `name` (not percent-decoded: equal bytes, equal key).
fn query<'a>(target: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let target = path_and_query(target);
    let start = target.iter().position(|&b| b == b'?')? + 1;
    let end = target
        .iter()
        .position(|&b| b == b'#')
        .unwrap_or(target.len());
    target
        .get(start..end)?
        .split(|&b| b == b'&')
        .find_map(|pair| {
            let (n, v) = match pair.iter().position(|&b| b == b'=') {
                Some(eq) => (&pair[..eq], &pair[eq + 1..]),
                None => (pair, &b""[..]),
            };
            (n == name.as_bytes()).then_some(v)
        })
}

/// The hash of `key` in `request`; `None` when the request lacks it (or it is empty: an
/// empty value would pile every such request on one backend).
fn key_hash(key: &HashKey, request: &RequestParts<'_, impl Headers + ?Sized>) -> Option<u64> {
    let value = match key {
        HashKey::ClientIp => request.client.as_bytes(),
        HashKey::Uri => path_and_query(request.target),
        HashKey::Header(name) => header(request.headers, name)?.trim_ascii(),
        HashKey::Cookie(name) => cookie(request.headers, name)?,
        HashKey::Query(name) => query(request.target, name)?,
    };
    (!value.is_empty()).then(|| hash(value))
}

/// The per-process secret of sticky ids: 128 bits from the operating system, drawn once.
fn process_secret() -> [u8; 16] {
    static SECRET: OnceLock<[u8; 16]> = OnceLock::new();
    *SECRET.get_or_init(|| {
        let mut secret = [0u8; 16];
        if getrandom::fill(&mut secret).is_err() {
            // No OS randomness (never seen on a supported system): ids stay opaque to anyone
            // who does not know when the process started and its address.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let stack = &secret as *const _ as usize as u128;
            secret = (t ^ stack.rotate_left(64) ^ u128::from(std::process::id())).to_le_bytes();
        }
        secret
    })
}

/// An upstream's sticky cookie: ids, parsing and `Set-Cookie`. Built per request from the
/// upstream's settings (no allocation), so a reload that changes them applies at once.
#[derive(Debug, Clone, Copy)]
struct Sticky<'c> {
    config: &'c StickyConfig,
    keys: (u64, u64),
}

impl<'c> Sticky<'c> {
    /// Sticky ids under this process's secret.
    fn new(config: &'c StickyConfig) -> Sticky<'c> {
        Sticky::with_secret(config, process_secret())
    }

    /// Sticky ids under a given secret.
    fn with_secret(config: &'c StickyConfig, secret: [u8; 16]) -> Sticky<'c> {
        let (k0, k1) = secret.split_at(8);
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        Sticky {
            config,
            keys: (word(k0), word(k1)),
        }
    }

    /// The opaque id of the backend with this id.
    fn id(&self, backend_id: &str) -> u64 {
        let mut h = SipHasher24::new_with_keys(self.keys.0, self.keys.1);
        h.write(backend_id.as_bytes());
        h.finish()
    }

    /// The id the request's cookie names, if it carries a well-formed one.
    fn requested(&self, headers: &(impl Headers + ?Sized)) -> Option<u64> {
        let value = cookie(headers, &self.config.cookie)?;
        if value.len() != 16 {
            return None;
        }
        u64::from_str_radix(std::str::from_utf8(value).ok()?, 16).ok()
    }

    /// The `Set-Cookie` value that ties the client to the backend with sticky id `id`.
    fn set_cookie_value(&self, id: u64) -> String {
        let c = self.config;
        let mut v = format!("{}={id:016x}; Path=/", c.cookie);
        if let Some(ttl) = c.ttl {
            v.push_str(&format!("; Max-Age={}", ttl.as_secs().max(1)));
        }
        if c.http_only {
            v.push_str("; HttpOnly");
        }
        if c.secure {
            v.push_str("; Secure");
        }
        v.push_str("; SameSite=Lax");
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    type Pairs<'a> = [(&'a [u8], &'a [u8])];

    fn parts<'a>(target: &'a [u8], headers: &'a Pairs<'a>) -> RequestParts<'a, Pairs<'a>> {
        RequestParts {
            client: "192.0.2.7",
            target,
            headers,
        }
    }

    fn config(ttl: Option<Duration>, secure: bool) -> StickyConfig {
        StickyConfig {
            cookie: "rondo_srv".into(),
            ttl,
            secure,
            http_only: true,
        }
    }

    #[test]
    fn keys_are_read_from_every_part_of_a_request() {
        let headers: &[(&[u8], &[u8])] = &[
            (b"Host", b"example.com"),
            (b"X-User", b" alice "),
            (b"Cookie", b"theme=dark; session=\"s1\""),
            (b"cookie", b"other=1"),
        ];
        let p = parts(b"/cart?user=bob&x=1#top", headers);
        let h = |s: &str| Some(hash(s.as_bytes()));
        assert_eq!(key_hash(&HashKey::Header("x-user".into()), &p), h("alice"));
        assert_eq!(key_hash(&HashKey::Cookie("session".into()), &p), h("s1"));
        assert_eq!(key_hash(&HashKey::Cookie("other".into()), &p), h("1"));
        assert_eq!(key_hash(&HashKey::Query("user".into()), &p), h("bob"));
        assert_eq!(key_hash(&HashKey::Query("x".into()), &p), h("1"));
        assert_eq!(
            key_hash(&HashKey::Uri, &p),
            h("/cart?user=bob&x=1#top"),
            "the target as sent"
        );
        assert_eq!(key_hash(&HashKey::ClientIp, &p), h("192.0.2.7"));
        // Missing or empty keys: no hash, the request follows the cycle.
        for key in [
            HashKey::Header("x-missing".into()),
            HashKey::Cookie("missing".into()),
            HashKey::Query("missing".into()),
        ] {
            assert_eq!(key_hash(&key, &p), None, "{key:?}");
        }
        let empty = parts(b"/?user=", &[(b"x-user", b"")]);
        assert_eq!(key_hash(&HashKey::Query("user".into()), &empty), None);
        assert_eq!(key_hash(&HashKey::Header("x-user".into()), &empty), None);
    }

    #[test]
    fn equal_keys_hash_alike_across_protocols_and_forms() {
        let absolute = parts(b"http://example.com/a?b=1", &[]);
        let origin = parts(b"/a?b=1", &[]);
        assert_eq!(
            key_hash(&HashKey::Uri, &absolute),
            key_hash(&HashKey::Uri, &origin)
        );
        assert_eq!(path_and_query(b"http://example.com"), b"/");
        // The hash is fixed: a fleet and the next version agree.
        assert_eq!(hash(b"alice"), hash(b"alice"));
        assert_ne!(hash(b"alice"), hash(b"bob"));
    }

    #[test]
    fn sticky_ids_are_opaque_stable_and_parsed_back() {
        let c = config(Some(Duration::from_secs(3600)), true);
        let s = Sticky::with_secret(&c, [7; 16]);
        let id = s.id("127.0.0.1:9001");
        assert_eq!(id, s.id("127.0.0.1:9001"));
        assert_ne!(id, s.id("127.0.0.1:9002"));
        let other_secret = Sticky::with_secret(&c, [8; 16]);
        assert_ne!(id, other_secret.id("127.0.0.1:9001"), "keyed by the secret");

        let set = s.set_cookie_value(id);
        assert_eq!(
            set,
            format!("rondo_srv={id:016x}; Path=/; Max-Age=3600; HttpOnly; Secure; SameSite=Lax")
        );
        assert!(!set.contains("9001"), "the address is not in the cookie");
        let value = format!("a=b; rondo_srv={id:016x}");
        let headers: &[(&[u8], &[u8])] = &[(b"cookie", value.as_bytes())];
        assert_eq!(s.requested(headers), Some(id));

        let session = Sticky::with_secret(&config(None, false), [7; 16]).set_cookie_value(1);
        assert!(
            session.ends_with("; Path=/; HttpOnly; SameSite=Lax"),
            "{session}"
        );
    }

    #[test]
    fn malformed_sticky_cookies_are_ignored() {
        let c = config(None, false);
        let s = Sticky::with_secret(&c, [7; 16]);
        for value in [
            &b"rondo_srv=zz"[..],
            b"rondo_srv=",
            b"rondo_srv=0123456789abcdefff",
            b"rondo_srv=xyz0123456789abc",
            b"other=0123456789abcdef",
        ] {
            let headers: &[(&[u8], &[u8])] = &[(b"Cookie", value)];
            assert_eq!(s.requested(headers), None, "{value:?}");
        }
    }

    #[test]
    fn the_process_secret_is_drawn_once() {
        assert_eq!(process_secret(), process_secret());
        assert_ne!(process_secret(), [0; 16]);
    }
}
