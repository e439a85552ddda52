//! Checks of single values shared by every table: integers in a range, durations, sizes,
//! socket addresses, names and references to them. Each reports a problem at the value and
//! returns a stand-in so validation goes on.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::ops::{Range, RangeInclusive};
use std::time::Duration;

use super::{Defined, Validator};
use crate::config::error::suggest;
use crate::config::raw::StatusItem;
use crate::config::units::{DurationValue, SizeValue, format_duration};
use toml::Spanned;

impl Validator<'_> {
    /// An integer in `range`.
    pub(super) fn int(
        &mut self,
        value: &Spanned<i64>,
        key: &str,
        range: RangeInclusive<i64>,
    ) -> Option<i64> {
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

    pub(super) fn opt_int<T: TryFrom<i64>>(
        &mut self,
        value: Option<&Spanned<i64>>,
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

    pub(super) fn opt_nonzero(
        &mut self,
        value: Option<&Spanned<i64>>,
        key: &str,
        default: NonZeroU32,
    ) -> NonZeroU32 {
        let n: u32 = self.opt_int(value, key, 1..=i64::from(u32::MAX), default.get());
        NonZeroU32::new(n).unwrap_or(default)
    }

    /// A duration; `positive` refuses 0.
    pub(super) fn duration(
        &mut self,
        value: Option<&Spanned<DurationValue>>,
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
    pub(super) fn size(
        &mut self,
        value: Option<&Spanned<SizeValue>>,
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
    pub(super) fn address(&mut self, value: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        let text = value.get_ref().trim();
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Some(addr);
        }
        const EXAMPLES: &str = "expected e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"";
        let (why, fix) = if let Some((scheme, rest)) = text.split_once("://") {
            // A URL pasted from a browser or another proxy's config.
            let address = rest.split('/').next().unwrap_or(rest);
            let fix = match address.parse::<SocketAddr>() {
                Ok(_) => format!("write \"{address}\""),
                Err(_) => EXAMPLES.to_owned(),
            };
            (
                format!("a scheme (`{scheme}://`) is not allowed, only an IP address and port"),
                fix,
            )
        } else if let Some(port) = text.strip_prefix(':').filter(|p| p.parse::<u16>().is_ok()) {
            // nginx's `listen :8080` habit: the host cannot be left out here.
            (
                "the IP address is missing".to_owned(),
                format!(
                    "write \"0.0.0.0:{port}\" for every IPv4 interface, \"[::]:{port}\" for \
                     IPv6, or \"127.0.0.1:{port}\" for this machine only"
                ),
            )
        } else if text.parse::<IpAddr>().is_ok() {
            ("the port is missing".to_owned(), EXAMPLES.to_owned())
        } else if text.contains(':') && !text.starts_with('[') && text.matches(':').count() > 1 {
            (
                "an IPv6 address needs brackets".to_owned(),
                EXAMPLES.to_owned(),
            )
        } else if text
            .rsplit_once(':')
            .is_some_and(|(host, _)| host.parse::<IpAddr>().is_err())
        {
            (
                "host names are not resolved here, give an IP address".to_owned(),
                EXAMPLES.to_owned(),
            )
        } else {
            (
                "it is not an IP address and port".to_owned(),
                EXAMPLES.to_owned(),
            )
        };
        self.fail(
            value.span(),
            format!("invalid address \"{text}\" for `{key}`: {why}; {fix}"),
        )
    }

    /// A listener or upstream name: it appears in admin URLs, logs and metric labels.
    pub(super) fn name(&mut self, value: &Spanned<String>, what: &str) -> String {
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
    pub(super) fn unique(
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
    pub(super) fn upstream_ref(
        &mut self,
        value: &Spanned<String>,
        upstreams: &HashMap<String, Defined>,
    ) -> String {
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

    /// An entry of a status list (`expected_status`, `retry_on_status`): `200`, `"204"`, a
    /// range `"200-399"` or a class `"5xx"`.
    pub(super) fn status_range(
        &mut self,
        item: &Spanned<StatusItem>,
    ) -> Option<RangeInclusive<u16>> {
        let code = |n: i64| u16::try_from(n).ok().filter(|c| (100..=599).contains(c));
        let parsed = match item.get_ref() {
            StatusItem::Code(n) => code(*n).map(|c| c..=c),
            StatusItem::Range(text) if is_class(text) => {
                let first = text.bytes().next().map_or(0, |b| u16::from(b - b'0'));
                Some(first * 100..=first * 100 + 99)
            }
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
                     200, a range such as \"200-399\" or a class such as \"5xx\""
                ),
            );
        }
        parsed
    }
}

/// `"1xx"` to `"5xx"`: every status of a class.
fn is_class(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 3 && (b'1'..=b'5').contains(&b[0]) && b[1..].eq_ignore_ascii_case(b"xx")
}
