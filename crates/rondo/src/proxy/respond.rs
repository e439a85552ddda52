//! Responses rondo writes itself: errors with a short plain-text body that says what
//! happened, so a user reading `curl -i` output knows it came from the balancer.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// Seconds a client is told to wait (`Retry-After`) when no backend is available: the
/// breaker and health checks bring backends back on the order of seconds.
pub(crate) const RETRY_AFTER_SECS: u64 = 1;

/// Reason phrase for the statuses rondo produces.
fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// What a client is told of an error rondo answers itself. A 5xx says only the status,
/// reason and the upstream's name: how a backend failed (its address, the OS error) is for
/// the log, where the request id leads. A 4xx also says what was wrong with the request,
/// since that is the client's to fix and reveals nothing of the inside.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ErrorPage<'a> {
    /// What was wrong with the request (4xx only; ignored for 5xx).
    pub(crate) detail: Option<&'a str>,
    /// The upstream that could not answer.
    pub(crate) upstream: Option<&'a str>,
    /// The request's id, also sent as `x-request-id`.
    pub(crate) request_id: Option<&'a str>,
}

impl ErrorPage<'_> {
    /// The body: `503 Service Unavailable (upstream app)` and the request id on a line of
    /// its own.
    pub(crate) fn body(&self, status: u16) -> String {
        let mut body = format!("{status} {}", reason(status));
        match (status < 500, self.detail, self.upstream) {
            (true, Some(detail), _) => body.push_str(&format!(": {detail}")),
            (false, _, Some(upstream)) => body.push_str(&format!(" (upstream {upstream})")),
            _ => {}
        }
        body.push('\n');
        if let Some(id) = self.request_id {
            body.push_str(&format!("request id: {id}\n"));
        }
        body
    }

    /// A complete HTTP/1.1 response.
    pub(crate) fn response(&self, status: u16, close: bool) -> Vec<u8> {
        let body = self.body(status);
        let mut out = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n",
            reason(status),
            body.len()
        );
        if status == 503 {
            out.push_str(&format!("retry-after: {RETRY_AFTER_SECS}\r\n"));
        }
        if let Some(id) = self.request_id {
            out.push_str(&format!("{}: {id}\r\n", crate::request_id::HEADER));
        }
        if close {
            out.push_str("connection: close\r\n");
        }
        out.push_str("\r\n");
        out.push_str(&body);
        out.into_bytes()
    }
}

/// Writes an error response, giving up after `timeout` (the client may not be reading);
/// returns the bytes written, as [`send_page`].
pub(crate) async fn send_error(
    stream: &mut impl super::stream::Io,
    status: u16,
    detail: &str,
    close: bool,
    timeout: Duration,
) -> u64 {
    let page = ErrorPage {
        detail: Some(detail),
        ..ErrorPage::default()
    };
    send_page(stream, status, &page, close, timeout).await
}

/// Writes an error page, giving up after `timeout` (the client may not be reading); returns
/// the bytes written (head and body, for the access log's `$bytes_sent`), 0 when the client
/// did not take them all.
pub(crate) async fn send_page(
    stream: &mut impl super::stream::Io,
    status: u16,
    page: &ErrorPage<'_>,
    close: bool,
    timeout: Duration,
) -> u64 {
    let bytes = page.response(status, close);
    let write = async {
        stream.write_all(&bytes).await?;
        stream.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => bytes.len() as u64,
        Ok(Err(_)) | Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(r: &[u8]) -> (String, String) {
        let r = String::from_utf8(r.to_vec()).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        let head = format!("{head}\r\n");
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
        (head, body.to_owned())
    }

    #[test]
    fn service_unavailable_says_when_to_retry_names_the_upstream_and_the_request_id() {
        let page = ErrorPage {
            detail: Some("connecting to 10.0.0.1:80 failed: Connection refused (os error 111)"),
            upstream: Some("app"),
            request_id: Some("r-1"),
        };
        let (head, body) = split(&page.response(503, true));
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(head.contains("retry-after: 1\r\n") && head.contains("connection: close\r\n"));
        assert!(head.contains("x-request-id: r-1\r\n"));
        assert_eq!(
            body,
            "503 Service Unavailable (upstream app)\nrequest id: r-1\n"
        );
    }

    #[test]
    fn a_gateway_error_never_shows_the_backend_or_the_os_error() {
        let page = ErrorPage {
            detail: Some("connecting to 127.0.0.1:9052 failed: Connection refused (os error 111)"),
            ..ErrorPage::default()
        };
        let (_, body) = split(&page.response(502, false));
        assert_eq!(body, "502 Bad Gateway\n");
    }

    #[test]
    fn a_client_error_says_what_was_wrong_with_the_request() {
        let page = ErrorPage {
            detail: Some("invalid header name"),
            ..ErrorPage::default()
        };
        let (_, body) = split(&page.response(400, true));
        assert_eq!(body, "400 Bad Request: invalid header name\n");
    }
}
