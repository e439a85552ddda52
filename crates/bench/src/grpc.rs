//! gRPC unary calls (`--grpc-unary`): what makes an HTTP/2 request a gRPC call — the method
//! path as the URI's path, `content-type: application/grpc` and `te: trailers`, the message
//! framed with its 5-byte prefix — and where a call's outcome is read, `grpc-status`.
//! The calls themselves travel the HTTP/2 path (`h2.rs`); the wire format is gRPC's
//! "PROTOCOL-HTTP2" document.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Uri};

use super::error::BenchError;

/// The URI of a gRPC call: the URL's scheme and authority with the method path `method`
/// (`/package.Service/Method`; the leading slash may be left out). Refuses a URL that has a
/// path of its own and a method path of another shape.
pub(crate) fn grpc_call(url: &Uri, method: &str) -> Result<Uri, String> {
    if url.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(
            "with --grpc-unary the URL is only scheme, host and port; the method path goes \
             after --grpc-unary"
                .into(),
        );
    }
    let path = if method.starts_with('/') {
        method.to_owned()
    } else {
        format!("/{method}")
    };
    let shaped = path[1..].split_once('/').is_some_and(|(service, name)| {
        !service.is_empty() && !name.is_empty() && !name.contains('/')
    });
    if !shaped {
        return Err(format!(
            "{method:?} is not a gRPC method path; expected /package.Service/Method, e.g. \
             /grpc.health.v1.Health/Check"
        ));
    }
    let mut parts = url.clone().into_parts();
    parts.path_and_query = Some(
        path.parse()
            .map_err(|e| format!("{method:?} is not a gRPC method path: {e}"))?,
    );
    Uri::from_parts(parts).map_err(|e| e.to_string())
}

/// Adds what makes a POST a gRPC call, unless given with `-H`: `content-type:
/// application/grpc` (a server answers anything else with 415) and `te: trailers` (the
/// spec requires it; proxies use it to know the client reads trailers).
pub(crate) fn add_grpc_headers(headers: &mut Vec<(HeaderName, HeaderValue)>) {
    let has = |headers: &[(HeaderName, HeaderValue)], name: &HeaderName| {
        headers.iter().any(|(n, _)| n == name)
    };
    if !has(headers, &http::header::CONTENT_TYPE) {
        headers.push((
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        ));
    }
    if !has(headers, &http::header::TE) {
        headers.push((http::header::TE, HeaderValue::from_static("trailers")));
    }
}

/// One gRPC message: a byte saying "not compressed", the length as 4 bytes big-endian, then
/// the message (serialised protobuf, sent as given).
pub(crate) fn grpc_message(message: &[u8]) -> Result<Bytes, BenchError> {
    let len = u32::try_from(message.len())
        .map_err(|_| BenchError::InvalidOption("a gRPC message is at most 4 GiB".into()))?;
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(len);
    out.put_slice(message);
    Ok(out.freeze())
}

/// The `grpc-status` in `headers`, if there is one and it is a number.
pub(crate) fn grpc_status_in(headers: &http::HeaderMap) -> Option<u32> {
    std::str::from_utf8(headers.get("grpc-status")?.as_bytes())
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_a_grpc_message_with_its_length() {
        assert_eq!(&grpc_message(b"").unwrap()[..], b"\0\0\0\0\0");
        assert_eq!(
            &grpc_message(b"\x0a\x02hi").unwrap()[..],
            b"\0\0\0\0\x04\x0a\x02hi"
        );
    }

    #[test]
    fn reads_grpc_status_only_when_it_is_a_number() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(grpc_status_in(&headers), None);
        headers.insert("grpc-status", HeaderValue::from_static("14"));
        assert_eq!(grpc_status_in(&headers), Some(14));
        headers.insert("grpc-status", HeaderValue::from_static("OK"));
        assert_eq!(grpc_status_in(&headers), None);
    }
}
