//! Fuzzing the loader: any text is either a configuration or a list of problems, each at a
//! real place in the text, and never a panic. Texts are built from the file's own pieces
//! (every table header, every key, values of every kind and some that are wrong for any key)
//! so that most cases get past the TOML syntax into validation, plus arbitrary text.
//!
//! CI runs 2,000 cases; `RONDO_FUZZ_CASES=N` runs more (docs/reliability.md has the long runs).

use proptest::prelude::*;

use super::*;

/// Table headers, including misspelt, repeated and misplaced ones.
const TABLES: &[&str] = &[
    "[[listeners]]",
    "[[listeners.routes]]",
    "[listeners.tls]",
    "[listeners.request_headers]",
    "[listeners.response_headers]",
    "[[upstreams]]",
    "[upstreams.tls]",
    "[upstreams.health_check]",
    "[upstreams.circuit_breaker]",
    "[upstreams.sticky]",
    "[admin]",
    "[resolver]",
    "[access_log]",
    "[[admin]]",
    "[listener]",
    "[upstreams",
    "[]",
];

/// Every key of the file, and a few that are not.
const KEYS: &[&str] = &[
    "access_log",
    "address",
    "algorithm",
    "backends",
    "backup",
    "bind",
    "ca",
    "cert",
    "certificates",
    "connect_timeout",
    "cookie",
    "count_all_5xx",
    "enabled",
    "expected_status",
    "fail_timeout",
    "failover",
    "failure_threshold",
    "fall",
    "format",
    "half_open_requests",
    "hash_balance_factor",
    "hash_key",
    "header_timeout",
    "host",
    "http_only",
    "id",
    "idle_timeout",
    "interval",
    "jitter",
    "keepalive_timeout",
    "keepalive",
    "key",
    "kind",
    "listen",
    "max_body_size",
    "max_client_connections",
    "max_connections",
    "max_fails",
    "max_header_bytes",
    "max_memory",
    "max_ttl",
    "min_ttl",
    "min_version",
    "mode",
    "name",
    "nameservers",
    "panic_threshold",
    "path_prefix",
    "path",
    "priority_header",
    "queue_size",
    "queue_timeout",
    "recovery_timeout",
    "redirect_https",
    "remove",
    "request_headers",
    "response_headers",
    "response_timeout",
    "retry_body_limit",
    "retry_budget_min",
    "retry_budget_percent",
    "retry_on_status",
    "rise",
    "secure",
    "server_name",
    "server_names",
    "set",
    "shutdown_grace",
    "slow_start",
    "start",
    "sticky",
    "timeout",
    "token_env",
    "token",
    "tries",
    "ttl",
    "upstream",
    "verify",
    "weight",
    "workers",
    "http2_max_concurrent_streams",
    "intreval",
    "\"quoted key\"",
    "a.b",
];

/// Values of every TOML kind, right for some key and wrong for others.
const VALUES: &[&str] = &[
    "\"web\"",
    "\"app\"",
    "\"\"",
    "\"127.0.0.1:0\"",
    "\"[::1]:8080\"",
    "\":8080\"",
    "\"http://127.0.0.1:9001\"",
    "\"app.internal:80\"",
    "\"_http._tcp.app\"",
    "\"5s\"",
    "\"0s\"",
    "\"250ms\"",
    "\"99999999999999h\"",
    "\"16KiB\"",
    "\"16k\"",
    "\"1GiB\"",
    "\"/\"",
    "\"/health\"",
    "\"round-robin\"",
    "\"consistent-hash\"",
    "\"p2c\"",
    "\"tcp\"",
    "\"http\"",
    "\"header:x-user\"",
    "\"cookie:\"",
    "\"5xx\"",
    "\"500-504\"",
    "\"1.3\"",
    "\"json\"",
    "\"$remote_addr $status\"",
    "\"\\u00e9\"",
    "0",
    "1",
    "-1",
    "3",
    "100",
    "101",
    "65536",
    "18446744073709551616",
    "9223372036854775807",
    "0.5",
    "1.25",
    "1e400",
    "nan",
    "inf",
    "true",
    "false",
    "[]",
    "[200, \"3xx\", 600]",
    "[\"127.0.0.1:53\"]",
    "[1, \"a\"]",
    "{}",
    "{ address = \"127.0.0.1:9001\" }",
    "[{ address = \"127.0.0.1:9001\", weight = 1.5 }]",
    "[{ address = \"127.0.0.1:9001\", id = \"a\" }, { address = \"127.0.0.1:9001\", id = \"a\" }]",
    "[{ address = \"\" , weight = 0 }]",
    "{ path = \"/tmp/x\", format = \"combined\" }",
    "{ cookie = \"s\", ttl = \"1h\" }",
    "[{ cert = \"c.pem\", key = \"k.pem\" }]",
    "1979-05-27T07:32:00Z",
    "'literal'",
    "\"\"\"multi\nline\"\"\"",
];

/// Lines that break the syntax.
const JUNK: &[&str] = &[
    "=",
    "key =",
    "= 1",
    "[[",
    "\"unterminated",
    "# comment",
    "x = 1 = 2",
    "\t",
    "é",
];

/// One line of a generated file.
fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => proptest::sample::select(TABLES).prop_map(str::to_owned),
        8 => (proptest::sample::select(KEYS), proptest::sample::select(VALUES))
            .prop_map(|(k, v)| format!("{k} = {v}")),
        1 => proptest::sample::select(JUNK).prop_map(str::to_owned),
        1 => "\\PC{0,12}",
    ]
}

/// A file: the smallest valid one with lines inserted, replaced or appended, or free text.
fn file() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (proptest::collection::vec((0usize..12, line()), 0..10), any::<bool>()).prop_map(
            |(edits, replace)| {
                let mut lines: Vec<String> = MINIMAL.lines().map(str::to_owned).collect();
                for (at, text) in edits {
                    let at = at.min(lines.len());
                    if replace && at < lines.len() {
                        lines[at] = text;
                    } else {
                        lines.insert(at, text);
                    }
                }
                lines.join("\n")
            }
        ),
        2 => proptest::collection::vec(line(), 0..16).prop_map(|l| l.join("\n")),
        1 => "\\PC{0,200}",
        1 => ".{0,200}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("RONDO_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000)
    ))]

    /// Any text gives a configuration, or problems that each name a line of the text (with
    /// that line's own text), a column on it, and a one-line message. Never a panic.
    #[test]
    fn any_text_is_a_config_or_problems_at_real_places(text in file()) {
        let lines: Vec<&str> = text.lines().collect();
        if let Err(e) = parse_with_env(&text, "f.toml", &no_env) {
            let found = e.diagnostics();
            prop_assert!(!found.is_empty(), "an error without a place: {e}");
            for d in found {
                prop_assert!(d.line >= 1 && d.line <= lines.len().max(1) + 1, "{d:?}\n{text}");
                prop_assert!(d.column >= 1 && d.width >= 1, "{d:?}");
                prop_assert!(!d.message.is_empty() && !d.headline().contains('\n'), "{d:?}");
                // A problem of the whole file (nothing configured) shows no line.
                if let (false, Some(source)) = (d.source_line.is_empty(), lines.get(d.line - 1)) {
                    let source = source.trim_end_matches('\r');
                    prop_assert_eq!(d.source_line.as_str(), source);
                    prop_assert!(d.column <= source.chars().count() + 1, "{d:?}");
                }
            }
        }
    }
}

/// Found by the fuzz target: a problem after a trailing CR (which the shown line omits) was
/// marked a column past the end of the line.
#[test]
fn a_problem_after_a_trailing_carriage_return_is_marked_on_the_line() {
    let found = errors("=\r");
    assert!(
        found
            .iter()
            .all(|(line, column, _)| *line == 1 && *column <= 2),
        "{found:?}"
    );
}

/// Found by the fuzz target: a multi-line string quoted in a message broke the one-line
/// headline that log lines carry.
#[test]
fn a_quoted_multi_line_value_keeps_the_message_on_one_line() {
    let found = errors("max_memory = \"\"\"multi\nline\"\"\"");
    assert!(!found.is_empty());
    assert!(found.iter().all(|(_, _, m)| !m.contains('\n')), "{found:?}");
}
