//! `[upstreams.health_check]`.

use super::*;

#[test]
fn health_check_values_are_checked_where_written() {
    for case in [
        r#"interval = "10s"
timeout = "10s"
          ^^^^^ health check `timeout` (10s) must be shorter than `interval` (10s)"#,
        r#"interval = "3s"
           ^^^^ `interval` (3s) must be longer than `timeout` (5s, the default)"#,
        r#"jitter = 1.0
         ^^^ `jitter` must be at least 0 and below 1"#,
        r#"path = "health"
       ^^^^^^^^ must start with `/`"#,
        r#"expected_status = ["399-200"]
                   ^^^^^^^^^ "399-200" is not a status code or range"#,
        r#"expected_status = []
                  ^^ `expected_status` is empty"#,
        r#"kind = "icmp"
       ^^^^^^ expected one of `http`, `tcp`, `grpc`"#,
        r#"fall = 0
       ^ `fall` must be at least 1, got 0"#,
    ] {
        assert_marked(&upstream_with(&format!("[upstreams.health_check]\n{case}")));
    }
}

#[test]
fn expected_status_takes_a_class() {
    let c = ok(&upstream_with(
        "[upstreams.health_check]\nexpected_status = [\"2xx\", \"3XX\"]",
    ));
    assert_eq!(
        c.upstreams[0].health_check.expected_status,
        vec![200..=299, 300..=399]
    );
}

#[test]
fn a_check_describes_itself_for_messages() {
    let c = ok(MINIMAL);
    assert_eq!(
        c.upstreams[0].health_check.describe(),
        "GET /health → 200-399"
    );
    let c = ok(&upstream_with(
        "[upstreams.health_check]\npath = \"/\"\nexpected_status = [200, \"5xx\"]",
    ));
    assert_eq!(
        c.upstreams[0].health_check.describe(),
        "GET / → 200, 500-599"
    );
    let c = ok(&upstream_with("[upstreams.health_check]\nkind = \"tcp\""));
    assert_eq!(c.upstreams[0].health_check.describe(), "TCP connect");
}
