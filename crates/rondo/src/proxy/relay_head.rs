//! The heads [`super::relay`] writes: the request head a backend receives (HTTP/1.1 or
//! HTTP/2), and rondo's own answers, as an error page or, to a gRPC client, as a gRPC
//! error (HTTP 200 with `grpc-status` and `grpc-message`, which gRPC clients read; an
//! HTML or plain 503 reaches them as an opaque "unexpected content-type").

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::{Either, Full};

use super::protocol::HOP_BY_HOP;
use super::respond::ErrorPage;

/// Removes the fields that describe one hop only.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The head to send a backend: the client's, minus hop-by-hop fields, with `Host` from the
/// `:authority` and the forwarding fields set; also the host the client asked for, and
/// whether it accepts trailers (`te: trailers`, which gRPC requires and HTTP/2 keeps).
pub(crate) fn upstream_head<B>(
    req: &Request<B>,
    ip: &str,
    tls: bool,
) -> (http::request::Parts, Option<String>, bool) {
    let mut head = Request::builder()
        .method(req.method().clone())
        .uri(req.uri().path_and_query().map_or("/", |p| p.as_str()))
        .body(())
        .map(|r| r.into_parts().0)
        .unwrap_or_else(|_| Request::new(()).into_parts().0);
    let trailers = req.headers().get_all(header::TE).iter().any(|v| {
        v.to_str()
            .is_ok_and(|t| t.split(',').any(|t| t.trim() == "trailers"))
    });
    let mut headers = req.headers().clone();
    strip_hop_by_hop(&mut headers);
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        });
    let set = |headers: &mut HeaderMap, name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    let prior = |headers: &HeaderMap, name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let version = match req.version() {
        http::Version::HTTP_2 => "2.0",
        _ => "1.1",
    };
    let xff =
        prior(&headers, "x-forwarded-for").map_or_else(|| ip.to_owned(), |p| format!("{p}, {ip}"));
    let via = prior(&headers, "via").map_or_else(
        || format!("{version} rondo"),
        |p| format!("{p}, {version} rondo"),
    );
    set(&mut headers, "x-forwarded-for", xff);
    let proto = if tls { "https" } else { "http" };
    set(&mut headers, "x-forwarded-proto", proto.to_owned());
    set(&mut headers, "via", via);
    if let Some(h) = &host {
        set(&mut headers, "x-forwarded-host", h.clone());
        set(&mut headers, "host", h.clone());
    }
    head.headers = headers;
    (head, host, trailers)
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
    headers.insert("grpc-status", HeaderValue::from(u16::from(code)));
    let message = match (page.upstream, http_status) {
        (Some(u), 504) => format!("rondo: no answer from upstream {u} in time"),
        (Some(u), 500..) => format!("rondo: no backend of upstream {u} could take the call"),
        (_, s) => format!("rondo: request refused ({s})"),
    };
    // Plain ASCII without `%`: valid as a percent-encoded `grpc-message` as it stands.
    if let Ok(v) = HeaderValue::from_str(&message.replace('%', " ")) {
        headers.insert("grpc-message", v);
    }
    request_id(&mut res, page);
    res
}

fn request_id<B>(res: &mut Response<B>, page: &ErrorPage<'_>) {
    if let Some(id) = page
        .request_id
        .and_then(|id| HeaderValue::from_str(id).ok())
    {
        res.headers_mut().insert(crate::request_id::HEADER, id);
    }
}
