//! Durations and sizes as people write them: `"5s"`, `"250ms"`, `"1m30s"`; `"64KiB"`,
//! `"10MiB"`, `1048576`.
//!
//! Durations are parsed by `humantime`, the de-facto format of Rust tools (the same as
//! systemd's). A bare number is refused: `timeout = 5` could be seconds or milliseconds, and
//! guessing wrong is a thousand-fold error.
//!
//! Sizes are a plain integer of bytes or an integer with a unit. Binary units (`KiB`, `MiB`,
//! `GiB`, `TiB`) are powers of 1024, decimal ones (`kB`, `MB`, `GB`, `TB`) powers of 1000, as
//! the IEC prefixes define them; units are matched without regard to case. nginx's bare
//! `16k` is refused rather than guessed: write `16KiB`.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// Examples quoted in error messages.
const DURATION_EXAMPLES: &str = "e.g. \"5s\", \"250ms\", \"1m30s\"";
const SIZE_EXAMPLES: &str = "e.g. \"64KiB\", \"10MiB\", \"1GiB\" or a number of bytes";

/// Parses a duration such as `"5s"`, `"250ms"` or `"1m30s"`.
///
/// ```
/// # use std::time::Duration;
/// use rondo::config::units::parse_duration;
/// assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
/// assert!(parse_duration("5").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration \"{text}\": {e}; expected {DURATION_EXAMPLES}"))
}

/// Formats a duration the way it is written in the configuration (`"30s"`, `"1m 30s"`).
pub fn format_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// The units a size may carry, lower-cased, with their multipliers.
const SIZE_UNITS: [(&str, u64); 9] = [
    ("b", 1),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
];

/// Parses a size such as `"64KiB"`, `"10 MiB"`, `"1GB"` or `"512"` (bytes).
///
/// ```
/// use rondo::config::units::parse_size;
/// assert_eq!(parse_size("64KiB"), Ok(65_536));
/// assert_eq!(parse_size("1MB"), Ok(1_000_000));
/// assert!(parse_size("16k").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = t.split_at(digits);
    let unit = unit.trim();
    if number.is_empty() {
        return Err(format!(
            "invalid size \"{text}\": it does not start with a number; expected {SIZE_EXAMPLES}"
        ));
    }
    let multiplier = if unit.is_empty() {
        1
    } else {
        let lower = unit.to_ascii_lowercase();
        match SIZE_UNITS.iter().find(|(u, _)| *u == lower) {
            Some(&(_, m)) => m,
            None => {
                return Err(format!(
                    "invalid size \"{text}\": unknown unit `{unit}`; expected B, KiB, MiB, GiB, \
                     TiB (powers of 1024) or kB, MB, GB, TB (powers of 1000), {SIZE_EXAMPLES}"
                ));
            }
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("invalid size \"{text}\": too large"))
}

/// Formats a byte count with the largest binary unit that divides it (`16384` → `"16KiB"`).
pub fn format_size(bytes: u64) -> String {
    for (unit, m) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= m && bytes.is_multiple_of(m) {
            return format!("{}{unit}", bytes / m);
        }
    }
    bytes.to_string()
}

/// A duration in the configuration: a string such as `"5s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DurationValue(pub(crate) Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a duration string, {DURATION_EXAMPLES}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationValue, E> {
                parse_duration(v).map(DurationValue).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// A size in the configuration: a string such as `"64KiB"` or an integer of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SizeValue(pub(crate) u64);

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SizeValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a size, {SIZE_EXAMPLES}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SizeValue, E> {
                parse_size(v).map(SizeValue).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SizeValue, E> {
                Ok(SizeValue(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SizeValue, E> {
                u64::try_from(v)
                    .map(SizeValue)
                    .map_err(|_| E::custom(format!("invalid size {v}: sizes are not negative")))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn a_bare_number_or_an_unknown_unit_is_not_a_duration() {
        let e = parse_duration("5").unwrap_err();
        assert!(e.contains("invalid duration \"5\""), "{e}");
        assert!(e.contains("\"250ms\""), "{e}");
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes_take_binary_and_decimal_units_or_plain_bytes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("16KiB"), Ok(16 * 1024));
        assert_eq!(parse_size("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1 gib"), Ok(1 << 30));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert_eq!(parse_size("64kB"), Ok(64_000));
        assert_eq!(parse_size("3MB"), Ok(3_000_000));
        assert_eq!(parse_size("7B"), Ok(7));
    }

    #[test]
    fn ambiguous_negative_or_overflowing_sizes_are_refused() {
        let e = parse_size("16k").unwrap_err();
        assert!(e.contains("unknown unit `k`"), "{e}");
        assert!(
            parse_size("KiB")
                .unwrap_err()
                .contains("does not start with a number")
        );
        assert!(parse_size("-1KiB").is_err());
        assert!(parse_size("1.5MiB").is_err());
        assert!(
            parse_size("99999999999TiB")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn sizes_and_durations_format_back_to_their_written_form() {
        assert_eq!(format_size(16 * 1024), "16KiB");
        assert_eq!(format_size(64 * 1024), "64KiB");
        assert_eq!(format_size(3 << 20), "3MiB");
        assert_eq!(format_size(1000), "1000");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m 30s");
    }
}
