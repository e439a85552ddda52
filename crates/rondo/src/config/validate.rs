//! From the file as written ([`super::raw`]) to the typed configuration ([`super::model`]):
//! defaults filled in from [`super::defaults`], every value checked, every reference
//! resolved. Problems are collected rather than returned at the first, so a user fixes them
//! all in one round; each points at the value that caused it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::ops::{Range, RangeInclusive};
use std::time::Duration;

use balance::{
    Algorithm, BackendSpec, BreakerConfig, EjectionConfig, HealthConfig, PoolConfig,
    SlowStartConfig, StartPosition, Weight,
};

use super::defaults;
use super::error::{Diagnostic, SourceMap, suggest};
use super::model::{
    AdminConfig, CheckKind, Config, HealthCheckConfig, ListenerConfig, QueueConfig, RetryBudget,
    RouteConfig, UpstreamConfig,
};
use super::raw::{
    RawAdmin, RawBackend, RawBreaker, RawConfig, RawHealthCheck, RawKind, RawListener, RawRoute,
    RawStart, RawUpstream, S, StatusItem,
};
use super::units::{DurationValue, SizeValue, format_duration};
use crate::access_log::AccessLogConfig;
use crate::header_rules::Headers;

/// Looks up an environment variable (a parameter so tests need not touch the process's
/// environment).
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Checks `raw` and builds the configuration, or every problem found.
pub(crate) fn validate(
    raw: &RawConfig,
    map: &SourceMap<'_>,
    env: Env<'_>,
) -> Result<Config, Vec<Diagnostic>> {
    let mut v = Validator {
        map,
        env,
        errors: Vec::new(),
        missing: Vec::new(),
    };
    let config = v.config(raw);
    if v.errors.is_empty() && v.missing.is_empty() {
        Ok(config)
    } else {
        let mut errors = v.errors;
        errors.sort_by_key(|d| (d.line, d.column));
        errors.append(&mut v.missing);
        Err(errors)
    }
}

struct Validator<'a> {
    map: &'a SourceMap<'a>,
    env: Env<'a>,
    /// Problems at a place in the file.
    errors: Vec<Diagnostic>,
    /// Things missing from the whole file, listed after the others.
    missing: Vec<Diagnostic>,
}

/// Where a name was defined, to point back at the first of two.
struct Defined {
    line: usize,
}

/// A problem was reported; the caller goes on with a stand-in value so that later problems
/// are found too.
type Checked<T> = Option<T>;

impl Validator<'_> {
    fn error(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        let placed = span.is_some();
        let d = self.map.diagnostic(span, message);
        if placed {
            self.errors.push(d);
        } else {
            self.missing.push(d);
        }
    }

    fn fail<T>(&mut self, span: Range<usize>, message: impl Into<String>) -> Checked<T> {
        self.error(Some(span), message);
        None
    }

    fn line_of(&self, span: Range<usize>) -> usize {
        self.map.diagnostic(Some(span), "").line
    }

    // ---- values -------------------------------------------------------------------------

    /// An integer in `range`.
    fn int(&mut self, value: &S<i64>, key: &str, range: RangeInclusive<i64>) -> Checked<i64> {
        let n = *value.get_ref();
        if range.contains(&n) {
            return Some(n);
        }
        let (lo, hi) = (*range.start(), *range.end());
        // Upper bounds at or beyond u32::MAX are technical, not advice: mention them only
        // when crossed.
        let expected = if hi < i64::from(u32::MAX) {
            format!("between {lo} and {hi}")
        } else if n < lo {
            format!("at least {lo}")
        } else {
            format!("at most {hi}")
        };
        self.fail(value.span(), format!("`{key}` must be {expected}, got {n}"))
    }

    fn opt_int<T: TryFrom<i64>>(
        &mut self,
        value: Option<&S<i64>>,
        key: &str,
        range: RangeInclusive<i64>,
        default: T,
    ) -> T {
        match value {
            None => default,
            Some(v) => self
                .int(v, key, range)
                .and_then(|n| T::try_from(n).ok())
                .unwrap_or(default),
        }
    }

    fn opt_nonzero(
        &mut self,
        value: Option<&S<i64>>,
        key: &str,
        default: NonZeroU32,
    ) -> NonZeroU32 {
        let n: u32 = self.opt_int(value, key, 1..=i64::from(u32::MAX), default.get());
        NonZeroU32::new(n).unwrap_or(default)
    }

    /// A duration; `positive` refuses 0.
    fn duration(
        &mut self,
        value: Option<&S<DurationValue>>,
        key: &str,
        default: Duration,
        positive: bool,
    ) -> Duration {
        let Some(v) = value else { return default };
        let d = v.get_ref().0;
        if positive && d.is_zero() {
            self.error(
                Some(v.span()),
                format!(
                    "`{key}` must be longer than 0s, e.g. \"{}\"",
                    format_duration(default)
                ),
            );
            return default;
        }
        d
    }

    /// A size that must fit in memory (`usize`) and, with `positive`, not be 0.
    fn size(
        &mut self,
        value: Option<&S<SizeValue>>,
        key: &str,
        default: u64,
        positive: bool,
    ) -> usize {
        let fallback = usize::try_from(default).unwrap_or(usize::MAX);
        let Some(v) = value else { return fallback };
        let n = v.get_ref().0;
        if positive && n == 0 {
            self.error(Some(v.span()), format!("`{key}` must be more than 0 bytes"));
            return fallback;
        }
        match usize::try_from(n) {
            Ok(n) => n,
            Err(_) => {
                self.error(
                    Some(v.span()),
                    format!("`{key}` = {n} bytes does not fit in memory"),
                );
                fallback
            }
        }
    }

    /// A socket address such as `127.0.0.1:8080` or `[::1]:8080`.
    fn address(&mut self, value: &S<String>, key: &str) -> Checked<SocketAddr> {
        let text = value.get_ref().trim();
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Some(addr);
        }
        let why = if text.parse::<IpAddr>().is_ok() {
            "the port is missing".to_owned()
        } else if text.contains(':') && !text.starts_with('[') && text.matches(':').count() > 1 {
            "an IPv6 address needs brackets".to_owned()
        } else if text
            .rsplit_once(':')
            .is_some_and(|(host, _)| host.parse::<IpAddr>().is_err())
        {
            "host names are not resolved, give an IP address".to_owned()
        } else {
            "it is not an IP address and port".to_owned()
        };
        self.fail(
            value.span(),
            format!(
                "invalid address \"{text}\" for `{key}`: {why}; expected e.g. \"127.0.0.1:8080\" \
                 or \"[::1]:8080\""
            ),
        )
    }

    /// A listener or upstream name: it appears in admin URLs, logs and metric labels.
    fn name(&mut self, value: &S<String>, what: &str) -> String {
        let name = value.get_ref();
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            self.error(
                Some(value.span()),
                format!(
                    "invalid {what} name \"{name}\": use letters, digits, `-`, `_` and `.` \
                     (names appear in admin URLs and metric labels)"
                ),
            );
        }
        name.clone()
    }

    /// Records a name; reports it when already taken.
    /// `what` describes the name, `{}` standing for it: "upstream name `{}`".
    fn unique(
        &mut self,
        seen: &mut HashMap<String, Defined>,
        name: &str,
        span: Range<usize>,
        what: &str,
        hint: &str,
    ) {
        let line = self.line_of(span.clone());
        if let Some(first) = seen.get(name) {
            let message = format!(
                "duplicate {}: already defined on line {}{hint}",
                what.replace("{}", name),
                first.line
            );
            self.error(Some(span), message);
        } else {
            seen.insert(name.to_owned(), Defined { line });
        }
    }

    /// A reference to an upstream.
    fn upstream_ref(&mut self, value: &S<String>, upstreams: &HashMap<String, Defined>) -> String {
        let name = value.get_ref();
        if !upstreams.contains_key(name) {
            let mut known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
            known.sort_unstable();
            let hint = suggest(name, known.iter().copied())
                .map(|s| format!(", did you mean `{s}`?"))
                .unwrap_or_else(|| ",".to_owned());
            let list = if known.is_empty() {
                "no upstream is defined".to_owned()
            } else {
                format!(
                    "defined upstreams: {}",
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            self.error(
                Some(value.span()),
                format!("unknown upstream `{name}`{hint} {list}"),
            );
        }
        name.clone()
    }

    // ---- tables -------------------------------------------------------------------------

    fn config(&mut self, raw: &RawConfig) -> Config {
        let workers = raw
            .workers
            .as_ref()
            .and_then(|w| self.int(w, "workers", 1..=i64::from(u32::MAX)))
            .and_then(|n| usize::try_from(n).ok())
            .and_then(NonZeroUsize::new)
            .unwrap_or_else(defaults::workers);
        let shutdown_grace = self.duration(
            raw.shutdown_grace.as_ref(),
            "shutdown_grace",
            defaults::SHUTDOWN_GRACE,
            false,
        );
        let admin = self.admin(raw.admin.as_ref().map(|a| a.get_ref()));

        let mut names = HashMap::new();
        let mut upstreams = Vec::new();
        match &raw.upstreams {
            None => self.error(
                None,
                "no upstream is defined: add at least one [[upstreams]] table with `name` and \
                 `backends`",
            ),
            Some(list) if list.get_ref().is_empty() => self.error(
                Some(list.span()),
                "`upstreams` is empty: at least one upstream is required",
            ),
            Some(list) => {
                for u in list.get_ref() {
                    let u = u.get_ref();
                    let name = self.name(&u.name, "upstream");
                    self.unique(&mut names, &name, u.name.span(), "upstream name `{}`", "");
                    upstreams.push(self.upstream(u, name));
                }
            }
        }

        let mut listeners = Vec::new();
        match &raw.listeners {
            None => self.error(
                None,
                "no listener is defined: add at least one [[listeners]] table with `name`, \
                 `bind` and `upstream`",
            ),
            Some(list) if list.get_ref().is_empty() => self.error(
                Some(list.span()),
                "`listeners` is empty: at least one listener is required",
            ),
            Some(list) => {
                let mut seen = HashMap::new();
                let mut binds: HashMap<SocketAddr, (String, usize)> = HashMap::new();
                for l in list.get_ref() {
                    let l = l.get_ref();
                    let name = self.name(&l.name, "listener");
                    self.unique(&mut seen, &name, l.name.span(), "listener name `{}`", "");
                    let listener = self.listener(l, name, &names);
                    if let Some(listener) = listener {
                        self.check_bind(&listener, l, &admin, &mut binds);
                        listeners.push(listener);
                    }
                }
            }
        }

        Config {
            workers,
            shutdown_grace,
            access_log: super::access_log::validate(raw.access_log.as_ref()).unwrap_or_else(
                |(span, message)| {
                    self.error(Some(span), message);
                    AccessLogConfig::Off
                },
            ),
            admin,
            listeners,
            upstreams,
        }
    }

    fn admin(&mut self, raw: Option<&RawAdmin>) -> AdminConfig {
        let Some(raw) = raw else {
            return AdminConfig {
                listen: defaults::ADMIN_LISTEN,
                token: None,
            };
        };
        let listen = raw
            .listen
            .as_ref()
            .and_then(|l| self.address(l, "listen"))
            .unwrap_or(defaults::ADMIN_LISTEN);
        let mut token_problem = false;
        let token = match (&raw.token, &raw.token_env) {
            (Some(_), Some(env)) => {
                token_problem = true;
                self.fail(env.span(), "set either `token` or `token_env`, not both")
            }
            (Some(t), None) if t.get_ref().is_empty() => {
                token_problem = true;
                self.fail(
                    t.span(),
                    "`token` is empty: set a secret, or remove the key",
                )
            }
            (Some(t), None) => Some(t.get_ref().clone()),
            (None, Some(var)) => {
                let name = var.get_ref();
                match (self.env)(name) {
                    Some(value) if !value.is_empty() => Some(value),
                    found => {
                        token_problem = true;
                        let state = if found.is_some() {
                            "is empty"
                        } else {
                            "is not set"
                        };
                        self.fail(
                            var.span(),
                            format!(
                                "environment variable `{name}` named by `token_env` {state}: \
                                 export the admin token in it, or use `token`"
                            ),
                        )
                    }
                }
            }
            (None, None) => None,
        };
        if token.is_none() && !token_problem && !listen.ip().is_loopback() {
            let span = raw.listen.as_ref().map(|l| l.span());
            self.error(
                span,
                format!(
                    "admin listens on {listen}, which is not loopback: set `token` or `token_env`"
                ),
            );
        }
        AdminConfig { listen, token }
    }

    fn listener(
        &mut self,
        raw: &RawListener,
        name: String,
        upstreams: &HashMap<String, Defined>,
    ) -> Checked<ListenerConfig> {
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
        Some(ListenerConfig {
            name,
            bind: bind?,
            upstream,
            routes: routes.into_iter().collect::<Option<Vec<_>>>()?,
            header_timeout,
            idle_timeout,
            max_header_bytes,
            max_body_size,
            headers: self.headers(raw.request_headers.as_ref(), raw.response_headers.as_ref()),
        })
    }

    /// Reports a listener whose port another listener or the admin API already binds.
    fn check_bind(
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
        if bind == admin.listen {
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

    fn route(
        &mut self,
        raw: &S<RawRoute>,
        upstreams: &HashMap<String, Defined>,
    ) -> Checked<RouteConfig> {
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
        request: Option<&super::raw::RawHeaderRules>,
        response: Option<&super::raw::RawHeaderRules>,
    ) -> Headers {
        let mut rules = |raw, key| {
            super::header_rules::validate(raw, key).unwrap_or_else(|errors| {
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

    fn upstream(&mut self, raw: &RawUpstream, name: String) -> UpstreamConfig {
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

        let backends = match &raw.backends {
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
            Some(list) if list.get_ref().is_empty() => {
                self.error(
                    Some(list.span()),
                    format!("upstream `{name}` has no backends: at least one is required"),
                );
                Vec::new()
            }
            Some(list) => self.backends(list.get_ref(), &name),
        };

        // "0s" turns slow start off, as leaving it out does (Envoy's zero window).
        let window = self.duration(raw.slow_start.as_ref(), "slow_start", Duration::ZERO, false);
        let slow_start = (!window.is_zero()).then(|| SlowStartConfig::new(window));
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
            Some(list) => list
                .get_ref()
                .iter()
                .filter_map(|s| self.status(s))
                .collect(),
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
            },
            backends,
            tries,
            retry_on_status,
            retry_budget,
            retry_body_limit,
            connect_timeout,
            response_timeout,
            keepalive,
            keepalive_timeout,
            queue,
            health_check,
        }
    }

    fn backends(&mut self, raw: &[S<RawBackend>], upstream: &str) -> Vec<BackendSpec> {
        let mut ids = HashMap::new();
        let mut specs = Vec::new();
        for b in raw {
            let b = b.get_ref();
            let address = self.address(&b.address, "address");
            let weight = match &b.weight {
                None => Some(defaults::WEIGHT),
                Some(w) => match Weight::new(*w.get_ref()) {
                    Ok(weight) => Some(weight),
                    Err(e) => self.fail(w.span(), e.to_string()),
                },
            };
            let max_connections = b
                .max_connections
                .as_ref()
                .and_then(|m| self.int(m, "max_connections", 1..=i64::from(u32::MAX)))
                .and_then(|n| u32::try_from(n).ok())
                .and_then(NonZeroU32::new);
            let (id, span, hint) = match &b.id {
                Some(id) if id.get_ref().is_empty() => {
                    self.error(Some(id.span()), "backend `id` is empty");
                    (String::new(), id.span(), "")
                }
                Some(id) => (id.get_ref().clone(), id.span(), ""),
                None => (
                    b.address.get_ref().trim().to_owned(),
                    b.address.span(),
                    "; give one of them a distinct `id`",
                ),
            };
            let what = format!("backend id `{{}}` in upstream `{upstream}`");
            self.unique(&mut ids, &id, span, &what, hint);
            if let (Some(address), Some(weight)) = (address, weight) {
                specs.push(BackendSpec {
                    id,
                    address,
                    weight,
                    backup: b.backup.unwrap_or(defaults::BACKUP),
                    max_connections,
                });
            }
        }
        specs
    }

    /// An HTTP status code for `retry_on_status`.
    fn status(&mut self, value: &S<i64>) -> Checked<u16> {
        let code = *value.get_ref();
        match u16::try_from(code) {
            Ok(c) if (100..=599).contains(&c) => Some(c),
            _ => self.fail(
                value.span(),
                format!("{code} is not an HTTP status code; expected 100 to 599"),
            ),
        }
    }

    /// A header name (RFC 9110 token), lower-cased.
    fn header_name(&mut self, value: &S<String>, key: &str) -> String {
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

    fn health_check(&mut self, raw: Option<&RawHealthCheck>) -> (HealthCheckConfig, HealthConfig) {
        let empty = RawHealthCheck {
            enabled: None,
            kind: None,
            path: None,
            host: None,
            expected_status: None,
            interval: None,
            timeout: None,
            fall: None,
            rise: None,
            jitter: None,
        };
        let raw = raw.unwrap_or(&empty);
        let path = match &raw.path {
            None => defaults::HEALTH_PATH.to_owned(),
            Some(p) if p.get_ref().starts_with('/') && !p.get_ref().contains([' ', '\t']) => {
                p.get_ref().clone()
            }
            Some(p) => {
                let path = p.get_ref();
                self.error(
                    Some(p.span()),
                    format!("health check `path` \"{path}\" must start with `/` and have no spaces, e.g. \"/health\""),
                );
                defaults::HEALTH_PATH.to_owned()
            }
        };
        let host = raw.host.as_ref().and_then(|h| {
            let host = h.get_ref().trim();
            if host.is_empty() || host.contains([' ', '\t', '/']) {
                self.fail(
                    h.span(),
                    format!("health check `host` \"{host}\" is not a host name"),
                )
            } else {
                Some(host.to_owned())
            }
        });
        let expected_status = match &raw.expected_status {
            None => vec![defaults::HEALTH_EXPECTED_STATUS],
            Some(list) if list.get_ref().is_empty() => {
                self.error(
                    Some(list.span()),
                    "`expected_status` is empty: no check could pass; e.g. [200] or [\"200-399\"]",
                );
                vec![defaults::HEALTH_EXPECTED_STATUS]
            }
            Some(list) => list
                .get_ref()
                .iter()
                .filter_map(|item| self.status_range(item))
                .collect(),
        };
        let interval = self.duration(
            raw.interval.as_ref(),
            "interval",
            defaults::HEALTH_INTERVAL,
            true,
        );
        let timeout = self.duration(
            raw.timeout.as_ref(),
            "timeout",
            defaults::HEALTH_TIMEOUT,
            true,
        );
        if timeout >= interval {
            let (t, i) = (format_duration(timeout), format_duration(interval));
            match (&raw.timeout, &raw.interval) {
                (Some(ts), _) => self.error(
                    Some(ts.span()),
                    format!(
                        "health check `timeout` ({t}) must be shorter than `interval` ({i}): a \
                         check must end before the next one starts"
                    ),
                ),
                (None, Some(is)) => self.error(
                    Some(is.span()),
                    format!(
                        "health check `interval` ({i}) must be longer than `timeout` ({t}, the \
                         default): set a shorter `timeout` or a longer `interval`"
                    ),
                ),
                (None, None) => {}
            }
        }
        let jitter = match &raw.jitter {
            None => defaults::HEALTH_JITTER,
            Some(j) if (0.0..1.0).contains(j.get_ref()) => *j.get_ref(),
            Some(j) => {
                let value = *j.get_ref();
                self.error(
                    Some(j.span()),
                    format!("`jitter` must be at least 0 and below 1 (a fraction of `interval`), got {value}"),
                );
                defaults::HEALTH_JITTER
            }
        };
        let health = HealthConfig {
            rise: self.opt_nonzero(raw.rise.as_ref(), "rise", defaults::health_rise()),
            fall: self.opt_nonzero(raw.fall.as_ref(), "fall", defaults::health_fall()),
        };
        let config = HealthCheckConfig {
            enabled: raw.enabled.unwrap_or(defaults::HEALTH_ENABLED),
            kind: match raw.kind {
                None | Some(RawKind::Http) => CheckKind::Http,
                Some(RawKind::Tcp) => CheckKind::Tcp,
            },
            path,
            host,
            expected_status,
            interval,
            timeout,
            jitter,
        };
        (config, health)
    }

    /// An entry of `expected_status`: `200`, `"204"` or `"200-399"`.
    fn status_range(&mut self, item: &S<StatusItem>) -> Checked<RangeInclusive<u16>> {
        let code = |n: i64| u16::try_from(n).ok().filter(|c| (100..=599).contains(c));
        let parsed = match item.get_ref() {
            StatusItem::Code(n) => code(*n).map(|c| c..=c),
            StatusItem::Range(text) => {
                let (lo, hi) = text.split_once('-').unwrap_or((text, text));
                let lo = lo.trim().parse().ok().and_then(code);
                let hi = hi.trim().parse().ok().and_then(code);
                match (lo, hi) {
                    (Some(lo), Some(hi)) if lo <= hi => Some(lo..=hi),
                    _ => None,
                }
            }
        };
        if parsed.is_none() {
            let shown = match item.get_ref() {
                StatusItem::Code(n) => n.to_string(),
                StatusItem::Range(t) => format!("\"{t}\""),
            };
            self.error(
                Some(item.span()),
                format!(
                    "{shown} is not a status code or range; expected codes 100 to 599 such as \
                     200, or a range such as \"200-399\""
                ),
            );
        }
        parsed
    }

    fn breaker(&mut self, raw: Option<&RawBreaker>) -> Option<BreakerConfig> {
        let default = defaults::breaker();
        let Some(raw) = raw else {
            return defaults::BREAKER_ENABLED.then_some(default);
        };
        let config = BreakerConfig {
            failure_threshold: self.opt_nonzero(
                raw.failure_threshold.as_ref(),
                "failure_threshold",
                default.failure_threshold,
            ),
            recovery_timeout: self.duration(
                raw.recovery_timeout.as_ref(),
                "recovery_timeout",
                default.recovery_timeout,
                true,
            ),
            half_open_probes: self.opt_nonzero(
                raw.half_open_requests.as_ref(),
                "half_open_requests",
                default.half_open_probes,
            ),
        };
        raw.enabled
            .unwrap_or(defaults::BREAKER_ENABLED)
            .then_some(config)
    }
}
