//! A fleet sharing its backends through etcd: a real etcd on loopback (started and stopped by
//! PID by the test), several rondo instances reading it, `etcdctl` writing to it as an
//! operator would. Every wait is on state (the pools' membership, the stats), never on time.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::etcd::{Etcd, Relay, compacting_gateway};
use common::*;

/// Long enough for anything that should take milliseconds on a loaded machine; a deadline
/// against hangs, not a claim about speed.
const LIMIT: Duration = Duration::from_secs(15);

/// The key of backend `id` of upstream `app` under the default prefix.
fn key(id: &str) -> String {
    format!("/rondo/upstreams/app/backends/{id}")
}

/// A member's JSON value.
fn value(backend: &Backend, weight: f64) -> String {
    format!(r#"{{"address": "{}", "weight": {weight}}}"#, backend.addr())
}

/// A rondo instance whose upstream `app` reads etcd at `url`, with `fallback` as its file's
/// backends (none if empty).
fn instance(url: &str, fallback: &[&Backend]) -> Proxy {
    start_text(&instance_text(url, fallback))
}

/// The configuration of [`instance`].
fn instance_text(url: &str, fallback: &[&Backend]) -> String {
    let backends: Vec<String> = fallback
        .iter()
        .map(|b| format!("{{ address = \"{}\", id = \"{}\" }}", b.addr(), b.name()))
        .collect();
    format!(
        r#"workers = 1
[[listeners]]
name = "web"
bind = "127.0.0.1:0"
upstream = "app"

[[upstreams]]
name = "app"
discovery = "etcd"
backends = [{}]
[upstreams.health_check]
enabled = false

[discovery.etcd]
endpoints = ["{url}"]
"#,
        backends.join(", ")
    )
}

/// The backends in an instance's pool: id → (weight, state).
fn members(p: &Proxy) -> BTreeMap<String, (f64, String)> {
    let snap = p.upstream("app").unwrap().pool().snapshot();
    snap.backends()
        .iter()
        .map(|b| {
            let state = b.state().as_str().to_owned();
            (b.id().to_owned(), (b.weight().as_f64(), state))
        })
        .collect()
}

/// Sends `n` requests through an instance; how many each backend answered.
async fn spread(p: &Proxy, n: usize) -> BTreeMap<String, usize> {
    let mut client = Client::connect(web(p)).await;
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let reply = client.get("/").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        *seen.entry(reply.backend()).or_default() += 1;
    }
    seen
}

/// Sends `n` requests through each instance and checks how many each backend answered.
async fn assert_shares(fleet: &[Proxy], n: usize, expected: &[(&str, usize)]) {
    let expected: BTreeMap<String, usize> = expected
        .iter()
        .map(|(id, k)| (id.to_string(), *k))
        .collect();
    for (i, p) in fleet.iter().enumerate() {
        assert_eq!(spread(p, n).await, expected, "instance {i}");
    }
}

/// The instance's `GET /api/v1/stats`.
async fn stats(p: &Proxy) -> serde_json::Value {
    let reply = get(p.admin_addr(), "/api/v1/stats").await;
    serde_json::from_slice(&reply.body).unwrap()
}

/// Waits until every instance's pool satisfies `cond`.
async fn everywhere(
    fleet: &[Proxy],
    what: &str,
    cond: impl Fn(&BTreeMap<String, (f64, String)>) -> bool,
) {
    for (i, p) in fleet.iter().enumerate() {
        eventually(LIMIT, &format!("instance {i}: {what}"), || {
            cond(&members(p))
        })
        .await;
    }
}

/// Sends an admin API request to an instance; its status and JSON body.
async fn admin(p: &Proxy, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut client = Client::connect(p.admin_addr()).await;
    let reply = client.send(method, path, body.as_bytes()).await.unwrap();
    (
        reply.status,
        serde_json::from_slice(&reply.body).unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_put_in_etcd_gets_traffic_from_every_instance_and_a_delete_drains_it_everywhere()
{
    let etcd = Etcd::start();
    let [a, b] = [mock("a").await, mock("b").await];
    etcd.put(&key("a"), &value(&a, 1.0));
    let fleet: Vec<Proxy> = (0..3).map(|_| instance(&etcd.url(), &[])).collect();
    everywhere(&fleet, "a read from etcd", |m| m.contains_key("a")).await;

    etcd.put(&key("b"), &value(&b, 1.0));
    everywhere(&fleet, "b added", |m| m.contains_key("b")).await;
    assert_shares(&fleet, 4, &[("a", 2), ("b", 2)]).await;

    etcd.del(&key("b"));
    everywhere(&fleet, "b removed", |m| !m.contains_key("b")).await;
    assert_shares(&fleet, 4, &[("a", 4)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_and_drains_written_in_etcd_set_every_instance_s_shares_exactly() {
    let etcd = Etcd::start();
    let [a, b] = [mock("a").await, mock("b").await];
    etcd.put(&key("a"), &value(&a, 1.0));
    etcd.put(&key("b"), &value(&b, 3.0));
    let fleet: Vec<Proxy> = (0..2).map(|_| instance(&etcd.url(), &[])).collect();
    everywhere(&fleet, "a and b at 1:3", |m| {
        m.get("b").is_some_and(|b| b.0 == 3.0)
    })
    .await;
    // Two whole cycles of the 1:3 schedule, from wherever the rotation stands.
    assert_shares(&fleet, 8, &[("a", 2), ("b", 6)]).await;

    etcd.put(&key("b"), &value(&b, 1.5));
    everywhere(&fleet, "b at 1.5", |m| {
        m.get("b").is_some_and(|b| b.0 == 1.5)
    })
    .await;
    assert_shares(&fleet, 10, &[("a", 4), ("b", 6)]).await;

    etcd.put(
        &key("a"),
        &format!(r#"{{"address": "{}", "drain": true}}"#, a.addr()),
    );
    everywhere(&fleet, "a draining", |m| m["a"].1 == "draining").await;
    assert_shares(&fleet, 4, &[("b", 4)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_value_is_refused_with_its_key_and_the_rest_applies() {
    let etcd = Etcd::start();
    let [a, b] = [mock("a").await, mock("b").await];
    etcd.put(&key("a"), &value(&a, 1.0));
    let p = instance(&etcd.url(), &[]);
    everywhere(std::slice::from_ref(&p), "a read", |m| m.contains_key("a")).await;

    // A typo in a field, then a good value for another backend.
    etcd.put(
        &key("a"),
        &format!(r#"{{"address": "{}", "wieght": 5}}"#, a.addr()),
    );
    etcd.put(&key("b"), &value(&b, 1.0));
    everywhere(std::slice::from_ref(&p), "b added", |m| m.contains_key("b")).await;
    let s = stats(&p).await;
    let refused = &s["etcd"]["refused"];
    assert_eq!(refused[0]["key"], key("a"), "{s}");
    assert!(
        refused[0]["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `wieght`"),
        "{s}"
    );
    // `a` keeps its last good value.
    assert_eq!(
        spread(&p, 4).await,
        BTreeMap::from([("a".into(), 2), ("b".into(), 2)])
    );

    etcd.put(&key("a"), &value(&a, 1.0));
    eventually_async(LIMIT, "the refusal cleared", || async {
        stats(&p).await["etcd"]["refused"]
            .as_array()
            .is_some_and(Vec::is_empty)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_backends_serve_until_etcd_is_first_read() {
    let mut etcd = Etcd::start();
    let [fallback, a] = [mock("fallback").await, mock("a").await];
    etcd.put(&key("a"), &value(&a, 1.0));
    etcd.stop();
    let p = instance(&etcd.url(), &[&fallback]);
    eventually_async(LIMIT, "stale before the first read", || async {
        stats(&p).await["etcd"]["state"] == "stale"
    })
    .await;
    assert_eq!(
        spread(&p, 2).await,
        BTreeMap::from([("fallback".into(), 2)])
    );

    etcd.restart();
    everywhere(
        std::slice::from_ref(&p),
        "etcd's backends replace the file's",
        |m| m.keys().eq(["a"]),
    )
    .await;
    assert_eq!(spread(&p, 2).await, BTreeMap::from([("a".into(), 2)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_down_traffic_continues_and_changes_made_meanwhile_apply_on_return() {
    let mut etcd = Etcd::start();
    let [a, b, c] = [mock("a").await, mock("b").await, mock("c").await];
    etcd.put(&key("a"), &value(&a, 1.0));
    etcd.put(&key("b"), &value(&b, 1.0));
    // One instance reaches etcd directly, the other through a relay a test can cut.
    let relay = Relay::start(etcd.addr()).await;
    let fleet = [instance(&etcd.url(), &[]), instance(&relay.url(), &[])];
    everywhere(&fleet, "a and b read", |m| m.len() == 2).await;

    // etcd stops: both keep serving the last known backends, and say since when.
    etcd.stop();
    for p in &fleet {
        eventually_async(LIMIT, "stale", || async {
            stats(p).await["etcd"]["state"] == "stale"
        })
        .await;
        let s = stats(p).await;
        assert!(s["etcd"]["stale_since_ms"].as_u64().is_some(), "{s}");
        assert_eq!(
            spread(p, 4).await,
            BTreeMap::from([("a".into(), 2), ("b".into(), 2)])
        );
    }
    let scrape = get(fleet[0].admin_addr(), "/metrics").await.text();
    assert!(scrape.contains("rondo_etcd_synced 0"), "{scrape}");
    let names = prometheus::assert_names_follow_the_conventions(&scrape);
    for family in [
        "rondo_etcd_synced",
        "rondo_etcd_stale_since_timestamp_seconds",
        "rondo_etcd_revision",
        "rondo_etcd_failures_total",
    ] {
        assert!(names.contains(family), "{family} checked: {names:?}");
    }
    // An admin change cannot be shared now: refused, and nothing changes locally.
    let (status, answer) = admin(
        &fleet[0],
        "PATCH",
        "/api/v1/upstreams/app/backends/a",
        r#"{"weight": 5}"#,
    )
    .await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("cannot reach etcd"),
        "{answer}"
    );
    assert_eq!(members(&fleet[0])["a"].0, 1.0);

    etcd.restart();
    for p in &fleet {
        eventually_async(LIMIT, "synced again", || async {
            stats(p).await["etcd"]["state"] == "synced"
        })
        .await;
    }

    // A partition: the relayed instance cannot see etcd while its backends change.
    relay.cut();
    eventually_async(LIMIT, "the partitioned instance is stale", || async {
        stats(&fleet[1]).await["etcd"]["state"] == "stale"
    })
    .await;
    etcd.del(&key("a"));
    etcd.put(&key("c"), &value(&c, 1.0));
    everywhere(&fleet[..1], "the connected instance follows", |m| {
        m.keys().eq(["b", "c"])
    })
    .await;
    assert_eq!(
        spread(&fleet[1], 4).await,
        BTreeMap::from([("a".into(), 2), ("b".into(), 2)])
    );

    relay.heal();
    everywhere(&fleet[1..], "the change made meanwhile applies", |m| {
        m.keys().eq(["b", "c"])
    })
    .await;
    assert_eq!(
        spread(&fleet[1], 4).await,
        BTreeMap::from([("b".into(), 2), ("c".into(), 2)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_change_on_one_instance_shows_up_on_the_others() {
    let etcd = Etcd::start();
    let [a, b] = [mock("a").await, mock("b").await];
    etcd.put(&key("a"), &value(&a, 1.0));
    let fleet: Vec<Proxy> = (0..3).map(|_| instance(&etcd.url(), &[])).collect();
    everywhere(&fleet, "a read", |m| m.contains_key("a")).await;

    let body = format!(r#"{{"address": "{}", "id": "b", "weight": 2}}"#, b.addr());
    let (status, answer) = admin(&fleet[0], "POST", "/api/v1/upstreams/app/backends", &body).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["written_to"], "etcd");
    let stored: serde_json::Value = serde_json::from_str(&etcd.get(&key("b"))).unwrap();
    assert_eq!(stored["weight"], 2.0);
    // The answer comes once the instance that took the change has applied it.
    assert!(members(&fleet[0]).contains_key("b"));
    everywhere(&fleet, "b added", |m| {
        m.get("b").is_some_and(|b| b.0 == 2.0)
    })
    .await;
    // Every instance, the one asked included, applied it from etcd.
    for p in &fleet {
        let events: serde_json::Value =
            serde_json::from_slice(&get(p.admin_addr(), "/api/v1/events").await.body).unwrap();
        let added = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["backend"] == "b");
        assert_eq!(
            added.map(|e| &e["by"]),
            Some(&serde_json::json!("etcd")),
            "{events}"
        );
    }

    let (status, _) = admin(
        &fleet[1],
        "PATCH",
        "/api/v1/upstreams/app/backends/b",
        r#"{"weight": 3}"#,
    )
    .await;
    assert_eq!(status, 200);
    everywhere(&fleet, "b at weight 3", |m| m["b"].0 == 3.0).await;

    let (status, _) = admin(
        &fleet[2],
        "POST",
        "/api/v1/upstreams/app/backends/a/drain",
        "",
    )
    .await;
    assert_eq!(status, 200);
    everywhere(&fleet, "a draining", |m| m["a"].1 == "draining").await;
    let (status, _) = admin(
        &fleet[0],
        "POST",
        "/api/v1/upstreams/app/backends/a/enable",
        "",
    )
    .await;
    assert_eq!(status, 200);
    everywhere(&fleet, "a enabled", |m| m["a"].1 == "up").await;

    let (status, _) = admin(&fleet[1], "DELETE", "/api/v1/upstreams/app/backends/b", "").await;
    assert_eq!(status, 200);
    everywhere(&fleet, "b removed", |m| !m.contains_key("b")).await;
    assert_eq!(etcd.etcdctl(&["get", &key("b")]).unwrap(), "");

    // Errors: an unknown backend, an existing id.
    let (status, _) = admin(&fleet[0], "DELETE", "/api/v1/upstreams/app/backends/zz", "").await;
    assert_eq!(status, 404);
    let body = format!(r#"{{"address": "{}", "id": "a"}}"#, a.addr());
    let (status, _) = admin(&fleet[0], "POST", "/api/v1/upstreams/app/backends", &body).await;
    assert_eq!(status, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_says_etcd_is_stale_and_why_a_name_gives_no_backend() {
    let mut etcd = Etcd::start();
    let a = mock("a").await;
    etcd.put(&key("a"), &value(&a, 1.0));
    etcd.put(&key("bad"), "{\"address\": \"nowhere\"}");
    // A second upstream named by DNS through a name server that is not there (a port just
    // released: queries are refused at once).
    let gone = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = format!(
        "{}\n[[upstreams]]\nname = \"named\"\nbackends = [{{ address = \"app.invalid.test:80\" }}]\n\
         [resolver]\nnameservers = [\"{gone}\"]\n",
        instance_text(&etcd.url(), &[])
    );
    let p = start_text(&text);
    everywhere(std::slice::from_ref(&p), "a read", |m| m.contains_key("a")).await;
    etcd.stop();

    let driver = browser::chromedriver();
    let session = browser::session(&driver).await;
    let page = format!("http://{}/", p.admin_addr());
    let browser = session.clone();
    let result = async move {
        browser.goto(&page).await.unwrap();
        eventually_async(LIMIT, "the page says stale since", || async {
            let line = browser::text(&browser, "#discovery[data-state='stale']").await;
            line.starts_with("discovery: stale since") && line.contains("cannot reach etcd")
        })
        .await;
        let refused =
            browser::text(&browser, "[data-key='/rondo/upstreams/app/backends/bad']").await;
        assert!(refused.contains("invalid socket address"), "{refused}");
        eventually_async(
            LIMIT,
            "the page says why the name gives no backend",
            || async {
                browser::text(&browser, "[data-name='named/app.invalid.test:80']")
                    .await
                    .contains("never resolved")
            },
        )
        .await;
    };
    let outcome = browser::catch(result).await;
    let _ = session.close().await;
    drop(driver);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_whose_revision_was_compacted_reads_the_prefix_again_at_once() {
    let [a, b] = [mock("a").await, mock("b").await];
    let (gateway, reads) = compacting_gateway(&key("a"), a.addr(), &key("b"), b.addr()).await;
    let p = instance(&format!("http://{gateway}"), &[]);
    everywhere(
        std::slice::from_ref(&p),
        "a and b after the second read",
        |m| m.keys().eq(["a", "b"]),
    )
    .await;
    assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 2);
    let s = stats(&p).await;
    // Compaction is not an outage: no failure counted, never stale.
    assert_eq!(s["etcd"]["state"], "synced", "{s}");
    assert_eq!(s["etcd"]["failures"], 0, "{s}");
    assert_eq!(s["etcd"]["revision"], 8, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_etcd_discovery_on_and_off_and_refuses_a_new_cluster() {
    let etcd = Etcd::start();
    let [file, a] = [mock("file").await, mock("a").await];
    etcd.put(&key("a"), &value(&a, 1.0));
    let with = instance_text(&etcd.url(), &[&file]);
    let without = with.replace("discovery = \"etcd\"\n", "");
    // As `start_text` does: the admin API on a free port, so a reload leaves it there.
    let parse = |text: &str| {
        let mut config = rondo::config::parse(text, "test.toml").unwrap();
        config.admin.listen = "127.0.0.1:0".parse().unwrap();
        config
    };
    let p = start_text(&without);
    assert_eq!(spread(&p, 2).await, BTreeMap::from([("file".into(), 2)]));

    let done = p.reload(&parse(&with));
    assert!(done.refused.is_empty(), "{done:?}");
    everywhere(std::slice::from_ref(&p), "etcd's backends", |m| {
        m.keys().eq(["a"])
    })
    .await;

    let done = p.reload(&parse(&without));
    assert!(done.refused.is_empty(), "{done:?}");
    assert_eq!(members(&p).keys().collect::<Vec<_>>(), ["file"]);

    let elsewhere = with.replace(&etcd.url(), "http://127.0.0.1:1");
    let done = p.reload(&parse(&elsewhere));
    assert!(
        done.refused
            .iter()
            .any(|r| r.contains("changing `[discovery.etcd]` needs a restart")),
        "{done:?}"
    );
}
