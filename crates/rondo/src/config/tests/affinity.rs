//! `hash_key`, `hash_balance_factor` and `sticky`: read, defaulted, refused with a fix.

use balance::Algorithm;

use super::{errors, ok, secs, upstream_with};

#[test]
fn consistent_hash_keys_balance_factor_and_sticky_are_read() {
    use crate::config::{HashKey, StickyConfig};
    let c = ok(&upstream_with(
        "algorithm = \"consistent-hash\"\nhash_key = \"header:X-User\"\nhash_balance_factor = 1.25\n\
         sticky = { cookie = \"srv\", ttl = \"1h\", secure = true }",
    ));
    let u = &c.upstreams[0];
    assert_eq!(u.pool.algorithm, Algorithm::ConsistentHash);
    assert_eq!(u.hash_key, Some(HashKey::Header("x-user".into())));
    assert_eq!(u.pool.hash_balance_factor, Some(1.25));
    assert_eq!(
        u.sticky,
        Some(StickyConfig {
            cookie: "srv".into(),
            ttl: Some(secs(3600)),
            secure: true,
            http_only: true,
        })
    );
    for (text, key) in [
        ("client-ip", HashKey::ClientIp),
        ("uri", HashKey::Uri),
        ("cookie:session", HashKey::Cookie("session".into())),
        ("query:user", HashKey::Query("user".into())),
    ] {
        let c = ok(&upstream_with(&format!(
            "algorithm = \"consistent-hash\"\nhash_key = \"{text}\""
        )));
        assert_eq!(c.upstreams[0].hash_key, Some(key));
    }
    let plain = ok(&upstream_with("sticky = {}"));
    assert_eq!(plain.upstreams[0].hash_key, None, "not hashing");
    assert_eq!(
        plain.upstreams[0]
            .sticky
            .as_ref()
            .map(|s| (s.cookie.as_str(), s.ttl)),
        Some(("rondo_srv", None))
    );
    let default_key = ok(&upstream_with("algorithm = \"consistent-hash\""));
    assert_eq!(default_key.upstreams[0].hash_key, Some(HashKey::ClientIp));
}

#[test]
fn bad_affinity_settings_say_what_is_expected() {
    let cases = [
        (
            "algorithm = \"consistent-hash\"\nhash_key = \"user\"",
            "`hash_key` \"user\" is not a key; expected \"client-ip\", \"uri\", \"header:NAME\"",
        ),
        (
            "algorithm = \"consistent-hash\"\nhash_key = \"header:x user\"",
            "is not a key",
        ),
        (
            "hash_key = \"uri\"",
            "`hash_key` applies to `algorithm = \"consistent-hash\"` only",
        ),
        (
            "hash_balance_factor = 1.5",
            "`hash_balance_factor` applies to `algorithm = \"consistent-hash\"` only",
        ),
        (
            "algorithm = \"consistent-hash\"\nhash_balance_factor = 0.8",
            "`hash_balance_factor` must be a number above 1",
        ),
        (
            "sticky = { cookie = \"a b\" }",
            "sticky `cookie` \"a b\" is not a cookie name",
        ),
        ("sticky = { ttl = 5 }", "expected a duration string"),
        (
            "algorithm = \"round-robin\"\nslow_start = \"30s\"",
            "`slow_start` ramps a backend's weight, which `algorithm = \"round-robin\"` ignores",
        ),
    ];
    for (extra, expected) in cases {
        let all = errors(&upstream_with(extra));
        assert!(
            all.iter().any(|e| e.2.contains(expected)),
            "{extra}: {all:?}"
        );
    }
}
