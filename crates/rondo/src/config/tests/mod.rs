//! Parsing and validation, file in, `Config` or diagnostics out; one file per TOML table, as
//! in `validate/`.
//!
//! A problem's place is shown the way the user sees it: a fixture is TOML in which a line of
//! carets sits under the offending characters of the line above, followed by (a part of)
//! the expected message, as in the error rondo prints:
//!
//! ```text
//! tries = 0
//!         ^ `tries` must be at least 1, got 0
//! ```
//!
//! [`assert_marked`] removes the caret lines, validates the rest and checks that every
//! problem found is marked, at that line, column and width, in file order.

mod access_log;
mod admin;
mod backends;
mod discovery;
mod docs;
mod fuzz;
mod header_rules;
mod health_check;
mod listener;
mod tls;
mod top;
mod upstream;

use std::time::Duration;

use super::*;

/// The smallest valid file.
const MINIMAL: &str = r#"
[[listeners]]
name = "web"
bind = "127.0.0.1:8080"
upstream = "app"

[[upstreams]]
name = "app"
backends = [{ address = "127.0.0.1:9001" }]
"#;

fn no_env(_: &str) -> Option<String> {
    None
}

fn ok(text: &str) -> Config {
    match parse_with_env(text, "t.toml", &no_env) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid file, got:\n{e}"),
    }
}

/// Each diagnostic as (line, column, message).
fn errors(text: &str) -> Vec<(usize, usize, String)> {
    diagnostics(text, &no_env)
        .into_iter()
        .map(|d| (d.line, d.column, d.message))
        .collect()
}

/// The one diagnostic of `text`, which must contain `needle`; its line and column.
fn one_error(text: &str, needle: &str) -> (usize, usize) {
    let all = errors(text);
    assert_eq!(all.len(), 1, "expected one error, got {all:#?}");
    let (line, column, message) = &all[0];
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    (*line, *column)
}

fn diagnostics(text: &str, env: Env<'_>) -> Vec<Diagnostic> {
    match parse_with_env(text, "t.toml", env) {
        Ok(c) => panic!("expected errors, got {c:#?}"),
        Err(e) => e.diagnostics().to_vec(),
    }
}

/// A problem expected at a place: the line and column of the first caret, how many carets,
/// and a part of the message.
#[derive(Debug)]
struct Mark {
    line: usize,
    column: usize,
    width: usize,
    message: String,
}

/// Splits a fixture into the TOML and its marks. A mark refers to the last TOML line above
/// it, so two marks in a row are two problems on one line.
fn marks(fixture: &str) -> (String, Vec<Mark>) {
    let mut toml = String::new();
    let mut marks = Vec::new();
    let mut line = 0;
    for text in fixture.split_inclusive('\n') {
        let carets = text.trim_start_matches(' ');
        if carets.starts_with('^') {
            let width = carets.chars().take_while(|&c| c == '^').count();
            let message = carets[width..].trim().to_owned();
            assert!(!message.is_empty(), "a mark without a message: {text:?}");
            marks.push(Mark {
                line,
                column: text.len() - carets.len() + 1,
                width,
                message,
            });
        } else {
            toml.push_str(text);
            line += 1;
        }
    }
    (toml, marks)
}

/// Asserts that the fixture's TOML has exactly the problems marked in it (see the module
/// docs).
fn assert_marked(fixture: &str) {
    assert_marked_with(fixture, &no_env);
}

/// [`assert_marked`] with environment variables looked up by `env`.
fn assert_marked_with(fixture: &str, env: Env<'_>) {
    let (toml, marks) = marks(fixture);
    assert!(
        !marks.is_empty(),
        "the fixture marks no problem:\n{fixture}"
    );
    let found = diagnostics(&toml, env);
    let matches = found.len() == marks.len()
        && found.iter().zip(&marks).all(|(d, m)| {
            (d.line, d.column, d.width) == (m.line, m.column, m.width)
                && d.message.contains(&m.message)
        });
    if !matches {
        let shown: Vec<String> = found
            .iter()
            .map(|d| {
                format!(
                    "line {}:\n{}\n{}{} {}",
                    d.line,
                    d.source_line,
                    " ".repeat(d.column - 1),
                    "^".repeat(d.width),
                    d.message
                )
            })
            .collect();
        panic!(
            "expected the problems marked in\n{fixture}\nfound:\n{}",
            shown.join("\n")
        );
    }
}

/// `MINIMAL` with `extra` appended to the upstream.
fn upstream_with(extra: &str) -> String {
    format!("{MINIMAL}{extra}\n")
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
mod affinity;
