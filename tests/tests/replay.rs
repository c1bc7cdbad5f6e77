//! `drainguard sim` and `drainguard replay`, run as binaries.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::float_cmp)]

use drainguard_e2e::{drainguard, repo_root};
use serde_json::Value;

fn replay_json(path: &str, extra: &[&str]) -> Value {
    let mut args = vec!["replay", path, "--json"];
    args.extend_from_slice(extra);
    let out = drainguard(&args).unwrap();
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.trim_end().lines().count(),
        1,
        "exactly one JSON object on stdout"
    );
    serde_json::from_str(&stdout).unwrap()
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

#[test]
fn e2e_replay_coinex_day_json_report() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("coinex.jsonl");
    let out = drainguard(&[
        "sim",
        "--preset",
        "coinex",
        "--seed",
        "4",
        "--out",
        file.to_str().unwrap(),
    ])
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = replay_json(file.to_str().unwrap(), &[]);
    assert_eq!(keys(&r), ["findings", "freezes", "score"]);
    let f0 = &r["findings"][0];
    assert_eq!(
        keys(f0),
        [
            "t", "rule", "severity", "scope", "chain", "wallet", "summary"
        ]
    );
    assert_eq!(keys(&r["freezes"][0]), ["t", "id", "scope", "reason"]);
    let score = &r["score"];
    assert_eq!(
        keys(score),
        [
            "first_attack_t",
            "first_freeze_t",
            "detection_delay_seconds",
            "attack_usd_total",
            "attack_usd_before_freeze",
            "false_freezes"
        ]
    );
    assert!(
        score["detection_delay_seconds"].as_f64().unwrap() < 1.0,
        "{score}"
    );
    assert_eq!(score["false_freezes"], 0);
    assert_eq!(score["attack_usd_before_freeze"].as_f64(), Some(0.0));
    assert!(score["attack_usd_total"].as_f64().unwrap() > 1e6);
    // Times are scenario times, in order, RFC 3339 UTC.
    let times: Vec<&str> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["t"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    assert!(
        times[0].starts_with("2023-09-12T14:") && times[0].ends_with('Z'),
        "{}",
        times[0]
    );
    assert!(
        r["freezes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["scope"] == "global")
    );
}

#[test]
fn e2e_replay_committed_scenarios() {
    let dir = repo_root().join("tests/scenarios");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        seen += 1;
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let r = replay_json(path.to_str().unwrap(), &[]);
        let freezes = r["freezes"].as_array().unwrap().len();
        let score = &r["score"];
        if name.starts_with("normal") || name.starts_with("rush") {
            assert_eq!(freezes, 0, "{name}: {r}");
        } else {
            assert!(freezes > 0, "{name}: no freeze");
            assert_eq!(score["false_freezes"], 0, "{name}");
            assert!(
                score["detection_delay_seconds"].is_number(),
                "{name}: {score}"
            );
        }
    }
    assert!(seen >= 3, "the repository ships sample scenarios");
}

#[test]
fn e2e_replay_unlabelled_file_has_null_score_and_custom_rules_apply() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain.jsonl");
    std::fs::write(
        &file,
        concat!(
            r#"{"t":"2024-01-01T00:00:00Z","kind":"wallet","chain":"solana","address":"HotW","name":"sol-hot","balances":{"SOL":"1000"}}"#, "\n",
            r#"{"t":"2024-01-01T00:00:00Z","kind":"price","asset":"SOL","usd":100}"#, "\n",
            r#"{"t":"2024-01-01T00:00:05Z","kind":"transfer","chain":"solana","tx_hash":"sig1","index":0,"stage":"pending","from":"HotW","to":"Thief","asset":"SOL","amount":"900"}"#, "\n",
        ),
    )
    .unwrap();
    let r = replay_json(file.to_str().unwrap(), &[]);
    assert_eq!(r["score"], Value::Null);
    assert_eq!(
        r["freezes"][0]["scope"], "wallet:solana:HotW",
        "a chain with no head records, declared only by its wallet"
    );
    assert_eq!(r["freezes"][0]["t"], "2024-01-01T00:00:05Z");
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, "[[rule]]\nid = \"only-velocity\"\nkind = \"velocity\"\nscope = \"wallet\"\nseverity = \"warning\"\naction = \"alert\"\n[rule.params]\nwindow = \"1m\"\nmax_count = 5\n").unwrap();
    let r = replay_json(
        file.to_str().unwrap(),
        &["--config", rules.to_str().unwrap()],
    );
    assert_eq!(
        r["freezes"].as_array().unwrap().len(),
        0,
        "custom rules replace the defaults"
    );
}

#[test]
fn e2e_replay_bad_line_names_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.jsonl");
    std::fs::write(
        &file,
        concat!(
            r#"{"t":"2024-01-01T00:00:00Z","kind":"price","asset":"ETH","usd":2000}"#, "\n",
            r#"{"t":"2024-01-01T00:00:01Z","kind":"balance","chain":"ethereum","wallet":"0x1","asset":"ETH","amount":"12,5"}"#, "\n",
        ),
    )
    .unwrap();
    let out = drainguard(&["replay", file.to_str().unwrap(), "--json"]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2: field `amount`"), "{err}");
    assert!(out.stdout.is_empty(), "no half report");
    let out = drainguard(&["replay", "/nonexistent.jsonl"]).unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot open scenario /nonexistent.jsonl")
    );
}
