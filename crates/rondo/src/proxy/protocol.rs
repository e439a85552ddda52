//! HTTP facts every protocol path shares, written once: which fields never cross a proxy,
//! which methods are safe to send twice, what a status says about the backend, and how the
//! forwarding fields read.

use balance::Outcome;

/// Connection-specific fields (RFC 9110 §7.6.1): they describe one hop, so a proxy drops
/// them (and HTTP/2 forbids them). `Upgrade` is put back by the HTTP/1.1 path when the
/// request really upgrades.
pub(crate) const HOP_BY_HOP: [&str; 7] = [
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
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Methods that are safe to send twice (RFC 9110 §9.2.2): a retry of one of these cannot
/// do twice what the client asked once.
pub(crate) fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// What a response status says about the backend: 5xx counts against it (breaker, and
/// ejection when configured), anything else is a success.
pub(crate) fn outcome_of(status: u16) -> Outcome {
    if status >= 500 {
        Outcome::ServerError
    } else {
        Outcome::Success
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
    FORWARDING.iter().any(|h| name.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_fields_are_matched_in_any_case() {
        assert!(is_hop_by_hop("Connection") && is_hop_by_hop("TRANSFER-ENCODING"));
        assert!(!is_hop_by_hop("content-length") && !is_hop_by_hop("host"));
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
        assert_eq!(outcome_of(500), Outcome::ServerError);
        assert_eq!(outcome_of(503), Outcome::ServerError);
    }
}
