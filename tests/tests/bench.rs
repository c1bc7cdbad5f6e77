//! `drainguard bench`, run as a binary: its figures describe the day it
//! was given and the rules it ran (no timing is asserted: CI runs no
//! benchmarks, only the command).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use drainguard_e2e::drainguard;
use serde_json::Value;

fn run_json(args: &[&str]) -> Value {
    let out = drainguard(args).unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.trim_end().lines().count(), 1, "one JSON object");
    serde_json::from_str(&stdout).unwrap()
}

fn bench(preset: &str, store_dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "bench",
        "--preset",
        preset,
        "--seed",
        "1",
        "--store-dir",
        store_dir.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    run_json(&args)
}

/// The figure at `path`.
fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[k])
}

/// A count in the figures.
fn int(v: &Value, path: &[&str]) -> u64 {
    let v = at(v, path);
    v.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not a count: {v}"))
}

fn num(v: &Value, path: &[&str]) -> f64 {
    let v = at(v, path);
    v.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number: {v}"))
}

#[test]
fn bench_evaluates_the_whole_day_finds_what_replay_finds_and_times_durable_freezes() {
    let dir = tempfile::tempdir().unwrap();
    let day = dir.path().join("coinex.jsonl");
    let out = drainguard(&[
        "sim",
        "--preset",
        "coinex",
        "--seed",
        "1",
        "--out",
        day.to_str().unwrap(),
    ])
    .unwrap();
    assert!(out.status.success());
    let lines = std::fs::read_to_string(&day).unwrap().lines().count() as u64;
    let report = run_json(&["replay", day.to_str().unwrap(), "--json"]);
    let replay_findings = report["findings"].as_array().unwrap().len() as u64;
    let replay_freezes = report["freezes"].as_array().unwrap().len() as u64;
    assert!(replay_freezes > 0, "the CoinEx day freezes");

    let store_dir = dir.path().join("disk");
    std::fs::create_dir(&store_dir).unwrap();
    let f = bench("coinex", &store_dir, &["--passes", "2", "--commits", "20"]);

    // The same day, every record of it, through the same rules.
    assert_eq!(int(&f, &["engine", "events"]), lines);
    assert_eq!(int(&f, &["replay", "records"]), lines);
    assert_eq!(int(&f, &["engine", "findings"]), replay_findings);
    assert_eq!(int(&f, &["engine", "freezes"]), replay_freezes);
    let counted = int(&f, &["engine", "transfers_and_intents"]);
    assert!(counted > 0 && counted < lines);
    assert_eq!(int(&f, &["engine", "passes"]), 2);
    assert!(num(&f, &["engine", "best_seconds"]) <= num(&f, &["engine", "median_seconds"]));
    assert!(num(&f, &["engine", "transfers_and_intents_per_second"]) > 0.0);
    assert!(num(&f, &["replay", "records_per_second"]) > 0.0);
    assert_eq!(f["rules"], "built-in");

    assert_eq!(int(&f, &["store", "commits"]), 20);
    let (p50, p99, max) = (
        num(&f, &["store", "p50_ms"]),
        num(&f, &["store", "p99_ms"]),
        num(&f, &["store", "max_ms"]),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{p50} {p99} {max}");
    assert_eq!(f["store"]["dir"], store_dir.to_str().unwrap());
    // The scratch store is gone.
    assert_eq!(std::fs::read_dir(&store_dir).unwrap().count(), 0);
}

#[test]
fn bench_with_rules_that_never_freeze_still_times_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        r#"
[[rule]]
id = "many-outflows"
kind = "velocity"
scope = "wallet"
severity = "warning"
action = "alert"
[rule.params]
window = "1m"
max_count = 1000000
"#,
    )
    .unwrap();
    let f = bench(
        "coinex",
        dir.path(),
        &[
            "--passes",
            "1",
            "--commits",
            "5",
            "--config",
            rules.to_str().unwrap(),
        ],
    );
    assert_eq!(int(&f, &["engine", "freezes"]), 0);
    assert_eq!(int(&f, &["store", "commits"]), 5);
    assert!(num(&f, &["store", "p50_ms"]) > 0.0);
    assert_eq!(f["rules"], rules.to_str().unwrap());
}

#[test]
fn bench_bad_arguments_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let cases: [(Vec<&str>, &str); 5] = [
        (vec!["--preset", "tuesday"], "unknown preset \"tuesday\""),
        (vec!["--passes", "0"], "--passes must be at least 1"),
        (vec!["--commits", "0"], "--commits must be at least 1"),
        (
            vec!["--store-dir", missing.to_str().unwrap()],
            "nowhere: not a folder",
        ),
        (vec!["--config", missing.to_str().unwrap()], "cannot read"),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["bench"];
        args.extend_from_slice(&extra);
        let out = drainguard(&args).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} succeeded");
        assert!(stderr.contains(expected), "{extra:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{extra:?} printed figures");
    }
}
