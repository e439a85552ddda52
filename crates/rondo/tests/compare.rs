//! `rondo compare`: the simulation's promises, the charts and the command line.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::process::Command;

use balance::Algorithm;
use rondo::lab::compare::contender::BOUNDED_NAME;
use rondo::lab::compare::keys::{KeyDistribution, KeySpace};
use rondo::lab::compare::{AlgorithmResult, Contender, Scenario, chart, simulate};

fn result(results: &[AlgorithmResult], a: Algorithm) -> &AlgorithmResult {
    results
        .iter()
        .find(|r| r.algorithm == a)
        .unwrap_or_else(|| panic!("no result for {a}"))
}

fn counts(r: &AlgorithmResult) -> Vec<u64> {
    r.backends.iter().map(|b| b.requests).collect()
}

#[test]
fn the_same_seed_gives_identical_results() {
    let s = Scenario {
        requests: 3_000,
        ..Scenario::default()
    };
    let (a, b) = (simulate(&s), simulate(&s));
    assert_eq!(a, b);
    assert_eq!(
        a.len(),
        Algorithm::ALL.len() + 1,
        "and consistent-hash-bounded"
    );
    assert!(
        a.iter()
            .all(|r| r.completed == 3_000 && r.requests == 3_000)
    );
}

#[test]
fn weighted_round_robins_give_exactly_the_weights_over_whole_cycles() {
    // Weights 1, 1.5, 2, 2.5 are 2 : 3 : 4 : 5, a cycle of 14; 500 cycles.
    let s = Scenario {
        requests: 14 * 500,
        ..Scenario::default()
    };
    let rs = simulate(&s);
    for a in [Algorithm::Weighted, Algorithm::SmoothWeighted] {
        assert_eq!(counts(result(&rs, a)), [1000, 1500, 2000, 2500], "{a}");
    }
    assert_eq!(
        counts(result(&rs, Algorithm::RoundRobin)),
        [1750; 4],
        "round-robin ignores the weights"
    );
    let random = result(&rs, Algorithm::Random);
    for (b, expected) in random.backends.iter().zip([2.0, 3.0, 4.0, 5.0]) {
        let want = expected / 14.0;
        assert!(
            (b.share - want).abs() < 0.02,
            "random gave {} {:.3}, weight share {want:.3}",
            b.id,
            b.share
        );
    }
}

#[test]
fn adaptive_algorithms_have_a_lower_p99_than_the_fixed_schedules_on_the_default_scenario() {
    let rs = simulate(&Scenario::default());
    let rr = result(&rs, Algorithm::RoundRobin).latency.p99;
    for a in [Algorithm::LeastConnections, Algorithm::P2c] {
        let p99 = result(&rs, a).latency.p99;
        assert!(p99 < rr, "{a} p99 {p99:?} vs round-robin {rr:?}");
        for fixed in [
            Algorithm::Weighted,
            Algorithm::SmoothWeighted,
            Algorithm::Random,
        ] {
            let other = result(&rs, fixed).latency.p99;
            assert!(p99 < other, "{a} p99 {p99:?} vs {fixed} {other:?}");
        }
    }
    // They send less to the backend that is slower than its weight says.
    let slow = rondo::lab::compare::SLOW_BACKEND;
    let weighted = result(&rs, Algorithm::SmoothWeighted).backends[slow].share;
    assert!(result(&rs, Algorithm::LeastConnections).backends[slow].share < weighted);
    assert!(result(&rs, Algorithm::P2c).backends[slow].share < weighted);
}

#[test]
fn charts_are_svg_files_naming_every_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nested/charts");
    let rs = simulate(&Scenario {
        requests: 1_000,
        ..Scenario::default()
    });
    let paths = chart::write_charts(&rs, &out).unwrap();
    assert_eq!(paths.len(), 2);
    for p in &paths {
        let svg = std::fs::read_to_string(p).unwrap();
        assert!(svg.starts_with("<svg"), "{}", p.display());
        assert!(svg.trim_end().ends_with("</svg>"));
        for name in Algorithm::NAMES.iter().chain([&BOUNDED_NAME]) {
            assert!(svg.contains(name), "{} lacks {name}", p.display());
        }
    }
}

fn rondo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rondo"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run rondo: {e}"))
}

#[test]
fn the_command_prints_the_table_the_conclusion_and_the_chart_paths() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    let out = rondo(&["compare", "--requests", "2000", "--out", out_dir]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("algorithm") && stdout.contains("p99"),
        "{stdout}"
    );
    for name in Algorithm::NAMES.iter().chain([&BOUNDED_NAME]) {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{name} "))),
            "no row for {name}:\n{stdout}"
        );
    }
    assert!(stdout.contains("textbook claim"), "{stdout}");
    for file in ["latency.svg", "share.svg"] {
        let path = dir.path().join(file);
        assert!(path.exists() && stdout.contains(path.to_str().unwrap()));
    }
}

#[test]
fn the_command_speaks_json_and_takes_a_subset_of_algorithms() {
    let dir = tempfile::tempdir().unwrap();
    let out = rondo(&[
        "compare",
        "--requests",
        "700",
        "--algorithm",
        "round-robin,p2c",
        "--seed",
        "7",
        "--json",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = v["results"].as_array().unwrap();
    let names: Vec<&str> = results
        .iter()
        .map(|r| r["algorithm"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["round-robin", "p2c"]);
    assert_eq!(v["source"]["seed"], 7);
    assert_eq!(results[0]["completed"], 700);
    assert!(results[1]["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(v["charts"].as_array().unwrap().len(), 2);
}

#[test]
fn hashing_keeps_keys_and_reports_the_keys_a_failure_moves() {
    let dir = tempfile::tempdir().unwrap();
    let out = rondo(&[
        "compare",
        "--requests",
        "3000",
        "--keys",
        "zipf:1.1",
        "--key-count",
        "2000",
        "--algorithm",
        "smooth-weighted,consistent-hash",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("affinity keys: 2000 distinct, zipf:1.1"),
        "{stdout}"
    );
    let kept = |name: &str| {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap();
        row.split_whitespace()
            .last()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(kept("consistent-hash"), 100.0, "{stdout}");
    assert!(kept("smooth-weighted") < 50.0, "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("consistent-hash: when "))
        .unwrap_or_else(|| panic!("no keys-moved line:\n{stdout}"));
    assert!(line.ends_with("0 moved needlessly)"), "{line}");
}

#[test]
fn bounded_load_caps_the_hot_keys_backend_at_some_cost_in_affinity() {
    let s = Scenario {
        requests: 6_000,
        algorithms: vec![Algorithm::ConsistentHash.into(), Contender::bounded()],
        keys: KeySpace {
            count: 1_000,
            distribution: KeyDistribution::Zipf(1.2),
        },
        ..Scenario::default()
    };
    let rs = simulate(&s);
    let peak = |r: &AlgorithmResult| r.backends.iter().map(|b| b.peak_in_flight).max();
    let (plain, bounded) = (&rs[0], &rs[1]);
    assert_eq!(bounded.algorithm.name(), BOUNDED_NAME);
    assert!(
        peak(bounded) < peak(plain),
        "busiest backend's peak in flight: bounded {:?}, plain {:?}",
        peak(bounded),
        peak(plain)
    );
    let (kept_plain, kept_bounded) = (plain.key_affinity.unwrap(), bounded.key_affinity.unwrap());
    assert_eq!(kept_plain, 1.0);
    assert!(
        kept_bounded < 1.0 && kept_bounded > 0.5,
        "bounded kept {kept_bounded}"
    );
    assert!(bounded.keys_moved.is_some(), "a failure's moved keys too");
}

#[test]
fn bad_input_is_refused_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    for (args, says) in [
        (vec!["--rate", "-5"], "arrival rate"),
        (vec!["--rate", "NaN"], "arrival rate"),
        (vec!["--algorithm", "fastest"], "least-connections"),
        (vec!["--requests", "0"], "requests"),
        (vec!["--slowdown", "0"], "--slowdown"),
        (vec!["--keys", "pareto"], "uniform, zipf or zipf:S"),
        (vec!["--key-count", "0"], "--key-count"),
    ] {
        let mut full = vec!["compare", "--out", out_dir];
        full.extend(&args);
        let out = rondo(&full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// `rondo compare --live --json` with `args`: its JSON, once it succeeded.
fn compare_live(args: &[&str]) -> serde_json::Value {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_rondo"))
        .args(["compare", "--live", "--json", "--out"])
        .arg(out.path())
        .args(args)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_slice(&run.stdout).unwrap()
}

#[test]
fn live_comparison_sends_every_request_through_the_real_proxy() {
    let json = compare_live(&[
        "--requests",
        "60",
        "--algorithm",
        "round-robin,least-connections",
    ]);
    assert_eq!(json["source"]["kind"], "live");
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        assert_eq!(r["completed"], 60, "{r}");
        let served: u64 = r["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["requests"].as_u64().unwrap())
            .sum();
        // `requests` is what each backend counted itself (the lab's mock backend), not
        // what the load generator saw.
        assert_eq!(served, 60, "every request reached exactly one backend: {r}");
    }
    let rr = &results[0]["backends"];
    for b in rr.as_array().unwrap() {
        assert_eq!(
            b["requests"], 15,
            "round-robin: 60 requests over 4 backends: {rr}"
        );
    }
}

#[test]
fn live_comparison_sends_each_request_s_key_and_hashing_keeps_every_key_on_its_backend() {
    let json = compare_live(&[
        "--requests",
        "80",
        "--key-count",
        "6",
        "--algorithm",
        "round-robin,consistent-hash,consistent-hash-bounded",
    ]);
    let results = json["results"].as_array().unwrap();
    let names: Vec<&str> = results
        .iter()
        .map(|r| r["algorithm"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["round-robin", "consistent-hash", BOUNDED_NAME]);
    let kept = |i: usize| results[i]["key_affinity"].as_f64().unwrap();
    // Six keys over 80 requests: every key comes back many times.
    assert_eq!(kept(1), 1.0, "consistent-hash: {}", results[1]);
    assert!(
        kept(0) < 0.5,
        "round-robin moves keys around: {}",
        results[0]
    );
    for r in results {
        assert_eq!(r["completed"], 80, "{r}");
    }
}
