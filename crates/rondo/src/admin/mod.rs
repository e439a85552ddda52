//! The admin API on its own listener (`[admin] listen`, 127.0.0.1:9901 by default), served
//! with hyper on the control thread, never on a worker: a slow scrape or a browser polling
//! the dashboard cannot delay a proxied request.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the dashboard (one embedded page) |
//! | `GET /healthz` | `200 ok` |
//! | `GET /api/v1/stats` | statistics per upstream and backend (JSON, see [`stats`]) |
//! | `GET /api/v1/events` | recent backend state changes, newest first (see [`events`]) |
//! | `GET /metrics` | Prometheus text (see [`metrics`]) |
//! | `GET /api/v1/reload` | how the last configuration reload ended (see [`reloads`]) |
//! | `POST /api/v1/upstreams/{name}/backends` | add a backend |
//! | `DELETE /api/v1/upstreams/{name}/backends/{id}` | remove it (in-flight requests finish) |
//! | `PATCH /api/v1/upstreams/{name}/backends/{id}` | change its weight |
//! | `POST /api/v1/upstreams/{name}/backends/{id}/drain` | stop new requests to it |
//! | `POST /api/v1/upstreams/{name}/backends/{id}/enable` | end a drain |
//!
//! Mutations go through the same pool API a config reload uses, and last until the process
//! exits: they are not written back to the configuration file. On an upstream with
//! `discovery = "etcd"` they are written to etcd instead (see [`fleet`]), so every instance of
//! the fleet applies them and they survive restarts. With a token configured every
//! mutation needs `Authorization: Bearer <token>` (compared in constant time, never logged);
//! on a non-loopback address the statistics and metrics need it too. `docs/admin-api.md`
//! documents every answer.
//!
//! Longer than ~500 lines: the routes and their handlers; the next split is the mutation
//! handlers into their own module (`fleet.rs` already holds the etcd ones).

mod fleet;
pub mod metrics;
pub mod process;
pub mod proxy_metrics;
pub mod reloads;
pub mod stats;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use balance::{BackendSpec, PoolError, Weight};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// How changes made through this API are labelled in the events list.
const BY: &str = "admin API";
use tokio::time::Instant;

use crate::config::Discovery;
use crate::counters;
use crate::upstream::etcd::Etcd;
use crate::upstream::{Upstream, UpstreamSet, events, history};

/// The dashboard page: HTML, CSS and script in one file, no external resources.
const DASHBOARD: &str = include_str!("dashboard.html");

/// The largest mutation body read: a backend description is a few hundred bytes.
const MAX_BODY: usize = 64 * 1024;

/// What the admin server reads and writes.
pub struct Admin {
    /// The live upstreams (a reload may add or remove some).
    upstreams: Arc<UpstreamSet>,
    registry: Registry,
    token: Option<String>,
    /// Reads need the token too (the listener is not on loopback).
    protect_reads: bool,
    started: Instant,
    /// The listeners' counters, when the proxy hands them over.
    metrics: Option<Arc<counters::ProxyMetrics>>,
    reloads: Arc<reloads::Reloads>,
    /// The etcd cluster of `[discovery.etcd]`, where changes to its upstreams are written.
    etcd: Option<Arc<Etcd>>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("upstreams", &self.upstreams.all().len())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("protect_reads", &self.protect_reads)
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// The admin state over the live `upstreams`, exposing the metrics of `registry`.
    /// `listen` decides whether reads need the token (they do off loopback); `started` is when
    /// the balancer started (a reload that rebuilds the admin server keeps the uptime);
    /// `reloads` is where the serving process records how reloads ended.
    pub fn new(
        upstreams: Arc<UpstreamSet>,
        registry: Registry,
        token: Option<String>,
        listen: SocketAddr,
        started: Instant,
        reloads: Arc<reloads::Reloads>,
    ) -> Admin {
        Admin {
            upstreams,
            registry,
            protect_reads: token.is_some() && !listen.ip().is_loopback(),
            token,
            started,
            reloads,
            metrics: None,
            etcd: None,
        }
    }

    /// Writes changes to upstreams with `discovery = "etcd"` to `etcd`, and shows its state.
    pub fn with_etcd(mut self, etcd: Option<Arc<Etcd>>) -> Admin {
        self.etcd = etcd;
        self
    }

    /// Adds the listeners' counters to `/api/v1/stats`.
    pub fn with_listeners(mut self, metrics: Arc<counters::ProxyMetrics>) -> Admin {
        self.metrics = Some(metrics);
        self
    }

    /// Where the process that reloads the configuration records how each reload ended.
    pub fn reloads(&self) -> &Arc<reloads::Reloads> {
        &self.reloads
    }

    fn upstream(&self, name: &str) -> Option<Arc<Upstream>> {
        self.upstreams.get(name)
    }
}

/// Serves the admin API on `listener` until `stop` resolves. Each request reads the current
/// `admin` state, so a reload that stores a new one (a new token) applies to the next request,
/// also on connections already open.
pub async fn serve(
    listener: TcpListener,
    admin: Arc<arc_swap::ArcSwap<Admin>>,
    stop: impl std::future::Future<Output = ()>,
) {
    // No "listening" line here: `rondo serve` reports its addresses in one place, in order.
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let admin = Arc::clone(&admin);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let admin = admin.load_full();
                async move { Ok::<_, Infallible>(handle(&admin, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

fn json_reply(status: StatusCode, body: &Value) -> Reply {
    reply(status, "application/json", body.to_string())
}

/// A JSON error: `{"error": message}` plus `"field"` when one input field is at fault.
fn error(status: StatusCode, message: impl Into<String>, field: Option<&str>) -> Reply {
    ApiError {
        status,
        message: message.into(),
        field: field.map(str::to_owned),
    }
    .reply()
}

/// A refused request, before it becomes a [`Reply`].
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

impl ApiError {
    fn bad(field: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }

    fn reply(self) -> Reply {
        let mut body = json!({ "error": self.message });
        if let Some(f) = self.field {
            body["field"] = json!(f);
        }
        json_reply(self.status, &body)
    }
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// True when the request carries the configured token (or none is configured).
fn authorized(admin: &Admin, req: &Request<Incoming>) -> bool {
    let Some(token) = &admin.token else {
        return true;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 9110 §11.1).
        .and_then(|v| {
            v.get(..7)
                .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
                .map(|_| &v[7..])
        })
        .unwrap_or("");
    constant_time_eq(given.trim().as_bytes(), token.as_bytes())
}

fn unauthorized() -> Reply {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "missing or wrong admin token: send `Authorization: Bearer <token>`",
        None,
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"rondo\""),
    );
    r
}

/// The number a query string gives `name` (`since=1700000000000`): `Ok(None)` when absent,
/// the value that is not a number as the error.
fn query_number<'q>(query: Option<&'q str>, name: &str) -> Result<Option<u64>, &'q str> {
    let value = query.and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
    });
    value.map(|v| v.parse().map_err(|_| v)).transpose()
}

async fn handle(admin: &Admin, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_owned();
    // Each segment percent-decoded on its own, so an id holding `:` or `/` (the dashboard
    // sends `encodeURIComponent(id)`) names its backend.
    let decoded: Result<Vec<_>, _> = path
        .trim_matches('/')
        .split('/')
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8())
        .collect();
    let Ok(decoded) = decoded else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("the path {path} is not UTF-8 once percent-decoded"),
            None,
        );
    };
    let segments: Vec<&str> = decoded.iter().map(AsRef::as_ref).collect();
    let method = req.method().clone();
    match (&method, segments.as_slice()) {
        (&Method::GET, [""]) => reply(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD),
        (&Method::GET, ["healthz"]) => reply(StatusCode::OK, "text/plain", "ok"),
        (&Method::GET, ["api", "v1", "stats"]) => {
            if admin.protect_reads && !authorized(admin, &req) {
                return unauthorized();
            }
            let mut s = stats::collect(&admin.upstreams.all(), admin.started.elapsed());
            if let Some(m) = &admin.metrics {
                s.listeners = stats::listeners(m);
            }
            s.etcd = admin.etcd.as_ref().map(|e| e.status());
            match serde_json::to_string(&s) {
                Ok(body) => reply(StatusCode::OK, "application/json", body),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
            }
        }
        (&Method::GET, ["api", "v1", "events"]) => {
            if admin.protect_reads && !authorized(admin, &req) {
                return unauthorized();
            }
            let mut all: Vec<events::EventRecord> = admin
                .upstreams
                .all()
                .iter()
                .flat_map(|u| u.events().list())
                .chain(admin.reloads.events())
                .collect();
            all.sort_by_key(|e| std::cmp::Reverse(e.time_ms));
            json_reply(StatusCode::OK, &json!({ "events": all }))
        }
        (&Method::GET, ["api", "v1", "history"]) => {
            if admin.protect_reads && !authorized(admin, &req) {
                return unauthorized();
            }
            let since = match query_number(req.uri().query(), "since") {
                Ok(since) => since.unwrap_or(0),
                Err(bad) => {
                    let message = format!(
                        "`since` is a time in milliseconds since 1970 (a point's `time_ms`), \
                         not {bad:?}"
                    );
                    return error(StatusCode::BAD_REQUEST, message, Some("since"));
                }
            };
            let upstreams: Vec<_> = admin
                .upstreams
                .all()
                .iter()
                .map(|u| u.history().since(u, since))
                .collect();
            json_reply(
                StatusCode::OK,
                &json!({ "interval_s": history::INTERVAL.as_secs(), "upstreams": upstreams }),
            )
        }
        (&Method::GET, ["api", "v1", "reload"]) => {
            if admin.protect_reads && !authorized(admin, &req) {
                return unauthorized();
            }
            match serde_json::to_string(&admin.reloads.report()) {
                Ok(body) => reply(StatusCode::OK, "application/json", body),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
            }
        }
        (&Method::GET, ["metrics"]) => {
            if admin.protect_reads && !authorized(admin, &req) {
                return unauthorized();
            }
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics::encode(&admin.registry),
            )
        }
        (_, ["api", "v1", "upstreams", name, "backends", rest @ ..]) => {
            let (name, rest) = (
                name.to_string(),
                rest.iter().map(|s| s.to_string()).collect(),
            );
            mutate(admin, req, name, rest).await
        }
        (
            _,
            ["" | "healthz" | "metrics"] | ["api", "v1", "stats" | "reload" | "events" | "history"],
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}; use GET"),
            None,
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {path} (see docs/admin-api.md)"),
            None,
        ),
    }
}

/// The mutations under `/api/v1/upstreams/{name}/backends`.
async fn mutate(admin: &Admin, req: Request<Incoming>, name: String, rest: Vec<String>) -> Reply {
    let method = req.method().clone();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let known = matches!(
        (&method, rest.as_slice()),
        (&Method::POST, [])
            | (&Method::DELETE | &Method::PATCH, [_])
            | (&Method::POST, [_, "drain" | "enable"])
    );
    if !known {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "no such endpoint: {method} {} (see docs/admin-api.md)",
                req.uri().path()
            ),
            None,
        );
    }
    if !authorized(admin, &req) {
        return unauthorized();
    }
    let Some(upstream) = admin.upstream(&name) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no upstream named `{name}`"),
            Some("upstream"),
        );
    };
    if let Some(etcd) = &admin.etcd
        && upstream.config().discovery == Some(Discovery::Etcd)
    {
        return fleet::mutate(etcd, req, &name, &rest).await;
    }
    let pool = upstream.pool();
    let now = upstream.clock().now();
    let done = |id: &str, action: &str| {
        tracing::info!(
            upstream = name.as_str(),
            backend = id,
            action,
            "admin change"
        );
        json_reply(
            StatusCode::OK,
            &json!({ "upstream": name, "backend": id, "action": action }),
        )
    };
    match (&method, rest.as_slice()) {
        (&Method::POST, [id, action]) => {
            let result = events::caused_by(BY, || {
                if *action == "drain" {
                    pool.drain(id, now)
                } else {
                    pool.enable(id, now)
                }
            });
            match result {
                Ok(()) => done(id, action),
                Err(e) => pool_error(&e),
            }
        }
        (&Method::DELETE, [id]) => match events::caused_by(BY, || upstream.admin_remove(id)) {
            Ok(()) => done(id, "remove"),
            Err(e) => pool_error(&e),
        },
        (&Method::PATCH, [id]) => {
            let weight = match weight_body(req).await {
                Ok(w) => w,
                Err(e) => return e.reply(),
            };
            match events::caused_by(BY, || upstream.admin_set_weight(id, weight)) {
                Ok(()) => done(id, "weight"),
                Err(e) => pool_error(&e),
            }
        }
        (&Method::POST, []) => {
            let spec = match read_json(req).await.and_then(|b| backend_spec(&b)) {
                Ok(s) => s,
                Err(e) => return e.reply(),
            };
            // A fresh backend starts from zero, so do its latency and status counters.
            upstream.recorder().forget(&spec.id);
            match events::caused_by(BY, || upstream.admin_add(&spec)) {
                Ok(_) => {
                    tracing::info!(
                        upstream = name.as_str(),
                        backend = spec.id.as_str(),
                        address = %spec.address,
                        "admin change: backend added"
                    );
                    json_reply(
                        StatusCode::CREATED,
                        &json!({
                            "upstream": name,
                            "backend": spec.id,
                            "address": spec.address.to_string(),
                            "weight": spec.weight.as_f64(),
                            "backup": spec.backup,
                            "action": "add",
                        }),
                    )
                }
                Err(e) => pool_error(&e),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "no such endpoint", None),
    }
}

fn pool_error(e: &PoolError) -> Reply {
    match e {
        PoolError::UnknownBackend(_) => error(StatusCode::NOT_FOUND, e.to_string(), Some("id")),
        PoolError::DuplicateId(_) => error(StatusCode::CONFLICT, e.to_string(), Some("id")),
        PoolError::BalanceFactor(_) => error(StatusCode::BAD_REQUEST, e.to_string(), None),
    }
}

/// Reads a JSON object body of at most [`MAX_BODY`] bytes.
async fn read_json(req: Request<Incoming>) -> Result<Value, ApiError> {
    let plain = |status, message: String| ApiError {
        status,
        message,
        field: None,
    };
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Err(plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {MAX_BODY} bytes"),
            ));
        }
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(plain(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object".into(),
        )),
        Err(e) => Err(plain(
            StatusCode::BAD_REQUEST,
            format!("malformed JSON: {e}"),
        )),
    }
}

fn unknown_fields(body: &Value, allowed: &[&str]) -> Result<(), ApiError> {
    let Some(obj) = body.as_object() else {
        return Ok(());
    };
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(unknown) => Err(ApiError::bad(
            unknown,
            format!(
                "unknown field `{unknown}`; expected one of: {}",
                allowed.join(", ")
            ),
        )),
    }
}

/// The weight of a `PATCH …/backends/{id}` body: `{"weight": 2.5}`.
async fn weight_body(req: Request<Incoming>) -> Result<Weight, ApiError> {
    let body = read_json(req).await?;
    unknown_fields(&body, &["weight"])?;
    match body.get("weight") {
        Some(w) => parse_weight(w),
        None => Err(ApiError::bad("weight", "`weight` is required")),
    }
}

fn parse_weight(v: &Value) -> Result<Weight, ApiError> {
    let Some(n) = v.as_f64() else {
        return Err(ApiError::bad(
            "weight",
            format!("`weight` must be a number > 0 (e.g. 1 or 2.5), not {v}"),
        ));
    };
    Weight::new(n).map_err(|e| ApiError::bad("weight", e.to_string()))
}

/// The backend described by a `POST …/backends` body.
fn backend_spec(body: &Value) -> Result<BackendSpec, ApiError> {
    unknown_fields(body, &["address", "weight", "id", "backup"])?;
    let bad = |field: &str, message: String| ApiError::bad(field, message);
    let address = match body.get("address") {
        Some(Value::String(s)) => s
            .parse::<SocketAddr>()
            .ok()
            .filter(|a| a.port() != 0)
            .ok_or_else(|| {
                bad(
                    "address",
                    format!(
                        "`address` {s:?} is not an IP address and a port other than 0 (e.g. \
                         127.0.0.1:9001)"
                    ),
                )
            })?,
        Some(other) => {
            return Err(bad(
                "address",
                format!("`address` must be a string such as \"127.0.0.1:9001\", not {other}"),
            ));
        }
        None => return Err(bad("address", "`address` is required".into())),
    };
    let mut spec = BackendSpec::new(address);
    if let Some(w) = body.get("weight") {
        spec = spec.weight(parse_weight(w)?);
    }
    match body.get("id") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if !s.is_empty() => spec = spec.id(s.clone()),
        Some(other) => {
            return Err(bad(
                "id",
                format!("`id` must be a non-empty string, not {other}"),
            ));
        }
    }
    match body.get("backup") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => spec = spec.backup(),
        Some(other) => {
            return Err(bad(
                "backup",
                format!("`backup` must be true or false, not {other}"),
            ));
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_need_the_token_only_off_loopback() {
        let admin = |listen: &str| {
            Admin::new(
                Arc::default(),
                Registry::default(),
                Some("t".into()),
                listen.parse().unwrap(),
                Instant::now(),
                Arc::default(),
            )
        };
        assert!(!admin("127.0.0.1:9901").protect_reads);
        assert!(!admin("[::1]:9901").protect_reads);
        assert!(admin("0.0.0.0:9901").protect_reads);
        let open = Admin::new(
            Arc::default(),
            Registry::default(),
            None,
            "127.0.0.1:9901".parse().unwrap(),
            Instant::now(),
            Arc::default(),
        );
        assert!(!open.protect_reads);
        assert!(!format!("{:?}", admin("0.0.0.0:1")).contains("\"t\""));
    }

    #[test]
    fn tokens_compare_equal_only_when_identical() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn a_backend_body_is_checked_field_by_field() {
        let spec = backend_spec(
            &json!({"address": "127.0.0.1:9001", "weight": 1.5, "id": "a", "backup": true}),
        )
        .unwrap();
        assert_eq!(spec.id, "a");
        assert_eq!(spec.weight.thousandths(), 1500);
        assert!(spec.backup);
        for (body, field) in [
            (json!({"weight": 1}), "address"),
            (json!({"address": "nowhere"}), "address"),
            (json!({"address": "127.0.0.1:1", "weight": 0}), "weight"),
            (json!({"address": "127.0.0.1:1", "weight": -1}), "weight"),
            (
                json!({"address": "127.0.0.1:1", "weight": "heavy"}),
                "weight",
            ),
            (json!({"address": "127.0.0.1:1", "backup": "yes"}), "backup"),
            (json!({"address": "127.0.0.1:1", "id": ""}), "id"),
            (json!({"address": "127.0.0.1:1", "colour": "red"}), "colour"),
        ] {
            let Err(e) = backend_spec(&body) else {
                panic!("{body} accepted")
            };
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.field.as_deref(), Some(field), "{body}: {}", e.message);
        }
    }
}
