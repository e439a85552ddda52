//! `rondo demo` runs to completion on a fresh machine and tells every step of the story.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::process::Command;

#[test]
fn the_demo_runs_every_step_and_exits_zero() {
    let out = Command::new(env!("CARGO_BIN_EXE_rondo"))
        .arg("demo")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "1. Setting up the load balancer",
        "2. Load balancing: 20 requests",
        "3. A backend fails",
        "4. The backend returns",
        "5. Performance benchmark: 1,000 requests, 20 connections",
        "6. Algorithm comparison",
        "7. Detailed statistics",
    ] {
        assert!(text.contains(step), "missing `{step}` in:\n{text}");
    }
    assert_eq!(
        text.matches("20 of 20 succeeded").count(),
        3,
        "no request lost in any step:\n{text}"
    );
    assert!(
        text.contains("server2=ejected") || text.contains("server2=breaker_open"),
        "{text}"
    );
    assert!(text.contains("1000 (1000 succeeded"), "{text}");
    // Not only what the client reports: the backends themselves counted every request of
    // steps 2 to 5 (3 × 20 + 1,000) exactly once — no request lost, none sent twice.
    assert!(
        text.contains("counted by the backends themselves: 1060 requests"),
        "{text}"
    );
}
