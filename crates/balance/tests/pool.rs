//! How a pool keeps sick backends out and brings them back: breakers, health, ejection,
//! backups, panic mode, connection limits, slow start, drain, reload.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use balance::{
    Algorithm, Backend, BackendSpec, BackendState, BreakerState, EjectionConfig, Event, Health,
    Mode, Observer, Outcome, Pool, PoolConfig, SlowStartConfig, StartPosition, Timestamp, Weight,
};
use common::{count_picks, index, secs, specs};

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn fail_on(pool: &Pool, target: usize, times: usize, now: Timestamp) {
    let mut failed = 0;
    while failed < times {
        let lease = pool.pick(now, |_| true).expect("a backend");
        if index(&lease) == target {
            lease.finish(Outcome::TransportError, ms(1), now);
            failed += 1;
        } else {
            lease.finish(Outcome::Success, ms(1), now);
        }
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(String, Event)>>);

impl Observer for Recorder {
    fn on_event(&self, backend: &Backend, event: Event, _: Timestamp) {
        self.0
            .lock()
            .unwrap()
            .push((backend.id().to_owned(), event));
    }
}

#[test]
fn breaker_opens_after_consecutive_failures_and_recovers_through_one_probe() {
    let rec = Arc::new(Recorder::default());
    let pool = Pool::with_observer(
        PoolConfig::default(),
        &specs(&[1, 1, 1]),
        rec.clone(),
        secs(0),
    )
    .unwrap();
    fail_on(&pool, 1, 5, secs(1));
    let snap = pool.snapshot();
    assert_eq!(snap.backends()[1].breaker_state(), BreakerState::Open);
    assert_eq!(snap.backends()[1].state(), BackendState::BreakerOpen);
    assert_eq!(snap.next_deadline(), Some(secs(61)));
    assert_eq!(
        count_picks(&pool, 3, 10, secs(2)),
        vec![5, 0, 5],
        "no traffic while open"
    );

    assert_eq!(
        pool.refresh(secs(30)),
        Some(secs(61)),
        "still open before the recovery timeout"
    );
    pool.refresh(secs(61));
    assert_eq!(
        pool.snapshot().backends()[1].breaker_state(),
        BreakerState::HalfOpen
    );
    // Exactly one probe is admitted while it is out; the others go elsewhere.
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(pool.pick(secs(62), |_| true).unwrap());
    }
    let probes: Vec<_> = held.iter().filter(|l| l.is_probe()).collect();
    assert_eq!(probes.len(), 1);
    assert_eq!(index(probes[0]), 1);
    for lease in held {
        lease.finish(Outcome::Success, ms(1), secs(62));
    }
    assert_eq!(
        pool.snapshot().backends()[1].breaker_state(),
        BreakerState::Closed
    );
    assert_eq!(count_picks(&pool, 3, 9, secs(63)), vec![3, 3, 3]);
    let events: Vec<Event> = rec
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(id, _)| id == "b1")
        .map(|(_, e)| *e)
        .collect();
    assert_eq!(
        events,
        vec![
            Event::Breaker(BreakerState::Open),
            Event::Breaker(BreakerState::HalfOpen),
            Event::Breaker(BreakerState::Closed)
        ]
    );
}

#[test]
fn deferred_outcomes_count_like_finished_ones_once_judged() {
    let pool = Pool::new(PoolConfig::default(), &specs(&[1, 1]), secs(0)).unwrap();
    // Five calls to backend 1 end with their outcome deferred (a gRPC status comes in the
    // trailers); in flight no more at once, and judged failures open the breaker as five
    // failed finishes would.
    let mut deferred = Vec::new();
    while deferred.len() < 5 {
        let lease = pool.pick(secs(1), |_| true).expect("a backend");
        if index(&lease) == 1 {
            deferred.push(lease.defer(ms(3)));
            assert_eq!(pool.snapshot().backends()[1].in_flight(), 0);
        } else {
            lease.finish(Outcome::Success, ms(1), secs(1));
        }
    }
    let b1 = Arc::clone(&pool.snapshot().backends()[1]);
    assert_eq!(b1.stats().snapshot(secs(1)).failures, 0, "no outcome yet");
    assert_eq!(b1.breaker_state(), BreakerState::Closed);
    for d in deferred {
        pool.judge(d, Outcome::ServerError, secs(2));
    }
    assert_eq!(b1.breaker_state(), BreakerState::Open);
    let stats = b1.stats().snapshot(secs(2));
    assert_eq!((stats.successes, stats.failures), (0, 5));
    assert_eq!(
        stats.ewma,
        ms(3),
        "the latency measured when the lease ended"
    );
}

#[test]
fn a_deferred_probe_closes_the_breaker_when_judged_a_success_and_hands_its_slot_back_if_dropped() {
    let pool = Pool::new(PoolConfig::default(), &specs(&[1]), secs(0)).unwrap();
    fail_on(&pool, 0, 5, secs(1));
    assert_eq!(
        pool.snapshot().backends()[0].breaker_state(),
        BreakerState::Open
    );
    pool.refresh(secs(61));
    // The half-open breaker's one probe is deferred and dropped unjudged (the client went
    // away): the slot comes back, and the next probe may go.
    let probe = pool.pick(secs(61), |_| true).expect("the probe");
    assert!(probe.is_probe());
    drop(probe.defer(ms(1)));
    let probe = pool.pick(secs(61), |_| true).expect("the probe again");
    assert!(probe.is_probe());
    pool.judge(probe.defer(ms(1)), Outcome::Success, secs(62));
    assert_eq!(
        pool.snapshot().backends()[0].breaker_state(),
        BreakerState::Closed
    );
}

#[test]
fn a_failed_probe_reopens_the_breaker_for_another_pause() {
    let pool = Pool::new(PoolConfig::default(), &specs(&[1, 1]), secs(0)).unwrap();
    fail_on(&pool, 0, 5, secs(0));
    pool.refresh(secs(60));
    let probe = pool.pick(secs(60), |b| b.id() == "b0").unwrap();
    assert!(probe.is_probe());
    assert!(
        pool.pick(secs(60), |b| b.id() == "b0").is_none(),
        "one probe at a time"
    );
    probe.finish(Outcome::ServerError, ms(1), secs(61));
    assert_eq!(
        pool.snapshot().backends()[0].breaker_state(),
        BreakerState::Open
    );
    assert_eq!(pool.snapshot().next_deadline(), Some(secs(121)));
}

#[test]
fn a_cancelled_probe_hands_its_slot_back() {
    let pool = Pool::new(PoolConfig::default(), &specs(&[1]), secs(0)).unwrap();
    fail_on(&pool, 0, 5, secs(0));
    pool.refresh(secs(60));
    drop(pool.pick(secs(60), |_| true).unwrap());
    assert!(pool.pick(secs(60), |_| true).unwrap().is_probe());
}

#[test]
fn health_checks_take_a_backend_out_after_fall_and_back_after_rise() {
    let pool = Pool::new(PoolConfig::default(), &specs(&[1, 1]), secs(0)).unwrap();
    assert_eq!(pool.record_check("b0", false, secs(1)).unwrap(), None);
    assert_eq!(pool.record_check("b0", false, secs(2)).unwrap(), None);
    assert_eq!(
        pool.record_check("b0", false, secs(3)).unwrap(),
        Some(Health::Down)
    );
    assert_eq!(count_picks(&pool, 2, 4, secs(3)), vec![0, 4]);
    assert_eq!(pool.record_check("b0", true, secs(4)).unwrap(), None);
    assert_eq!(
        pool.record_check("b0", true, secs(5)).unwrap(),
        Some(Health::Up)
    );
    assert_eq!(count_picks(&pool, 2, 4, secs(5)), vec![2, 2]);
    assert!(pool.record_check("nope", true, secs(5)).is_err());
}

#[test]
fn a_backend_forced_up_takes_traffic_again_without_checks() {
    let pool = Pool::new(PoolConfig::default(), &specs(&[1, 1]), secs(0)).unwrap();
    for t in 1..=3 {
        pool.record_check("b0", false, secs(t)).unwrap();
    }
    assert_eq!(count_picks(&pool, 2, 4, secs(3)), vec![0, 4]);
    assert_eq!(
        pool.set_health("b0", Health::Up, secs(4)).unwrap(),
        Some(Health::Up)
    );
    assert_eq!(pool.set_health("b0", Health::Up, secs(4)).unwrap(), None);
    assert_eq!(count_picks(&pool, 2, 4, secs(4)), vec![2, 2]);
    assert!(pool.set_health("nope", Health::Up, secs(4)).is_err());
}

#[test]
fn backups_serve_only_when_no_primary_is_available() {
    let mut s = specs(&[1, 1, 1]);
    s[2] = s[2].clone().backup();
    let pool = Pool::new(PoolConfig::default(), &s, secs(0)).unwrap();
    assert_eq!(count_picks(&pool, 3, 4, secs(0)), vec![2, 2, 0]);
    pool.drain("b0", secs(0)).unwrap();
    assert_eq!(count_picks(&pool, 3, 4, secs(0)), vec![0, 4, 0]);
    pool.drain("b1", secs(0)).unwrap();
    assert_eq!(pool.snapshot().mode(), Mode::Backup);
    assert_eq!(count_picks(&pool, 3, 4, secs(0)), vec![0, 0, 4]);
    pool.enable("b1", secs(0)).unwrap();
    assert_eq!(count_picks(&pool, 3, 4, secs(0)), vec![0, 4, 0]);
}

#[test]
fn below_the_panic_threshold_traffic_spreads_over_every_primary() {
    let config = PoolConfig {
        panic_threshold: 50,
        ..PoolConfig::default()
    };
    let pool = Pool::new(config, &specs(&[1, 1, 1, 1]), secs(0)).unwrap();
    for id in ["b0", "b1"] {
        for t in 0..3 {
            pool.record_check(id, false, secs(t)).unwrap();
        }
    }
    assert_eq!(
        pool.snapshot().mode(),
        Mode::Primary,
        "2 of 4 healthy is not below 50%"
    );
    assert_eq!(count_picks(&pool, 4, 4, secs(5)), vec![0, 0, 2, 2]);
    for t in 0..3 {
        pool.record_check("b2", false, secs(t)).unwrap();
    }
    assert_eq!(pool.snapshot().mode(), Mode::Panic);
    assert_eq!(count_picks(&pool, 4, 8, secs(5)), vec![2, 2, 2, 2]);
}

#[test]
fn nothing_available_means_no_pick_and_an_empty_mode() {
    let pool = Pool::new(PoolConfig::default(), &specs(&[1, 1]), secs(0)).unwrap();
    pool.drain("b0", secs(0)).unwrap();
    pool.drain("b1", secs(0)).unwrap();
    assert_eq!(pool.snapshot().mode(), Mode::Empty);
    assert!(pool.pick(secs(0), |_| true).is_none());
    let empty = Pool::new(PoolConfig::default(), &[], secs(0)).unwrap();
    assert!(empty.pick(secs(0), |_| true).is_none());
}

#[test]
fn a_backend_at_its_connection_limit_is_skipped_without_doubling_a_neighbour() {
    let mut s = specs(&[1, 1, 1]);
    s[0] = s[0].clone().max_connections(NonZeroU32::new(1).unwrap());
    let pool = Pool::new(PoolConfig::default(), &s, secs(0)).unwrap();
    let held = pool.pick(secs(0), |_| true).unwrap();
    assert_eq!(index(&held), 0);
    // b0 is full: the others alternate, neither gets b0's slots in a row.
    let order: Vec<usize> = (0..6)
        .map(|_| index(&pool.pick(secs(0), |_| true).unwrap()))
        .collect();
    assert_eq!(order, vec![1, 2, 1, 2, 1, 2]);
    drop(held);
    assert_eq!(count_picks(&pool, 3, 3, secs(0)), vec![1, 1, 1]);
}

#[test]
fn max_fails_within_fail_timeout_ejects_until_it_expires_or_a_check_passes() {
    let ejection = EjectionConfig {
        max_fails: NonZeroU32::new(2).unwrap(),
        fail_timeout: Duration::from_secs(10),
        count_server_errors: false,
    };
    let config = PoolConfig {
        ejection: Some(ejection),
        breaker: None,
        ..PoolConfig::default()
    };
    let pool = Pool::new(config, &specs(&[1, 1]), secs(0)).unwrap();
    fail_on(&pool, 0, 2, secs(1));
    assert_eq!(pool.snapshot().backends()[0].state(), BackendState::Ejected);
    assert_eq!(count_picks(&pool, 2, 4, secs(2)), vec![0, 4]);
    assert_eq!(pool.refresh(secs(5)), Some(secs(11)));
    pool.refresh(secs(11));
    assert_eq!(count_picks(&pool, 2, 4, secs(11)), vec![2, 2]);
    fail_on(&pool, 0, 2, secs(12));
    assert!(pool.snapshot().backends()[0].is_ejected());
    pool.record_check("b0", true, secs(13)).unwrap();
    assert!(
        !pool.snapshot().backends()[0].is_ejected(),
        "a passing check reinstates it"
    );
}

#[test]
fn a_check_passing_after_a_failed_one_half_opens_an_open_breaker_and_a_failing_probe_reopens_it() {
    let rec = Arc::new(Recorder::default());
    let pool =
        Pool::with_observer(PoolConfig::default(), &specs(&[1, 1]), rec.clone(), secs(0)).unwrap();
    fail_on(&pool, 0, 5, secs(1));
    assert_eq!(
        pool.snapshot().backends()[0].breaker_state(),
        BreakerState::Open
    );
    // Checks that pass while real traffic failed say nothing new: the breaker stays open.
    pool.record_check("b0", true, secs(2)).unwrap();
    assert_eq!(
        pool.snapshot().backends()[0].breaker_state(),
        BreakerState::Open
    );
    // The recovery timeout (60 s) is far away; a failing check changes nothing by itself.
    pool.record_check("b0", false, secs(2)).unwrap();
    assert_eq!(
        pool.snapshot().backends()[0].breaker_state(),
        BreakerState::Open
    );
    assert_eq!(count_picks(&pool, 2, 4, secs(2)), vec![0, 4]);
    // A passing check (health stays up) lets probes through at once.
    pool.record_check("b0", true, secs(3)).unwrap();
    assert_eq!(
        pool.snapshot().backends()[0].breaker_state(),
        BreakerState::HalfOpen
    );
    assert!(
        rec.0
            .lock()
            .unwrap()
            .contains(&("b0".to_owned(), Event::Breaker(BreakerState::HalfOpen)))
    );
    // Real traffic still decides: the probe fails and the breaker opens again.
    let probe = pool.pick(secs(3), |b| b.id() == "b0").expect("a probe");
    assert!(probe.is_probe());
    probe.finish(Outcome::TransportError, ms(1), secs(3));
    assert_eq!(
        pool.snapshot().backends()[0].breaker_state(),
        BreakerState::Open
    );
    // Seen down and back again: a passing probe closes it.
    pool.record_check("b0", false, secs(4)).unwrap();
    pool.record_check("b0", true, secs(4)).unwrap();
    let probe = pool.pick(secs(4), |b| b.id() == "b0").expect("a probe");
    probe.finish(Outcome::Success, ms(1), secs(4));
    assert_eq!(
        pool.snapshot().backends()[0].breaker_state(),
        BreakerState::Closed
    );
}

#[test]
fn a_passing_check_does_not_half_open_the_breaker_of_a_backend_marked_down() {
    let pool = Pool::new(PoolConfig::default(), &specs(&[1, 1]), secs(0)).unwrap();
    fail_on(&pool, 0, 5, secs(1));
    for t in 2..5 {
        pool.record_check("b0", false, secs(t)).unwrap();
    }
    assert_eq!(pool.snapshot().backends()[0].health(), Health::Down);
    // One pass of `rise = 2`: still down, breaker untouched.
    pool.record_check("b0", true, secs(5)).unwrap();
    assert_eq!(
        pool.snapshot().backends()[0].breaker_state(),
        BreakerState::Open
    );
    // The second pass brings it up, and with it the breaker to half-open.
    pool.record_check("b0", true, secs(6)).unwrap();
    assert_eq!(pool.snapshot().backends()[0].health(), Health::Up);
    assert_eq!(
        pool.snapshot().backends()[0].breaker_state(),
        BreakerState::HalfOpen
    );
}

#[test]
fn slow_start_ramps_a_recovered_backend_from_ten_percent() {
    let config = PoolConfig {
        slow_start: Some(SlowStartConfig::new(Duration::from_secs(10))),
        ..PoolConfig::default()
    };
    let pool = Pool::new(config, &specs(&[1, 1]), secs(0)).unwrap();
    assert_eq!(
        pool.snapshot().effective_weight(0),
        Some(Weight::new(0.1).unwrap()),
        "a new pool ramps too"
    );
    for t in 0..3 {
        pool.record_check("b0", false, secs(t)).unwrap();
    }
    pool.record_check("b0", true, secs(100)).unwrap();
    pool.record_check("b0", true, secs(100)).unwrap();
    assert_eq!(
        pool.snapshot().effective_weight(0),
        Some(Weight::new(0.1).unwrap())
    );
    assert_eq!(count_picks(&pool, 2, 11, secs(100)), vec![1, 10]);
    assert_eq!(pool.refresh(secs(105)), Some(secs(106)));
    assert_eq!(
        pool.snapshot().effective_weight(0),
        Some(Weight::new(0.5).unwrap())
    );
    assert_eq!(pool.refresh(secs(110)), None);
    assert_eq!(pool.snapshot().effective_weight(0), Some(Weight::ONE));
}

fn ramp_weights(pool: &Pool) -> Vec<Option<Weight>> {
    let snap = pool.snapshot();
    (0..snap.backends().len())
        .map(|i| snap.effective_weight(i))
        .collect()
}

fn w(v: f64) -> Option<Weight> {
    Some(Weight::new(v).unwrap())
}

#[test]
fn slow_start_ramps_every_backend_of_a_new_pool_from_the_pools_start() {
    let config = PoolConfig {
        slow_start: Some(SlowStartConfig::new(Duration::from_secs(10))),
        ..PoolConfig::default()
    };
    let pool = Pool::new(config, &specs(&[1, 3]), secs(0)).unwrap();
    assert_eq!(ramp_weights(&pool), [w(0.1), w(0.3)]);
    assert_eq!(pool.snapshot().next_deadline(), Some(secs(1)));
    // Equal ages keep the configured ratio all along: 1 : 3.
    assert_eq!(count_picks(&pool, 2, 8, secs(0)), vec![2, 6]);
    assert_eq!(pool.refresh(secs(5)), Some(secs(6)));
    assert_eq!(ramp_weights(&pool), [w(0.5), w(1.5)]);
    assert_eq!(
        pool.refresh(secs(10)),
        None,
        "the ramp ends on time, not early"
    );
    assert_eq!(ramp_weights(&pool), [w(1.0), w(3.0)]);
}

#[test]
fn a_backend_joining_mid_ramp_ramps_from_its_own_start_next_to_the_others() {
    let config = PoolConfig {
        slow_start: Some(SlowStartConfig::new(Duration::from_secs(10))),
        ..PoolConfig::default()
    };
    let all = specs(&[1, 1, 1]);
    let pool = Pool::new(config, &all[..2], secs(0)).unwrap();
    pool.refresh(secs(5));
    pool.add(&all[2], secs(5)).unwrap();
    // The first two are half-way, the newcomer at 10%: 5 : 5 : 1.
    assert_eq!(ramp_weights(&pool), [w(0.5), w(0.5), w(0.1)]);
    assert_eq!(count_picks(&pool, 3, 11, secs(5)), vec![5, 5, 1]);
    assert_eq!(pool.refresh(secs(10)), Some(secs(11)));
    assert_eq!(ramp_weights(&pool), [w(1.0), w(1.0), w(0.5)]);
    assert_eq!(count_picks(&pool, 3, 5, secs(10)), vec![2, 2, 1]);
    assert_eq!(pool.refresh(secs(15)), None);
    assert_eq!(ramp_weights(&pool), [w(1.0), w(1.0), w(1.0)]);
}

#[test]
fn reload_keeps_the_state_of_backends_it_keeps() {
    let pool = Pool::new(PoolConfig::default(), &specs(&[1, 1, 1]), secs(0)).unwrap();
    fail_on(&pool, 1, 5, secs(0));
    let held = pool.pick(secs(0), |b| b.id() == "b2").unwrap();
    let before = pool.snapshot().backends()[0]
        .stats()
        .snapshot(secs(0))
        .requests;
    // b2 removed, b0 re-weighted, b3 added.
    let mut next = specs(&[3, 1, 1, 1]);
    next.remove(2);
    pool.update(PoolConfig::default(), &next, secs(1)).unwrap();
    let snap = pool.snapshot();
    let ids: Vec<&str> = snap.backends().iter().map(|b| b.id()).collect();
    assert_eq!(ids, vec!["b0", "b1", "b3"]);
    assert_eq!(
        snap.backends()[0].stats().snapshot(secs(1)).requests,
        before,
        "counters kept"
    );
    assert_eq!(
        snap.backends()[0].weight(),
        Weight::from_integer(3).unwrap()
    );
    assert_eq!(
        snap.backends()[1].breaker_state(),
        BreakerState::Open,
        "breaker kept"
    );
    assert_eq!(snap.retiring().len(), 1, "b2 finishes its request");
    assert_eq!(count_picks(&pool, 4, 4, secs(1)), vec![3, 0, 0, 1]);
    drop(held);
    pool.refresh(secs(2));
    assert!(pool.snapshot().retiring().is_empty());
    assert!(
        pool.update(
            PoolConfig::default(),
            &specs(&[1, 1])
                .into_iter()
                .map(|s| s.id("x"))
                .collect::<Vec<_>>(),
            secs(3)
        )
        .is_err()
    );
}

#[test]
fn admin_changes_apply_from_the_next_pick() {
    let pool = Pool::new(PoolConfig::default(), &specs(&[1, 1]), secs(0)).unwrap();
    pool.set_weight("b1", Weight::from_integer(3).unwrap(), secs(0))
        .unwrap();
    assert_eq!(count_picks(&pool, 2, 4, secs(0)), vec![1, 3]);
    let added = BackendSpec::new("127.0.0.1:9002".parse().unwrap()).id("b2");
    pool.add(&added, secs(0)).unwrap();
    assert_eq!(count_picks(&pool, 3, 5, secs(0)), vec![1, 3, 1]);
    assert!(pool.add(&added, secs(0)).is_err(), "duplicate id");
    pool.remove("b1", secs(0)).unwrap();
    assert_eq!(count_picks(&pool, 3, 4, secs(0)), vec![2, 0, 2]);
    assert!(pool.remove("b1", secs(0)).is_err());
    assert!(pool.set_weight("zz", Weight::ONE, secs(0)).is_err());
}

#[test]
fn random_start_offsets_differ_by_seed_and_repeat_for_the_same_seed() {
    let first = |seed: u64| -> Vec<usize> {
        let config = PoolConfig {
            start: StartPosition::Random,
            seed,
            ..PoolConfig::default()
        };
        let pool = Pool::new(config, &specs(&[1; 10]), secs(0)).unwrap();
        (0..3)
            .map(|_| index(&pool.pick(secs(0), |_| true).unwrap()))
            .collect()
    };
    assert_eq!(first(1), first(1));
    let starts: std::collections::HashSet<usize> = (0..20).map(|s| first(s)[0]).collect();
    assert!(starts.len() > 3, "starts spread: {starts:?}");
    let nginx = Pool::new(PoolConfig::default(), &specs(&[1; 10]), secs(0)).unwrap();
    assert_eq!(index(&nginx.pick(secs(0), |_| true).unwrap()), 0);
}

#[test]
fn least_connections_prefers_idle_backends_and_p2c_avoids_slow_ones() {
    let config = PoolConfig {
        algorithm: Algorithm::LeastConnections,
        ..PoolConfig::default()
    };
    let pool = Pool::new(config, &specs(&[1, 1, 1]), secs(0)).unwrap();
    let a = pool.pick(secs(0), |_| true).unwrap();
    let b = pool.pick(secs(0), |_| true).unwrap();
    let c = pool.pick(secs(0), |_| true).unwrap();
    let mut got = vec![index(&a), index(&b), index(&c)];
    got.sort_unstable();
    assert_eq!(got, vec![0, 1, 2], "each busy backend is avoided");
    let freed = index(&b);
    drop(b);
    let d = pool.pick(secs(0), |_| true).unwrap();
    assert_eq!(index(&d), freed, "the only idle one");
    drop((a, c, d));

    let config = PoolConfig {
        algorithm: Algorithm::P2c,
        seed: 7,
        ..PoolConfig::default()
    };
    let pool = Pool::new(config, &specs(&[1, 1, 1]), secs(0)).unwrap();
    let mut counts = [0u32; 3];
    for k in 0..3000u64 {
        let now = Timestamp::from_nanos(k * 1_000_000);
        let lease = pool.pick(now, |_| true).unwrap();
        let i = index(&lease);
        counts[i] += 1;
        let latency = if i == 2 { ms(50) } else { ms(2) };
        lease.finish(Outcome::Success, latency, now);
    }
    assert!(
        counts[2] * 5 < counts[0].min(counts[1]),
        "slow backend avoided: {counts:?}"
    );
}

#[test]
fn server_errors_trip_the_breaker_but_eject_only_when_configured() {
    let ejection = EjectionConfig {
        max_fails: NonZeroU32::new(1).unwrap(),
        fail_timeout: Duration::from_secs(10),
        count_server_errors: false,
    };
    let config = PoolConfig {
        ejection: Some(ejection),
        ..PoolConfig::default()
    };
    let pool = Pool::new(config.clone(), &specs(&[1, 1]), secs(0)).unwrap();
    let lease = pool.pick(secs(0), |b| b.id() == "b0").unwrap();
    lease.finish(Outcome::ServerError, ms(1), secs(0));
    assert!(
        !pool.snapshot().backends()[0].is_ejected(),
        "a 5xx counts toward max_fails only when configured"
    );
    assert_eq!(
        pool.snapshot().backends()[0]
            .breaker()
            .consecutive_failures(),
        1
    );
    let lease = pool.pick(secs(0), |b| b.id() == "b0").unwrap();
    lease.finish(Outcome::TransportError, ms(1), secs(0));
    assert!(pool.snapshot().backends()[0].is_ejected());

    let strict = PoolConfig {
        ejection: Some(EjectionConfig {
            count_server_errors: true,
            ..ejection
        }),
        ..config
    };
    let pool = Pool::new(strict, &specs(&[1, 1]), secs(0)).unwrap();
    let lease = pool.pick(secs(0), |b| b.id() == "b0").unwrap();
    lease.finish(Outcome::ServerError, ms(1), secs(0));
    assert!(pool.snapshot().backends()[0].is_ejected());
}

#[test]
fn application_errors_open_a_breaker_only_on_the_odd_one_out() {
    let breaker = |pool: &Pool, i: usize| pool.snapshot().backends()[i].breaker_state();
    let on = |pool: &Pool, id: &str, outcome: Outcome| {
        let lease = pool.pick(secs(0), |b| b.id() == id).unwrap();
        lease.finish(outcome, ms(1), secs(0));
    };
    // Every backend answers the same requests with 500 (an application bug): none opens.
    let pool = Pool::new(PoolConfig::default(), &specs(&[1, 1]), secs(0)).unwrap();
    for _ in 0..20 {
        on(&pool, "b0", Outcome::ApplicationError);
        on(&pool, "b1", Outcome::ApplicationError);
    }
    assert_eq!(
        (breaker(&pool, 0), breaker(&pool, 1)),
        (BreakerState::Closed, BreakerState::Closed)
    );

    // One backend broken alone while the other answers well: it opens at the threshold.
    let pool = Pool::new(PoolConfig::default(), &specs(&[1, 1]), secs(0)).unwrap();
    for _ in 0..5 {
        on(&pool, "b0", Outcome::ApplicationError);
        on(&pool, "b1", Outcome::Success);
    }
    assert_eq!(
        (breaker(&pool, 0), breaker(&pool, 1)),
        (BreakerState::Open, BreakerState::Closed)
    );

    // Counting every 5xx, as the seed did: five in a row open it whatever the others do.
    let mut config = PoolConfig::default();
    if let Some(b) = config.breaker.as_mut() {
        b.count_application_errors = true;
    }
    let pool = Pool::new(config, &specs(&[1, 1]), secs(0)).unwrap();
    for _ in 0..5 {
        on(&pool, "b0", Outcome::ApplicationError);
        on(&pool, "b1", Outcome::ApplicationError);
    }
    assert_eq!(
        (breaker(&pool, 0), breaker(&pool, 1)),
        (BreakerState::Open, BreakerState::Open)
    );
}

#[test]
fn a_pool_of_one_backend_never_ejects_it() {
    let ejection = EjectionConfig {
        max_fails: NonZeroU32::new(1).unwrap(),
        fail_timeout: Duration::from_secs(10),
        count_server_errors: true,
    };
    let config = PoolConfig {
        ejection: Some(ejection),
        breaker: None,
        ..PoolConfig::default()
    };
    let pool = Pool::new(config.clone(), &specs(&[1]), secs(0)).unwrap();
    fail_on(&pool, 0, 3, secs(1));
    assert_eq!(pool.snapshot().backends()[0].state(), BackendState::Up);
    assert!(pool.pick(secs(1), |_| true).is_some());
    // With a second backend (a backup too) the same failures take it out.
    let mut two = specs(&[1, 1]);
    two[1] = two[1].clone().backup();
    let pool = Pool::new(config, &two, secs(0)).unwrap();
    let lease = pool.pick(secs(1), |b| b.id() == "b0").unwrap();
    lease.finish(Outcome::TransportError, ms(1), secs(1));
    assert_eq!(pool.snapshot().backends()[0].state(), BackendState::Ejected);
}

#[test]
fn a_retry_with_no_primary_left_takes_an_available_backup() {
    let mut list = specs(&[1, 1, 1, 1]);
    list[2] = list[2].clone().backup();
    list[3] = list[3].clone().backup();
    let config = PoolConfig {
        breaker: None,
        ejection: None,
        ..PoolConfig::default()
    };
    let pool = Pool::new(config, &list, secs(0)).unwrap();
    assert_eq!(pool.snapshot().mode(), Mode::Primary);
    assert!(
        pool.pick(secs(0), Backend::is_backup).is_none(),
        "the cycle picks primaries only"
    );
    let lease = pool.pick_backup(secs(0), |b| b.id() != "b2").unwrap();
    assert_eq!(
        lease.backend().id(),
        "b3",
        "the first available backup not tried"
    );
    drop(lease);
    pool.drain("b2", secs(0)).unwrap();
    pool.drain("b3", secs(0)).unwrap();
    assert!(
        pool.pick_backup(secs(0), |_| true).is_none(),
        "no backup available"
    );
    // Serving from backups already: the ordinary pick chooses them.
    pool.drain("b0", secs(0)).unwrap();
    pool.drain("b1", secs(0)).unwrap();
    pool.enable("b3", secs(0)).unwrap();
    assert_eq!(pool.snapshot().mode(), Mode::Backup);
    assert!(pool.pick_backup(secs(0), |_| true).is_none());
    assert_eq!(pool.pick(secs(0), |_| true).unwrap().backend().id(), "b3");
}

/// An observer that reads the snapshot when told of a change, as a timer loop does.
struct DeadlineWatcher(Mutex<Vec<Option<Timestamp>>>, Mutex<Option<Arc<Pool>>>);

impl Observer for DeadlineWatcher {
    fn on_event(&self, _: &Backend, _: Event, _: Timestamp) {
        if let Some(pool) = self.1.lock().unwrap().as_ref() {
            self.0.lock().unwrap().push(pool.snapshot().next_deadline());
        }
    }
}

#[test]
fn observers_see_the_published_snapshot_when_told_of_a_change() {
    let watcher = Arc::new(DeadlineWatcher(Mutex::default(), Mutex::default()));
    let pool = Arc::new(
        Pool::with_observer(
            PoolConfig::default(),
            &specs(&[1, 1]),
            watcher.clone(),
            secs(0),
        )
        .unwrap(),
    );
    *watcher.1.lock().unwrap() = Some(Arc::clone(&pool));
    fail_on(&pool, 0, 5, secs(1));
    assert_eq!(
        watcher.0.lock().unwrap().last().copied(),
        Some(Some(secs(61))),
        "the breaker's reopen time is visible"
    );
    *watcher.1.lock().unwrap() = None;
}
