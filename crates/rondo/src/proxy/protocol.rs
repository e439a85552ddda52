//! HTTP facts every protocol path shares, written once: which fields never cross a proxy,
//! which methods are safe to send twice, what a status says about the backend, and how the
//! forwarding fields read.

use balance::Outcome;

/// Connection-specific fields (RFC 9110 §7.6.1): they describe one hop, so a proxy drops
/// them (and HTTP/2 forbids them). `Upgrade` is put back by the HTTP/1.1 path when the
/// request really upgrades.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// True for a field in [`HOP_BY_HOP`], in any letter case.
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    const LENGTHS: u64 = lengths(&HOP_BY_HOP);
    one_of(name, &HOP_BY_HOP, LENGTHS)
}

/// The lengths of `names` as a bit set (bit `n` for a name of `n` bytes; all are shorter
/// than 64).
const fn lengths(names: &[&str]) -> u64 {
    let mut set = 0u64;
    let mut i = 0;
    while i < names.len() {
        assert!(names[i].len() < 64);
        set |= 1 << names[i].len();
        i += 1;
    }
    set
}

/// True when `name` is one of `names` (whose [`lengths`] are `lengths`), in any letter case.
/// A request's fields are checked against these lists one by one, and most of them have a
/// length no name in the list has: the bit test settles those without comparing letters.
fn one_of(name: &str, names: &[&str], lengths: u64) -> bool {
    name.len() < 64
        && lengths & (1 << name.len()) != 0
        && names.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// Methods that are safe to send twice (RFC 9110 §9.2.2): a retry of one of these cannot
/// do twice what the client asked once.
pub(crate) fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// What a response status says about the backend: 502, 503 and 504 that it cannot serve
/// now (they count against its breaker, and its ejection when configured), another 5xx
/// that the application failed this request (see [`Outcome::ApplicationError`]), anything
/// else is a success.
pub(crate) fn outcome_of(status: u16) -> Outcome {
    match status {
        502..=504 => Outcome::ServerError,
        500.. => Outcome::ApplicationError,
        _ => Outcome::Success,
    }
}

/// Forwarding fields rondo writes itself: it appends to `X-Forwarded-For` and `Via`, and
/// sets `X-Forwarded-Proto` and `X-Forwarded-Host` (a client's own values for these two are
/// not trusted). The client's copies are dropped from the forwarded head.
pub(crate) const FORWARDING: [&str; 4] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "via",
];

/// True for a field in [`FORWARDING`], in any letter case.
pub(crate) fn is_forwarding(name: &str) -> bool {
    const LENGTHS: u64 = lengths(&FORWARDING);
    one_of(name, &FORWARDING, LENGTHS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_fields_are_matched_in_any_case() {
        assert!(is_hop_by_hop("Connection") && is_hop_by_hop("TRANSFER-ENCODING"));
        assert!(!is_hop_by_hop("content-length") && !is_hop_by_hop("host"));
        // Names as long as one in the list are compared letter by letter.
        assert!(!is_hop_by_hop("User-Agent") && !is_hop_by_hop("Sec-Ch-Ua-Mobile"));
        assert!(is_hop_by_hop("Keep-Alive") && is_hop_by_hop("TE") && is_hop_by_hop("upgrade"));
        assert!(!is_hop_by_hop("") && !is_hop_by_hop(&"x".repeat(80)));
        assert!(is_forwarding("X-FORWARDED-FOR") && is_forwarding("Via"));
        assert!(!is_forwarding("Accept-Language") && !is_forwarding("vib"));
    }

    #[test]
    fn only_safe_methods_are_idempotent() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(is_idempotent(m), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "get"] {
            assert!(!is_idempotent(m), "{m}");
        }
    }

    #[test]
    fn server_errors_are_the_backends_failure() {
        assert_eq!(outcome_of(499), Outcome::Success);
        assert_eq!(outcome_of(500), Outcome::ApplicationError);
        assert_eq!(outcome_of(501), Outcome::ApplicationError);
        assert_eq!(outcome_of(504), Outcome::ServerError);
        assert_eq!(outcome_of(503), Outcome::ServerError);
    }
}
