//! `rondo check` and `rondo::config::load` on real files: the example is accepted, each kind of
//! bad file gets a `FILE:LINE:COL:` diagnostic pointing at the right spot with the line and a
//! caret under it, and exit code 1.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use balance::{BreakerConfig, HealthConfig};

/// A small valid file; the bad files below are variations of it.
const GOOD: &str = r#"[[listeners]]
name = "web"
bind = "127.0.0.1:8080"
upstream = "app"

[[upstreams]]
name = "app"
backends = [
  { address = "127.0.0.1:9001" },
  { address = "127.0.0.1:9002", weight = 1.5 },
]
"#;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rondo.example.toml")
}

/// Runs `rondo check --config rondo.toml` in a fresh directory holding `contents`.
fn check(contents: &str) -> Output {
    check_with_env(contents, &[])
}

fn check_with_env(contents: &str, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rondo.toml"), contents).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rondo"));
    cmd.args(["check", "--config", "rondo.toml"])
        .current_dir(dir.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Asserts that `rondo check` refuses `contents` with exit code 1 and that its first
/// diagnostic is `rondo.toml:LINE:COL: …needle…`, followed by that line of the file and a
/// caret under column COL.
fn refuses(contents: &str, line: usize, column: usize, needle: &str) {
    let out = check(contents);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    let lines: Vec<&str> = stderr.lines().collect();
    let prefix = format!("rondo.toml:{line}:{column}: ");
    assert!(
        lines[0].starts_with(&prefix),
        "expected {prefix:?}, got:\n{stderr}"
    );
    assert!(lines[0].contains(needle), "{needle:?} not in:\n{stderr}");

    // The source line, then the caret.
    let source = contents.lines().nth(line - 1).unwrap();
    let number = line.to_string();
    assert_eq!(lines[2], format!("{number} | {source}"), "{stderr}");
    let gutter = format!("{} | ", " ".repeat(number.len()));
    let caret = lines[3].strip_prefix(&gutter).unwrap();
    assert_eq!(caret.find('^'), Some(column - 1), "{stderr}");
    assert!(stderr.ends_with("rondo: configuration file rondo.toml test failed\n"));
}

#[test]
fn check_accepts_the_example() {
    let out = Command::new(env!("CARGO_BIN_EXE_rondo"))
        .args(["check", "--config"])
        .arg(example())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!(
            "rondo: configuration file {} is valid: 2 listeners, 2 upstreams, 5 backends\n",
            example().display()
        )),
        "{stdout}"
    );
    // What keeps a backend in rotation, said up front.
    assert!(
        stdout.contains(
            "upstream `web`: a backend stays in rotation while it passes `GET /health → 200-399`"
        ),
        "{stdout}"
    );
}

#[test]
fn check_opens_the_access_log_file_as_serve_would() {
    // A directory that does not exist: serve would fail to start, so check fails too.
    let unwritable = format!("access_log = {{ path = \"/nonexistent/rondo/access.log\" }}\n{GOOD}");
    let out = check(&unwritable);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("opening the access log /nonexistent/rondo/access.log"),
        "{stderr}"
    );
    // A path that can be written: created, as `nginx -t` creates its logs, and valid.
    let out = check(&format!("access_log = {{ path = \"access.log\" }}\n{GOOD}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_accepts_a_small_file_with_the_short_flag() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r.toml"), GOOD).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rondo"))
        .args(["check", "-c", "r.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with(
            "rondo: configuration file r.toml is valid: 1 listener, 1 upstream, 2 backends\n"
        ),
        "{stdout}"
    );
}

#[test]
fn toml_syntax_error() {
    refuses(
        &GOOD.replace("name = \"web\"", "name = \"web"),
        2,
        12,
        "invalid basic string, expected `\"`",
    );
}

#[test]
fn unknown_key_with_a_suggestion() {
    let text = format!("{GOOD}\n[upstreams.health_check]\nintreval = \"5s\"\n");
    refuses(
        &text,
        14,
        1,
        "unknown key `intreval`, did you mean `interval`? expected one of `enabled`, `kind`",
    );
}

#[test]
fn bad_duration() {
    let text = format!("{GOOD}connect_timeout = \"5 secs please\"\n");
    refuses(&text, 12, 19, "invalid duration \"5 secs please\"");
}

#[test]
fn weight_zero() {
    let text = GOOD.replace("weight = 1.5", "weight = 0");
    refuses(&text, 10, 42, "weight 0 is not a positive number");
}

#[test]
fn weight_with_too_many_decimals() {
    let text = GOOD.replace("weight = 1.5", "weight = 1.2345");
    refuses(
        &text,
        10,
        42,
        "weight 1.2345 has more than three decimal places",
    );
}

#[test]
fn duplicate_backend_id() {
    let text = GOOD.replace("127.0.0.1:9002", "127.0.0.1:9001");
    refuses(
        &text,
        10,
        15,
        "duplicate backend id `127.0.0.1:9001` in upstream `app`: already defined on line 9",
    );
}

#[test]
fn unknown_upstream_in_a_listener() {
    let text = GOOD.replace("upstream = \"app\"", "upstream = \"apps\"");
    refuses(&text, 4, 12, "unknown upstream `apps`, did you mean `app`?");
}

#[test]
fn unknown_upstream_in_a_route() {
    let text = GOOD.replace(
        "upstream = \"app\"\n",
        "upstream = \"app\"\n\n[[listeners.routes]]\npath_prefix = \"/api/\"\nupstream = \"api\"\n",
    );
    refuses(&text, 8, 12, "unknown upstream `api`");
}

#[test]
fn non_loopback_admin_without_a_token() {
    let text = format!("[admin]\nlisten = \"0.0.0.0:9901\"\n\n{GOOD}");
    refuses(
        &text,
        2,
        10,
        "admin listens on 0.0.0.0:9901, which is not loopback: set `token` or `token_env`",
    );
}

#[test]
fn admin_token_from_the_environment() {
    let text =
        format!("[admin]\nlisten = \"0.0.0.0:9901\"\ntoken_env = \"RONDO_TEST_TOKEN\"\n\n{GOOD}");
    let out = check_with_env(&text, &[("RONDO_TEST_TOKEN", "t0ken")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = check_with_env(&text, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("rondo.toml:3:13: environment variable `RONDO_TEST_TOKEN` named by `token_env` is not set"),
        "{stderr}"
    );
}

#[test]
fn health_check_timeout_not_shorter_than_interval() {
    let text = format!("{GOOD}\n[upstreams.health_check]\ninterval = \"5s\"\ntimeout = \"5s\"\n");
    refuses(
        &text,
        15,
        11,
        "health check `timeout` (5s) must be shorter than `interval` (5s)",
    );
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rondo"))
        .args(["check", "--config", "missing.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("cannot read missing.toml: No such file or directory\n"),
        "{stderr}"
    );
}

#[test]
fn all_problems_are_listed_at_once() {
    let text = GOOD
        .replace("weight = 1.5", "weight = 0")
        .replace("upstream = \"app\"", "upstream = \"nope\"");
    let out = check(&text);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("rondo.toml:4:12: unknown upstream `nope`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("\n\nrondo.toml:10:42: weight 0"),
        "{stderr}"
    );
    assert!(stderr.contains("\n\n2 errors\n"), "{stderr}");
}

#[test]
fn defaults_equal_the_seeds_when_keys_are_absent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rondo.toml");
    std::fs::write(&path, GOOD).unwrap();
    let config = rondo::config::load(&path).unwrap();
    let u = &config.upstreams[0];
    assert_eq!(u.health_check.interval.as_secs(), 30);
    assert_eq!(u.health_check.timeout.as_secs(), 5);
    assert_eq!(u.health_check.path, "/health");
    assert_eq!(u.pool.health, HealthConfig::default());
    assert_eq!((u.pool.health.fall.get(), u.pool.health.rise.get()), (3, 2));
    assert!(u.tries.get() > 1, "failover is on");
    assert_eq!(u.pool.breaker, Some(BreakerConfig::default()));
    let b = u.pool.breaker.unwrap();
    assert_eq!(b.failure_threshold.get(), 5);
    assert_eq!(b.recovery_timeout.as_secs(), 60);
}

#[test]
fn fractional_weights_parse_exactly() {
    let text = GOOD.replace(
        "weight = 1.5 },",
        "weight = 1.5 },\n  { address = \"127.0.0.1:9003\", weight = 0.1 },\n  { address = \"127.0.0.1:9004\", weight = 2.675 },",
    );
    let config = rondo::config::parse(&text, "rondo.toml").unwrap();
    let t: Vec<u32> = config.upstreams[0]
        .backends
        .iter()
        .map(|b| b.weight.thousandths())
        .collect();
    assert_eq!(t, [1000, 1500, 100, 2675]);
}
