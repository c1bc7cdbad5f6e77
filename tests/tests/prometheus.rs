//! The metrics as operators see them, through a real Prometheus (Debian's
//! package, unpacked by the test support): a daemon watching a simulated
//! CoinEx-style day (sped up so the drain comes seconds after start) and a
//! real anvil chain, scraped every second; then every expression of every
//! dashboard panel and the left-hand side of every alert rule must return
//! series, and the "freeze active" alert must fire after the drain.
//! `promtool` checks the shipped configuration and rules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use drainguard_e2e::{
    Daemon, anvil::Anvil, prometheus::Prometheus, prometheus::promtool, repo_root, tansu::Broker,
};
use serde_json::Value;

#[test]
fn e2e_prometheus_promtool_accepts_the_shipped_config_and_rules() {
    let config = repo_root().join("config/prometheus.yml");
    let rules = repo_root().join("config/alerts.yml");
    let out = promtool(&["check", "rules", &rules.to_string_lossy()]).unwrap();
    assert!(out.contains("SUCCESS: 6 rules found"), "{out}");
    // The config names alerts.yml beside it: checked through it too.
    let out = promtool(&["check", "config", &config.to_string_lossy()]).unwrap();
    assert!(out.contains("SUCCESS"), "{out}");
    assert!(out.contains("alerts.yml"), "the rules are loaded: {out}");
}

/// Every `expr` string in a JSON document.
fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// Each dashboard panel expression, with its dashboard file, the template
/// variables set to "all".
fn dashboard_exprs() -> Vec<(String, String)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut found = Vec::new();
        exprs(&json["panels"], &mut found);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for e in found {
            all.push((
                name.clone(),
                e.replace("$chain", ".*").replace("$wallet", ".*"),
            ));
        }
    }
    all
}

/// The left-hand side of each alert rule's comparison (`expr: LHS op N`).
fn alert_lhs(rules: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(rules).unwrap();
    let mut out = Vec::new();
    let mut alert = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("- alert:") {
            alert = name.trim().to_string();
        }
        if let Some(expr) = line.strip_prefix("expr:") {
            let expr = expr.trim();
            let cut = [" == ", " != ", " >= ", " <= ", " > ", " < "]
                .iter()
                .filter_map(|op| expr.rfind(op))
                .max()
                .unwrap_or_else(|| panic!("{alert}: no comparison in {expr}"));
            out.push((alert.clone(), expr[..cut].trim().to_string()));
        }
    }
    out
}

fn config(dir: &Path, anvil: &Anvil, bus: &str) -> PathBuf {
    drainguard_e2e::write_config(
        dir,
        &format!(
            r#"
{bus}
[source.sim]
enabled = true
preset = "coinex"
seed = 3
incident_at = "10m"
speed = 300.0
hours = 0.5
[webhook]
endpoints = [{{ name = "primary", url = "http://127.0.0.1:1/freeze" }}]
secret_env = "DG_TEST_WEBHOOK_SECRET"
[delivery]
initial_backoff = "200ms"
max_backoff = "1s"
timeout = "1s"
[[source.evm]]
chain = "anvil-dev"
native = "ETH"
block_time = "1s"
confirmations = 1
poll_interval = "200ms"
endpoints = [{{ name = "anvil", url = "{}", ws = "{}" }}]
wallets = [{{ address = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266", name = "dev-hot-1" }}]
prices = {{ ETH = 3000.0 }}
"#,
            anvil.http_url(),
            anvil.ws_url()
        ),
    )
    .unwrap()
}

#[test]
fn e2e_prometheus_panels_and_alerts_have_data_and_the_freeze_alert_fires() {
    let dir = tempfile::tempdir().unwrap();
    let mut anvil = Anvil::builder().block_time(1).spawn().unwrap();
    anvil.wait_ready().unwrap();
    let cfg = config(dir.path(), &anvil, "");
    let mut d = Daemon::start_with_env(
        &cfg,
        &[("DG_TEST_WEBHOOK_SECRET", "whsec-prometheus-test-0123456789")],
    )
    .unwrap();
    let line = d
        .wait_for_log("API listening", Duration::from_secs(30))
        .unwrap();
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .expect("the API address in the log")
        .trim_matches('"')
        .to_string();
    let rules = repo_root().join("config/alerts.yml");
    let prom = Prometheus::start(&addr, "1s", std::slice::from_ref(&rules)).unwrap();
    // A reorg on the chain, so the reorg panels have one to show.
    d.wait_for_log("EVM watcher following", Duration::from_secs(30))
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    anvil.reorg(1, &[]).unwrap();

    // The drain comes about 2 s after start; the webhook endpoint is dead,
    // so deliveries fail and are retried.
    wait_for_the_freeze_alert(&prom, "");
    prom.wait_for_targets_up(Duration::from_secs(20)).unwrap();
    let (status, metrics) = d.get("/metrics").unwrap();
    assert_eq!(status, 200);
    every_panel_and_alert_has_series(&prom, &metrics, &rules, Mode::Memory);
    // The freeze counted is the sim's drain.
    let active = prom.query("sum(drainguard_freezes_active)").unwrap();
    let n: f64 = active[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(n >= 1.0, "{active:?}");
}

/// The same, split over Kafka as on two hosts: `drainguard watch` (the
/// simulator and the anvil chain, publishing to a real tansu broker) and
/// `drainguard engine` (reading the topic in its consumer group), both
/// scraped. Every panel has series, the Kafka ones included: the consumer
/// lag of each of the topic's three partitions among them.
#[test]
fn e2e_prometheus_kafka_mode_panels_and_alerts_have_data_and_the_freeze_alert_fires() {
    let broker = Broker::start().unwrap();
    let bus = format!(
        "[bus]\nkind = \"kafka\"\n[bus.kafka]\nbrokers = \"{}\"\ntopic = \"drainguard.prometheus\"\npartitions = 3\n",
        broker.bootstrap()
    );
    let mut anvil = Anvil::builder().block_time(1).spawn().unwrap();
    anvil.wait_ready().unwrap();
    let (watch_dir, engine_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let env = [("DG_TEST_WEBHOOK_SECRET", "whsec-prometheus-test-0123456789")];
    let mut engine =
        Daemon::start_as("engine", &config(engine_dir.path(), &anvil, &bus), &env).unwrap();
    engine
        .wait_for_log("kafka subscriber joined", Duration::from_secs(30))
        .unwrap();
    let mut watch =
        Daemon::start_as("watch", &config(watch_dir.path(), &anvil, &bus), &env).unwrap();
    let rules = repo_root().join("config/alerts.yml");
    let prom = Prometheus::start_many(
        &[engine.api_addr(), watch.api_addr()],
        "1s",
        std::slice::from_ref(&rules),
    )
    .unwrap();
    watch
        .wait_for_log("EVM watcher following", Duration::from_secs(30))
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    anvil.reorg(1, &[]).unwrap();

    wait_for_the_freeze_alert(&prom, &format!("broker log:\n{}", broker.log()));
    prom.wait_for_targets_up(Duration::from_secs(20)).unwrap();
    let (status, engine_metrics) = engine.get("/metrics").unwrap();
    assert_eq!(status, 200);
    let (status, watch_metrics) = watch.get("/metrics").unwrap();
    assert_eq!(status, 200);
    every_panel_and_alert_has_series(
        &prom,
        &format!("{engine_metrics}{watch_metrics}"),
        &rules,
        Mode::Kafka,
    );
    let lag = prom
        .query("drainguard_kafka_consumer_lag_messages{topic=\"drainguard.prometheus\"}")
        .unwrap();
    let mut partitions: Vec<_> = lag
        .iter()
        .map(|s| s["metric"]["partition"].as_str().unwrap().to_string())
        .collect();
    partitions.sort();
    assert_eq!(partitions, ["0", "1", "2"], "{lag:?}");
    // The drain was evaluated by the engine, from the broker.
    let active = prom.query("sum(drainguard_freezes_active)").unwrap();
    let n: f64 = active[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(n >= 1.0, "{active:?}");
}

/// Waits (up to 90 s) for `DrainguardFreezeActive` to fire; `context` goes
/// into the failure message.
fn wait_for_the_freeze_alert(prom: &Prometheus, context: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let firing = || {
        prom.alerts()
            .unwrap()
            .iter()
            .any(|a| a["labels"]["alertname"] == "DrainguardFreezeActive" && a["state"] == "firing")
    };
    while !firing() {
        assert!(
            Instant::now() < deadline,
            "DrainguardFreezeActive never fired: {:?}\n{context}",
            prom.alerts().unwrap()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Which bus the daemon under test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The in-process bus: the Kafka panels have nothing to show.
    Memory,
    /// Kafka: every panel has.
    Kafka,
}

/// Whether a metric or an expression belongs to Kafka mode alone.
fn kafka_only(text: &str) -> bool {
    text.contains("drainguard_kafka_")
}

/// Every metric a dashboard names is in `metrics` (the scraped processes'
/// `/metrics`, concatenated), and every panel expression and every alert's
/// left-hand side has series (waited for a little, since rates need two
/// samples in their window). In memory mode the Kafka panels are left out,
/// and their metrics are checked to be absent, so the Kafka-mode test is
/// what covers them.
fn every_panel_and_alert_has_series(prom: &Prometheus, metrics: &str, rules: &Path, mode: Mode) {
    let names = drainguard_e2e::dashboard_metric_names().unwrap();
    assert!(names.len() >= 20, "{names:?}");
    assert!(
        names.iter().filter(|n| kafka_only(n)).count() >= 4,
        "the pipeline dashboard shows the Kafka bus: {names:?}"
    );
    for name in names {
        let present = metrics.contains(&format!("# TYPE {name} "));
        if mode == Mode::Memory && kafka_only(&name) {
            assert!(!present, "{name} is exported without Kafka");
        } else {
            assert!(present, "dashboard metric {name} is not in /metrics");
        }
    }
    let mut queries: Vec<_> = dashboard_exprs()
        .into_iter()
        .filter(|(_, q)| mode == Mode::Kafka || !kafka_only(q))
        .collect();
    assert!(queries.len() >= 25, "{} panel expressions", queries.len());
    for (alert, lhs) in alert_lhs(rules) {
        queries.push((format!("alert {alert}"), lhs));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let empty: Vec<_> = queries
            .iter()
            .filter(|(_, q)| prom.query(q).unwrap().is_empty())
            .collect();
        if empty.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no series for: {empty:#?}");
        std::thread::sleep(Duration::from_secs(1));
    }
}
