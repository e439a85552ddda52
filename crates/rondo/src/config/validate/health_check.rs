//! `[upstreams.health_check]`: active probes (HTTP, TCP or gRPC), what passes, how often, and the
//! rise/fall hysteresis.

use balance::HealthConfig;

use super::Validator;
use crate::config::defaults;
use crate::config::model::{CheckKind, HealthCheckConfig};
use crate::config::raw::{RawHealthCheck, RawKind};
use crate::config::units::format_duration;

impl Validator<'_> {
    pub(super) fn health_check(
        &mut self,
        raw: Option<&RawHealthCheck>,
    ) -> (HealthCheckConfig, HealthConfig) {
        let empty = RawHealthCheck {
            enabled: None,
            kind: None,
            service: None,
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
                Some(RawKind::Grpc) => CheckKind::Grpc,
            },
            path,
            service: raw
                .service
                .as_ref()
                .map_or_else(String::new, |s| s.get_ref().clone()),
            host,
            expected_status,
            interval,
            timeout,
            jitter,
        };
        (config, health)
    }
}
