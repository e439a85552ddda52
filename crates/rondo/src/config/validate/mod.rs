//! From the file as written ([`super::raw`]) to the typed configuration ([`super::model`]):
//! defaults filled in from [`super::defaults`], every value checked, every reference
//! resolved. Problems are collected rather than returned at the first, so a user fixes them
//! all in one round; each points at the value that caused it. A check returns `Option<T>`:
//! `None` means a problem was reported, and the caller goes on with a stand-in so later
//! problems are found too.
//!
//! One file per TOML table, each adding its checks to the one [`Validator`]: the top level
//! is here, [`admin`], [`listener`] (with its routes), [`upstream`], [`backends`],
//! [`health_check`], [`circuit_breaker`] and [`discovery`]; checks of single values that several tables
//! share are in [`values`].

mod admin;
mod affinity;
mod backends;
mod circuit_breaker;
mod discovery;
mod health_check;
mod listener;
mod protocol;
mod upstream;
mod values;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::ops::Range;

use super::defaults;
use super::error::{Diagnostic, SourceMap};
use super::model::{Config, ResolverConfig};
use super::raw::{RawConfig, RawResolver};
use super::units::format_duration;
use crate::access_log::AccessLogConfig;

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

pub(super) struct Validator<'a> {
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

impl Validator<'_> {
    pub(super) fn error(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        let placed = span.is_some();
        let d = self.map.diagnostic(span, message);
        if placed {
            self.errors.push(d);
        } else {
            self.missing.push(d);
        }
    }

    pub(super) fn fail<T>(&mut self, span: Range<usize>, message: impl Into<String>) -> Option<T> {
        self.error(Some(span), message);
        None
    }

    pub(super) fn line_of(&self, span: Range<usize>) -> usize {
        self.map.diagnostic(Some(span), "").line
    }

    /// The top level of the file, and every table below it.
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
        let etcd = self.discovery(raw.discovery.as_ref());

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
                    upstreams.push(self.upstream(u, name, etcd.is_some()));
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
            resolver: self.resolver(raw.resolver.as_ref().map(|r| r.get_ref())),
            etcd,
            max_memory: raw
                .max_memory
                .as_ref()
                .map(|m| self.size(Some(m), "max_memory", 0, true))
                .and_then(|n| u64::try_from(n).ok()),
        }
    }

    /// `[resolver]`.
    fn resolver(&mut self, raw: Option<&RawResolver>) -> ResolverConfig {
        let nameservers = raw
            .and_then(|r| r.nameservers.as_ref())
            .map(|list| {
                list.get_ref()
                    .iter()
                    .filter_map(|n| self.address(n, "nameservers"))
                    .collect()
            })
            .unwrap_or_default();
        let min_ttl = self.duration(
            raw.and_then(|r| r.min_ttl.as_ref()),
            "min_ttl",
            defaults::RESOLVER_MIN_TTL,
            true,
        );
        let max_ttl = self.duration(
            raw.and_then(|r| r.max_ttl.as_ref()),
            "max_ttl",
            defaults::RESOLVER_MAX_TTL,
            true,
        );
        if max_ttl < min_ttl {
            let span = raw.and_then(|r| r.max_ttl.as_ref()).map(|m| m.span());
            self.error(
                span,
                format!(
                    "`max_ttl` ({}) is shorter than `min_ttl` ({})",
                    format_duration(max_ttl),
                    format_duration(min_ttl)
                ),
            );
        }
        ResolverConfig {
            nameservers,
            min_ttl,
            max_ttl,
        }
    }
}
