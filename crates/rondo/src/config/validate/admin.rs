//! `[admin]`: whether and where the admin API listens, and the token that guards its
//! mutations.

use super::Validator;
use crate::config::defaults;
use crate::config::model::AdminConfig;
use crate::config::raw::RawAdmin;

impl Validator<'_> {
    pub(super) fn admin(&mut self, raw: Option<&RawAdmin>) -> AdminConfig {
        let Some(raw) = raw else {
            return AdminConfig {
                enabled: defaults::ADMIN_ENABLED,
                listen: defaults::ADMIN_LISTEN,
                token: None,
            };
        };
        let enabled = raw.enabled.unwrap_or(defaults::ADMIN_ENABLED);
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
        if enabled && token.is_none() && !token_problem && !listen.ip().is_loopback() {
            let span = raw.listen.as_ref().map(|l| l.span());
            self.error(
                span,
                format!(
                    "admin listens on {listen}, which is not loopback: set `token` or `token_env`"
                ),
            );
        }
        AdminConfig {
            enabled,
            listen,
            token,
        }
    }
}
