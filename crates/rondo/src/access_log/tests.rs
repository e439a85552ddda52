use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

/// 2026-11-29T18:17:14.250Z.
fn at() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_795_976_234_250)
}

fn record<'a>(tried: &[&'a str]) -> AccessRecord<'a> {
    let mut t = Tried::default();
    for id in tried {
        t.push(id);
    }
    AccessRecord {
        client: "10.0.0.7",
        time: at(),
        method: "GET",
        target: "/a?b=1",
        protocol: "HTTP/1.1",
        status: 200,
        bytes_sent: 512,
        bytes_received: 87,
        referer: None,
        user_agent: Some("curl/8.5"),
        listener: "web",
        upstream: Some("app"),
        tried: t,
        attempts: tried.len() as u32,
        upstream_times: UpstreamTimes {
            connect: Some(Duration::from_micros(120)),
            header: Some(Duration::from_micros(1_500)),
            response: Some(Duration::from_micros(2_001)),
        },
        total: Duration::from_micros(2_345),
        request_id: "7f3a",
        tls_version: None,
    }
}

fn line(format: &Format, r: &AccessRecord<'_>) -> String {
    let mut out = String::new();
    format.write(r, &mut out);
    out
}

#[test]
fn combined_is_nginx_s_line() {
    assert_eq!(
        line(&Format::Combined, &record(&["10.0.0.1:80"])),
        "10.0.0.7 - - [29/Nov/2026:18:17:14 +0000] \"GET /a?b=1 HTTP/1.1\" 200 512 \"-\" \
         \"curl/8.5\"\n"
    );
}

#[test]
fn client_text_cannot_forge_a_field_or_a_line() {
    let mut r = record(&[]);
    r.user_agent = Some("x\" 500 \"\nfake");
    let l = line(&Format::Combined, &r);
    assert!(l.ends_with("\"x\\x22 500 \\x22\\x0Afake\"\n"), "{l}");
    assert_eq!(l.matches('\n').count(), 1);
}

#[test]
fn json_has_every_field_with_durations_in_microseconds() {
    let l = line(&Format::Json, &record(&["a:1", "b:2"]));
    let v: serde_json::Value = serde_json::from_str(&l).unwrap();
    assert_eq!(v["time"], "2026-11-29T18:17:14.250Z");
    assert_eq!(v["remote_addr"], "10.0.0.7");
    assert_eq!(v["status"], 200);
    assert_eq!(v["upstream_addr"], serde_json::json!(["a:1", "b:2"]));
    assert_eq!(v["upstream_attempts"], 2);
    assert_eq!(v["upstream_connect_time_us"], 120);
    assert_eq!(v["request_time_us"], 2345);
    assert_eq!(v["http_referer"], serde_json::Value::Null);
    assert_eq!(v["request_id"], "7f3a");
}

#[test]
fn a_template_names_fields_as_nginx_does() {
    let f: Format = "$remote_addr ${status}ms=$request_time up=$upstream_addr \
                     t=$upstream_connect_time/$upstream_header_time id=$request_id $ssl_protocol"
        .parse()
        .unwrap();
    assert_eq!(
        line(&f, &record(&["a:1", "b:2"])),
        "10.0.0.7 200ms=0.002345 up=a:1, b:2 t=0.000120/0.001500 id=7f3a -\n"
    );
    let mut none = record(&[]);
    none.upstream_times = UpstreamTimes::default();
    assert_eq!(
        line(&f, &none),
        "10.0.0.7 200ms=0.002345 up=- t=-/- id=7f3a -\n"
    );
}

#[test]
fn a_template_with_an_unknown_variable_is_refused_with_the_list() {
    let e = "$remote_addr $statuss"
        .parse::<Format>()
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("unknown variable `$statuss` in access log format; known: $remote_addr"),
        "{e}"
    );
    let e = "text only".parse::<Format>().unwrap_err().to_string();
    assert!(
        e.contains("expected \"combined\", \"json\" or a template"),
        "{e}"
    );
    assert!("$ x".parse::<Format>().is_err());
    assert!("${status".parse::<Format>().is_err());
}

#[test]
fn every_variable_can_be_written() {
    let all: String = Var::ALL.iter().map(|v| format!("${} ", v.name())).collect();
    let f: Format = all.parse().unwrap();
    assert!(line(&f, &record(&["a:1"])).split(' ').count() > Var::ALL.len());
}

#[test]
fn a_file_log_writes_lines_and_reopens_after_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let log = AccessLog::open(&AccessLogConfig::File {
        path: path.clone(),
        format: "$status $request_id".parse().unwrap(),
    })
    .unwrap();
    log.log(&record(&["a:1"]));
    log.flush();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "200 7f3a\n");

    // logrotate: rename, then signal; the next line lands in a new file at the old path.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    log.log(&record(&[]));
    assert!(log.reopen(), "a file log reopens");
    let mut r = record(&[]);
    r.status = 503;
    log.log(&r);
    log.flush();
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap(),
        "200 7f3a\n200 7f3a\n"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "503 7f3a\n");
    assert_eq!((log.dropped(), log.failed()), (0, 0));
}

#[test]
fn a_log_file_that_cannot_be_opened_is_an_error_naming_it() {
    let e = AccessLog::open(&AccessLogConfig::File {
        path: "/nonexistent-dir/access.log".into(),
        format: Format::Combined,
    })
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("opening the access log /nonexistent-dir/access.log: ")
    );
}

#[test]
fn off_writes_nothing() {
    let log = AccessLog::off();
    assert!(!log.is_on());
    log.log(&record(&[]));
    assert_eq!(log.dropped(), 0);
}
