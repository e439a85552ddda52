//! One backend of four misbehaving under steady keep-alive load, over real sockets: it resets
//! the connection in the middle of a response body, stalls in the middle of one, or accepts
//! requests and never answers.
//!
//! What a client must see follows nginx and HAProxy: a response whose head has reached the
//! client cannot be retried (the client already holds a status), so when its body breaks the
//! proxy relays what had arrived and closes the connection — the client sees a truncated body,
//! never a second response glued to the first. A backend that never answers sent nothing, so
//! its GETs are retried elsewhere after `response_timeout` and the client gets a 200. Either
//! way the failure counts against the backend (here one failure ejects it), and the GETs after
//! that go to the other three without an error.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::load::{Load, Tally};
use common::{
    Fault, MockBackend, Section, app, backend_state, backends, eventually, proxy_config, start, web,
};
use rondo::lab::backend::BROKEN_BODY_SENT;

/// What one run saw: the clients' tally and the requests the faulty backend received after
/// its fault began.
struct Run {
    seen: Arc<Tally>,
    reached_faulty: usize,
}

/// Backends a, b, c and d answering after 2 ms, 16 clients; once every backend serves, d
/// misbehaves as `fault` says. Waits until d is out of rotation and then checks, over 20 more
/// GETs per client, that nothing reaches it and no client sees an error any more.
///
/// No health checks (d answers them, and a passing check ends an ejection), `fail_timeout` of
/// a minute so d stays ejected for the whole test, and a 2 s `response_timeout`, which is also
/// the limit between two reads of a response body: far above the healthy backends' 2 ms even on
/// a starved machine (at 500 ms, one run beside a parallel build timed out healthy backends
/// too, and with one failure ejecting, the pool emptied).
async fn one_of_four_misbehaves(fault: Fault) -> Run {
    let names = ["a", "b", "c", "d"];
    let bs = backends(&names).await;
    for b in &bs {
        b.set_delay(Duration::from_millis(2));
    }
    let list: Vec<(&MockBackend, f64)> = bs.iter().map(|b| (b, 1.0)).collect();
    let upstream = app(&list)
        .health_check(Section::disabled())
        .duration("fail_timeout", Duration::from_secs(60))
        .duration("response_timeout", Duration::from_secs(2));
    let proxy = start(&proxy_config(upstream));
    let load = Load::start(web(&proxy), 16);
    let seen = load.tally();
    seen.wait_all_serve(&names, 50).await;

    let faulty = &bs[3];
    let before = faulty.received();
    faulty.set_fault(fault);
    let ejected = eventually(Duration::from_secs(10), "d counted out of rotation", || {
        backend_state(&proxy, "app", "d").0 != balance::BackendState::Up
    })
    .await;
    println!("{fault:?}: d out of rotation {ejected:?} after the fault began");
    // Requests sent to d before it left rotation end; then none reaches it.
    seen.wait_each_does(2, "every client past the ejection")
        .await;
    let (reached, broken, failed) = (faulty.received(), seen.broken(), seen.failed());
    seen.wait_each_does(20, "20 more GETs per client").await;
    assert_eq!(
        faulty.received(),
        reached,
        "a GET reached d after it was out"
    );
    let seen = load.stop().await;
    assert_eq!(seen.broken().len(), broken.len(), "{:?}", seen.broken());
    assert_eq!(seen.failed().len(), failed.len(), "{:?}", seen.failed());
    assert_ne!(
        backend_state(&proxy, "app", "d").0,
        balance::BackendState::Up,
        "the fault counted against d"
    );
    proxy.shutdown(Duration::from_secs(1));
    Run {
        seen,
        reached_faulty: reached - before,
    }
}

/// The clients of `run` saw bodies cut exactly where d broke them, and nothing else failed.
fn assert_cut_where_the_backend_broke(run: &Run) {
    let broken = run.seen.broken();
    assert!(!broken.is_empty(), "some GETs were at d when it broke");
    assert!(broken.len() <= run.reached_faulty);
    for b in &broken {
        assert_eq!(
            (b.status, b.backend.as_str(), b.received),
            (200, "d", BROKEN_BODY_SENT),
            "the head and the bytes d sent, then the close"
        );
    }
    let failed = run.seen.failed();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_resetting_mid_body_truncates_only_its_responses_and_is_ejected() {
    let run = one_of_four_misbehaves(Fault::ResetMidBody).await;
    assert_cut_where_the_backend_broke(&run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_stalling_mid_body_is_cut_at_the_response_timeout_and_ejected() {
    let run = one_of_four_misbehaves(Fault::StallMidBody).await;
    assert_cut_where_the_backend_broke(&run);
}

/// A GET that hung at d is retried on another backend at `response_timeout`. The GETs in
/// flight at d time out together, a burst that can be larger than the retry budget (20 % of the requests in flight, at least 3); the first one takes d out
/// (`max_fails` 1), and a timeout that took its backend out while others serve is retried
/// without the budget. So every GET is answered 200, as by nginx and HAProxy, which retry
/// every timed-out GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_is_retried_around_and_ejected() {
    let run = one_of_four_misbehaves(Fault::Hang).await;
    assert!(run.reached_faulty > 0, "GETs reached d while it hung");
    let (failed, broken) = (run.seen.failed(), run.seen.broken());
    assert!(broken.is_empty(), "{:?}", broken.first());
    assert!(
        failed.is_empty(),
        "{} of the {} GETs that hung at d failed, first: {:?}",
        failed.len(),
        run.reached_faulty,
        failed.first()
    );
}
