//! Backends by DNS name against a real DNS server on loopback, inside the test: a small
//! authoritative UDP responder whose records the test changes while traffic flows. Records
//! added join, removed ones drain, kept ones keep their state; TTLs set the refresh; SRV
//! records give ports, weights and backups; a name that never resolved is out with its error;
//! a server that stops answering leaves the last known addresses serving.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Client, MockBackend, admin_call, eventually, get, mock, prometheus, start_text, web};
use parking_lot::Mutex;

/// An SRV record: priority, weight, port, target.
type Srv = (u16, u16, u16, &'static str);

/// The records the responder serves; the test changes them at will.
#[derive(Default)]
struct Zone {
    a: HashMap<String, Vec<Ipv4Addr>>,
    srv: HashMap<String, Vec<Srv>>,
    ttl: u32,
    /// When each name was asked for A records, in order.
    asked: Vec<(String, std::time::Instant)>,
}

/// A minimal authoritative DNS server over UDP: A and SRV answers, NODATA for other types of
/// a known name, NXDOMAIN otherwise; silent while `down`.
struct Dns {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    down: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn name_at(packet: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*packet.get(at)?);
        at += 1;
        if len == 0 {
            return Some((labels.join(".").to_ascii_lowercase(), at));
        }
        labels.push(String::from_utf8_lossy(packet.get(at..at + len)?).into_owned());
        at += len;
    }
}

fn encode_name(name: &str, out: &mut Vec<u8>) {
    for label in name.trim_end_matches('.').split('.') {
        out.push(u8::try_from(label.len()).unwrap());
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

/// The answer to one query, or `None` for a packet that is not one.
fn answer(query: &[u8], zone: &mut Zone) -> Option<Vec<u8>> {
    let (name, end) = name_at(query, 12)?;
    let qtype = u16::from_be_bytes([*query.get(end)?, *query.get(end + 1)?]);
    let question = query.get(12..end + 4)?;
    if qtype == 1 {
        zone.asked.push((name.clone(), std::time::Instant::now()));
    }
    let mut records: Vec<(u16, Vec<u8>)> = Vec::new();
    let known = zone.a.contains_key(&name) || zone.srv.contains_key(&name);
    if qtype == 1 {
        for ip in zone.a.get(&name).into_iter().flatten() {
            records.push((1, ip.octets().to_vec()));
        }
    }
    if qtype == 33 {
        for (priority, weight, port, target) in zone.srv.get(&name).into_iter().flatten() {
            let mut rdata = Vec::new();
            for n in [priority, weight, port] {
                rdata.extend_from_slice(&n.to_be_bytes());
            }
            encode_name(target, &mut rdata);
            records.push((33, rdata));
        }
    }
    let mut out = Vec::new();
    out.extend_from_slice(query.get(0..2)?);
    let rcode: u16 = if known { 0 } else { 3 };
    out.extend_from_slice(&(0x8400 | rcode).to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&u16::try_from(records.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    for (rtype, rdata) in records {
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&zone.ttl.to_be_bytes());
        out.extend_from_slice(&u16::try_from(rdata.len()).unwrap().to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    Some(out)
}

impl Dns {
    async fn start(ttl: u32) -> Dns {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(Zone {
            ttl,
            ..Zone::default()
        }));
        let down = Arc::new(AtomicBool::new(false));
        let (z, d) = (Arc::clone(&zone), Arc::clone(&down));
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                if d.load(Ordering::SeqCst) {
                    continue;
                }
                let reply = answer(&buf[..n], &mut z.lock());
                if let Some(reply) = reply {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        Dns {
            addr,
            zone,
            down,
            task,
        }
    }

    fn set_a(&self, name: &str, ips: &[Ipv4Addr]) {
        self.zone.lock().a.insert(name.to_owned(), ips.to_vec());
    }

    fn set_srv(&self, name: &str, records: &[Srv]) {
        self.zone
            .lock()
            .srv
            .insert(name.to_owned(), records.to_vec());
    }

    /// When `name` was asked for A records, in order (AAAA is asked alongside).
    fn asked(&self, name: &str) -> Vec<std::time::Instant> {
        let zone = self.zone.lock();
        zone.asked
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, t)| *t)
            .collect()
    }
}

/// A config whose upstream `app` has `backends` (TOML inline tables) and resolves through
/// `dns` with the given TTL bounds.
fn config(backends: &str, dns: &Dns, min_ttl: &str, max_ttl: &str) -> String {
    format!(
        "workers = 2\naccess_log = false\nshutdown_grace = \"1s\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [resolver]\nnameservers = [\"{}\"]\nmin_ttl = \"{min_ttl}\"\nmax_ttl = \"{max_ttl}\"\n\n\
         [[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n\n\
         [[upstreams]]\nname = \"app\"\nbackends = [{backends}]\n",
        dns.addr
    )
}

fn ids(running: &rondo::runtime::Running) -> Vec<String> {
    running
        .upstream("app")
        .unwrap()
        .pool()
        .snapshot()
        .backends()
        .iter()
        .map(|b| b.id().to_owned())
        .collect()
}

/// Which backend answered each of `n` requests on one connection.
async fn spread(addr: SocketAddr, n: usize) -> HashMap<String, usize> {
    let mut client = Client::connect(addr).await;
    let mut out = HashMap::new();
    for _ in 0..n {
        *out.entry(client.get("/").await.backend()).or_default() += 1;
    }
    out
}

const LO2: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const LO3: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_appear_join_those_that_go_drain_and_kept_ones_keep_their_state() {
    let a = mock("a").await;
    let port = a.addr().port();
    let b = MockBackend::builder("b")
        .addr(SocketAddr::new(LO2.into(), port))
        .start()
        .await
        .unwrap();
    let c = MockBackend::builder("c")
        .addr(SocketAddr::new(LO3.into(), port))
        .start()
        .await
        .unwrap();
    let dns = Dns::start(1).await;
    dns.set_a("app.test", &[Ipv4Addr::LOCALHOST, LO2]);
    let running = start_text(&config(
        &format!("{{ address = \"app.test:{port}\" }}"),
        &dns,
        "100ms",
        "200ms",
    ));
    let addr = web(&running);
    let id = |ip: Ipv4Addr| format!("app.test:{port}@{ip}:{port}");
    eventually(Duration::from_secs(5), "two records resolved", || {
        ids(&running).len() == 2
    })
    .await;
    assert_eq!(ids(&running), [id(Ipv4Addr::LOCALHOST), id(LO2)]);
    let seen = spread(addr, 4).await;
    assert_eq!((seen["a"], seen["b"]), (2, 2), "{seen:?}");
    assert_eq!(b.hits(), 2);

    // Traffic flows through every change; not one request may fail.
    let failures = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (failures, sent, stop) = (failures.clone(), sent.clone(), stop.clone());
        tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            while !stop.load(Ordering::SeqCst) {
                let ok = client
                    .send("GET", "/", b"")
                    .await
                    .is_ok_and(|r| r.status == 200);
                if !ok {
                    failures.fetch_add(1, Ordering::SeqCst);
                    client = Client::connect(addr).await;
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    let up = running.upstream("app").unwrap();
    let backend = |id: &str| {
        up.pool()
            .snapshot()
            .backends()
            .iter()
            .find(|x| x.id() == id)
            .cloned()
    };
    let b_before = backend(&id(LO2)).unwrap();
    dns.set_a("app.test", &[Ipv4Addr::LOCALHOST, LO2, LO3]);
    eventually(Duration::from_secs(5), "c joins", || {
        ids(&running).len() == 3
    })
    .await;
    let b_after = backend(&id(LO2)).unwrap();
    assert!(Arc::ptr_eq(&b_before, &b_after), "b is the same backend");
    eventually(Duration::from_secs(5), "c gets traffic", || c.hits() > 0).await;

    dns.set_a("app.test", &[LO2, LO3]);
    eventually(Duration::from_secs(5), "a leaves", || {
        ids(&running) == [id(LO2), id(LO3)]
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    assert!(sent.load(Ordering::SeqCst) > 0);
    assert_eq!(failures.load(Ordering::SeqCst), 0, "no request failed");

    let a_hits = a.hits();
    let seen = spread(addr, 4).await;
    assert_eq!((seen["b"], seen["c"]), (2, 2), "{seen:?}");
    assert_eq!(a.hits(), a_hits, "a takes no new request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_changed_through_the_admin_api_survive_a_dns_change() {
    let a = mock("a").await;
    let port = a.addr().port();
    let on = |name: &'static str, ip: Ipv4Addr| {
        MockBackend::builder(name)
            .addr(SocketAddr::new(ip.into(), port))
            .start()
    };
    let lo4 = Ipv4Addr::new(127, 0, 0, 4);
    let (b, c, d) = (
        on("b", LO2).await.unwrap(),
        on("c", LO3).await.unwrap(),
        on("d", lo4).await.unwrap(),
    );
    let dns = Dns::start(1).await;
    dns.set_a("app.test", &[Ipv4Addr::LOCALHOST, LO3]);
    let running = start_text(&config(
        &format!("{{ address = \"app.test:{port}\" }}"),
        &dns,
        "100ms",
        "200ms",
    ));
    let id = |ip: Ipv4Addr| format!("app.test:{port}@{ip}:{port}");
    eventually(Duration::from_secs(5), "two records resolved", || {
        ids(&running).len() == 2
    })
    .await;

    // Through the admin API: c's record taken out, b added with weight 2.
    let admin = running.admin_addr();
    let base = "/api/v1/upstreams/app/backends";
    let (status, body) =
        admin_call(admin, "DELETE", &format!("{base}/{}", id(LO3)), None, "").await;
    assert_eq!(status, 200, "{body}");
    let add = format!(r#"{{"id": "b", "address": "{LO2}:{port}", "weight": 2}}"#);
    let (status, body) = admin_call(admin, "POST", base, None, &add).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(ids(&running), [id(Ipv4Addr::LOCALHOST), "b".to_owned()]);

    // A new record: the pool is rebuilt from the records, and the API's changes stay.
    dns.set_a("app.test", &[Ipv4Addr::LOCALHOST, LO3, lo4]);
    eventually(Duration::from_secs(5), "d's record joins", || {
        ids(&running).contains(&id(lo4))
    })
    .await;
    assert_eq!(
        ids(&running),
        [id(Ipv4Addr::LOCALHOST), id(lo4), "b".to_owned()]
    );
    let (c_hits, b_hits) = (c.hits(), b.hits());
    let seen = spread(web(&running), 4).await;
    assert_eq!((seen["a"], seen["d"], seen["b"]), (1, 1, 2), "{seen:?}");
    assert_eq!((c.hits(), b.hits()), (c_hits, b_hits + 2), "c stays out");
    assert_eq!(d.hits(), 1);

    let scrape = get(admin, "/metrics").await.text();
    let names = prometheus::assert_names_follow_the_conventions(&scrape);
    assert!(names.contains("rondo_dns_resolutions_total"), "{names:?}");
    running.shutdown(Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_is_asked_again_when_its_ttl_runs_out_not_sooner() {
    let a = mock("a").await;
    let dns = Dns::start(1).await;
    dns.set_a("app.test", &[Ipv4Addr::LOCALHOST]);
    let _running = start_text(&config(
        &format!("{{ address = \"app.test:{}\" }}", a.addr().port()),
        &dns,
        "100ms",
        "10s",
    ));
    eventually(Duration::from_secs(10), "three resolutions", || {
        dns.asked("app.test").len() >= 3
    })
    .await;
    let asked = dns.asked("app.test");
    for pair in asked.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(950),
            "asked again after {gap:?}, TTL 1 s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_give_ports_weights_and_backups() {
    let [a, b, c] = [mock("a").await, mock("b").await, mock("c").await];
    let dns = Dns::start(30).await;
    for name in ["a.test", "b.test", "c.test"] {
        dns.set_a(name, &[Ipv4Addr::LOCALHOST]);
    }
    dns.set_srv(
        "_http._tcp.app.test",
        &[
            (10, 1, a.addr().port(), "a.test"),
            (10, 3, b.addr().port(), "b.test"),
            (20, 1, c.addr().port(), "c.test"),
        ],
    );
    let running = start_text(&config(
        "{ address = \"_http._tcp.app.test\" }",
        &dns,
        "1s",
        "60s",
    ));
    eventually(Duration::from_secs(5), "three targets", || {
        ids(&running).len() == 3
    })
    .await;
    let seen = spread(web(&running), 8).await;
    assert_eq!(seen.get("a"), Some(&2), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&6), "{seen:?}");
    assert_eq!(seen.get("c"), None, "c is a backup: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolved_name_is_out_with_its_error_and_a_silent_server_keeps_the_last_addresses() {
    let a = mock("a").await;
    let b = mock("b").await;
    let dns = Dns::start(1).await;
    dns.set_a("b.test", &[Ipv4Addr::LOCALHOST]);
    let backends = format!(
        "{{ address = \"{}\", id = \"a\" }}, {{ address = \"missing.test:80\" }}, \
         {{ address = \"b.test:{}\", id = \"b\" }}",
        a.addr(),
        b.addr().port()
    );
    let running = start_text(&config(&backends, &dns, "100ms", "200ms"));
    let admin = running.admin_addr();
    let stats = || async {
        let reply = get(admin, "/api/v1/stats").await;
        serde_json::from_slice::<serde_json::Value>(&reply.body).unwrap()
    };
    eventually(Duration::from_secs(5), "b.test resolved", || {
        ids(&running).len() == 2
    })
    .await;
    let s = stats().await;
    let dns_status = s["upstreams"][0]["dns"].as_array().unwrap().clone();
    let missing = dns_status
        .iter()
        .find(|d| d["name"] == "missing.test:80")
        .unwrap_or_else(|| panic!("{s}"));
    assert_eq!(missing["resolved"], false, "{missing}");
    assert!(
        missing["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{missing}"
    );
    let typed: rondo::admin::stats::Stats = serde_json::from_value(s.clone()).unwrap();
    let table = rondo::cli::status::render(&typed, false);
    assert!(
        table.contains("dns missing.test:80: never resolved: "),
        "{table}"
    );
    assert!(table.contains("dns b: 1 addresses"), "{table}");
    let seen = spread(web(&running), 4).await;
    assert_eq!((seen["a"], seen["b"]), (2, 2), "{seen:?}");

    // The server stops answering: failures are counted, b keeps serving.
    dns.down.store(true, Ordering::SeqCst);
    let failed = || async {
        let m = get(admin, "/metrics").await.text();
        m.lines()
            .find(|l| {
                l.starts_with("rondo_dns_resolutions_total{")
                    && l.contains("name=\"b\"")
                    && l.contains("result=\"error\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while failed().await == 0 {
        assert!(std::time::Instant::now() < deadline, "no failure counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ids(&running).len(), 2, "the last known address stays");
    let seen = spread(web(&running), 4).await;
    assert_eq!((seen["a"], seen["b"]), (2, 2), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_about_a_name_that_does_not_resolve_and_fails_with_strict() {
    let dns = Dns::start(30).await;
    dns.set_a("app.test", &[Ipv4Addr::LOCALHOST]);
    let dir = std::env::temp_dir().join(format!("rondo-dns-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rondo.toml");
    std::fs::write(
        &file,
        config(
            "{ address = \"app.test:80\" }, { address = \"missing.test:80\" }",
            &dns,
            "5s",
            "300s",
        ),
    )
    .unwrap();
    let run = |strict: bool| {
        let file = file.clone();
        tokio::task::spawn_blocking(move || {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rondo"));
            cmd.arg("check").arg("--config").arg(&file);
            if strict {
                cmd.arg("--strict");
            }
            cmd.output().unwrap()
        })
    };
    let lenient = run(false).await.unwrap();
    let stderr = String::from_utf8_lossy(&lenient.stderr);
    assert!(lenient.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: upstream `app`: backend `missing.test:80` does not resolve"),
        "{stderr}"
    );
    assert!(!stderr.contains("app.test:80` does not"), "{stderr}");
    let strict = run(true).await.unwrap();
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert!(!strict.status.success(), "{stderr}");
    assert!(
        stderr.contains("error: upstream `app`: backend `missing.test:80`"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
