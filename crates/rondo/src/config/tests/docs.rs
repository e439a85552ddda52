//! `docs/configuration.md` and the README against the code: every key documented, every
//! default quoted right, every TOML example valid.

use std::time::Duration;

use balance::{HealthConfig, StartPosition};

use super::*;

/// The tables of `docs/configuration.md`: section (the code span of its heading, or "top")
/// → (key, default cell) rows.
fn documented_keys() -> Vec<(String, String, String)> {
    let doc = include_str!("../../../../../docs/configuration.md");
    let mut section = None;
    let mut rows = Vec::new();
    for line in doc.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            section = Some(match heading.split('`').nth(1) {
                Some(code) => code.to_owned(),
                None => "top".to_owned(),
            });
        } else if line.starts_with("## ") {
            section = None;
        } else if let (Some(section), Some(row)) = (&section, line.strip_prefix("| `")) {
            let cells: Vec<&str> = row.split(" | ").collect();
            let key = cells[0].trim_end_matches('`').to_owned();
            rows.push((section.clone(), key, cells[2].trim().to_owned()));
        }
    }
    rows
}

/// The keys serde accepts in each section, read from its "unknown key" error.
fn accepted_keys(section: &str) -> Vec<String> {
    let unknown = "zzz_unknown = 1";
    let route =
        format!("[[listeners.routes]]\npath_prefix = \"/\"\nupstream = \"app\"\n{unknown}\n");
    let text = match section {
        "top" => format!("{unknown}\n{MINIMAL}"),
        "[access_log]" => format!("[access_log]\npath = \"a.log\"\n{unknown}\n{MINIMAL}"),
        "[admin]" => format!("[admin]\n{unknown}\n{MINIMAL}"),
        "request_headers" => MINIMAL.replacen(
            "upstream = \"app\"\n",
            &format!("upstream = \"app\"\nrequest_headers = {{ {unknown} }}\n"),
            1,
        ),
        "[resolver]" => format!("[resolver]\n{unknown}\n{MINIMAL}"),
        "[discovery.etcd]" => format!("[discovery.etcd]\n{unknown}\n{MINIMAL}"),
        "[[listeners]]" => MINIMAL.replacen(
            "upstream = \"app\"\n",
            &format!("upstream = \"app\"\n{unknown}\n"),
            1,
        ),
        "[[listeners.routes]]" => MINIMAL.replacen(
            "upstream = \"app\"\n",
            &format!("upstream = \"app\"\n{route}"),
            1,
        ),
        "[listeners.tls]" => MINIMAL.replacen(
            "upstream = \"app\"\n",
            &format!("upstream = \"app\"\n[listeners.tls]\n{unknown}\n"),
            1,
        ),
        "certificates" => MINIMAL.replacen(
            "upstream = \"app\"\n",
            &format!(
                "upstream = \"app\"\ntls = {{ certificates = [{{ cert = \"c\", key = \"k\", \
                 {unknown} }}] }}\n"
            ),
            1,
        ),
        "[upstreams.tls]" => upstream_with(&format!("[upstreams.tls]\n{unknown}")),
        "[[upstreams]]" => upstream_with(unknown),
        "backends" => MINIMAL.replace("\" }]", &format!("\", {unknown} }}]")),
        "sticky" => upstream_with(&format!("sticky = {{ {unknown} }}")),
        "[upstreams.health_check]" => {
            upstream_with(&format!("[upstreams.health_check]\n{unknown}"))
        }
        "[upstreams.circuit_breaker]" => {
            upstream_with(&format!("[upstreams.circuit_breaker]\n{unknown}"))
        }
        other => panic!("docs/configuration.md has an unknown section {other:?}"),
    };
    let all = errors(&text);
    let message = &all[0].2;
    assert!(
        message.starts_with("unknown key `zzz_unknown`"),
        "{section}: {message}"
    );
    let expected = &message[message.find("expected").unwrap()..];
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_docs_list_every_key_of_every_table() {
    let documented = documented_keys();
    let mut sections: Vec<&str> = documented.iter().map(|r| r.0.as_str()).collect();
    sections.dedup();
    assert_eq!(
        sections,
        [
            "top",
            "[access_log]",
            "[admin]",
            "[resolver]",
            "[discovery.etcd]",
            "[[listeners]]",
            "[[listeners.routes]]",
            "request_headers",
            "[listeners.tls]",
            "certificates",
            "[[upstreams]]",
            "[upstreams.tls]",
            "backends",
            "sticky",
            "[upstreams.health_check]",
            "[upstreams.circuit_breaker]"
        ]
    );
    for section in sections {
        let mut in_docs: Vec<&str> = documented
            .iter()
            .filter(|r| r.0 == section)
            .map(|r| r.1.as_str())
            .collect();
        // Sub-tables have sections of their own.
        let tables = [
            "admin",
            "resolver",
            "discovery",
            "listeners",
            "upstreams",
            "routes",
            "health_check",
            "circuit_breaker",
            "tls",
        ];
        let mut in_code = accepted_keys(section);
        // `discovery` is a table at the top level and a key of an upstream.
        in_code.retain(|k| {
            !tables.contains(&k.as_str()) || (k == "discovery" && section == "[[upstreams]]")
        });
        in_docs.sort_unstable();
        in_code.sort_unstable();
        assert_eq!(in_docs, in_code, "keys of {section}");
    }
}

#[test]
fn the_docs_quote_the_defaults_of_the_code() {
    use super::units::{format_duration, format_size};
    // Durations are compared by value: the docs write "60s" where humantime writes "1m".
    let d = |v: Duration| format!("duration {}", format_duration(v));
    let size = |v: u64| format!("\"{}\"", format_size(v));
    let health = HealthConfig::default();
    let breaker = defaults::breaker();
    let status = &defaults::HEALTH_EXPECTED_STATUS;
    let expected: Vec<(&str, &str, String)> = vec![
        ("top", "shutdown_grace", d(defaults::SHUTDOWN_GRACE)),
        ("top", "access_log", defaults::ACCESS_LOG.to_string()),
        (
            "[access_log]",
            "format",
            format!("\"{}\"", defaults::ACCESS_LOG_FORMAT),
        ),
        ("[admin]", "enabled", defaults::ADMIN_ENABLED.to_string()),
        (
            "[discovery.etcd]",
            "prefix",
            format!("\"{}\"", defaults::ETCD_PREFIX),
        ),
        (
            "[admin]",
            "listen",
            format!("\"{}\"", defaults::ADMIN_LISTEN),
        ),
        (
            "[[listeners]]",
            "header_timeout",
            d(defaults::HEADER_TIMEOUT),
        ),
        ("[[listeners]]", "idle_timeout", d(defaults::IDLE_TIMEOUT)),
        (
            "[[listeners]]",
            "max_header_bytes",
            size(defaults::MAX_HEADER_BYTES),
        ),
        (
            "[[upstreams]]",
            "algorithm",
            format!("\"{}\"", defaults::algorithm()),
        ),
        (
            "[[upstreams]]",
            "panic_threshold",
            defaults::PANIC_THRESHOLD.to_string(),
        ),
        (
            "[[upstreams]]",
            "start",
            format!(
                "\"{}\"",
                match defaults::start() {
                    StartPosition::First => "first",
                    StartPosition::Random => "random",
                }
            ),
        ),
        ("[[upstreams]]", "tries", defaults::TRIES.to_string()),
        ("[[upstreams]]", "failover", defaults::FAILOVER.to_string()),
        (
            "[[upstreams]]",
            "retry_on_status",
            format!("{:?}", defaults::RETRY_ON_STATUS),
        ),
        (
            "[[upstreams]]",
            "retry_budget_percent",
            defaults::RETRY_BUDGET_PERCENT.to_string(),
        ),
        (
            "[[upstreams]]",
            "retry_budget_min",
            defaults::RETRY_BUDGET_MIN.to_string(),
        ),
        (
            "[[upstreams]]",
            "retry_body_limit",
            size(defaults::RETRY_BODY_LIMIT),
        ),
        (
            "[[upstreams]]",
            "connect_timeout",
            d(defaults::CONNECT_TIMEOUT),
        ),
        (
            "[[upstreams]]",
            "response_timeout",
            d(defaults::RESPONSE_TIMEOUT),
        ),
        (
            "[[upstreams]]",
            "keepalive",
            defaults::KEEPALIVE.to_string(),
        ),
        (
            "[[upstreams]]",
            "keepalive_timeout",
            d(defaults::KEEPALIVE_TIMEOUT),
        ),
        (
            "[[upstreams]]",
            "max_fails",
            defaults::MAX_FAILS.to_string(),
        ),
        ("[[upstreams]]", "fail_timeout", d(defaults::FAIL_TIMEOUT)),
        (
            "[[upstreams]]",
            "fail_on_5xx",
            defaults::FAIL_ON_5XX.to_string(),
        ),
        (
            "[[upstreams]]",
            "queue_size",
            defaults::QUEUE_SIZE.to_string(),
        ),
        ("[[upstreams]]", "queue_timeout", d(defaults::QUEUE_TIMEOUT)),
        (
            "[[upstreams]]",
            "priority_header",
            format!("\"{}\"", defaults::PRIORITY_HEADER),
        ),
        ("[[upstreams]]", "hash_key", "\"client-ip\"".to_owned()),
        (
            "sticky",
            "cookie",
            format!("\"{}\"", defaults::STICKY_COOKIE),
        ),
        ("sticky", "secure", defaults::STICKY_SECURE.to_string()),
        (
            "sticky",
            "http_only",
            defaults::STICKY_HTTP_ONLY.to_string(),
        ),
        ("backends", "weight", defaults::WEIGHT.to_string()),
        ("backends", "backup", defaults::BACKUP.to_string()),
        (
            "[upstreams.health_check]",
            "enabled",
            defaults::HEALTH_ENABLED.to_string(),
        ),
        (
            "[upstreams.health_check]",
            "kind",
            format!("\"{}\"", CheckKind::Http.as_str()),
        ),
        (
            "[upstreams.health_check]",
            "path",
            format!("\"{}\"", defaults::HEALTH_PATH),
        ),
        (
            "[upstreams.health_check]",
            "expected_status",
            format!("[\"{}-{}\"]", status.start(), status.end()),
        ),
        (
            "[upstreams.health_check]",
            "interval",
            d(defaults::HEALTH_INTERVAL),
        ),
        (
            "[upstreams.health_check]",
            "timeout",
            d(defaults::HEALTH_TIMEOUT),
        ),
        ("[upstreams.health_check]", "fall", health.fall.to_string()),
        ("[upstreams.health_check]", "rise", health.rise.to_string()),
        (
            "[upstreams.health_check]",
            "jitter",
            defaults::HEALTH_JITTER.to_string(),
        ),
        (
            "[upstreams.circuit_breaker]",
            "enabled",
            defaults::BREAKER_ENABLED.to_string(),
        ),
        (
            "[upstreams.circuit_breaker]",
            "failure_threshold",
            breaker.failure_threshold.to_string(),
        ),
        (
            "[upstreams.circuit_breaker]",
            "recovery_timeout",
            d(breaker.recovery_timeout),
        ),
        (
            "[upstreams.circuit_breaker]",
            "half_open_requests",
            breaker.half_open_probes.to_string(),
        ),
        (
            "[upstreams.circuit_breaker]",
            "count_all_5xx",
            breaker.count_application_errors.to_string(),
        ),
    ];
    let documented = documented_keys();
    for (section, key, value) in expected {
        let row = documented
            .iter()
            .find(|r| r.0 == section && r.1 == key)
            .unwrap_or_else(|| panic!("{section} {key} is not documented"));
        let cell = &row.2;
        if let Some(want) = value.strip_prefix("duration ") {
            let written = cell.trim_matches('`').trim_matches('"');
            assert_eq!(
                units::parse_duration(written),
                units::parse_duration(want),
                "default of {section} {key}: {cell}"
            );
        } else {
            assert_eq!(*cell, format!("`{value}`"), "default of {section} {key}");
        }
    }
}

#[test]
fn the_toml_examples_in_the_readme_and_the_docs_are_valid() {
    for (file, text) in [
        ("README.md", include_str!("../../../../../README.md")),
        (
            "docs/configuration.md",
            include_str!("../../../../../docs/configuration.md"),
        ),
    ] {
        let blocks: Vec<&str> = text
            .split("```toml\n")
            .skip(1)
            .filter_map(|b| b.split("\n```").next())
            .collect();
        assert!(!blocks.is_empty(), "{file} has no TOML example");
        for block in blocks {
            if let Err(e) = parse_with_env(block, file, &no_env) {
                panic!("an example in {file} is invalid:\n{e}");
            }
        }
    }
}
