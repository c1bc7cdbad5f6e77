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
    assert!(times.iter().all(|t| t.ends_with('Z')));
    // Alerts may come all day (whales to new addresses); the first freeze
    // comes with the drain at 14:10.
    let first_freeze = r["freezes"][0]["t"].as_str().unwrap();
    assert!(
        first_freeze.starts_with("2023-09-12T14:1"),
        "{first_freeze}"
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
        } else if name.starts_with("abuse") {
            // Thirty minutes from a cold start: the engine has not yet met
            // the exchange's regular counterparties, so no address counts
            // as new and the join does not freeze (converging-new-
            // destination's warm_up). Each theft still pages.
            assert_eq!(freezes, 0, "{name}: {r}");
            let paged = r["findings"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["rule"] == "large-to-new-destination")
                .count();
            assert!(paged >= 5, "{name}: {paged} pages");
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

/// `drainguard sim --preset NAME --seed SEED [extra] --out DIR/NAME.jsonl`.
fn sim(dir: &std::path::Path, preset: &str, seed: &str, extra: &[&str]) -> std::path::PathBuf {
    let file = dir.join(format!("{preset}.jsonl"));
    let mut args = vec!["sim", "--preset", preset, "--seed", seed];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--out", file.to_str().unwrap()]);
    let out = drainguard(&args).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    file
}

/// The opening tags' attributes and the text of every `<tag>` element of
/// plotters' SVG (one element a line or two; no nesting in what we read).
fn elements<'a>(svg: &'a str, tag: &str) -> Vec<(&'a str, &'a str)> {
    let open = format!("<{tag} ");
    let close = format!("</{tag}>");
    let mut found = Vec::new();
    let mut rest = svg;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let end = rest.find('>').unwrap();
        let attrs = rest[..end].trim_end_matches('/');
        let body = if rest[..end].ends_with('/') {
            ""
        } else {
            rest[end + 1..].split(&close).next().unwrap().trim()
        };
        found.push((attrs, body));
        rest = &rest[end..];
    }
    found
}

fn attr<'a>(attrs: &'a str, name: &str) -> &'a str {
    let key = format!("{name}=\"");
    let i = attrs
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {attrs}"));
    attrs[i + key.len()..].split('"').next().unwrap()
}

fn points(attrs: &str) -> Vec<(f64, f64)> {
    attr(attrs, "points")
        .split_whitespace()
        .map(|p| {
            let (x, y) = p.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect()
}

/// Seconds since midnight UTC of `HH:MM` or `HH:MM:SS`.
fn clock(s: &str) -> f64 {
    s.split(':')
        .zip([3600.0, 60.0, 1.0])
        .map(|(v, unit)| v.parse::<f64>().unwrap() * unit)
        .sum()
}

const FREEZE_RED: &str = "#D62728";

/// Vertical red lines: the freeze markers (two a freeze, one a panel).
fn freeze_lines(svg: &str) -> Vec<(f64, &str)> {
    elements(svg, "polyline")
        .into_iter()
        .filter(|(a, _)| attr(a, "stroke") == FREEZE_RED)
        .filter_map(|(a, _)| {
            let p = points(a);
            let vertical = p.len() == 2 && p[0].0 == p[1].0 && (p[0].1 - p[1].1).abs() > 50.0;
            vertical.then(|| (p[0].0, attr(a, "stroke-width")))
        })
        .collect()
}

#[test]
fn e2e_replay_plot_of_a_coinex_day_marks_the_freeze_and_draws_each_chain() {
    let dir = tempfile::tempdir().unwrap();
    let file = sim(dir.path(), "coinex", "1", &[]);
    let svg_path = dir.path().join("day.svg");
    let r = replay_json(
        file.to_str().unwrap(),
        &["--plot", svg_path.to_str().unwrap()],
    );
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    let texts = elements(&svg, "text");

    // The first freeze: its time and scope as text...
    let freezes = r["freezes"].as_array().unwrap();
    assert!(!freezes.is_empty());
    let t0 = freezes[0]["t"].as_str().unwrap();
    let full = format!(
        "first freeze {} {}",
        &t0[11..19],
        freezes[0]["scope"].as_str().unwrap()
    );
    let label = texts
        .iter()
        .map(|(_, body)| *body)
        .find(|b| b.starts_with("first freeze"))
        .expect("a first-freeze label");
    assert!(
        full.starts_with(label.trim_end_matches('…')),
        "{label:?} is not the first freeze {full:?}"
    );
    // ...and a line for every freeze in each panel, the first one bold,
    // where the time axis puts the first freeze's time.
    let lines = freeze_lines(&svg);
    assert_eq!(lines.len(), 2 * freezes.len(), "{lines:?}");
    assert_eq!(lines[0].1, "2");
    let ticks: Vec<(f64, f64)> = texts
        .iter()
        .filter(|(a, b)| {
            attr(a, "text-anchor") == "middle" && b.len() == 5 && b.as_bytes()[2] == b':'
        })
        .map(|(a, b)| (clock(b), attr(a, "x").parse().unwrap()))
        .collect();
    assert!(ticks.len() >= 6, "{ticks:?}");
    // The two ticks either side of the freeze.
    let at = clock(t0[11..].trim_end_matches('Z'));
    let i = ticks.iter().rposition(|(s, _)| *s <= at).unwrap();
    let (a, b) = (ticks[i], ticks[i + 1]);
    let px_per_s = (b.1 - a.1) / (b.0 - a.0);
    let want = a.1 + (at - a.0) * px_per_s;
    assert!(
        (lines[0].0 - want).abs() <= 2.0,
        "first freeze drawn at x={} but {t0} is at x={want:.1}",
        lines[0].0
    );

    // A line per chain: each chain of the scenario in the legend, drawn
    // in the legend sample's colour, and an attack line for each chain the
    // attack drained.
    let scenario = std::fs::read_to_string(&file).unwrap();
    let (mut chains, mut attacked) = (Vec::new(), Vec::new());
    for line in scenario.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let chain = v["chain"].as_str().unwrap_or_default().to_string();
        if v["kind"] == "wallet" && !chains.contains(&chain) {
            chains.push(chain);
        } else if v["kind"] == "transfer" && v["label"] == "attack" && !attacked.contains(&chain) {
            attacked.push(chain);
        }
    }
    assert!(
        chains.len() >= 3 && attacked.len() >= 2,
        "{chains:?} {attacked:?}"
    );
    let polylines = elements(&svg, "polyline");
    for (chain, flow, min_points) in chains
        .iter()
        .map(|c| (c, "normal", 50))
        .chain(attacked.iter().map(|c| (c, "attack", 2)))
    {
        let name = format!("{chain} {flow}");
        let (text, _) = texts
            .iter()
            .find(|(_, b)| *b == name)
            .unwrap_or_else(|| panic!("no legend entry {name:?}"));
        let (tx, ty): (f64, f64) = (
            attr(text, "x").parse().unwrap(),
            attr(text, "y").parse().unwrap(),
        );
        // The legend sample: the short level line left of the entry's text,
        // level with it.
        let sample = polylines
            .iter()
            .map(|(a, _)| *a)
            .filter(|a| {
                let p = points(a);
                p.len() == 2 && p[0].1 == p[1].1 && p[1].0 < tx && p[0].0 > tx - 40.0
            })
            .min_by_key(|a| (points(a)[0].1 - (ty + 5.0)).abs() as i64)
            .unwrap();
        let color = attr(sample, "stroke");
        assert!(
            polylines
                .iter()
                .any(|(a, _)| attr(a, "stroke") == color && points(a).len() >= min_points),
            "no {name} line in {color}"
        );
    }
    // Findings by severity, with their rows named.
    for row in ["info", "warning", "critical"] {
        assert!(texts.iter().any(|(_, b)| *b == row), "no {row} row");
    }
}

#[test]
fn e2e_replay_plot_of_a_normal_day_has_no_freeze_marker() {
    let dir = tempfile::tempdir().unwrap();
    let file = sim(dir.path(), "normal", "1", &["--hours", "6"]);
    let svg_path = dir.path().join("normal.svg");
    let r = replay_json(
        file.to_str().unwrap(),
        &["--plot", svg_path.to_str().unwrap()],
    );
    assert_eq!(r["freezes"].as_array().unwrap().len(), 0);
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(freeze_lines(&svg).is_empty());
    assert!(!svg.contains("first freeze") && !svg.contains(FREEZE_RED));
    assert!(!svg.contains(" attack\n"), "no attack line on a normal day");
    assert!(
        svg.contains("\nethereum normal\n"),
        "the chains are still drawn"
    );
}

#[test]
fn e2e_replay_plot_to_an_unwritable_path_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = sim(dir.path(), "normal", "2", &["--hours", "1"]);
    let out = drainguard(&[
        "replay",
        file.to_str().unwrap(),
        "--plot",
        "/nonexistent-dir/x.svg",
    ])
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot write /nonexistent-dir/x.svg"), "{err}");
}

#[test]
fn e2e_replay_eval_reports_false_freezes_and_incidents_as_json() {
    let out = drainguard(&[
        "eval",
        "--days",
        "1",
        "--volumes",
        "1",
        "--incident-days",
        "1",
        "--json",
    ])
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["days"], 2 + 10);
    assert_eq!(r["false_freezes"].as_array().unwrap().len(), 0);
    assert_eq!(r["failures"].as_array().unwrap().len(), 0);
    assert_eq!(r["normal"].as_array().unwrap().len(), 2);
    let presets: Vec<&str> = r["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["preset"].as_str().unwrap())
        .collect();
    for p in ["coinex", "abuse", "giant", "approval", "tripwire"] {
        assert_eq!(presets.iter().filter(|&&x| x == p).count(), 2, "{p}");
    }
    // A bad argument is named, and nothing runs.
    let bad = drainguard(&["eval", "--volumes", "0"]).unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("--volumes: 0 is not in (0, 100]"), "{err}");
}
