//! `[[listeners]]` and `[[listeners.routes]]`: addresses to bind, the upstream each serves,
//! client-side limits, and routing by host and path prefix.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::{Defined, Validator};
use crate::config::defaults;
use crate::config::model::{
    AdminConfig, ListenerConfig, ListenerMode, ListenerTlsConfig, RouteConfig,
};
use crate::config::raw::{RawListener, RawMode, RawRoute};
use crate::header_rules::Headers;
use toml::Spanned;

impl Validator<'_> {
    pub(super) fn listener(
        &mut self,
        raw: &RawListener,
        name: String,
        upstreams: &HashMap<String, Defined>,
    ) -> Option<ListenerConfig> {
        let bind = self.address(&raw.bind, "bind");
        let upstream = self.upstream_ref(&raw.upstream, upstreams);
        let routes = raw
            .routes
            .iter()
            .map(|r| self.route(r, upstreams))
            .collect::<Vec<_>>();
        let header_timeout = self.duration(
            raw.header_timeout.as_ref(),
            "header_timeout",
            defaults::HEADER_TIMEOUT,
            true,
        );
        let idle_timeout = self.duration(
            raw.idle_timeout.as_ref(),
            "idle_timeout",
            defaults::IDLE_TIMEOUT,
            true,
        );
        let max_header_bytes = self.size(
            raw.max_header_bytes.as_ref(),
            "max_header_bytes",
            defaults::MAX_HEADER_BYTES,
            true,
        );
        let max_body_size = match &raw.max_body_size {
            Some(v) if v.get_ref().0 == 0 => self.fail(
                v.span(),
                "`max_body_size` = 0 would refuse every request body; leave it out for no limit",
            ),
            Some(v) => Some(v.get_ref().0),
            None => None,
        };
        let max_client_connections = raw
            .max_client_connections
            .as_ref()
            .and_then(|v| self.int(v, "max_client_connections", 1..=i64::from(u32::MAX)))
            .and_then(|n| usize::try_from(n).ok());
        let http2_max_concurrent_streams = raw
            .http2_max_concurrent_streams
            .as_ref()
            .and_then(|v| self.int(v, "http2_max_concurrent_streams", 1..=i64::from(i32::MAX)))
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(defaults::HTTP2_MAX_CONCURRENT_STREAMS);
        let (mode, tls, redirect_https) = self.listener_kind(raw);
        Some(ListenerConfig {
            name,
            bind: bind?,
            mode,
            tls: tls?,
            redirect_https,
            upstream,
            routes: routes.into_iter().collect::<Option<Vec<_>>>()?,
            header_timeout,
            idle_timeout,
            max_header_bytes,
            max_body_size,
            headers: self.headers(raw.request_headers.as_ref(), raw.response_headers.as_ref()),
            max_client_connections,
            http2_max_concurrent_streams,
        })
    }

    /// A listener's mode, TLS and redirect, which exclude one another in places.
    fn listener_kind(
        &mut self,
        raw: &RawListener,
    ) -> (ListenerMode, Option<Option<ListenerTlsConfig>>, bool) {
        let mode = match raw.mode.as_ref().map(|m| *m.get_ref()) {
            None | Some(RawMode::Http) => ListenerMode::Http,
            Some(RawMode::Tcp) => ListenerMode::Tcp,
        };
        if let (ListenerMode::Tcp, Some(route)) = (mode, raw.routes.first()) {
            self.error(
                Some(route.span()),
                "routes need HTTP requests to match; a `mode = \"tcp\"` listener relays bytes \
                 to its `upstream`",
            );
        }
        let tls = match &raw.tls {
            None => Some(None),
            Some(t) => self.listener_tls(t).map(Some),
        };
        let redirect = raw.redirect_https.as_ref().filter(|r| *r.get_ref());
        if let Some(r) = redirect {
            if raw.tls.is_some() {
                self.error(
                    Some(r.span()),
                    "`redirect_https` on a TLS listener would redirect to itself forever: set it \
                     on the plain listener",
                );
            } else if mode == ListenerMode::Tcp {
                self.error(
                    Some(r.span()),
                    "`redirect_https` needs HTTP requests; a `mode = \"tcp\"` listener has none",
                );
            }
        }
        (mode, tls, redirect.is_some())
    }

    /// Reports a listener whose port another listener or the admin API already binds.
    pub(super) fn check_bind(
        &mut self,
        listener: &ListenerConfig,
        raw: &RawListener,
        admin: &AdminConfig,
        binds: &mut HashMap<SocketAddr, (String, usize)>,
    ) {
        let bind = listener.bind;
        if bind.port() == 0 {
            return; // the system picks a free port for each
        }
        if admin.enabled && bind == admin.listen {
            self.error(
                Some(raw.bind.span()),
                format!("`bind` {bind} is also the admin listener's address; use another port"),
            );
        } else if let Some((other, line)) = binds.get(&bind) {
            let message = format!(
                "`bind` {bind} is already used by listener `{other}` on line {line}; use another \
                 port"
            );
            self.error(Some(raw.bind.span()), message);
        } else {
            let line = self.line_of(raw.bind.span());
            binds.insert(bind, (listener.name.clone(), line));
        }
    }

    pub(super) fn route(
        &mut self,
        raw: &Spanned<RawRoute>,
        upstreams: &HashMap<String, Defined>,
    ) -> Option<RouteConfig> {
        let (span, raw) = (raw.span(), raw.get_ref());
        let upstream = self.upstream_ref(&raw.upstream, upstreams);
        if raw.host.is_none() && raw.path_prefix.is_none() {
            self.error(
                Some(span),
                "a route needs `host` or `path_prefix` (or both); without either it would \
                 match everything, which the listener's `upstream` already does",
            );
        }
        let host = raw.host.as_ref().and_then(|h| {
            let host = h.get_ref().trim();
            let why = if host.is_empty() {
                Some("it is empty")
            } else if host.contains('*') {
                Some("wildcards are not supported, hosts match exactly")
            } else if host.contains(['/', ' ', '\t']) {
                Some("it is not a host name")
            } else if host
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
                && !host.ends_with(']')
            {
                Some("leave the port out, it is ignored when matching")
            } else {
                None
            };
            match why {
                Some(why) => self.fail(h.span(), format!("invalid route host \"{host}\": {why}")),
                None => Some(host.to_ascii_lowercase()),
            }
        });
        let path_prefix = raw.path_prefix.as_ref().and_then(|p| {
            let path = p.get_ref();
            if path.starts_with('/') {
                Some(path.clone())
            } else {
                self.fail(
                    p.span(),
                    format!("`path_prefix` \"{path}\" must start with `/`, e.g. \"/{path}\""),
                )
            }
        });
        Some(RouteConfig {
            host: match &raw.host {
                Some(_) => Some(host?),
                None => None,
            },
            path_prefix: match &raw.path_prefix {
                Some(_) => Some(path_prefix?),
                None => None,
            },
            upstream,
            headers: self.headers(raw.request_headers.as_ref(), raw.response_headers.as_ref()),
        })
    }

    /// A listener's or route's `request_headers` and `response_headers`.
    fn headers(
        &mut self,
        request: Option<&crate::config::raw::RawHeaderRules>,
        response: Option<&crate::config::raw::RawHeaderRules>,
    ) -> Headers {
        let mut rules = |raw, key| {
            crate::config::header_rules::validate(raw, key).unwrap_or_else(|errors| {
                for (span, message) in errors {
                    self.error(Some(span), message);
                }
                Default::default()
            })
        };
        Headers {
            request: rules(request, "request_headers"),
            response: rules(response, "response_headers"),
        }
    }
}
