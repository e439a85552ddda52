//! `[[upstreams]]` keys of the protocol spoken to the backends: `protocol`, the HTTP/2
//! connection keys and the gRPC retry keys.

use crate::config::defaults;
use crate::config::error::suggest;
use crate::config::model::{GrpcConfig, H2Config, UpstreamProtocol};
use crate::config::raw::{RawUpstream, StatusItem};
use crate::grpc::{STATUS_NAMES, status_by_name};

use super::Validator;

impl Validator<'_> {
    /// The protocol to the backends, checked against `tls`.
    pub(super) fn protocol(&mut self, raw: &RawUpstream, name: &str) -> UpstreamProtocol {
        let Some(p) = &raw.protocol else {
            return UpstreamProtocol::default();
        };
        let protocol = match p.get_ref().as_str() {
            "http1" => UpstreamProtocol::Http1,
            "h2c" => UpstreamProtocol::H2c,
            "h2" => UpstreamProtocol::H2,
            "auto" => UpstreamProtocol::Auto,
            other => {
                let hint = suggest(other, UpstreamProtocol::NAMES)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                self.error(
                    Some(p.span()),
                    format!(
                        "unknown protocol \"{other}\"{hint}; expected one of {}",
                        UpstreamProtocol::NAMES.join(", ")
                    ),
                );
                return UpstreamProtocol::default();
            }
        };
        match (protocol, raw.tls.is_some()) {
            (UpstreamProtocol::H2, false) => self.error(
                Some(p.span()),
                format!(
                    "upstream `{name}`: `protocol = \"h2\"` is HTTP/2 over TLS: add `tls = {{}}` \
                     (or `tls = {{ verify = false }}`), or use \"h2c\" for HTTP/2 in clear text"
                ),
            ),
            (UpstreamProtocol::H2c, true) => self.error(
                Some(p.span()),
                format!(
                    "upstream `{name}`: `protocol = \"h2c\"` is HTTP/2 in clear text, but the \
                     upstream has `tls`: use \"h2\" for HTTP/2 over TLS"
                ),
            ),
            _ => {}
        }
        protocol
    }

    /// `h2_max_connections` and `h2_ping_interval`.
    pub(super) fn h2(&mut self, raw: &RawUpstream) -> H2Config {
        let max_connections = self.opt_int(
            raw.h2_max_connections.as_ref(),
            "h2_max_connections",
            1..=i64::from(u16::MAX),
            defaults::H2_MAX_CONNECTIONS,
        );
        let ping = self.duration(
            raw.h2_ping_interval.as_ref(),
            "h2_ping_interval",
            defaults::H2_PING_INTERVAL,
            false,
        );
        H2Config {
            max_connections,
            ping_interval: (!ping.is_zero()).then_some(ping),
        }
    }

    /// `grpc_retry_on` and `grpc_idempotent`.
    pub(super) fn grpc(&mut self, raw: &RawUpstream) -> GrpcConfig {
        let retry_on = match &raw.grpc_retry_on {
            None => defaults::GRPC_RETRY_ON.to_vec(),
            Some(list) => {
                let mut codes: Vec<u8> = list
                    .get_ref()
                    .iter()
                    .filter_map(|item| {
                        let code = match item.get_ref() {
                            StatusItem::Code(n) => u8::try_from(*n).ok().filter(|c| *c <= 16),
                            StatusItem::Range(name) => status_by_name(name),
                        };
                        if code.is_none() {
                            self.error(
                                Some(item.span()),
                                format!(
                                    "not a gRPC status: expected a code 0 to 16 or a name ({})",
                                    STATUS_NAMES.join(", ")
                                ),
                            );
                        }
                        code
                    })
                    .collect();
                codes.sort_unstable();
                codes.dedup();
                codes
            }
        };
        let idempotent = raw.grpc_idempotent.as_ref().map_or_else(Vec::new, |list| {
            list.get_ref()
                .iter()
                .filter_map(|m| {
                    let path = m.get_ref();
                    if path.starts_with('/') && !path.contains([' ', '\t']) {
                        Some(path.clone())
                    } else {
                        self.fail(
                            m.span(),
                            format!(
                                "`grpc_idempotent` \"{path}\" is not a gRPC method path: write \
                                 \"/package.Service/Method\", or \"/package.Service/\" for all \
                                 of a service's methods"
                            ),
                        )
                    }
                })
                .collect()
        });
        GrpcConfig {
            retry_on,
            idempotent,
        }
    }
}
