//! `[[upstreams]]`: the algorithm, retries and their budget, timeouts, the connection pool,
//! passive ejection and the queue. Backends, health checks and the breaker have files of
//! their own.

use std::num::NonZeroU32;
use std::ops::Range;
use std::time::Duration;

use balance::{Algorithm, EjectionConfig, PoolConfig, SlowStartConfig, StartPosition};

use super::Validator;
use crate::config::defaults;
use crate::config::error::suggest;
use crate::config::model::{QueueConfig, RetryBudget, UpstreamConfig};
use crate::config::raw::{RawStart, RawUpstream, StatusItem};
use toml::Spanned;

impl Validator<'_> {
    /// One upstream; `etcd` says whether `[discovery.etcd]` exists.
    pub(super) fn upstream(
        &mut self,
        raw: &RawUpstream,
        name: String,
        etcd: bool,
    ) -> UpstreamConfig {
        let algorithm = match &raw.algorithm {
            None => defaults::algorithm(),
            Some(a) => match a.get_ref().parse::<Algorithm>() {
                Ok(algorithm) => algorithm,
                Err(e) => {
                    let hint = suggest(a.get_ref(), Algorithm::NAMES)
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    self.error(Some(a.span()), format!("{e}{hint}"));
                    defaults::algorithm()
                }
            },
        };

        let discovery = self.upstream_discovery(raw, etcd);
        let mut named = Vec::new();
        let backends = match &raw.backends {
            // Discovered backends need no fallback in the file.
            None if raw.discovery.is_some() => Vec::new(),
            None => {
                self.error(
                    Some(raw.name.span()),
                    format!(
                        "upstream `{name}` has no `backends`: add e.g. backends = [{{ address = \
                         \"127.0.0.1:9001\" }}]"
                    ),
                );
                Vec::new()
            }
            Some(list) if list.get_ref().is_empty() && raw.discovery.is_none() => {
                self.error(
                    Some(list.span()),
                    format!("upstream `{name}` has no backends: at least one is required"),
                );
                Vec::new()
            }
            Some(list) => self.backends(list.get_ref(), &name, &mut named),
        };

        // "0s" turns slow start off, as leaving it out does (Envoy's zero window).
        let window = self.duration(raw.slow_start.as_ref(), "slow_start", Duration::ZERO, false);
        let slow_start = (!window.is_zero()).then(|| SlowStartConfig::new(window));
        if let (Some(_), Some(raw_window), balance::Algorithm::RoundRobin) =
            (&slow_start, &raw.slow_start, algorithm)
        {
            // The ramp lowers a backend's weight, which plain round robin never reads.
            self.error(
                Some(raw_window.span()),
                "`slow_start` ramps a backend's weight, which `algorithm = \"round-robin\"` \
                 ignores: use \"smooth-weighted\" (nginx's and HAProxy's weighted round robin, \
                 the default) or remove `slow_start`",
            );
        }
        let panic_threshold = self.opt_int(
            raw.panic_threshold.as_ref(),
            "panic_threshold",
            0..=100,
            defaults::PANIC_THRESHOLD,
        );
        let start = match raw.start {
            None => defaults::start(),
            Some(RawStart::First) => StartPosition::First,
            Some(RawStart::Random) => StartPosition::Random,
        };

        let mut tries = self.opt_nonzero(raw.tries.as_ref(), "tries", defaults::TRIES);
        let failover = raw
            .failover
            .as_ref()
            .map_or(defaults::FAILOVER, |f| *f.get_ref());
        if !failover {
            if let Some(t) = raw.tries.as_ref().filter(|t| *t.get_ref() > 1) {
                self.error(
                    Some(t.span()),
                    format!(
                        "`tries = {}` contradicts `failover = false`, which means one attempt \
                         per request: remove one of them",
                        t.get_ref()
                    ),
                );
            }
            tries = NonZeroU32::MIN;
        }
        let retry_on_status = match &raw.retry_on_status {
            None => defaults::RETRY_ON_STATUS.to_vec(),
            Some(list) => {
                let mut codes: Vec<u16> = list
                    .get_ref()
                    .iter()
                    .filter_map(|item| match item.get_ref() {
                        StatusItem::Code(n) => self.status(*n, item.span()).map(|c| c..=c),
                        StatusItem::Range(_) => self.status_range(item),
                    })
                    .flatten()
                    .collect();
                codes.sort_unstable();
                codes.dedup();
                codes
            }
        };
        let retry_budget = RetryBudget {
            percent: self.opt_int(
                raw.retry_budget_percent.as_ref(),
                "retry_budget_percent",
                0..=100,
                defaults::RETRY_BUDGET_PERCENT,
            ),
            min: self.opt_int(
                raw.retry_budget_min.as_ref(),
                "retry_budget_min",
                0..=i64::from(u32::MAX),
                defaults::RETRY_BUDGET_MIN,
            ),
        };
        let retry_body_limit = self.size(
            raw.retry_body_limit.as_ref(),
            "retry_body_limit",
            defaults::RETRY_BODY_LIMIT,
            false,
        );
        let connect_timeout = self.duration(
            raw.connect_timeout.as_ref(),
            "connect_timeout",
            defaults::CONNECT_TIMEOUT,
            true,
        );
        let response_timeout = self.duration(
            raw.response_timeout.as_ref(),
            "response_timeout",
            defaults::RESPONSE_TIMEOUT,
            true,
        );
        let keepalive = self.opt_int(
            raw.keepalive.as_ref(),
            "keepalive",
            0..=i64::MAX,
            defaults::KEEPALIVE,
        );
        let keepalive_timeout = self.duration(
            raw.keepalive_timeout.as_ref(),
            "keepalive_timeout",
            defaults::KEEPALIVE_TIMEOUT,
            true,
        );
        let tunnel_timeout = self.duration(
            raw.tunnel_timeout.as_ref(),
            "tunnel_timeout",
            defaults::TUNNEL_TIMEOUT,
            true,
        );

        let max_fails: u32 = self.opt_int(
            raw.max_fails.as_ref(),
            "max_fails",
            0..=i64::from(u32::MAX),
            defaults::MAX_FAILS,
        );
        let fail_timeout = self.duration(
            raw.fail_timeout.as_ref(),
            "fail_timeout",
            defaults::FAIL_TIMEOUT,
            max_fails > 0,
        );
        let ejection = NonZeroU32::new(max_fails).map(|max_fails| EjectionConfig {
            max_fails,
            fail_timeout,
            count_server_errors: raw.fail_on_5xx.unwrap_or(defaults::FAIL_ON_5XX),
        });

        let size = self.opt_int(
            raw.queue_size.as_ref(),
            "queue_size",
            0..=i64::MAX,
            defaults::QUEUE_SIZE,
        );
        let queue = QueueConfig {
            size,
            timeout: self.duration(
                raw.queue_timeout.as_ref(),
                "queue_timeout",
                defaults::QUEUE_TIMEOUT,
                size > 0,
            ),
            priority_header: match &raw.priority_header {
                None => defaults::PRIORITY_HEADER.to_owned(),
                Some(h) => self.header_name(h, "priority_header"),
            },
        };

        let (health_check, health) = self.health_check(raw.health_check.as_ref());
        let breaker = self.breaker(raw.circuit_breaker.as_ref());
        let affinity = self.affinity(raw, algorithm);
        let protocol = self.protocol(raw, &name);
        let h2 = self.h2(raw);
        let grpc = self.grpc(raw);

        UpstreamConfig {
            name,
            pool: PoolConfig {
                algorithm,
                health,
                breaker,
                ejection,
                slow_start,
                panic_threshold,
                start,
                seed: 0,
                hash_balance_factor: affinity.balance_factor,
            },
            backends,
            named,
            discovery,
            tries,
            retry_on_status,
            retry_budget,
            retry_body_limit,
            connect_timeout,
            response_timeout,
            keepalive,
            keepalive_timeout,
            tunnel_timeout,
            queue,
            health_check,
            hash_key: affinity.hash_key,
            sticky: affinity.sticky,
            tls: raw.tls.as_ref().and_then(|t| self.upstream_tls(t)),
            protocol,
            h2,
            grpc,
        }
    }

    /// An HTTP status code for `retry_on_status`.
    pub(super) fn status(&mut self, code: i64, span: Range<usize>) -> Option<u16> {
        match u16::try_from(code) {
            Ok(c) if (100..=599).contains(&c) => Some(c),
            _ => self.fail(
                span,
                format!("{code} is not an HTTP status code; expected 100 to 599"),
            ),
        }
    }

    /// A header name (RFC 9110 token), lower-cased.
    pub(super) fn header_name(&mut self, value: &Spanned<String>, key: &str) -> String {
        let name = value.get_ref();
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            self.error(
                Some(value.span()),
                format!("`{key}` \"{name}\" is not a header name, e.g. \"x-priority\""),
            );
        }
        name.to_ascii_lowercase()
    }
}
