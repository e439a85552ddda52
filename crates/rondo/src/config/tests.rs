//! Parsing and validation, file in, `Config` or diagnostics out.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use balance::{Algorithm, BreakerConfig, EjectionConfig, HealthConfig, StartPosition, Weight};

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
    errors_with(text, &no_env)
}

fn errors_with(text: &str, env: Env<'_>) -> Vec<(usize, usize, String)> {
    match parse_with_env(text, "t.toml", env) {
        Ok(c) => panic!("expected errors, got {c:#?}"),
        Err(e) => e
            .diagnostics()
            .iter()
            .map(|d| (d.line, d.column, d.message.clone()))
            .collect(),
    }
}

/// The one diagnostic of `text`, which must contain `needle`; returns its (line, column).
fn one_error(text: &str, needle: &str) -> (usize, usize) {
    let all = errors(text);
    assert_eq!(all.len(), 1, "expected one error, got {all:#?}");
    let (line, column, message) = &all[0];
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    (*line, *column)
}

/// `MINIMAL` with `extra` appended to the upstream.
fn upstream_with(extra: &str) -> String {
    format!("{MINIMAL}{extra}\n")
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn absent_keys_take_the_seeds_defaults() {
    let c = ok(MINIMAL);
    assert_eq!(c.workers, defaults::workers());
    assert_eq!(c.shutdown_grace, secs(30));
    assert_eq!(c.access_log, crate::access_log::AccessLogConfig::ProcessLog);
    assert_eq!(
        c.admin.listen,
        "127.0.0.1:9901".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.admin.token, None);

    let l = &c.listeners[0];
    assert_eq!((l.name.as_str(), l.upstream.as_str()), ("web", "app"));
    assert_eq!(l.header_timeout, secs(10));
    assert_eq!(l.idle_timeout, secs(60));
    assert_eq!(l.max_header_bytes, 16 * 1024);
    assert_eq!(l.max_body_size, None);
    assert!(l.routes.is_empty());

    let u = &c.upstreams[0];
    // The seed: health check every 30 s, timeout 5 s, /health, 3 failures down, 2 successes
    // up, failover on, breaker on with threshold 5 and recovery 60 s.
    assert_eq!(u.health_check.interval, secs(30));
    assert_eq!(u.health_check.timeout, secs(5));
    assert_eq!(u.health_check.path, "/health");
    assert!(u.health_check.enabled);
    assert_eq!(u.health_check.kind, CheckKind::Http);
    assert_eq!(u.health_check.expected_status, vec![200..=399]);
    assert_eq!(u.health_check.jitter, 0.1);
    assert_eq!(u.health_check.host, None);
    assert_eq!(u.pool.health, HealthConfig::default());
    assert_eq!(u.pool.health.fall.get(), 3);
    assert_eq!(u.pool.health.rise.get(), 2);
    assert_eq!(u.tries.get(), 3);
    assert_eq!(u.pool.breaker, Some(BreakerConfig::default()));
    let breaker = u.pool.breaker.unwrap();
    assert_eq!(breaker.failure_threshold.get(), 5);
    assert_eq!(breaker.recovery_timeout, secs(60));
    assert_eq!(breaker.half_open_probes.get(), 1);

    assert_eq!(u.pool.algorithm, Algorithm::SmoothWeighted);
    assert_eq!(u.pool.slow_start, None);
    assert_eq!(u.pool.panic_threshold, 0);
    assert_eq!(u.pool.start, StartPosition::First);
    assert_eq!(u.pool.seed, 0);
    assert_eq!(
        u.pool.ejection,
        Some(EjectionConfig {
            max_fails: NonZeroU32::MIN,
            fail_timeout: secs(10),
            count_server_errors: false,
        })
    );
    assert_eq!(u.retry_on_status, vec![502, 503, 504]);
    assert_eq!(
        u.retry_budget,
        RetryBudget {
            percent: 20,
            min: 3
        }
    );
    assert_eq!(u.retry_body_limit, 64 * 1024);
    assert_eq!(u.connect_timeout, secs(5));
    assert_eq!(u.response_timeout, secs(60));
    assert_eq!(u.keepalive, 32);
    assert_eq!(u.keepalive_timeout, secs(60));
    assert_eq!(
        u.queue,
        QueueConfig {
            size: 0,
            timeout: secs(5),
            priority_header: "x-priority".into()
        }
    );

    let b = &u.backends[0];
    assert_eq!(b.id, "127.0.0.1:9001");
    assert_eq!(b.weight, Weight::ONE);
    assert!(!b.backup);
    assert_eq!(b.max_connections, None);
}

#[test]
fn every_key_is_read_into_the_typed_config() {
    let c = ok(r#"
workers = 3
shutdown_grace = "1m30s"
access_log = false

[admin]
listen = "[::1]:9000"
token = "s3cret"

[[listeners]]
name = "edge"
bind = "0.0.0.0:80"
upstream = "app"
header_timeout = "250ms"
idle_timeout = "2m"
max_header_bytes = "32KiB"
max_body_size = "1GiB"

[[listeners.routes]]
host = "API.Example.COM"
path_prefix = "/v1/"
upstream = "api"

[[upstreams]]
name = "app"
backends = [{ address = "10.0.0.1:80" }]

[[upstreams]]
name = "api"
algorithm = "p2c"
backends = [
  { address = "[::1]:9001", weight = 2.5, backup = true, max_connections = 10, id = "a" },
  { address = "10.0.0.2:80" },
]
slow_start = "45s"
panic_threshold = 50
start = "random"
tries = 5
retry_on_status = [500, 503]
retry_budget_percent = 0
retry_budget_min = 10
retry_body_limit = 0
connect_timeout = "1s"
response_timeout = "2s"
keepalive = 0
keepalive_timeout = "3s"
max_fails = 0
fail_timeout = "4s"
fail_on_5xx = true
queue_size = 7
queue_timeout = "6s"
priority_header = "X-Prio"

[upstreams.health_check]
enabled = false
kind = "tcp"
path = "/ping"
host = "app.internal"
expected_status = [204, "200-299"]
interval = "7s"
timeout = "1500ms"
fall = 4
rise = 5
jitter = 0

[upstreams.circuit_breaker]
enabled = true
failure_threshold = 8
recovery_timeout = "9s"
half_open_requests = 3
"#);
    assert_eq!(c.workers.get(), 3);
    assert_eq!(c.shutdown_grace, secs(90));
    assert_eq!(c.access_log, crate::access_log::AccessLogConfig::Off);
    assert_eq!(c.admin.listen, "[::1]:9000".parse::<SocketAddr>().unwrap());
    assert_eq!(c.admin.token.as_deref(), Some("s3cret"));
    let l = c.listener("edge").unwrap();
    assert_eq!(l.bind.port(), 80);
    assert_eq!(l.header_timeout, Duration::from_millis(250));
    assert_eq!(l.idle_timeout, secs(120));
    assert_eq!(l.max_header_bytes, 32 * 1024);
    assert_eq!(l.max_body_size, Some(1 << 30));
    assert_eq!(
        l.routes,
        vec![RouteConfig {
            host: Some("api.example.com".into()),
            path_prefix: Some("/v1/".into()),
            upstream: "api".into(),
            headers: Default::default(),
        }]
    );

    let u = c.upstream("api").unwrap();
    assert_eq!(u.pool.algorithm, Algorithm::P2c);
    let b = &u.backends[0];
    assert_eq!(b.id, "a");
    assert_eq!(b.address, "[::1]:9001".parse::<SocketAddr>().unwrap());
    assert_eq!(b.weight.thousandths(), 2500);
    assert!(b.backup);
    assert_eq!(b.max_connections.map(NonZeroU32::get), Some(10));
    assert_eq!(u.backends[1].id, "10.0.0.2:80");
    assert_eq!(u.pool.slow_start.map(|s| s.window), Some(secs(45)));
    assert_eq!(u.pool.panic_threshold, 50);
    assert_eq!(u.pool.start, StartPosition::Random);
    assert_eq!(u.tries.get(), 5);
    assert_eq!(u.retry_on_status, vec![500, 503]);
    assert_eq!(
        u.retry_budget,
        RetryBudget {
            percent: 0,
            min: 10
        }
    );
    assert_eq!(u.retry_body_limit, 0);
    assert_eq!(u.connect_timeout, secs(1));
    assert_eq!(u.response_timeout, secs(2));
    assert_eq!(u.keepalive, 0);
    assert_eq!(u.keepalive_timeout, secs(3));
    assert_eq!(u.pool.ejection, None, "max_fails = 0 turns ejection off");
    assert_eq!(u.queue.size, 7);
    assert_eq!(u.queue.timeout, secs(6));
    assert_eq!(u.queue.priority_header, "x-prio");
    let h = &u.health_check;
    assert!(!h.enabled);
    assert_eq!(h.kind, CheckKind::Tcp);
    assert_eq!(h.path, "/ping");
    assert_eq!(h.host.as_deref(), Some("app.internal"));
    assert_eq!(h.expected_status, vec![204..=204, 200..=299]);
    assert!(h.accepts(204) && h.accepts(250) && !h.accepts(300));
    assert_eq!(
        (h.interval, h.timeout),
        (secs(7), Duration::from_millis(1500))
    );
    assert_eq!(h.jitter, 0.0);
    assert_eq!((u.pool.health.fall.get(), u.pool.health.rise.get()), (4, 5));
    let b = u.pool.breaker.unwrap();
    assert_eq!(b.failure_threshold.get(), 8);
    assert_eq!(b.recovery_timeout, secs(9));
    assert_eq!(b.half_open_probes.get(), 3);
}

#[test]
fn fractional_weights_are_exact() {
    let c = ok(r#"
[[listeners]]
name = "web"
bind = "127.0.0.1:8080"
upstream = "app"

[[upstreams]]
name = "app"
backends = [
  { address = "127.0.0.1:9001", weight = 1 },
  { address = "127.0.0.1:9002", weight = 2 },
  { address = "127.0.0.1:9003", weight = 3.0 },
  { address = "127.0.0.1:9004", weight = 1.5 },
  { address = "127.0.0.1:9005", weight = 0.1 },
  { address = "127.0.0.1:9006", weight = 2.675 },
]
"#);
    let t: Vec<u32> = c.upstreams[0]
        .backends
        .iter()
        .map(|b| b.weight.thousandths())
        .collect();
    assert_eq!(t, [1000, 2000, 3000, 1500, 100, 2675]);
}

#[test]
fn failover_off_means_one_try_and_contradicting_tries_is_an_error() {
    let c = ok(&upstream_with("failover = false"));
    assert_eq!(c.upstreams[0].tries.get(), 1);
    let c = ok(&upstream_with("failover = false\ntries = 1"));
    assert_eq!(c.upstreams[0].tries.get(), 1);
    let at = one_error(
        &upstream_with("failover = false\ntries = 3"),
        "`tries = 3` contradicts `failover = false`",
    );
    assert_eq!(at, (11, 9));
}

#[test]
fn disabled_breaker_and_zero_slow_start_are_none() {
    let c = ok(&upstream_with(
        "slow_start = \"0s\"\n[upstreams.circuit_breaker]\nenabled = false",
    ));
    assert_eq!(c.upstreams[0].pool.breaker, None);
    assert_eq!(c.upstreams[0].pool.slow_start, None);
}

#[test]
fn admin_token_comes_from_the_environment_when_named() {
    let text = format!("[admin]\nlisten = \"0.0.0.0:9901\"\ntoken_env = \"ADMIN_T\"\n{MINIMAL}");
    let env = |name: &str| (name == "ADMIN_T").then(|| "from-env".to_owned());
    let c = parse_with_env(&text, "t.toml", &env).unwrap();
    assert_eq!(c.admin.token.as_deref(), Some("from-env"));

    let all = errors(&text);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!((all[0].0, all[0].1), (3, 13));
    assert!(
        all[0]
            .2
            .contains("`ADMIN_T` named by `token_env` is not set")
    );

    let empty = |_: &str| Some(String::new());
    let all = errors_with(&text, &empty);
    assert!(all[0].2.contains("is empty"), "{all:#?}");
}

#[test]
fn non_loopback_admin_needs_a_token() {
    let text = format!("[admin]\nlisten = \"0.0.0.0:9901\"\n{MINIMAL}");
    let at = one_error(
        &text,
        "admin listens on 0.0.0.0:9901, which is not loopback: set `token` or `token_env`",
    );
    assert_eq!(at, (2, 10));
    ok(&format!("[admin]\nlisten = \"[::1]:9901\"\n{MINIMAL}"));
    ok(&format!(
        "[admin]\nlisten = \"0.0.0.0:9901\"\ntoken = \"t\"\n{MINIMAL}"
    ));
    let at = one_error(
        &format!("[admin]\ntoken = \"t\"\ntoken_env = \"X\"\n{MINIMAL}"),
        "either `token` or `token_env`, not both",
    );
    assert_eq!(at, (3, 13));
}

#[test]
fn unknown_keys_are_errors_with_a_suggestion_at_the_key() {
    let text = upstream_with("[upstreams.health_check]\nintreval = \"5s\"");
    let (line, column) = one_error(&text, "unknown key `intreval`, did you mean `interval`?");
    assert_eq!((line, column), (11, 1));
    let all = errors(&text);
    assert!(all[0].2.contains("expected one of `enabled`"), "{all:#?}");

    let at = one_error(
        &format!("wrokers = 2\n{MINIMAL}"),
        "did you mean `workers`?",
    );
    assert_eq!(at, (1, 1));
    let text = MINIMAL.replace(
        "{ address = \"127.0.0.1:9001\" }",
        "{ address = \"127.0.0.1:9001\", wieght = 2 }",
    );
    let at = one_error(&text, "unknown key `wieght`, did you mean `weight`?");
    assert_eq!(at, (9, 43));
}

#[test]
fn syntax_errors_point_at_the_spot() {
    let at = one_error("workers = [\n", "unclosed array");
    assert_eq!(at, (1, 12));
    let at = one_error("workers = 2\nworkers = 3\n", "duplicate key `workers`");
    assert_eq!(at, (2, 1));
    let at = one_error("[upstreams]\nname = \"x\"\n", "write `[[name]]`");
    assert_eq!(at, (1, 1));
}

#[test]
fn bad_values_point_at_the_value() {
    let cases: &[(&str, &str, (usize, usize))] = &[
        (
            "connect_timeout = \"5 parsecs\"",
            "invalid duration \"5 parsecs\"",
            (10, 19),
        ),
        (
            "connect_timeout = 5",
            "expected a duration string",
            (10, 19),
        ),
        (
            "connect_timeout = \"0s\"",
            "`connect_timeout` must be longer than 0s",
            (10, 19),
        ),
        ("retry_body_limit = \"16k\"", "unknown unit `k`", (10, 20)),
        (
            "algorithm = \"smooth\"",
            "did you mean `smooth-weighted`?",
            (10, 13),
        ),
        (
            "algorithm = \"fastest\"",
            "expected one of: round-robin, weighted",
            (10, 13),
        ),
        (
            "panic_threshold = 101",
            "`panic_threshold` must be between 0 and 100, got 101",
            (10, 19),
        ),
        ("tries = 0", "`tries` must be at least 1, got 0", (10, 9)),
        (
            "retry_on_status = [502, 99]",
            "99 is not an HTTP status code",
            (10, 25),
        ),
        ("start = \"middle\"", "unknown value `middle`", (10, 9)),
        (
            "keepalive = -1",
            "`keepalive` must be at least 0, got -1",
            (10, 13),
        ),
        (
            "priority_header = \"x prio\"",
            "is not a header name",
            (10, 19),
        ),
        ("workers = 2", "unknown key `workers`", (10, 1)),
    ];
    for (extra, needle, at) in cases {
        assert_eq!(one_error(&upstream_with(extra), needle), *at, "{extra}");
    }
}

#[test]
fn bad_weights_reuse_the_library_messages() {
    let text = |w: &str| {
        MINIMAL.replace(
            "{ address = \"127.0.0.1:9001\" }",
            &format!("{{ address = \"127.0.0.1:9001\", weight = {w} }}"),
        )
    };
    let at = one_error(&text("0"), "weight 0 is not a positive number");
    assert_eq!(at, (9, 52));
    let at = one_error(
        &text("1.2345"),
        "weight 1.2345 has more than three decimal places",
    );
    assert_eq!(at, (9, 52));
    one_error(&text("-2"), "is not a positive number");
    one_error(&text("1e9"), "is too large");
    one_error(&text("\"2\""), "expected a number");
}

#[test]
fn backends_need_valid_addresses_and_unique_ids() {
    let with = |backends: &str| MINIMAL.replace("[{ address = \"127.0.0.1:9001\" }]", backends);
    let at = one_error(
        &with("[\n  { address = \"127.0.0.1:9001\" },\n  { address = \"127.0.0.1:9001\" },\n]"),
        "duplicate backend id `127.0.0.1:9001` in upstream `app`: already defined on line 10; give one of them a distinct `id`",
    );
    assert_eq!(at, (11, 15));
    ok(&with(
        "[{ address = \"127.0.0.1:9001\" }, { address = \"127.0.0.1:9001\", id = \"again\" }]",
    ));
    let at = one_error(
        &with(
            "[{ address = \"127.0.0.1:9001\", id = \"x\" }, { address = \"127.0.0.1:9002\", id = \"x\" }]",
        ),
        "duplicate backend id `x`",
    );
    assert_eq!(at, (9, 90));
    one_error(
        &with("[{ address = \"localhost:9001\" }]"),
        "host names are not resolved",
    );
    one_error(
        &with("[{ address = \"127.0.0.1\" }]"),
        "the port is missing",
    );
    one_error(&with("[{ address = \"::1:80\" }]"), "the port is missing");
    one_error(&with("[{ weight = 2 }]"), "missing key `address`");
    one_error(&with("[]"), "upstream `app` has no backends");
    one_error(
        &with("[{ address = \"127.0.0.1:1\", max_connections = 0 }]"),
        "`max_connections` must be at least 1",
    );
    let no_backends = MINIMAL.replace("backends = [{ address = \"127.0.0.1:9001\" }]", "");
    let at = one_error(&no_backends, "upstream `app` has no `backends`");
    assert_eq!(at, (8, 8));
}

#[test]
fn references_to_unknown_upstreams_are_errors_with_a_suggestion() {
    let text = MINIMAL.replace("upstream = \"app\"", "upstream = \"ap\"");
    let at = one_error(
        &text,
        "unknown upstream `ap`, did you mean `app`? defined upstreams: `app`",
    );
    assert_eq!(at, (5, 12));

    let text = MINIMAL.replace(
        "upstream = \"app\"\n",
        "upstream = \"app\"\n\n[[listeners.routes]]\npath_prefix = \"/x\"\nupstream = \"nope\"\n",
    );
    let at = one_error(&text, "unknown upstream `nope`");
    assert_eq!(at, (9, 12));
}

#[test]
fn routes_need_a_host_or_a_path_prefix_that_makes_sense() {
    let route = |body: &str| {
        MINIMAL.replace(
            "upstream = \"app\"\n",
            &format!("upstream = \"app\"\n\n[[listeners.routes]]\n{body}\nupstream = \"app\"\n"),
        )
    };
    let at = one_error(&route(""), "a route needs `host` or `path_prefix`");
    assert_eq!(at, (7, 1));
    one_error(&route("path_prefix = \"api\""), "must start with `/`");
    one_error(&route("host = \"example.com:8080\""), "leave the port out");
    one_error(
        &route("host = \"*.example.com\""),
        "wildcards are not supported",
    );
    let c = ok(&route("host = \"Example.COM\""));
    assert_eq!(
        c.listeners[0].routes[0].host.as_deref(),
        Some("example.com")
    );
}

#[test]
fn names_are_unique_and_usable_in_urls() {
    let text = format!(
        "{MINIMAL}\n[[upstreams]]\nname = \"app\"\nbackends = [{{ address = \"127.0.0.1:9002\" }}]\n"
    );
    let at = one_error(
        &text,
        "duplicate upstream name `app`: already defined on line 8",
    );
    assert_eq!(at, (12, 8));
    let text = format!(
        "{MINIMAL}\n[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:8081\"\nupstream = \"app\"\n"
    );
    one_error(&text, "duplicate listener name `web`");
    let text = MINIMAL
        .replace("name = \"app\"", "name = \"my app\"")
        .replace("upstream = \"app\"", "upstream = \"my app\"");
    one_error(&text, "invalid upstream name \"my app\"");
}

#[test]
fn two_listeners_cannot_bind_the_same_address() {
    let text = format!(
        "{MINIMAL}\n[[listeners]]\nname = \"other\"\nbind = \"127.0.0.1:8080\"\nupstream = \"app\"\n"
    );
    one_error(
        &text,
        "`bind` 127.0.0.1:8080 is already used by listener `web` on line 4",
    );
    let text = MINIMAL.replace("127.0.0.1:8080", "127.0.0.1:9901");
    one_error(&text, "also the admin listener's address");
    // Port 0: the system picks a free port for each.
    let text = format!(
        "{}\n[[listeners]]\nname = \"other\"\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n",
        MINIMAL.replace("127.0.0.1:8080", "127.0.0.1:0")
    );
    ok(&text);
}

#[test]
fn health_check_timeout_must_be_shorter_than_the_interval() {
    let at = one_error(
        &upstream_with("[upstreams.health_check]\ninterval = \"10s\"\ntimeout = \"10s\""),
        "health check `timeout` (10s) must be shorter than `interval` (10s)",
    );
    assert_eq!(at, (12, 11));
    let at = one_error(
        &upstream_with("[upstreams.health_check]\ninterval = \"3s\""),
        "`interval` (3s) must be longer than `timeout` (5s, the default)",
    );
    assert_eq!(at, (11, 12));
    one_error(
        &upstream_with("[upstreams.health_check]\njitter = 1.0"),
        "`jitter` must be at least 0 and below 1",
    );
    one_error(
        &upstream_with("[upstreams.health_check]\npath = \"health\""),
        "must start with `/`",
    );
    one_error(
        &upstream_with("[upstreams.health_check]\nexpected_status = [\"399-200\"]"),
        "\"399-200\" is not a status code or range",
    );
    one_error(
        &upstream_with("[upstreams.health_check]\nexpected_status = []"),
        "`expected_status` is empty",
    );
    one_error(
        &upstream_with("[upstreams.health_check]\nkind = \"icmp\""),
        "expected `http` or `tcp`",
    );
    one_error(
        &upstream_with("[upstreams.health_check]\nfall = 0"),
        "`fall` must be at least 1, got 0",
    );
}

#[test]
fn every_problem_is_reported_at_once_in_file_order() {
    let text = r#"workers = 0

[[listeners]]
name = "web"
bind = "127.0.0.1:80800"
upstream = "nope"

[[upstreams]]
name = "app"
backends = [{ address = "127.0.0.1:9001", weight = 0 }]
"#;
    let all = errors(text);
    let at: Vec<(usize, usize)> = all.iter().map(|e| (e.0, e.1)).collect();
    assert_eq!(at, [(1, 11), (5, 8), (6, 12), (10, 52)], "{all:#?}");
    let err = parse_with_env(text, "t.toml", &no_env).unwrap_err();
    assert!(err.to_string().ends_with("4 errors"), "{err}");
}

#[test]
fn no_listeners_or_upstreams_is_an_error() {
    let all = errors("");
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(all.iter().any(|e| e.2.contains("no listener is defined")));
    assert!(all.iter().any(|e| e.2.contains("no upstream is defined")));
    one_error(
        &format!(
            "listeners = []\n{}",
            &MINIMAL[MINIMAL.find("[[upstreams]]").unwrap()..]
        ),
        "`listeners` is empty",
    );
}

#[test]
fn the_example_file_is_valid_and_shows_every_feature() {
    let text = include_str!("../../../../rondo.example.toml");
    let c = ok(text);
    assert_eq!(c.summary(), "2 listeners, 2 upstreams, 5 backends");
    let web = c.upstream("web").unwrap();
    assert!(web.backends.iter().any(|b| b.backup));
    assert!(web.pool.slow_start.is_some());
    let api = c.upstream("api").unwrap();
    assert!(
        api.backends
            .iter()
            .any(|b| b.weight == Weight::new(1.5).unwrap())
    );
    assert!(c.listeners.iter().any(|l| !l.routes.is_empty()));
    assert!(c.upstreams.iter().all(|u| u.pool.breaker.is_some()));
}

#[test]
fn the_error_display_has_the_location_the_line_and_a_caret() {
    let err = parse_with_env("workers = \"two\"\n", "rondo.toml", &no_env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "rondo.toml:1:11: invalid type: string \"two\", expected an integer\n  |\n1 | workers = \"two\"\n  |           ^^^^^"
    );
}

/// The tables of `docs/configuration.md`: section (the code span of its heading, or "top")
/// → (key, default cell) rows.
fn documented_keys() -> Vec<(String, String, String)> {
    let doc = include_str!("../../../../docs/configuration.md");
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
        "[[upstreams]]" => upstream_with(unknown),
        "backends" => MINIMAL.replace("\" }]", &format!("\", {unknown} }}]")),
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
            "[[listeners]]",
            "[[listeners.routes]]",
            "request_headers",
            "[[upstreams]]",
            "backends",
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
            "listeners",
            "upstreams",
            "routes",
            "health_check",
            "circuit_breaker",
        ];
        let mut in_code = accepted_keys(section);
        in_code.retain(|k| !tables.contains(&k.as_str()));
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
        ("README.md", include_str!("../../../../README.md")),
        (
            "docs/configuration.md",
            include_str!("../../../../docs/configuration.md"),
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

#[test]
fn access_log_takes_a_switch_or_a_file_with_a_format() {
    use crate::access_log::{AccessLogConfig, Format};
    let c = ok(&format!(
        "access_log = {{ path = \"/var/log/rondo/access.log\" }}\n{MINIMAL}"
    ));
    assert_eq!(
        c.access_log,
        AccessLogConfig::File {
            path: "/var/log/rondo/access.log".into(),
            format: Format::Combined
        }
    );
    let c = ok(&format!(
        "[access_log]\npath = \"a.log\"\nformat = \"json\"\n{MINIMAL}"
    ));
    assert!(matches!(
        c.access_log,
        AccessLogConfig::File {
            format: Format::Json,
            ..
        }
    ));

    let (line, column) = one_error(
        &format!("access_log = {{ path = \"a.log\", format = \"$status $nope\" }}\n{MINIMAL}"),
        "unknown variable `$nope` in access log format; known: $remote_addr",
    );
    assert_eq!((line, column), (1, 41));
    one_error(
        &format!("access_log = \"yes\"\n{MINIMAL}"),
        "expected true, false, or a table such as { path =",
    );
    one_error(
        &format!("access_log = {{ format = \"json\" }}\n{MINIMAL}"),
        "`path`",
    );
}

#[test]
fn header_rules_are_read_per_listener_and_route() {
    let text = MINIMAL.replacen(
        "upstream = \"app\"\n",
        "upstream = \"app\"\nrequest_headers = { set = { \"X-Real-IP\" = \"$remote_addr\" }, remove = [\"x-debug\"] }\n\
         response_headers = { remove = [\"server\"] }\n\
         [[listeners.routes]]\npath_prefix = \"/api\"\nupstream = \"app\"\n\
         request_headers = { set = { \"x-id\" = \"id-$request_id\" } }\n",
        1,
    );
    let c = ok(&text);
    let l = &c.listeners[0];
    assert_eq!(l.headers.request.remove, ["x-debug"]);
    assert_eq!(l.headers.request.set[0].0, "x-real-ip");
    assert_eq!(l.headers.request.set[0].1.to_string(), "$remote_addr");
    assert_eq!(l.headers.response.remove, ["server"]);
    assert_eq!(
        l.routes[0].headers.request.set[0].1.to_string(),
        "id-$request_id"
    );
}

#[test]
fn header_rules_refuse_framing_headers_bad_names_and_unknown_variables() {
    let with = |rules: &str| {
        MINIMAL.replacen(
            "upstream = \"app\"\n",
            &format!("upstream = \"app\"\n{rules}\n"),
            1,
        )
    };
    one_error(
        &with("request_headers = { remove = [\"Content-Length\"] }"),
        "`request_headers` may not change `content-length`: rondo writes the framing",
    );
    one_error(
        &with("response_headers = { set = { \"x a\" = \"1\" } }"),
        "\"x a\" in `response_headers` is not a header name",
    );
    one_error(
        &with("request_headers = { set = { \"x-a\" = \"$remote_port\" } }"),
        "`request_headers.set.x-a`: unknown variable `$remote_port`; a header value may use $remote_addr, $host, $request_id",
    );
    one_error(
        &with("request_headers = { set = { \"x-a\" = \"1\" }, remove = [\"X-A\"] }"),
        "`request_headers` both sets and removes `x-a`: keep one",
    );
    one_error(&with("request_headers = { add = {} }"), "unknown key `add`");
}
