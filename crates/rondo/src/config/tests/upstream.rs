//! `[[upstreams]]`: algorithm, retries, timeouts, pool, ejection, queue, and the breaker
//! switch.

use super::*;

#[test]
fn failover_off_means_one_try_and_contradicting_tries_is_an_error() {
    let c = ok(&upstream_with("failover = false"));
    assert_eq!(c.upstreams[0].tries.get(), 1);
    let c = ok(&upstream_with("failover = false\ntries = 1"));
    assert_eq!(c.upstreams[0].tries.get(), 1);
    assert_marked(&upstream_with(
        "failover = false
tries = 3
        ^ `tries = 3` contradicts `failover = false`",
    ));
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
fn bad_values_point_at_the_value() {
    for case in [
        r#"connect_timeout = "5 parsecs"
                  ^^^^^^^^^^^ invalid duration "5 parsecs""#,
        r#"connect_timeout = 5
                  ^ expected a duration string"#,
        r#"connect_timeout = "0s"
                  ^^^^ `connect_timeout` must be longer than 0s"#,
        r#"retry_body_limit = "16k"
                   ^^^^^ unknown unit `k`"#,
        r#"algorithm = "smooth"
            ^^^^^^^^ did you mean `smooth-weighted`?"#,
        r#"algorithm = "fastest"
            ^^^^^^^^^ expected one of: round-robin, weighted"#,
        r#"panic_threshold = 101
                  ^^^ `panic_threshold` must be between 0 and 100, got 101"#,
        r#"tries = 0
        ^ `tries` must be at least 1, got 0"#,
        r#"retry_on_status = [502, 99]
                        ^^ 99 is not an HTTP status code"#,
        r#"start = "middle"
        ^^^^^^^^ unknown value `middle`"#,
        r#"keepalive = -1
            ^^ `keepalive` must be at least 0, got -1"#,
        r#"priority_header = "x prio"
                  ^^^^^^^^ is not a header name"#,
        r#"workers = 2
^^^^^^^ unknown key `workers`"#,
    ] {
        assert_marked(&upstream_with(case));
    }
}

#[test]
fn retry_on_status_takes_ranges_and_classes_like_expected_status() {
    let c = ok(&upstream_with(
        r#"retry_on_status = ["5xx", 429, "502-504"]"#,
    ));
    let mut want: Vec<u16> = (500..=599).collect();
    want.insert(0, 429);
    assert_eq!(c.upstreams[0].retry_on_status, want);
    assert_marked(&upstream_with(
        r#"retry_on_status = ["6xx"]
                   ^^^^^ "6xx" is not a status code or range; expected codes 100 to 599 such as 200, a range such as "200-399" or a class such as "5xx""#,
    ));
}

#[test]
fn protocol_keys_are_read_and_checked_against_tls() {
    use crate::config::UpstreamProtocol;
    let c = ok(&upstream_with(
        "protocol = \"h2c\"\nh2_max_connections = 3\nh2_ping_interval = \"0s\"\n\
         grpc_retry_on = [\"unavailable\", 8, \"DATA_LOSS\"]\n\
         grpc_idempotent = [\"/echo.Echo/\", \"/a.B/C\"]",
    ));
    let u = &c.upstreams[0];
    assert_eq!(u.protocol, UpstreamProtocol::H2c);
    assert_eq!(u.h2.max_connections, 3);
    assert_eq!(u.h2.ping_interval, None);
    assert_eq!(u.grpc.retry_on, vec![8, 14, 15]);
    assert!(u.grpc.is_idempotent("/echo.Echo/Say"));
    assert!(u.grpc.is_idempotent("/a.B/C"));
    assert!(!u.grpc.is_idempotent("/a.B/D"));
    let d = ok(&upstream_with(""));
    assert_eq!(d.upstreams[0].protocol, UpstreamProtocol::Http1);
    assert_eq!(d.upstreams[0].grpc.retry_on, vec![14]);
    for case in [
        r#"protocol = "h2"
           ^^^^ `protocol = "h2"` is HTTP/2 over TLS: add `tls = {}`"#,
        r#"protocol = "http2"
           ^^^^^^^ unknown protocol "http2""#,
        r#"grpc_retry_on = ["sometimes"]
                 ^^^^^^^^^^^ not a gRPC status"#,
        r#"grpc_retry_on = [17]
                 ^^ not a gRPC status"#,
        r#"grpc_idempotent = ["echo.Echo/Say"]
                   ^^^^^^^^^^^^^^^ is not a gRPC method path"#,
        r#"h2_max_connections = 0
                     ^ `h2_max_connections` must be"#,
    ] {
        assert_marked(&upstream_with(case));
    }
    assert_marked(&upstream_with(
        r#"tls = { verify = false }
protocol = "h2c"
           ^^^^^ `protocol = "h2c"` is HTTP/2 in clear text"#,
    ));
}
