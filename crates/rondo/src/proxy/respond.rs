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

/// The one-line body of an error response.
pub(crate) fn error_body(status: u16, detail: &str) -> String {
    format!("{status} {}: {detail}\n", reason(status))
}

/// Builds a complete error response. `detail` is the body's one line.
pub(crate) fn error_response(status: u16, detail: &str, close: bool) -> Vec<u8> {
    let body = error_body(status, detail);
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n",
        reason(status),
        body.len()
    );
    if status == 503 {
        out.push_str(&format!("retry-after: {RETRY_AFTER_SECS}\r\n"));
    }
    if close {
        out.push_str("connection: close\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// Writes an error response, giving up after `timeout` (the client may not be reading).
pub(crate) async fn send_error(
    stream: &mut impl super::stream::Io,
    status: u16,
    detail: &str,
    close: bool,
    timeout: Duration,
) {
    let bytes = error_response(status, detail, close);
    let write = async {
        stream.write_all(&bytes).await?;
        stream.flush().await
    };
    let _ = tokio::time::timeout(timeout, write).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_unavailable_says_when_to_retry_and_names_the_reason() {
        let r = String::from_utf8(error_response(
            503,
            "no backend available in upstream `app`",
            true,
        ))
        .unwrap();
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(r.contains("retry-after: 1\r\n") && r.contains("connection: close\r\n"));
        let body = r.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(
            body,
            "503 Service Unavailable: no backend available in upstream `app`\n"
        );
        assert!(r.contains(&format!("content-length: {}\r\n", body.len())));
    }
}
