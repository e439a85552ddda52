//! `redirect_https = true` on a plain listener: every request is answered with a 308 to the
//! same host and path over `https://`, so old links and bookmarks keep working once a site
//! moves to TLS. 308 rather than 301 keeps the method and body (RFC 9110 §15.4.9).

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout_at;

use super::body;
use crate::config::ListenerConfig;

/// Reads one request head and answers it with the redirect (or 400 without a `Host`), then
/// closes the connection.
pub(crate) async fn serve(mut stream: TcpStream, config: &ListenerConfig) {
    let deadline = tokio::time::Instant::now() + config.header_timeout;
    let mut buf = Vec::new();
    let target = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => break location(&req),
            Ok(httparse::Status::Partial) if buf.len() < config.max_header_bytes => {}
            _ => break None,
        }
        match timeout_at(deadline, body::read_some(&mut stream, &mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    };
    let response = match target {
        Some(location) => format!(
            "HTTP/1.1 308 Permanent Redirect\r\nlocation: {location}\r\ncontent-length: 0\r\n\
             connection: close\r\n\r\n"
        ),
        None => {
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned()
        }
    };
    let _ = timeout_at(deadline, stream.write_all(response.as_bytes())).await;
}

/// `https://HOST/PATH` for a request, the port of `Host` dropped (the HTTPS listener's is
/// not known here: 443 is what browsers assume).
fn location(req: &httparse::Request<'_, '_>) -> Option<String> {
    let host = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .and_then(|h| std::str::from_utf8(h.value).ok())?;
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') => name,
        _ => host,
    };
    let valid = |c: char| c.is_ascii_alphanumeric() || "-.[]:".contains(c);
    let path = req.path?;
    if name.is_empty()
        || !name.chars().all(valid)
        || !path.starts_with('/')
        || path.contains(['\r', '\n'])
    {
        return None;
    }
    Some(format!("https://{name}{path}"))
}
