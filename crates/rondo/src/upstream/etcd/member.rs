//! The key schema, a contract with operators and their tools (`etcdctl`, scripts): a backend
//! of upstream `U` with id `I` is the key `{prefix}/upstreams/U/backends/I`, and its value is
//! a JSON object
//!
//! ```json
//! {"address": "10.0.0.5:8080", "weight": 1.5, "backup": false, "drain": false}
//! ```
//!
//! `address` is required (an IP address and port: names are for DNS discovery); `weight`
//! defaults to 1, `backup` and `drain` to false; any other field is refused, so a typo such
//! as `"wieght"` is reported rather than silently ignored.

use std::net::SocketAddr;

use balance::{BackendSpec, Weight};
use serde::{Deserialize, Serialize};

/// One backend as etcd holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Where requests go.
    pub address: SocketAddr,
    /// Relative share of traffic (> 0, at most three decimals).
    #[serde(default = "one")]
    pub weight: f64,
    /// Receives traffic only when no primary can.
    #[serde(default)]
    pub backup: bool,
    /// Takes no new requests (in-flight ones finish); every instance stops sending to it.
    #[serde(default)]
    pub drain: bool,
}

fn one() -> f64 {
    1.0
}

impl Member {
    /// Reads a value; the error says what is wrong with it, in serde's words.
    pub fn parse(value: &[u8]) -> Result<Member, String> {
        let member: Member = serde_json::from_slice(value).map_err(|e| e.to_string())?;
        Weight::new(member.weight).map_err(|e| e.to_string())?;
        Ok(member)
    }

    /// The JSON value written to etcd.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "address": self.address.to_string(),
            "weight": self.weight,
            "backup": self.backup,
            "drain": self.drain,
        })
        .to_string()
    }

    /// The pool's backend for this member with id `id`.
    pub fn spec(&self, id: &str) -> BackendSpec {
        BackendSpec {
            id: id.to_owned(),
            address: self.address,
            // Checked by `parse`; a member built in code has a valid weight too.
            weight: Weight::new(self.weight).unwrap_or(Weight::ONE),
            backup: self.backup,
            max_connections: None,
        }
    }
}

/// The keys of one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// `{prefix}/upstreams/`: everything rondo reads lives under it.
    root: String,
}

impl Keys {
    /// The keys under `prefix` (without a trailing `/`).
    pub fn new(prefix: &str) -> Keys {
        Keys {
            root: format!("{prefix}/upstreams/"),
        }
    }

    /// `{prefix}/upstreams/`, the range rondo reads and watches.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The key of backend `id` of `upstream`.
    pub fn backend(&self, upstream: &str, id: &str) -> String {
        format!("{}{upstream}/backends/{id}", self.root)
    }

    /// The upstream and backend id a key names, or why it names none.
    pub fn parse<'k>(&self, key: &'k str) -> Result<(&'k str, &'k str), String> {
        let rest = key
            .strip_prefix(self.root.as_str())
            .ok_or_else(|| format!("not under {}", self.root))?;
        match rest.split_once("/backends/") {
            Some((upstream, id))
                if !upstream.is_empty()
                    && !upstream.contains('/')
                    && !id.is_empty()
                    && !id.contains('/') =>
            {
                Ok((upstream, id))
            }
            _ => Err(format!(
                "not a backend key: expected {}UPSTREAM/backends/ID",
                self.root
            )),
        }
    }
}

/// The end of the range of every key starting with `prefix` (etcd's `range_end`: the prefix
/// with its last byte incremented).
pub fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Only 0xff bytes: every key from `prefix` on (etcd's "\0").
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_needs_an_address_and_takes_defaults_for_the_rest() {
        let m = Member::parse(br#"{"address": "10.0.0.5:8080"}"#).unwrap();
        assert_eq!(m.address, "10.0.0.5:8080".parse().unwrap());
        assert_eq!((m.weight, m.backup, m.drain), (1.0, false, false));
        let m = Member::parse(br#"{"address":"[::1]:80","weight":1.5,"backup":true,"drain":true}"#)
            .unwrap();
        assert_eq!(m.spec("a").weight.thousandths(), 1500);
        assert!(m.spec("a").backup && m.drain);
        assert_eq!(Member::parse(m.to_json().as_bytes()).unwrap(), m);
    }

    #[test]
    fn a_bad_value_says_what_is_wrong() {
        for (value, says) in [
            (&br#"{"weight": 1}"#[..], "missing field `address`"),
            (br#"{"address": "app:80"}"#, "invalid socket address"),
            (br#"{"address": "10.0.0.1:80", "weight": 0}"#, "weight"),
            (
                br#"{"address": "10.0.0.1:80", "wieght": 2}"#,
                "unknown field `wieght`",
            ),
            (b"not json", "expected"),
        ] {
            let e = Member::parse(value).unwrap_err();
            assert!(e.contains(says), "{}: {e}", String::from_utf8_lossy(value));
        }
    }

    #[test]
    fn keys_name_an_upstream_and_a_backend() {
        let keys = Keys::new("/rondo");
        assert_eq!(
            keys.backend("app", "a1"),
            "/rondo/upstreams/app/backends/a1"
        );
        assert_eq!(
            keys.parse("/rondo/upstreams/app/backends/a1"),
            Ok(("app", "a1"))
        );
        for bad in [
            "/rondo/upstreams/app",
            "/rondo/upstreams/app/backends/",
            "/rondo/upstreams//backends/a",
            "/rondo/upstreams/app/backends/a/b",
            "/other/upstreams/app/backends/a",
        ] {
            assert!(keys.parse(bad).is_err(), "{bad}");
        }
        assert_eq!(range_end("/rondo/upstreams/"), b"/rondo/upstreams0");
    }
}
