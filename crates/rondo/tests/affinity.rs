//! Affinity through the real proxy: `consistent-hash` keeps a key on one backend, a reload
//! that removes a backend moves only (almost only) that backend's keys, bounded load caps a
//! hot key's backend, and a sticky cookie keeps a client on its backend until that backend
//! stops, when the request still succeeds elsewhere and the cookie is rewritten.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use tokio::net::TcpStream;

use common::{MockBackend, Section, UpstreamBuilder, app, proxy_config, start, web};

/// A keep-alive client that sends extra headers.
struct Client(SendRequest<Full<Bytes>>);

/// What a test looks at in a response.
struct Answer {
    status: u16,
    backend: String,
    set_cookie: Option<String>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        let io = hyper_util::rt::TokioIo::new(stream);
        let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        Client(sender)
    }

    async fn get(&mut self, headers: &[(&str, &str)]) -> Answer {
        let mut req = Request::builder().uri("/").header("host", "test.local");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        self.0.ready().await.unwrap();
        let res = self
            .0
            .send_request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        let header = |name: &str| {
            res.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let answer = Answer {
            status: res.status().as_u16(),
            backend: header("x-backend").unwrap_or_default(),
            set_cookie: header("set-cookie"),
        };
        res.into_body().collect().await.unwrap();
        answer
    }
}

async fn backends(n: usize) -> Vec<MockBackend> {
    let mut all = Vec::new();
    for i in 0..n {
        all.push(common::mock(&format!("b{i}")).await);
    }
    all
}

fn weighted(all: &[MockBackend]) -> Vec<(&MockBackend, f64)> {
    all.iter().map(|b| (b, 1.0)).collect()
}

/// Upstream `app` over `backends`, each request placed by `consistent-hash` on header `x-user`.
fn by_user(backends: &[(&MockBackend, f64)]) -> UpstreamBuilder {
    app(backends)
        .algorithm("consistent-hash")
        .set("hash_key", "header:x-user")
}

/// The backend each of `users` users lands on (one request each).
async fn owners(addr: SocketAddr, users: usize) -> Vec<String> {
    let mut client = Client::connect(addr).await;
    let mut out = Vec::new();
    for u in 0..users {
        let user = format!("user-{u}");
        let a = client.get(&[("x-user", &user)]).await;
        assert_eq!(a.status, 200);
        out.push(a.backend);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_x_user_always_lands_on_the_same_backend_across_1000_requests() {
    let all = backends(5).await;
    let running = start(&proxy_config(by_user(&weighted(&all))));
    let addr = web(&running);
    let mut client = Client::connect(addr).await;
    let mut seen: HashMap<String, HashSet<String>> = HashMap::new();
    for i in 0..1000 {
        let user = format!("user-{}", i % 50);
        let a = client.get(&[("x-user", &user)]).await;
        assert_eq!(a.status, 200);
        assert!(a.set_cookie.is_none(), "no sticky cookie unless configured");
        seen.entry(user).or_default().insert(a.backend);
    }
    assert!(seen.values().all(|b| b.len() == 1), "{seen:?}");
    let used: HashSet<&String> = seen.values().flatten().collect();
    assert!(
        used.len() >= 4,
        "50 users spread over the backends: {used:?}"
    );
    // Another connection, and the proxy's other worker: the same answers.
    let again = owners(addr, 50).await;
    for (u, b) in again.iter().enumerate() {
        assert!(seen[&format!("user-{u}")].contains(b));
    }
    // No key: the round-robin cycle.
    let mut spread: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..10 {
        *spread.entry(client.get(&[]).await.backend).or_default() += 1;
    }
    assert_eq!(spread.values().copied().collect::<Vec<_>>(), [2; 5]);
    let upstream = running.upstream("app").unwrap();
    let recorder = upstream.recorder();
    assert_eq!(
        recorder.unkeyed_requests(),
        10,
        "requests without the key are counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_one_of_five_backends_by_reload_moves_only_its_keys() {
    let all = backends(5).await;
    let running = start(&proxy_config(by_user(&weighted(&all))));
    let addr = web(&running);
    let users = 1000;
    let before = owners(addr, users).await;
    let gone = &all[2];
    let kept: Vec<(&MockBackend, f64)> = weighted(&all)
        .into_iter()
        .filter(|(b, _)| b.name() != gone.name())
        .collect();
    let next = common::parse(&proxy_config(by_user(&kept)));
    let done = running.reload(&next);
    assert!(done.refused.is_empty(), "{:?}", done.refused);
    let after = owners(addr, users).await;
    let on_gone = before.iter().filter(|b| **b == gone.name()).count();
    let others_moved = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| **b != gone.name() && b != a)
        .count();
    eprintln!(
        "measured: {on_gone} of {users} keys were on the removed backend and moved; \
         {others_moved} keys of the other backends moved"
    );
    assert!(after.iter().all(|a| *a != gone.name()));
    assert!((100..=300).contains(&on_gone), "about a fifth: {on_gone}");
    // Maglev moves about 0.1% of the other keys at five backends (docs/balance.md).
    assert!(
        others_moved <= users / 100,
        "{others_moved} other keys moved"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_backend_moves_only_its_keys_and_no_request_fails() {
    let all = backends(5).await;
    let running = start(&proxy_config(by_user(&weighted(&all))));
    let addr = web(&running);
    let before = owners(addr, 300).await;
    let stopped = all.iter().find(|b| b.name() == before[0]).unwrap();
    stopped.kill().await;
    let after = owners(addr, 300).await;
    for (b, a) in before.iter().zip(&after) {
        if *b == stopped.name() {
            assert_ne!(*a, stopped.name());
        } else {
            assert_eq!(a, b, "a key of a live backend stayed put");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_load_caps_a_hot_keys_backend() {
    // One worker, so picks are serialised and the cap is exact; every backend holds each
    // request long enough for all 40 to be in flight, also on a loaded machine.
    let all = backends(4).await;
    for b in &all {
        b.set_delay(Duration::from_secs(2));
    }
    let upstream = by_user(&weighted(&all)).set("hash_balance_factor", 1.25);
    let running = start(&proxy_config(upstream).set("workers", 1));
    let addr = web(&running);
    let requests = (0..40).map(|_| {
        tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            c.get(&[("x-user", "hot")]).await
        })
    });
    let mut hits: BTreeMap<String, usize> = BTreeMap::new();
    for r in requests.collect::<Vec<_>>() {
        let a = r.await.unwrap();
        assert_eq!(a.status, 200);
        *hits.entry(a.backend).or_default() += 1;
    }
    // ceil(1.25 × 40 / 4) = 13: no backend holds more, so the hot key spilled over.
    assert!(hits.values().all(|&h| h <= 13), "{hits:?}");
    assert!(hits.len() >= 3, "{hits:?}");
}

/// The cookie pair (`name=value`) of a `Set-Cookie` value.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_client_keeps_its_backend_and_moves_with_a_rewritten_cookie_when_it_stops() {
    let all = backends(3).await;
    let sticky = Section::new()
        .set("cookie", "rondo_srv")
        .set("ttl", "1h")
        .set("http_only", true);
    let running = start(&proxy_config(app(&weighted(&all)).set("sticky", sticky)));
    let addr = web(&running);
    let mut client = Client::connect(addr).await;
    let first = client.get(&[]).await;
    let set = first
        .set_cookie
        .expect("the first response sets the cookie");
    assert!(set.starts_with("rondo_srv="), "{set}");
    assert!(
        set.contains("Max-Age=3600") && set.contains("HttpOnly"),
        "{set}"
    );
    let home = all.iter().find(|b| b.name() == first.backend).unwrap();
    assert!(
        !set.contains(&home.addr().port().to_string()),
        "the cookie does not name the address: {set}"
    );
    let cookie = pair(&set);
    for _ in 0..20 {
        let a = client.get(&[("cookie", &cookie)]).await;
        assert_eq!(a.backend, home.name(), "the sticky client stays");
        assert_eq!(a.set_cookie, None, "a valid cookie is not rewritten");
    }

    home.kill().await;
    let moved = client.get(&[("cookie", &cookie)]).await;
    assert_eq!(moved.status, 200, "a stale cookie never fails a request");
    assert_ne!(moved.backend, home.name());
    let rewritten = pair(&moved.set_cookie.expect("the cookie is rewritten"));
    assert_ne!(rewritten, cookie);
    for _ in 0..10 {
        let a = client.get(&[("cookie", &rewritten)]).await;
        assert_eq!(
            (a.status, a.backend.as_str()),
            (200, moved.backend.as_str())
        );
    }
    // A forged or foreign cookie matches no backend: served, and given a real one.
    let forged = client
        .get(&[("cookie", "rondo_srv=0123456789abcdef")])
        .await;
    assert_eq!(forged.status, 200);
    assert!(forged.set_cookie.is_some());
}
