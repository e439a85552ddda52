//! Configuration errors a user can act on: where (file, line, column, the line itself with a
//! caret under the spot) and what was wrong and what was expected, in the format of rustc and
//! the toml crate:
//!
//! ```text
//! rondo.toml:14:1: unknown key `intreval`, did you mean `interval`? expected one of `enabled`, ...
//!    |
//! 14 | intreval = "5s"
//!    | ^^^^^^^^
//! ```

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::PathBuf;

use thiserror::Error;

/// Why a configuration could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {}", path.display(), describe_io(error))]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said. Part of the message and not a `source()`, so
        /// that a report of the error chain does not print the cause a second time.
        error: io::Error,
    },
    /// The file was read but is not a valid configuration: one or more problems, each with
    /// its place in the file.
    #[error("{}", Listed(diagnostics))]
    Invalid {
        /// Every problem found, in file order (a syntax error stops at the first).
        diagnostics: Vec<Diagnostic>,
    },
}

impl ConfigError {
    /// The problems found, each with its place; empty for a read error.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { diagnostics } => diagnostics,
        }
    }
}

/// "No such file or directory", without the " (os error 2)" that `io::Error` appends.
fn describe_io(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_owned(),
        _ => text,
    }
}

struct Listed<'a>(&'a [Diagnostic]);

impl fmt::Display for Listed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n\n")?;
            }
            write!(f, "{d}")?;
        }
        if self.0.len() > 1 {
            write!(f, "\n\n{} errors", self.0.len())?;
        }
        Ok(())
    }
}

/// One problem at one place in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file name as given.
    pub file: String,
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
    /// What was wrong and what was expected.
    pub message: String,
    /// The text of the line (empty for an empty file).
    pub source_line: String,
    /// How many characters the caret underlines, at least 1.
    pub width: usize,
}

impl Diagnostic {
    /// `FILE:LINE:COL: message` on one line, without the source line and caret: what a log
    /// line carries, since a log line must not contain line breaks.
    pub fn headline(&self) -> String {
        format!(
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.headline())?;
        if self.source_line.is_empty() {
            return Ok(());
        }
        let number = self.line.to_string();
        let gutter = " ".repeat(number.len());
        // Tabs stay tabs under the line so the caret lines up in any terminal.
        let pad: String = self
            .source_line
            .chars()
            .take(self.column - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(
            f,
            "\n{gutter} |\n{number} | {}\n{gutter} | {pad}{}",
            self.source_line,
            "^".repeat(self.width.max(1))
        )
    }
}

/// Turns byte offsets of one file into diagnostics.
#[derive(Debug)]
pub(crate) struct SourceMap<'a> {
    file: &'a str,
    text: &'a str,
    /// Byte offset where each line starts.
    line_starts: Vec<usize>,
}

impl<'a> SourceMap<'a> {
    pub(crate) fn new(file: &'a str, text: &'a str) -> SourceMap<'a> {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SourceMap {
            file,
            text,
            line_starts,
        }
    }

    /// A diagnostic for the bytes `span` of the file; `None` points at the start.
    pub(crate) fn diagnostic(
        &self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Diagnostic {
        let Some(span) = span else {
            // Something missing from the whole file: no line to show.
            return Diagnostic {
                file: self.file.to_owned(),
                line: 1,
                column: 1,
                message: one_line(message.into()),
                source_line: String::new(),
                width: 1,
            };
        };
        let start = floor_char_boundary(self.text, span.start);
        let line = self.line_starts.partition_point(|&s| s <= start).max(1) - 1;
        let line_start = self.line_starts[line];
        let line_end = self.text[line_start..]
            .find('\n')
            .map_or(self.text.len(), |i| line_start + i);
        let source_line = self.text[line_start..line_end].trim_end_matches('\r');
        // A place past the shown line (after a trailing CR, which is not shown) is marked
        // just after its last character.
        let column =
            (self.text[line_start..start].chars().count() + 1).min(source_line.chars().count() + 1);
        let end = floor_char_boundary(self.text, span.end.clamp(start, line_end));
        let width = self.text[start..end].chars().count().max(1);
        Diagnostic {
            file: self.file.to_owned(),
            line: line + 1,
            column,
            message: one_line(message.into()),
            source_line: source_line.to_owned(),
            width,
        }
    }
}

/// A message as one line: a value quoted from the file may hold line breaks (a multi-line
/// string), which are shown escaped, as a log line must not contain them.
fn one_line(message: String) -> String {
    if message.contains(['\n', '\r']) {
        message.replace('\n', "\\n").replace('\r', "\\r")
    } else {
        message
    }
}

/// The largest char boundary at or before `i`, clamped to the text.
fn floor_char_boundary(text: &str, i: usize) -> usize {
    let mut i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Rewrites serde's and toml's wording for someone editing a TOML file: "field" becomes
/// "key", "variant" becomes "value", Rust type names become words, and an unknown key or
/// value gets the closest expected one suggested. The list of expected ones is kept.
pub(crate) fn humanize(message: &str) -> String {
    let message = message.trim_end();
    for (prefix, noun) in [("unknown field `", "key"), ("unknown variant `", "value")] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((name, tail)) = rest.split_once('`')
        {
            let expected = backticked(tail);
            let hint = suggest(name, expected.iter().copied())
                .map(|s| format!(", did you mean `{s}`?"))
                .unwrap_or_else(|| ",".to_owned());
            let tail = tail.trim_start_matches(',').trim_start();
            return format!("unknown {noun} `{name}`{hint} {tail}");
        }
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        return format!("missing key `{rest}");
    }
    if message.starts_with("invalid type: map, expected a sequence") {
        return "expected an array; for a list of tables write `[[name]]` rather than `[name]`"
            .to_owned();
    }
    // toml reads integers beyond 64 bits as i128 and says so.
    if let Some(rest) = message.strip_prefix("invalid type: integer `")
        && let Some((number, tail)) = rest.split_once('`')
        && tail.starts_with(" as i128")
    {
        return format!("integer {number} is too large");
    }
    let mut out = message.to_owned();
    for (rust, words) in [
        ("expected i64", "expected an integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected u32", "expected a non-negative integer"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected an array"),
    ] {
        out = out.replace(rust, words);
    }
    // "expected struct RawAdmin": the user wrote a value where a table belongs.
    if let Some(i) = out.find("expected struct ") {
        out.replace_range(i.., "expected a table");
    }
    out
}

/// The words between backticks in `text`.
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// The candidate closest to `name`, if one is close enough to be what was meant: at most a
/// third of its letters wrong (a swap of two neighbours counts as one), or `name` is how it
/// begins.
pub(crate) fn suggest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = name.to_lowercase();
    candidates
        .into_iter()
        .filter_map(|c| {
            let d = edit_distance(&lower, &c.to_lowercase());
            let close = d <= (c.chars().count() / 3).max(1);
            let prefix = lower.chars().count() >= 3 && c.to_lowercase().starts_with(&lower);
            (close || prefix).then_some((d, c))
        })
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
/// neighbours each cost 1 (`intreval` is 1 from `interval`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            d[i * w + j] = if i == 0 || j == 0 {
                i + j
            } else {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut best = (d[(i - 1) * w + j] + 1)
                    .min(d[i * w + j - 1] + 1)
                    .min(d[(i - 1) * w + j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    best = best.min(d[(i - 2) * w + j - 2] + 1);
                }
                best
            };
        }
    }
    d[a.len() * w + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_lines_and_character_columns() {
        let text = "a = 1\nname = \"é\" x\n\tb = 2\n";
        let map = SourceMap::new("f.toml", text);
        let d = map.diagnostic(Some(0..1), "m");
        assert_eq!((d.line, d.column, d.width), (1, 1, 1));
        let x = text.find('x').unwrap();
        let d = map.diagnostic(Some(x..x + 1), "m");
        assert_eq!((d.line, d.column), (2, 12));
        assert_eq!(d.source_line, "name = \"é\" x");
        let b = text.find('b').unwrap();
        let d = map.diagnostic(Some(b..b + 5), "bad");
        assert_eq!((d.line, d.column, d.width), (3, 2, 5));
        assert_eq!(
            d.to_string(),
            "f.toml:3:2: bad\n  |\n3 | \tb = 2\n  | \t^^^^^"
        );
    }

    #[test]
    fn a_span_past_the_end_points_at_the_last_line() {
        let text = "a = [\n";
        let map = SourceMap::new("f.toml", text);
        let d = map.diagnostic(Some(6..6), "m");
        assert_eq!((d.line, d.column, d.width), (2, 1, 1));
        assert_eq!(d.to_string(), "f.toml:2:1: m");
        let d = SourceMap::new("e.toml", "").diagnostic(Some(0..0), "empty");
        assert_eq!(d.to_string(), "e.toml:1:1: empty");
        let d = SourceMap::new("f.toml", "a = 1\n").diagnostic(None, "nothing here");
        assert_eq!(d.to_string(), "f.toml:1:1: nothing here");
    }

    #[test]
    fn unknown_keys_get_the_closest_known_key_suggested() {
        let m =
            humanize("unknown field `intreval`, expected one of `enabled`, `interval`, `timeout`");
        assert_eq!(
            m,
            "unknown key `intreval`, did you mean `interval`? expected one of `enabled`, `interval`, `timeout`"
        );
        let m = humanize("unknown field `zzz`, expected `name` or `bind`");
        assert_eq!(m, "unknown key `zzz`, expected `name` or `bind`");
        let m = humanize("unknown variant `rand`, expected `first` or `random`");
        assert_eq!(
            m,
            "unknown value `rand`, did you mean `random`? expected `first` or `random`"
        );
        assert_eq!(humanize("missing field `bind`"), "missing key `bind`");
        assert_eq!(
            humanize("invalid type: integer `5`, expected struct RawAdmin"),
            "invalid type: integer `5`, expected a table"
        );
        assert_eq!(
            humanize("invalid type: integer `99999999999999999999` as i128, expected i64"),
            "integer 99999999999999999999 is too large"
        );
    }

    #[test]
    fn suggestions_tolerate_typos_and_prefixes_but_not_strangers() {
        let keys = ["interval", "timeout", "fall", "rise"];
        assert_eq!(suggest("intervall", keys), Some("interval"));
        assert_eq!(suggest("Timeout", keys), Some("timeout"));
        assert_eq!(suggest("fal", keys), Some("fall"));
        assert_eq!(suggest("color", keys), None);
        assert_eq!(
            suggest("smooth", ["weighted", "smooth-weighted"]),
            Some("smooth-weighted")
        );
        assert_eq!(edit_distance("intreval", "interval"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn io_errors_name_the_file_without_the_os_error_number() {
        let e = ConfigError::Read {
            path: "rondo.toml".into(),
            error: io::Error::from(io::ErrorKind::NotFound),
        };
        assert!(e.to_string().starts_with("cannot read rondo.toml: "), "{e}");
        assert!(
            std::error::Error::source(&e).is_none(),
            "the cause is said once"
        );
        let os = io::Error::from_raw_os_error(2);
        assert_eq!(describe_io(&os), "No such file or directory");
    }
}
