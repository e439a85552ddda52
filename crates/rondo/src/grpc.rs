//! gRPC wire facts rondo needs as a proxy and a health checker, written once: status codes
//! and their names, the `grpc-timeout` header, the 5-byte message framing, and the trailers
//! of an error made by rondo itself. rondo forwards gRPC as HTTP/2; it never decodes the
//! messages it forwards (only the health check's own, which are two fields long).
//!
//! References: the gRPC "PROTOCOL-HTTP2" and "statuscodes" documents.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

/// The gRPC status codes by number (0–16), by their canonical names.
pub const STATUS_NAMES: [&str; 17] = [
    "ok",
    "cancelled",
    "unknown",
    "invalid-argument",
    "deadline-exceeded",
    "not-found",
    "already-exists",
    "permission-denied",
    "resource-exhausted",
    "failed-precondition",
    "aborted",
    "out-of-range",
    "unimplemented",
    "internal",
    "unavailable",
    "data-loss",
    "unauthenticated",
];

/// UNAVAILABLE: what a client gets when rondo found no backend to answer; gRPC clients
/// treat it as "try again later".
pub const UNAVAILABLE: u8 = 14;

/// DEADLINE_EXCEEDED: what a client gets when the backend did not answer in time.
pub const DEADLINE_EXCEEDED: u8 = 4;

/// The code named `name` ("unavailable", "UNAVAILABLE", "resource_exhausted", …).
pub fn status_by_name(name: &str) -> Option<u8> {
    let wanted = name.trim().to_ascii_lowercase().replace('_', "-");
    STATUS_NAMES
        .iter()
        .position(|n| *n == wanted)
        .and_then(|i| u8::try_from(i).ok())
}

/// What a call's status says of the backend, for the circuit breaker and passive ejection
/// (`None`: the status is missing, which gRPC reads as INTERNAL). The server cannot serve:
/// DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNAVAILABLE (HTTP's 504, 503). The application
/// failed the call: UNKNOWN, UNIMPLEMENTED, INTERNAL, DATA_LOSS (HTTP's 500, 501). Any other
/// status is the caller's mistake or an application's answer: a success.
pub fn outcome_of(code: Option<u8>) -> balance::Outcome {
    match code {
        Some(4 | 8 | 14) => balance::Outcome::ServerError,
        Some(2 | 12 | 13 | 15) | None => balance::Outcome::ApplicationError,
        Some(_) => balance::Outcome::Success,
    }
}

/// The request field that carries a call's deadline (see [`parse_timeout`]).
pub const TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// The response field that carries a call's status, in the head or the trailers (see
/// [`parse_status`]).
pub const STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// The response field that carries a status's message, percent-encoded.
pub const MESSAGE: http::HeaderName = http::HeaderName::from_static("grpc-message");

/// True for a `content-type` of a gRPC call (`application/grpc`, `application/grpc+proto`,
/// …).
pub fn is_grpc(content_type: &[u8]) -> bool {
    content_type
        .strip_prefix(b"application/grpc")
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'+' || rest[0] == b';')
}

/// The duration a `grpc-timeout` value names (`"100m"`, `"5S"`): at most 8 digits and a
/// unit (H, M, S, m milli, u micro, n nano); `None` when malformed.
pub fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The `grpc-status` code of a header value, `None` when absent or malformed.
pub fn parse_status(value: Option<&[u8]>) -> Option<u8> {
    let text = std::str::from_utf8(value?).ok()?;
    text.trim().parse().ok()
}

/// The gRPC status rondo answers for its own HTTP `status`: no backend or a failed one is
/// UNAVAILABLE (clients retry it), a timeout DEADLINE_EXCEEDED, an oversized request
/// RESOURCE_EXHAUSTED, another request error INTERNAL.
pub fn status_for_http(status: u16) -> u8 {
    match status {
        408 | 504 => DEADLINE_EXCEEDED,
        413 | 431 => 8,
        400..=499 => 13,
        _ => UNAVAILABLE,
    }
}

/// One length-prefixed gRPC message, uncompressed (flag 0, 4-byte big-endian length).
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    out.put_slice(message);
    out.freeze()
}

/// The first message of a body made of length-prefixed messages; `None` when incomplete
/// or compressed.
pub fn unframe(body: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = body.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    (flag == 0).then_some(())?;
    rest.get(4..4 + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_read_every_unit_and_reject_the_malformed() {
        assert_eq!(parse_timeout(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_timeout(b"9n"), Some(Duration::from_nanos(9)));
        for bad in [&b""[..], b"S", b"123456789S", b"10x", b"-1S", b"1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn statuses_are_named_as_in_the_grpc_documents() {
        assert_eq!(status_by_name("unavailable"), Some(14));
        assert_eq!(status_by_name("RESOURCE_EXHAUSTED"), Some(8));
        assert_eq!(status_by_name("ok"), Some(0));
        assert_eq!(status_by_name("teapot"), None);
        use balance::Outcome::{ApplicationError, ServerError, Success};
        for (code, outcome) in [
            (Some(14), ServerError),
            (Some(8), ServerError),
            (Some(4), ServerError),
            (Some(13), ApplicationError),
            (None, ApplicationError),
            (Some(0), Success),
            (Some(5), Success),
            (Some(3), Success),
        ] {
            assert_eq!(outcome_of(code), outcome, "{code:?}");
        }
    }

    #[test]
    fn grpc_content_types_are_recognised() {
        assert!(is_grpc(b"application/grpc"));
        assert!(is_grpc(b"application/grpc+proto"));
        assert!(!is_grpc(b"application/grpcx"));
        assert!(!is_grpc(b"application/json"));
    }

    #[test]
    fn a_framed_message_reads_back() {
        let framed = frame(b"\x0a\x03abc");
        assert_eq!(&framed[..5], &[0, 0, 0, 0, 5]);
        assert_eq!(unframe(&framed), Some(&b"\x0a\x03abc"[..]));
        assert_eq!(unframe(&framed[..6]), None);
    }

    #[test]
    fn proxy_errors_map_to_grpc_statuses() {
        assert_eq!(status_for_http(503), UNAVAILABLE);
        assert_eq!(status_for_http(502), UNAVAILABLE);
        assert_eq!(status_for_http(504), DEADLINE_EXCEEDED);
        assert_eq!(status_for_http(413), 8);
    }
}
