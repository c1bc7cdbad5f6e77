//! `evaluate`: counts every freeze on a normal day as false, judges each
//! incident by its own requirement, and fails when the traffic lacks the
//! whales it must hold.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use drainguard_engine::RuleSet;
use drainguard_replay::eval::{EvalConfig, evaluate};

fn small(days: u32, incident_days: u32) -> EvalConfig {
    EvalConfig {
        days,
        seed: 1,
        volumes: vec![1.0],
        incident_days,
        threads: 2,
    }
}

#[test]
fn the_defaults_pass_and_the_report_holds_what_it_measured() {
    let r = evaluate(&small(2, 1), &RuleSet::builtin().unwrap());
    assert!(r.passed(), "{:?}", r.failures);
    assert_eq!(r.days, 2 * 2 + 5 * 2);
    assert_eq!(r.normal.len(), 2);
    for g in &r.normal {
        assert_eq!(g.days, 2);
        assert_eq!(g.false_freezes, 0);
        assert!(g.withdrawals.count > 10_000, "{}", g.withdrawals.count);
        assert!(g.withdrawals.whales >= 6, "{}", g.withdrawals.whales);
        assert!(g.withdrawals.largest_share > 0.0);
    }
    assert_eq!(r.incidents.len(), 10);
    for g in &r.incidents {
        let required = g.preset != "giant" || g.intents;
        assert!(!required || g.caught == g.days, "{g:?}");
    }
}

#[test]
fn a_rule_that_freezes_on_volume_is_caught_crying_wolf() {
    let text = r#"
[[rule]]
id = "busy"
kind = "velocity"
scope = "wallet"
severity = "critical"
action = "freeze"
[rule.params]
window = "10m"
max_count = 20
"#;
    let rules = RuleSet::from_toml("test.toml", text, &|_| Err("no files".into())).unwrap();
    let r = evaluate(&small(1, 0), &rules);
    assert!(!r.passed());
    assert!(!r.false_freezes.is_empty());
    assert!(r.false_freezes.iter().all(|f| f.reason.starts_with("busy")));
    assert!(
        r.failures.iter().any(|f| f.contains("false freeze")),
        "{:?}",
        r.failures
    );
    assert!(r.normal.iter().all(|g| g.false_freezes_per_month > 0.0));
}
