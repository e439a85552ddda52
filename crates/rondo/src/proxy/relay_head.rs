//! The heads [`super::relay`] writes: the request head a backend receives (HTTP/1.1 or
//! HTTP/2), and rondo's own answers, as an error page or, to a gRPC client, as a gRPC
//! error (HTTP 200 with `grpc-status` and `grpc-message`, which gRPC clients read; an
//! HTML or plain 503 reaches them as an opaque "unexpected content-type").

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::{Either, Full};

use super::protocol::is_hop_by_hop;
use super::respond::ErrorPage;

/// Removes the fields that describe one hop only. Most heads carry none: one pass over the
/// names they have finds that, where removing each listed name would parse and hash it.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    while let Some(name) = headers.keys().find(|n| is_hop_by_hop(n.as_str())).cloned() {
        headers.remove(name);
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The host the client asked for: the `:authority` (HTTP/2, or an absolute-form target),
/// else the `Host` field.
pub(crate) fn request_host<B>(req: &Request<B>) -> Option<String> {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
}

/// The head to send a backend, made from the client's (taken, not copied): its target in
/// origin form, minus hop-by-hop fields, with `Host` set to `host` (see [`request_host`]),
/// or to the upstream's name when the client sent none (HTTP/1.0; nginx sends its
/// `proxy_host`), and the forwarding fields set; also whether the client accepts trailers
/// (`te: trailers`, which gRPC requires and HTTP/2 keeps).
pub(crate) fn upstream_head(
    client: http::request::Parts,
    host: Option<&str>,
    upstream: &str,
    ip: &str,
    tls: bool,
) -> (http::request::Parts, bool) {
    let http::request::Parts {
        method,
        uri,
        version,
        mut headers,
        ..
    } = client;
    let mut head = Request::new(()).into_parts().0;
    head.method = method;
    head.uri = uri
        .into_parts()
        .path_and_query
        .map_or_else(|| Uri::from_static("/"), Uri::from);
    let trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str()
            .is_ok_and(|t| t.split(',').any(|t| t.trim() == "trailers"))
    });
    strip_hop_by_hop(&mut headers);
    // Each value is made straight from what it says: the common case (no earlier proxy)
    // formats nothing, and rondo's own fixed values are static.
    let appended = |headers: &HeaderMap, name: &HeaderName, own: &str| match headers
        .get(name)
        .and_then(|v| v.to_str().ok())
    {
        Some(prior) => HeaderValue::from_str(&format!("{prior}, {own}")),
        None => HeaderValue::from_str(own),
    };
    let via = match version {
        http::Version::HTTP_2 => "2.0 rondo",
        _ => "1.1 rondo",
    };
    if let Ok(v) = appended(&headers, &X_FORWARDED_FOR, ip) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
    headers.insert(X_FORWARDED_PROTO, proto);
    if let Ok(v) = appended(&headers, &header::VIA, via) {
        headers.insert(header::VIA, v);
    }
    match host.map(HeaderValue::from_str) {
        Some(Ok(h)) => {
            headers.insert(X_FORWARDED_HOST, h.clone());
            headers.insert(header::HOST, h);
        }
        Some(Err(_)) => {}
        None => {
            if let Ok(h) = HeaderValue::from_str(upstream) {
                headers.insert(header::HOST, h);
            }
        }
    }
    head.headers = headers;
    (head, trailers)
}

/// Turns an HTTP/1.1 head into the HTTP/2 head of the same request: the target becomes an
/// absolute URI (`:scheme`, `:authority` from `Host`, or the backend's address), `Host`
/// goes, and `te: trailers` is kept when the client sent it.
pub(crate) fn to_http2(
    head: &mut http::request::Parts,
    tls: bool,
    addr: std::net::SocketAddr,
    trailers: bool,
) {
    let authority = head
        .headers
        .remove(header::HOST)
        .and_then(|h| h.to_str().ok().map(str::to_owned))
        .unwrap_or_else(|| addr.to_string());
    let scheme = if tls { "https" } else { "http" };
    let path = head.uri.path_and_query().map_or("/", |p| p.as_str());
    if let Ok(uri) = format!("{scheme}://{authority}{path}").parse::<Uri>() {
        head.uri = uri;
    }
    head.version = http::Version::HTTP_2;
    if trailers {
        head.headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Body of one of rondo's own answers.
pub(crate) type Own = Full<Bytes>;

/// rondo's own answer `status` with this page: plain text, or a gRPC error to a gRPC
/// client.
pub(crate) fn error<L>(status: u16, page: &ErrorPage<'_>, grpc: bool) -> Response<Either<L, Own>> {
    if grpc {
        return grpc_error(crate::grpc::status_for_http(status), status, page);
    }
    let body = page.body(status);
    let mut res = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *res.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == 503 {
        res.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(super::respond::RETRY_AFTER_SECS),
        );
    }
    request_id(&mut res, page);
    res
}

/// A gRPC "trailers-only" error: HTTP 200, `content-type: application/grpc`, the status and
/// a message in the head, no body.
fn grpc_error<L>(code: u8, http_status: u16, page: &ErrorPage<'_>) -> Response<Either<L, Own>> {
    let mut res = Response::new(Either::Right(Full::new(Bytes::new())));
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(crate::grpc::STATUS, HeaderValue::from(u16::from(code)));
    let message = match (page.upstream, http_status) {
        (Some(u), 504) => format!("rondo: no answer from upstream {u} in time"),
        (Some(u), 500..) => format!("rondo: no backend of upstream {u} could take the call"),
        (_, s) => format!("rondo: request refused ({s})"),
    };
    // Plain ASCII without `%`: valid as a percent-encoded `grpc-message` as it stands.
    if let Ok(v) = HeaderValue::from_str(&message.replace('%', " ")) {
        headers.insert(crate::grpc::MESSAGE, v);
    }
    request_id(&mut res, page);
    res
}

fn request_id<B>(res: &mut Response<B>, page: &ErrorPage<'_>) {
    if let Some(id) = page
        .request_id
        .and_then(|id| HeaderValue::from_str(id).ok())
    {
        res.headers_mut().insert(super::headers::REQUEST_ID, id);
    }
}

/// Moves a response's field values into one buffer of their own. hyper's HTTP/2 client
/// can hand them out as slices of the buffer the backend's frames were read into (h2's HPACK
/// decoder cuts literal values out of it), and h2's HPACK encoder keeps the values it indexes for as long as the client's
/// connection lives: without the copy, each idle HTTP/2 connection would hold a whole read
/// buffer of a backend connection's. Trailers are not copied; whether they hold buffers
/// the same way has not been measured.
pub(crate) fn own_values(headers: &mut HeaderMap) {
    let total: usize = headers.values().map(|v| v.len()).sum();
    let mut copy = bytes::BytesMut::with_capacity(total);
    for value in headers.values() {
        copy.extend_from_slice(value.as_bytes());
    }
    let mut copy = copy.freeze();
    for value in headers.values_mut() {
        let own = copy.split_to(value.len());
        if let Ok(mut own) = HeaderValue::from_maybe_shared(own) {
            own.set_sensitive(value.is_sensitive());
            *value = own;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_values_stop_sharing_the_buffer_they_were_read_into() {
        // As hyper's client hands them out: slices of one read buffer.
        let read = Bytes::from(b"HTTP/1.1 200 OK\r\nserver: nginx\r\ncontent-type: text/plain\r\nx-a: \r\nx-b: 1\r\n\r\nok".to_vec());
        let slice = |text: &str| {
            let start = read
                .windows(text.len())
                .position(|w| w == text.as_bytes())
                .unwrap();
            HeaderValue::from_maybe_shared(read.slice(start..start + text.len())).unwrap()
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::SERVER, slice("nginx"));
        headers.insert(header::CONTENT_TYPE, slice("text/plain"));
        headers.insert("x-a", HeaderValue::from_static(""));
        headers.append("x-b", slice("1"));
        let mut secret = slice("OK");
        secret.set_sensitive(true);
        headers.append("x-b", secret);
        own_values(&mut headers);
        let inside = |v: &HeaderValue| {
            let p = v.as_bytes().as_ptr() as usize;
            let r = read.as_ptr() as usize;
            !v.is_empty() && p >= r && p < r + read.len()
        };
        assert!(
            !headers.values().any(inside),
            "a value still points into the read buffer"
        );
        assert_eq!(headers[header::SERVER], "nginx");
        assert_eq!(headers[header::CONTENT_TYPE], "text/plain");
        assert_eq!(headers["x-a"], "");
        let b: Vec<_> = headers.get_all("x-b").iter().collect();
        assert_eq!(b, ["1", "OK"]);
        assert!(b[1].is_sensitive() && !b[0].is_sensitive());
    }

    #[test]
    fn the_backend_head_is_the_clients_in_origin_form_without_hop_by_hop_fields() {
        let mut client = Request::builder()
            .method("PUT")
            .uri("http://shop.example:8080/cart?id=7")
            .version(http::Version::HTTP_2)
            .header("connection", "keep-alive")
            .header("Keep-Alive", "timeout=5")
            .header("te", "gzip")
            .header("te", "trailers")
            .header("transfer-encoding", "chunked")
            .header("upgrade", "websocket")
            .header("Proxy-Connection", "keep-alive")
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-forwarded-proto", "ftp")
            .header("via", "1.1 edge")
            .header("x-kept", "1")
            .header("x-kept", "2")
            .body(())
            .unwrap();
        client.extensions_mut().insert(7u8);
        let host = request_host(&client);
        assert_eq!(host.as_deref(), Some("shop.example:8080"));
        let (head, trailers) = upstream_head(
            client.into_parts().0,
            host.as_deref(),
            "app",
            "10.0.0.1",
            true,
        );
        assert!(
            trailers,
            "`te: trailers` among several values is seen before te goes"
        );
        assert_eq!(head.method, "PUT");
        assert_eq!(head.uri, "/cart?id=7");
        assert_eq!(head.version, http::Version::HTTP_11);
        assert!(head.extensions.get::<u8>().is_none());
        let h = &head.headers;
        for gone in HOP {
            assert!(!h.contains_key(gone), "{gone} is hop-by-hop");
        }
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "shop.example:8080");
        assert_eq!(h["host"], "shop.example:8080");
        assert_eq!(h["via"], "1.1 edge, 2.0 rondo");
        let kept: Vec<_> = h.get_all("x-kept").iter().collect();
        assert_eq!(kept, ["1", "2"]);
        assert_eq!(h.len(), 7);
    }

    const HOP: [&str; 7] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
        "trailer",
    ];

    #[test]
    fn a_head_without_a_target_or_host_gets_the_root_and_the_upstreams_name_as_host() {
        let client = Request::builder()
            .method("GET")
            .uri("/")
            .header("trailer", "x")
            .body(())
            .unwrap();
        let host = request_host(&client);
        assert_eq!(host, None);
        let (head, trailers) = upstream_head(client.into_parts().0, None, "app", "::1", false);
        assert!(!trailers);
        assert_eq!(head.uri, "/");
        assert_eq!(head.headers["host"], "app");
        assert!(!head.headers.contains_key("x-forwarded-host"));
        assert!(!head.headers.contains_key("trailer"));
        assert_eq!(head.headers["via"], "1.1 rondo");
        assert_eq!(head.headers["x-forwarded-proto"], "http");
    }
}
