//! `request_headers` and `response_headers` of a listener or route:
//! `{ set = { "x-name" = "value" }, remove = ["x-other"] }`.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;

use crate::header_rules::{HeaderRules, Value, is_reserved};
use toml::Spanned;

/// `request_headers` / `response_headers` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderRules {
    /// Header name → value (may use `$remote_addr`, `$host`, `$request_id`). Default: none.
    #[serde(default)]
    pub(crate) set: BTreeMap<Spanned<String>, Spanned<String>>,
    /// Header names. Default: none.
    #[serde(default)]
    pub(crate) remove: Vec<Spanned<String>>,
}

/// The rules `raw` describes, or every problem with its place.
pub(crate) fn validate(
    raw: Option<&RawHeaderRules>,
    key: &str,
) -> Result<HeaderRules, Vec<(Range<usize>, String)>> {
    let Some(raw) = raw else {
        return Ok(HeaderRules::default());
    };
    let mut errors = Vec::new();
    let mut rules = HeaderRules::default();
    for name in &raw.remove {
        if let Some(name) = header_name(name, key, &mut errors) {
            rules.remove.push(name);
        }
    }
    for (name, value) in &raw.set {
        let Some(lower) = header_name(name, key, &mut errors) else {
            continue;
        };
        if rules.remove.contains(&lower) {
            errors.push((
                name.span(),
                format!("`{key}` both sets and removes `{lower}`: keep one"),
            ));
            continue;
        }
        match Value::parse(value.get_ref()) {
            Ok(v) => rules.set.push((lower, v)),
            Err(e) => errors.push((value.span(), format!("`{key}.set.{lower}`: {e}"))),
        }
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}

/// A header name rules may touch, lower-cased.
fn header_name(
    value: &Spanned<String>,
    key: &str,
    errors: &mut Vec<(Range<usize>, String)>,
) -> Option<String> {
    let name = value.get_ref();
    let token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    let lower = name.to_ascii_lowercase();
    let why = if !token {
        format!("\"{name}\" in `{key}` is not a header name, e.g. \"x-forwarded-user\"")
    } else if is_reserved(&lower) {
        format!(
            "`{key}` may not change `{lower}`: rondo writes the framing and connection \
             headers itself"
        )
    } else {
        return Some(lower);
    };
    errors.push((value.span(), why));
    None
}
