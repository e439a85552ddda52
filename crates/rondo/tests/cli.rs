//! The `rondo` binary run as an operator runs it: logs written to a file (no colour codes, one
//! line per event), `rondo reload` reporting whether the reload applied, `rondo check FILE`,
//! a missing file, the admin API turned off, start-up's pages unmapped after start and each
//! reload, completions, the man page and the systemd unit.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Ends the child process if the test fails half-way.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rondo() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rondo"));
    cmd.env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR");
    cmd
}

/// A configuration whose only backend is never contacted (no health checks, no traffic).
fn config(admin: &str, workers: usize) -> String {
    format!(
        "workers = {workers}\n[admin]\n{admin}\n\
         [[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\
         [[upstreams]]\nname = \"app\"\nbackends = [{{ address = \"127.0.0.1:9\" }}]\n\
         [upstreams.health_check]\nenabled = false\n"
    )
}

/// `rondo serve --config path` with its log (text format) written to `log`.
fn serve(path: &Path, log: &Path) -> KillOnDrop {
    let file = std::fs::File::create(log).unwrap();
    KillOnDrop(
        rondo()
            .args(["serve", "--config"])
            .arg(path)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap(),
    )
}

/// Waits (at most 10 s) until `log` has `count` lines containing `needle`; returns the log.
fn wait_for(log: &Path, needle: &str, count: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().filter(|l| l.contains(needle)).count() >= count {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no {count} lines with {needle:?} in the log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of `key=` on the first log line containing `needle`.
fn field(log: &str, needle: &str, key: &str) -> String {
    let line = log.lines().find(|l| l.contains(needle)).unwrap();
    let at = line.find(&format!("{key}=")).unwrap() + key.len() + 1;
    line[at..].split(' ').next().unwrap().to_owned()
}

/// Sends SIGTERM to the child and waits (at most 10 s) for its exit code.
fn stop(child: &mut KillOnDrop) -> Option<i32> {
    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn reload(path: &Path, admin: &str) -> Output {
    rondo()
        .args(["reload", "--admin", admin, "--config"])
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn a_log_file_has_no_colour_codes_and_one_line_per_event_and_reload_reports_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rondo.toml");
    let log = dir.path().join("rondo.log");
    let admin = "listen = \"127.0.0.1:0\"";
    std::fs::write(&path, config(admin, 1)).unwrap();
    let mut child = serve(&path, &log);
    let started = wait_for(&log, "admin API", 1);
    let admin_addr = field(&started, "admin API", "admin");

    // A good file: applied, exit 0.
    let out = reload(&path, &admin_addr);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "configuration reloaded (process {})",
            child.0.id()
        )),
        "{stdout}"
    );

    // A change that needs a restart: partly applied, exit 1, the reason shown.
    std::fs::write(&path, config(admin, 2)).unwrap();
    let out = reload(&path, &admin_addr);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("partly reloaded"), "{stderr}");
    assert!(stderr.contains("workers"), "{stderr}");

    // A bad file: refused before any signal is sent, exit 1, with the diagnostics.
    let bad = config(admin, 1).replace("127.0.0.1:9\"", "127.0.0.1\", weight = 0");
    std::fs::write(&path, &bad).unwrap();
    let out = reload(&path, &admin_addr);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("does not validate"), "{stderr}");
    assert!(stderr.contains("the port is missing"), "{stderr}");

    // The same bad file through SIGHUP: one log line per problem, each with its place.
    Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    let logged = wait_for(&log, "configuration not reloaded", 2);
    let refused: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("configuration not reloaded"))
        .collect();
    assert!(refused[0].contains("rondo.toml:"), "{logged}");
    assert!(refused.iter().all(|l| l.contains("problems=2")), "{logged}");
    assert_eq!(stop(&mut child), Some(0));

    let bytes = std::fs::read(&log).unwrap();
    assert!(!bytes.contains(&0x1b), "ESC in the log file:\n{logged}");
    let logged = String::from_utf8(bytes).unwrap();
    for line in logged.lines() {
        // Every line is an event: it starts with its timestamp (no caret block, no
        // continuation lines).
        assert!(
            line.starts_with(|c: char| c.is_ascii_digit()),
            "not one line per event: {line:?}\n{logged}"
        );
    }
}

/// A port free on `ip` now (bound and released), for a file that must name one.
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn reload_follows_the_admin_api_to_the_address_the_reload_moves_it_to() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rondo.toml");
    let log = dir.path().join("rondo.log");
    std::fs::write(&path, config("listen = \"127.0.0.1:0\"", 1)).unwrap();
    let mut child = serve(&path, &log);
    let started = wait_for(&log, "admin API", 1);
    let old = field(&started, "admin API", "admin");

    // Told the old address: it signals there and reads the outcome where the file now says.
    let first = format!("127.0.0.2:{}", free_port("127.0.0.2"));
    std::fs::write(&path, config(&format!("listen = \"{first}\""), 1)).unwrap();
    let out = reload(&path, &old);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("configuration reloaded"), "{stdout}");

    // Without --admin, the file's new address does not answer before the reload: the pid
    // file names the process, and the outcome is read at the new address.
    let pid_file = dir.path().join("rondo.pid");
    std::fs::write(&pid_file, format!("{}\n", child.0.id())).unwrap();
    let second = format!("127.0.0.3:{}", free_port("127.0.0.3"));
    std::fs::write(&path, config(&format!("listen = \"{second}\""), 1)).unwrap();
    let out = rondo()
        .args(["reload", "--pid-file"])
        .arg(&pid_file)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    // Without it, the advice says what to give.
    let third = format!("127.0.0.4:{}", free_port("127.0.0.4"));
    std::fs::write(&path, config(&format!("listen = \"{third}\""), 1)).unwrap();
    let out = rondo()
        .args(["reload", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("--pid or --pid-file"), "{stderr}");
    assert_eq!(stop(&mut child), Some(0));
}

/// One request to `addr`; the status line of the answer.
fn status_line(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn serve_unmaps_start_up_pages_after_start_and_each_reload_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rondo.toml");
    let log = dir.path().join("rondo.log");
    std::fs::write(&path, config("enabled = false", 1)).unwrap();
    let file = std::fs::File::create(&log).unwrap();
    let mut child = KillOnDrop(
        rondo()
            .env("RUST_LOG", "info,rondo::serve=debug")
            .args(["serve", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap(),
    );
    let unmapped = "clean read-only pages unmapped";
    let started = wait_for(&log, unmapped, 1);
    assert_eq!(field(&started, unmapped, "after"), "\"start\"", "{started}");
    assert!(
        field(&started, unmapped, "mappings")
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert!(field(&started, unmapped, "kib").parse::<u64>().unwrap() > 0);
    // The worker's code, unmapped, comes back: the request is read, the backend (port 9, never
    // listening) tried, and the 502 written.
    let addr = field(&started, "listening", "addr");
    assert_eq!(status_line(&addr), "HTTP/1.1 502 Bad Gateway");

    Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    let reloaded = wait_for(&log, unmapped, 2);
    let again = reloaded
        .lines()
        .filter(|l| l.contains(unmapped))
        .nth(1)
        .unwrap();
    assert!(again.contains("after=\"reload\""), "{reloaded}");
    assert!(reloaded.contains("configuration reloaded"), "{reloaded}");
    // Still served after the reload: a lone backend is never ejected (nginx's rule for a
    // group of one server), so its refused connect is tried, and answered 502, again.
    assert_eq!(status_line(&addr), "HTTP/1.1 502 Bad Gateway");
    assert_eq!(stop(&mut child), Some(0));
}

#[test]
fn two_instances_with_the_admin_api_off_run_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rondo.toml");
    // Both would listen on the same admin address if it were on.
    std::fs::write(
        &path,
        config("enabled = false\nlisten = \"127.0.0.1:9901\"", 1),
    )
    .unwrap();
    let logs = [dir.path().join("a.log"), dir.path().join("b.log")];
    let mut children: Vec<KillOnDrop> = logs.iter().map(|log| serve(&path, log)).collect();
    for log in &logs {
        let text = wait_for(log, "admin API off", 1);
        assert!(text.contains("listening"), "{text}");
    }
    for child in &mut children {
        assert_eq!(stop(child), Some(0));
    }
}

#[test]
fn check_takes_the_file_as_an_argument_and_a_missing_file_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rondo.toml");
    std::fs::write(&path, config("", 1)).unwrap();
    let out = rondo().arg("check").arg(&path).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("is valid"), "{stdout}");

    let missing = dir.path().join("missing.toml");
    for args in [["check", "--config"], ["serve", "--config"]] {
        let out = rondo().args(args).arg(&missing).output().unwrap();
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(
            stderr.matches("No such file or directory").count(),
            1,
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn help_names_the_default_configuration_file() {
    for command in ["serve", "check", "reload"] {
        let out = rondo().args([command, "--help"]).output().unwrap();
        let (stdout, _) = text(&out);
        assert!(
            stdout.contains("/etc/rondo/rondo.toml"),
            "{command}: {stdout}"
        );
    }
}

#[test]
fn completions_and_the_man_page_are_generated_from_the_cli() {
    let out = rondo().args(["completions", "bash"]).output().unwrap();
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(
        stdout.contains("_rondo()") && stdout.contains("serve"),
        "{stdout}"
    );
    let out = rondo().arg("man").output().unwrap();
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(
        stdout.starts_with(".ie") || stdout.contains(".TH rondo"),
        "{stdout}"
    );
    assert!(stdout.contains("reload"), "{stdout}");
}

/// `systemd-analyze verify` on `dist/rondo.service`, with the binary path pointed at the one
/// just built (verify checks that it exists). `scripts/test` installs systemd.
#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/rondo.service");
    let written = std::fs::read_to_string(unit).unwrap();
    assert!(written.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    let dir = tempfile::tempdir().unwrap();
    let copy: PathBuf = dir.path().join("rondo.service");
    std::fs::write(
        &copy,
        written.replace("/usr/local/bin/rondo", env!("CARGO_BIN_EXE_rondo")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (Debian package systemd, installed by scripts/test)");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.trim().is_empty(), "{stderr}");
}
