//! etcd's v3 API through its JSON gateway (grpc-gateway, served on the client port since etcd
//! 3.3 under `/v3/…`): `POST /v3/kv/range`, `/v3/kv/put`, `/v3/kv/txn`, and `/v3/watch`,
//! whose answer is a stream of JSON objects, one per line. Keys and values are base64; 64-bit
//! numbers are strings.
//!
//! Why not the gRPC API through the `etcd-client` crate: it generates its code from etcd's
//! `.proto` files with `protoc` at build time, and rondo must build with the Rust toolchain
//! alone (`cargo run --release -- demo` on a fresh machine). The gateway is the same v3 API
//! (same revisions, same watch semantics), spoken over the hyper client rondo already has.
//!
//! One HTTP/1.1 connection per call (calls are rare: a read at start and after an outage,
//! admin changes, a liveness probe every few seconds) plus one long-lived connection for the
//! watch. Endpoints are tried in turn; the one that answered is tried first next time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::config::EtcdEndpoint;

/// How long one call (connect, request, whole answer) may take before the endpoint counts as
/// unreachable: etcd answers a range or put in milliseconds; 3 s rides out a leader election
/// (about 1 s with etcd's defaults) without holding an admin request for long.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The largest answer read (a range over every backend of a large fleet is well below it).
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// What went wrong talking to etcd.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// No endpoint could be reached, or the connection broke.
    #[error("cannot reach etcd at {url}: {reason}")]
    Unreachable {
        /// The endpoint tried last.
        url: String,
        /// The connection's error.
        reason: String,
    },
    /// etcd answered with an error (e.g. a compacted revision).
    #[error("etcd at {url} refused the request: {message}")]
    Refused {
        /// The endpoint that answered.
        url: String,
        /// etcd's message.
        message: String,
    },
}

/// A key and value read from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Kv {
    /// The key, as UTF-8 (lossy).
    pub(super) key: String,
    /// The value's bytes (empty for a deletion).
    pub(super) value: Vec<u8>,
    /// The revision of its last change.
    pub(super) mod_revision: i64,
}

/// The etcd cluster's client URLs, tried in turn.
#[derive(Debug)]
pub(super) struct Gateway {
    endpoints: Vec<EtcdEndpoint>,
    /// The endpoint that answered last, tried first.
    current: AtomicUsize,
}

/// An open watch: JSON objects as etcd sends them.
#[derive(Debug)]
pub(super) struct WatchStream {
    body: Incoming,
    buffer: Vec<u8>,
    url: String,
}

/// A base64 string of `bytes`.
pub(super) fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// A 64-bit number as the gateway writes it (a string; an absent field is 0).
pub(super) fn number(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// The key-value of a gateway `kv` object.
pub(super) fn kv(v: &Value) -> Kv {
    let bytes = |field: &str| {
        v.get(field)
            .and_then(Value::as_str)
            .and_then(|s| B64.decode(s).ok())
            .unwrap_or_default()
    };
    Kv {
        key: String::from_utf8_lossy(&bytes("key")).into_owned(),
        value: bytes("value"),
        mod_revision: number(&v["mod_revision"]),
    }
}

impl Gateway {
    /// A client of `endpoints` (at least one).
    pub(super) fn new(endpoints: Vec<EtcdEndpoint>) -> Gateway {
        Gateway {
            endpoints,
            current: AtomicUsize::new(0),
        }
    }

    /// Every key in `[key, range_end)` and the revision the read saw.
    pub(super) async fn range(
        &self,
        key: &str,
        range_end: &[u8],
    ) -> Result<(Vec<Kv>, i64), GatewayError> {
        let body = json!({ "key": b64(key.as_bytes()), "range_end": b64(range_end) });
        let answer = self.call("/v3/kv/range", &body).await?;
        let kvs = answer["kvs"].as_array().map(|a| a.iter().map(kv).collect());
        Ok((
            kvs.unwrap_or_default(),
            number(&answer["header"]["revision"]),
        ))
    }

    /// One key, if it exists.
    pub(super) async fn get(&self, key: &str) -> Result<Option<Kv>, GatewayError> {
        let body = json!({ "key": b64(key.as_bytes()) });
        let answer = self.call("/v3/kv/range", &body).await?;
        Ok(answer["kvs"].as_array().and_then(|a| a.first()).map(kv))
    }

    /// Writes `value` at `key` if the key's last change is still `mod_revision` (0: if it
    /// does not exist), in one transaction; returns the new revision, or `None` when the
    /// key changed meanwhile.
    pub(super) async fn put_if(
        &self,
        key: &str,
        value: &str,
        mod_revision: i64,
    ) -> Result<Option<i64>, GatewayError> {
        let key = b64(key.as_bytes());
        let body = json!({
            "compare": [{
                "key": key,
                "target": "MOD",
                "result": "EQUAL",
                "mod_revision": mod_revision.to_string(),
            }],
            "success": [{ "request_put": { "key": key, "value": b64(value.as_bytes()) } }],
        });
        let answer = self.call("/v3/kv/txn", &body).await?;
        Ok(answer["succeeded"]
            .as_bool()
            .unwrap_or(false)
            .then(|| number(&answer["header"]["revision"])))
    }

    /// Deletes `key`; returns the new revision, or `None` when there was no such key.
    pub(super) async fn delete(&self, key: &str) -> Result<Option<i64>, GatewayError> {
        let body = json!({ "key": b64(key.as_bytes()) });
        let answer = self.call("/v3/kv/deleterange", &body).await?;
        Ok((number(&answer["deleted"]) > 0).then(|| number(&answer["header"]["revision"])))
    }

    /// Watches `[key, range_end)` from `revision` on.
    pub(super) async fn watch(
        &self,
        key: &str,
        range_end: &[u8],
        revision: i64,
    ) -> Result<WatchStream, GatewayError> {
        let body = json!({ "create_request": {
            "key": b64(key.as_bytes()),
            "range_end": b64(range_end),
            "start_revision": revision.to_string(),
        }});
        let (response, url) = self.each(|ep| open(ep, "/v3/watch", &body)).await?;
        Ok(WatchStream {
            body: response.into_body(),
            buffer: Vec::new(),
            url,
        })
    }

    /// Calls `path` with `body` and reads the whole JSON answer.
    async fn call(&self, path: &str, body: &Value) -> Result<Value, GatewayError> {
        let (answer, _) = self
            .each(|ep| async move {
                tokio::time::timeout(CALL_TIMEOUT, async {
                    let response = open(ep, path, body).await?;
                    let status = response.status();
                    let bytes = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
                        .collect()
                        .await
                        .map_err(|e| unreachable(ep, e))?
                        .to_bytes();
                    let value: Value =
                        serde_json::from_slice(&bytes).map_err(|e| unreachable(ep, e))?;
                    if !status.is_success() || value.get("error").is_some() {
                        return Err(refused(ep, &value, status));
                    }
                    Ok(value)
                })
                .await
                .unwrap_or_else(|_| Err(unreachable(ep, "no answer in time")))
            })
            .await?;
        Ok(answer)
    }

    /// Runs `f` on each endpoint in turn from the current one, until one is reachable.
    async fn each<'a, T, F, Fut>(&'a self, f: F) -> Result<(T, String), GatewayError>
    where
        F: Fn(&'a EtcdEndpoint) -> Fut,
        Fut: Future<Output = Result<T, GatewayError>>,
    {
        let first = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..self.endpoints.len() {
            let n = (first + i) % self.endpoints.len();
            let ep = &self.endpoints[n];
            match f(ep).await {
                Ok(v) => {
                    self.current.store(n, Ordering::Relaxed);
                    return Ok((v, ep.url.clone()));
                }
                Err(e @ GatewayError::Refused { .. }) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| GatewayError::Unreachable {
            url: String::new(),
            reason: "no endpoint configured".to_owned(),
        }))
    }
}

fn unreachable(ep: &EtcdEndpoint, reason: impl std::fmt::Display) -> GatewayError {
    GatewayError::Unreachable {
        url: ep.url.clone(),
        reason: reason.to_string(),
    }
}

fn refused(ep: &EtcdEndpoint, answer: &Value, status: http::StatusCode) -> GatewayError {
    let message = answer["message"]
        .as_str()
        .or(answer["error"].as_str())
        .map_or_else(|| format!("status {status}"), str::to_owned);
    GatewayError::Refused {
        url: ep.url.clone(),
        message,
    }
}

/// Connects to `ep`, sends `POST path` with `body`, and returns the response head (the body
/// still to read).
async fn open(
    ep: &EtcdEndpoint,
    path: &str,
    body: &Value,
) -> Result<http::Response<Incoming>, GatewayError> {
    let connect = tokio::net::TcpStream::connect(ep.authority.as_str());
    let stream = tokio::time::timeout(CALL_TIMEOUT, connect)
        .await
        .map_err(|_| unreachable(ep, "connection timed out"))?
        .map_err(|e| unreachable(ep, e))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(ep, e))?;
    tokio::spawn(connection);
    let request = http::Request::post(path)
        .header(http::header::HOST, ep.authority.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| unreachable(ep, e))?;
    sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(ep, e))
}

impl WatchStream {
    /// The next object etcd sends (its `result`), or an error when the stream ends or breaks.
    pub(super) async fn next(&mut self) -> Result<Value, GatewayError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let value: Value = serde_json::from_slice(&line).map_err(|e| self.broken(e))?;
                if let Some(result) = value.get("result") {
                    return Ok(result.clone());
                }
                let message = value["error"]["message"]
                    .as_str()
                    .or(value["error"].as_str())
                    .unwrap_or("unknown error");
                return Err(GatewayError::Refused {
                    url: self.url.clone(),
                    message: message.to_owned(),
                });
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if self.buffer.len() + data.len() > MAX_ANSWER {
                            return Err(self.broken("a watch answer is too large"));
                        }
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(self.broken(e)),
                None => return Err(self.broken("the watch stream ended")),
            }
        }
    }

    fn broken(&self, reason: impl std::fmt::Display) -> GatewayError {
        GatewayError::Unreachable {
            url: self.url.clone(),
            reason: reason.to_string(),
        }
    }
}
