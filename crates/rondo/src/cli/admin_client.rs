//! The admin API client `rondo status` and `rondo reload` share: one plain HTTP/1.1 GET
//! with the bearer token, a deadline, and an error that says what failed (no connection,
//! no answer in time, or the status and body the API answered).

use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// How long to wait for the admin API.
const TIMEOUT: Duration = Duration::from_secs(5);

/// `host:port` of `host:port` or an `http://host:port[/…]` URL (the admin API speaks plain
/// HTTP only).
fn authority(url: &str) -> anyhow::Result<&str> {
    let rest = match url.split_once("://") {
        None => url,
        Some(("http", rest)) => rest,
        Some((scheme, _)) => bail!(
            "--admin {url:?}: the admin API speaks plain HTTP; give HOST:PORT such as \
             127.0.0.1:9901 (not {scheme}://)"
        ),
    };
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() {
        bail!("--admin {url:?}: no host; give HOST:PORT such as 127.0.0.1:9901");
    }
    Ok(host)
}

/// GETs `path` from the admin API at `base` (HOST:PORT or http://HOST:PORT): the body of a
/// 2xx answer, or an error naming what failed.
pub(crate) async fn fetch(base: &str, path: &str, token: Option<&str>) -> anyhow::Result<Bytes> {
    let host = authority(base)?;
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(host)
            .await
            .with_context(|| format!("cannot connect to the admin API at {host}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("admin API handshake")?;
        tokio::spawn(conn);
        let mut req = http::Request::get(path).header(http::header::HOST, host);
        if let Some(t) = token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let res = sender
            .send_request(req.body(Empty::<Bytes>::new())?)
            .await
            .context("admin API request")?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!(
                "the admin API answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            );
        }
        Ok(body)
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .with_context(|| format!("the admin API at {host} did not answer within {TIMEOUT:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_address_is_host_port_with_or_without_http() {
        assert_eq!(authority("127.0.0.1:9901").unwrap(), "127.0.0.1:9901");
        assert_eq!(
            authority("http://127.0.0.1:9901/").unwrap(),
            "127.0.0.1:9901"
        );
        assert_eq!(authority("[::1]:9901").unwrap(), "[::1]:9901");
        let e = authority("https://127.0.0.1:9901").unwrap_err().to_string();
        assert!(e.contains("plain HTTP"), "{e}");
        assert!(authority("http://").is_err());
    }
}
