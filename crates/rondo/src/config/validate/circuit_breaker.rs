//! `[upstreams.circuit_breaker]`: when a backend's breaker opens and how it recovers.

use balance::BreakerConfig;

use super::Validator;
use crate::config::defaults;
use crate::config::raw::RawBreaker;

impl Validator<'_> {
    pub(super) fn breaker(&mut self, raw: Option<&RawBreaker>) -> Option<BreakerConfig> {
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
            count_application_errors: raw
                .count_all_5xx
                .unwrap_or(default.count_application_errors),
        };
        raw.enabled
            .unwrap_or(defaults::BREAKER_ENABLED)
            .then_some(config)
    }
}
