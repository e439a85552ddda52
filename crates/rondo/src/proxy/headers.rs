//! The request id and the header rules on HTTP/1.1 heads, as bytes: a head rondo has
//! already parsed and rewritten (`name: value` lines, CRLF, a blank line at the end) gets
//! headers removed and added here. A head that needs no change is not copied.

use super::head::SentId;
use crate::header_rules::{HeaderRules, Vars};
use crate::request_id::{self, Id};

/// The value of the first header called `name` (ASCII case-insensitive) in `head`.
pub(crate) fn value<'h>(head: &'h [u8], name: &str) -> Option<&'h [u8]> {
    lines(head).find_map(|line| {
        let colon = memchr::memchr(b':', line)?;
        line[..colon]
            .eq_ignore_ascii_case(name.as_bytes())
            .then(|| line[colon + 1..].trim_ascii())
    })
}

/// The header lines of `head` (after the start line, before the blank line), without CRLF.
/// Line ends are found with `memchr` (the access log searches every head for two values).
fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = memchr::memchr(b'\n', head).map_or(&[][..], |i| &head[i + 1..]);
    std::iter::from_fn(move || {
        let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        let line = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        (!line.is_empty()).then_some(line)
    })
}

/// The host a request named (`Host` without port), for `$host`.
pub(crate) fn host(head: &[u8]) -> &str {
    let host = value(head, "host").unwrap_or_default();
    let host = std::str::from_utf8(host).unwrap_or_default();
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Gives the request its id from what the client sent (read by the parser): the client's
/// `X-Request-Id` when valid (the head left as is), else a new one written into the head in
/// place of any invalid one.
pub(crate) fn request_id(head: &mut Vec<u8>, sent: SentId) -> Id {
    let id = match sent {
        SentId::Valid(id) => return id,
        SentId::Absent | SentId::Invalid => Id::generate(),
    };
    if sent == SentId::Invalid {
        rewrite(
            head,
            |name| name.eq_ignore_ascii_case(request_id::HEADER),
            |out| add(out, request_id::HEADER, id.as_str()),
        );
    } else {
        insert(head, |out| add(out, request_id::HEADER, id.as_str()));
    }
    id
}

/// Applies rules in order (a listener's, then its route's) to a head: each rule's removals,
/// then its `set` lines, so a later rule's `set` or `remove` of a name replaces what an
/// earlier rule set (as [`apply_to_map`] does for HTTP/2).
pub(crate) fn apply(head: &mut Vec<u8>, rules: &[&HeaderRules], vars: &Vars<'_>) {
    if rules.iter().all(|r| r.is_empty()) {
        return;
    }
    rewrite(
        head,
        |name| rules.iter().any(|r| r.touches(name)),
        |out| {
            for (i, rule) in rules.iter().enumerate() {
                for (name, value) in &rule.set {
                    if rules[i + 1..].iter().any(|later| later.touches(name)) {
                        continue;
                    }
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(b": ");
                    value.write(vars, out);
                    out.extend_from_slice(b"\r\n");
                }
            }
        },
    );
}

/// [`request_id::HEADER`] as a field name for header maps, parsed once.
pub(crate) const REQUEST_ID: http::HeaderName = http::HeaderName::from_static(request_id::HEADER);

/// The request id for an HTTP/2 request: the client's when valid, else a new one set in
/// `map` in place of any invalid one.
pub(crate) fn request_id_in_map(map: &mut http::HeaderMap) -> Id {
    if let Some(id) = map
        .get(REQUEST_ID)
        .and_then(|v| Id::from_client(v.as_bytes()))
    {
        return id;
    }
    let id = Id::generate();
    if let Ok(v) = http::HeaderValue::from_str(id.as_str()) {
        map.insert(REQUEST_ID, v);
    }
    id
}

/// [`apply`] for an HTTP/2 (or hyper) header map.
pub(crate) fn apply_to_map(map: &mut http::HeaderMap, rules: &[&HeaderRules], vars: &Vars<'_>) {
    for rule in rules {
        for name in &rule.remove {
            map.remove(name.as_str());
        }
        for (name, value) in &rule.set {
            let mut text = Vec::new();
            value.write(vars, &mut text);
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_bytes(&text),
            ) {
                map.insert(name, value);
            }
        }
    }
}

fn add(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Adds lines before the blank line that ends `head`, without copying the rest or
/// allocating: the blank line's CRLF comes off, the lines go on, the CRLF goes back.
fn insert(head: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let blank = head.ends_with(b"\r\n");
    if blank {
        head.truncate(head.len() - 2);
    }
    write(head);
    if blank {
        head.extend_from_slice(b"\r\n");
    }
}

/// Rebuilds `head` without the header lines `drop` names, with `write`'s lines at the end.
fn rewrite(head: &mut Vec<u8>, drop: impl Fn(&str) -> bool, write: impl FnOnce(&mut Vec<u8>)) {
    let mut out = Vec::with_capacity(head.len() + 128);
    let start = head
        .iter()
        .position(|&b| b == b'\n')
        .map_or(head.len(), |i| i + 1);
    out.extend_from_slice(&head[..start]);
    for line in lines(head) {
        let name = line
            .iter()
            .position(|&b| b == b':')
            .and_then(|c| std::str::from_utf8(&line[..c]).ok())
            .unwrap_or_default();
        if line.is_empty() || drop(name) {
            continue;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    write(&mut out);
    out.extend_from_slice(b"\r\n");
    *head = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header_rules::Value;

    const HEAD: &[u8] =
        b"GET / HTTP/1.1\r\nHost: example.com:8080\r\nX-Debug: 1\r\nAccept: */*\r\n\r\n";

    #[test]
    fn a_valid_client_id_is_kept_and_the_head_left_alone() {
        let mut head = b"GET / HTTP/1.1\r\nx-request-ID: abc-123\r\n\r\n".to_vec();
        let before = head.clone();
        let sent = SentId::Valid(Id::from_client(b"abc-123").unwrap());
        assert_eq!(request_id(&mut head, sent).as_str(), "abc-123");
        assert_eq!(head, before);
    }

    #[test]
    fn a_missing_or_invalid_id_is_replaced_by_a_generated_one() {
        let mut head = HEAD.to_vec();
        let id = request_id(&mut head, SentId::Absent);
        assert!(
            head.ends_with(
                format!("Accept: */*\r\nx-request-id: {}\r\n\r\n", id.as_str()).as_bytes()
            )
        );
        let mut head =
            b"GET / HTTP/1.1\r\nX-Request-Id: a b\r\nA: 1\r\nx-request-id: c\r\n\r\n".to_vec();
        let id = request_id(&mut head, SentId::Invalid);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            format!(
                "GET / HTTP/1.1\r\nA: 1\r\nx-request-id: {}\r\n\r\n",
                id.as_str()
            )
        );
    }

    #[test]
    fn a_value_is_the_first_of_its_name_trimmed_and_never_read_past_the_head() {
        let head = b"GET / HTTP/1.1\r\nA: 1\r\nreferer:  x \r\nReferer: y\r\n\r\nUser-Agent: body";
        assert_eq!(value(head, "referer"), Some(&b"x"[..]));
        assert_eq!(value(head, "a"), Some(&b"1"[..]));
        assert_eq!(value(head, "user-agent"), None);
        assert_eq!(value(b"GET / HTTP/1.1\r\nA: 1\r\n", "a"), Some(&b"1"[..]));
        assert_eq!(value(b"GET / HTTP/1.1", "a"), None);
        assert_eq!(host(HEAD), "example.com");
    }

    /// The variables of a request from 10.0.0.7 to [`HEAD`] with request id `r1`.
    fn vars() -> Vars<'static> {
        Vars {
            remote_addr: "10.0.0.7",
            host: host(HEAD),
            request_id: "r1",
        }
    }

    #[test]
    fn rules_remove_then_set_in_order_with_variables() {
        let listener = HeaderRules {
            set: vec![("x-real-ip".into(), Value::parse("$remote_addr").unwrap())],
            remove: vec!["x-debug".into()],
        };
        let route = HeaderRules {
            set: vec![(
                "x-host".into(),
                Value::parse("h=$host id=$request_id").unwrap(),
            )],
            remove: vec![],
        };
        let mut head = HEAD.to_vec();
        let vars = vars();
        apply(&mut head, &[&listener, &route], &vars);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET / HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\nx-real-ip: 10.0.0.7\r\n\
             x-host: h=example.com id=r1\r\n\r\n"
        );
    }

    #[test]
    fn a_later_rule_replaces_or_removes_what_an_earlier_one_set() {
        let listener = HeaderRules {
            set: vec![
                ("x-layer".into(), Value::parse("listener").unwrap()),
                ("x-gone".into(), Value::parse("1").unwrap()),
            ],
            remove: vec![],
        };
        let route = HeaderRules {
            set: vec![("x-layer".into(), Value::parse("route").unwrap())],
            remove: vec!["x-gone".into()],
        };
        let mut head = HEAD.to_vec();
        let vars = vars();
        apply(&mut head, &[&listener, &route], &vars);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET / HTTP/1.1\r\nHost: example.com:8080\r\nX-Debug: 1\r\nAccept: */*\r\n\
             x-layer: route\r\n\r\n"
        );
        let mut map = http::HeaderMap::new();
        apply_to_map(&mut map, &[&listener, &route], &vars);
        assert_eq!(map.get_all("x-layer").iter().count(), 1);
        assert_eq!(map.get("x-layer").unwrap(), "route");
        assert!(map.get("x-gone").is_none());
    }
}
