//! The gRPC health check (`kind = "grpc"`): the standard `grpc.health.v1.Health/Check` call,
//! as Envoy and Traefik make it, over a fresh HTTP/2 connection (h2c, or h2 by ALPN when the
//! upstream has `tls`). The check passes when the backend answers `SERVING` for the
//! configured service ("" asks about the server as a whole).
//!
//! The two messages involved are one field each (`HealthCheckRequest.service`, a string;
//! `HealthCheckResponse.status`, an enum), so they are encoded and read here by hand rather
//! than through generated code.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::CheckFailure;
use crate::config::HealthCheckConfig;
use crate::grpc;
use crate::tls::{BackendAlpn, BackendConn, UpstreamTls};

/// `HealthCheckResponse.ServingStatus` by number.
const SERVING_STATUS: [&str; 4] = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];

/// Makes one `Health/Check` call to `addr`; `Ok(200)` when the backend is SERVING.
pub(super) async fn probe(
    addr: SocketAddr,
    config: &HealthCheckConfig,
    tls: Option<&UpstreamTls>,
    io: impl Fn(std::io::Error) -> CheckFailure,
) -> Result<u16, CheckFailure> {
    let stream = BackendConn::connect_alpn(addr, tls, BackendAlpn::H2)
        .await
        .map_err(io)?;
    let broken = |e: hyper::Error| CheckFailure::Error(format!("HTTP/2: {e}"));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(broken)?;
    let task = AbortOnDrop(tokio::spawn(conn));
    let authority = config.host.clone().unwrap_or_else(|| addr.to_string());
    let scheme = if tls.is_some() { "https" } else { "http" };
    let request = http::Request::post(format!(
        "{scheme}://{authority}/grpc.health.v1.Health/Check"
    ))
    .header(http::header::CONTENT_TYPE, "application/grpc")
    .header(http::header::TE, "trailers")
    .header(http::header::USER_AGENT, "rondo-health-check")
    .body(Full::new(grpc::frame(&request_message(&config.service))))
    .map_err(|e| CheckFailure::Error(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(broken)?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(CheckFailure::Status(status));
    }
    let head_status = grpc::parse_status(
        response
            .headers()
            .get(grpc::STATUS)
            .map(http::HeaderValue::as_bytes),
    );
    let body = response.into_body().collect().await.map_err(broken)?;
    let code = head_status.or_else(|| {
        grpc::parse_status(
            body.trailers()
                .and_then(|t| t.get(grpc::STATUS))
                .map(http::HeaderValue::as_bytes),
        )
    });
    drop(task);
    match code {
        Some(0) => {}
        Some(code) => {
            let name = grpc::STATUS_NAMES.get(usize::from(code)).unwrap_or(&"?");
            return Err(CheckFailure::Error(format!("grpc-status {code} ({name})")));
        }
        None => return Err(CheckFailure::Error("no grpc-status".into())),
    }
    let bytes: Bytes = body.to_bytes();
    let serving = grpc::unframe(&bytes).and_then(response_status);
    match serving {
        Some(1) => Ok(200),
        Some(n) => Err(CheckFailure::Error(
            (*SERVING_STATUS.get(n as usize).unwrap_or(&"UNKNOWN")).to_owned(),
        )),
        None => Err(CheckFailure::Error("not a HealthCheckResponse".into())),
    }
}

/// Aborts the connection's task when the probe ends, however it ends.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `HealthCheckRequest { service }`: field 1, length-delimited (an empty message when the
/// service is "").
fn request_message(service: &str) -> Vec<u8> {
    if service.is_empty() {
        return Vec::new();
    }
    let mut out = vec![0x0a];
    let mut len = service.len();
    while len >= 0x80 {
        out.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(service.as_bytes());
    out
}

/// Reads a base-128 varint at the start of `input`: its value and length.
fn varint(input: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, b) in input.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// `HealthCheckResponse.status` (field 1, varint); 0 (UNKNOWN) when absent, `None` when the
/// message is malformed.
fn response_status(mut message: &[u8]) -> Option<u64> {
    let mut status = 0;
    while !message.is_empty() {
        let (key, n) = varint(message)?;
        message = &message[n..];
        match (key >> 3, key & 7) {
            (field, 0) => {
                let (value, n) = varint(message)?;
                message = &message[n..];
                if field == 1 {
                    status = value;
                }
            }
            (_, 2) => {
                let (len, n) = varint(message)?;
                message = message.get(n + usize::try_from(len).ok()?..)?;
            }
            _ => return None,
        }
    }
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_the_service_as_field_one() {
        assert_eq!(request_message(""), b"");
        assert_eq!(request_message("echo.Echo"), b"\x0a\x09echo.Echo");
        let long = "s".repeat(200);
        assert_eq!(&request_message(&long)[..3], &[0x0a, 0xc8, 0x01]);
    }

    #[test]
    fn the_response_status_is_read_and_junk_rejected() {
        assert_eq!(response_status(b"\x08\x01"), Some(1));
        assert_eq!(response_status(b"\x08\x02"), Some(2));
        assert_eq!(response_status(b""), Some(0));
        assert_eq!(response_status(b"\x12\x01x\x08\x01"), Some(1));
        assert_eq!(response_status(b"\x08"), None);
        assert_eq!(response_status(b"\x0d\x00"), None);
    }
}
