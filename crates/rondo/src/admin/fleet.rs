//! The admin API's backend mutations on an upstream with `discovery = "etcd"`: written to etcd
//! (`{prefix}/upstreams/{name}/backends/{id}`) instead of the local pool, so every instance of
//! the fleet applies them through its watch and they survive restarts. Health checks, breakers
//! and counters stay each instance's own. The answers are those of the local mutations, plus
//! `503` when etcd cannot be reached (nothing changed) and `409` when the backend changed
//! meanwhile.

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::{Reply, backend_spec, error, json_reply, read_json, weight_body};
use crate::upstream::etcd::{Etcd, Member, WriteError};

/// Applies `method` on `…/backends/{rest}` of upstream `name` in etcd.
pub(super) async fn mutate(
    etcd: &Etcd,
    req: Request<Incoming>,
    name: &str,
    rest: &[&str],
) -> Reply {
    let method = req.method().clone();
    let (id, action, result) = match (&method, rest) {
        (&Method::POST, []) => {
            let spec = match read_json(req).await.and_then(|b| backend_spec(&b)) {
                Ok(s) => s,
                Err(e) => return e.reply(),
            };
            let member = Member {
                address: spec.address,
                weight: spec.weight.as_f64(),
                backup: spec.backup,
                drain: false,
            };
            let result = etcd.add(name, &spec.id, &member).await;
            (spec.id, "add", result)
        }
        (&Method::DELETE, [id]) => (id.to_string(), "remove", etcd.remove(name, id).await),
        (&Method::PATCH, [id]) => {
            let weight = match weight_body(req).await {
                Ok(w) => w.as_f64(),
                Err(e) => return e.reply(),
            };
            let result = etcd.change(name, id, |m| m.weight = weight).await;
            (id.to_string(), "weight", result)
        }
        (&Method::POST, [id, action @ ("drain" | "enable")]) => {
            let drain = *action == "drain";
            let result = etcd.change(name, id, |m| m.drain = drain).await;
            (id.to_string(), *action, result)
        }
        _ => return error(StatusCode::NOT_FOUND, "no such endpoint", None),
    };
    match result {
        Ok(()) => {
            tracing::info!(
                upstream = name,
                backend = id.as_str(),
                action,
                "admin change written to etcd"
            );
            let status = if action == "add" {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            json_reply(
                status,
                &json!({ "upstream": name, "backend": id, "action": action, "written_to": "etcd" }),
            )
        }
        Err(e) => {
            let status = match &e {
                WriteError::Unknown(_) => StatusCode::NOT_FOUND,
                WriteError::Exists(_) | WriteError::Conflict(_) | WriteError::Bad { .. } => {
                    StatusCode::CONFLICT
                }
                WriteError::Gateway(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            error(
                status,
                e.to_string(),
                Some("id").filter(|_| status != StatusCode::SERVICE_UNAVAILABLE),
            )
        }
    }
}
