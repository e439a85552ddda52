//! The top level and the file as a whole: defaults, every key read, syntax errors, unknown
//! keys, every problem at once, the example file, how an error is displayed.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use balance::{Algorithm, BreakerConfig, EjectionConfig, HealthConfig, StartPosition, Weight};

use super::*;

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
    assert!(!breaker.count_application_errors);

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
    assert_eq!(u.keepalive, 10_000);
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
count_all_5xx = true
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
    assert!(b.count_application_errors);
}

#[test]
fn unknown_keys_are_errors_with_a_suggestion_at_the_key() {
    assert_marked(&upstream_with(
        r#"[upstreams.health_check]
intreval = "5s"
^^^^^^^^ unknown key `intreval`, did you mean `interval`? expected one of `enabled`"#,
    ));
    assert_marked(&format!(
        "wrokers = 2\n^^^^^^^ unknown key `wrokers`, did you mean `workers`?\n{MINIMAL}"
    ));
}

#[test]
fn syntax_errors_point_at_the_spot() {
    for fixture in [
        "workers = [\n           ^ unclosed array\n",
        "workers = 2\nworkers = 3\n^^^^^^^ duplicate key `workers`\n",
        "[upstreams]\n^^^^^^^^^^^ write `[[name]]`\nname = \"x\"\n",
    ] {
        assert_marked(fixture);
    }
}

#[test]
fn every_problem_is_reported_at_once_in_file_order() {
    let fixture = r#"workers = 0
          ^ `workers` must be at least 1, got 0

[[listeners]]
name = "web"
bind = "127.0.0.1:80800"
       ^^^^^^^^^^^^^^^^^ invalid address "127.0.0.1:80800" for `bind`
upstream = "nope"
           ^^^^^^ unknown upstream `nope`

[[upstreams]]
name = "app"
backends = [{ address = "127.0.0.1:9001", weight = 0 }]
                                                   ^ weight 0 is not a positive number
"#;
    assert_marked(fixture);
    let (text, _) = marks(fixture);
    let err = parse_with_env(&text, "t.toml", &no_env).unwrap_err();
    assert!(err.to_string().ends_with("4 errors"), "{err}");
}

#[test]
fn no_listeners_or_upstreams_is_an_error() {
    let all = errors("");
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(all.iter().any(|e| e.2.contains("no listener is defined")));
    assert!(all.iter().any(|e| e.2.contains("no upstream is defined")));
    assert_marked(&format!(
        "listeners = []\n            ^^ `listeners` is empty\n{}",
        &MINIMAL[MINIMAL.find("[[upstreams]]").unwrap()..]
    ));
}

#[test]
fn the_example_file_is_valid_and_shows_every_feature() {
    let text = include_str!("../../../../../rondo.example.toml");
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

#[test]
fn unknown_keys_are_reported_in_file_order() {
    assert_marked(&upstream_with(
        r#"zzz_first = 1
^^^^^^^^^ unknown key `zzz_first`
aaa_second = 2"#,
    ));
}
