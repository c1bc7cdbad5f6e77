//! The built-in rules against generated days: every drain caught, no false
//! freeze, with and without a connected withdrawal system.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::float_cmp)]

use std::time::Duration;

use drainguard_engine::RuleSet;
use drainguard_replay::{Replay, Score, replay_records};
use drainguard_sim::{SimConfig, generate, preset};

fn run(config: &SimConfig) -> Replay {
    let records = generate(config).into_iter().map(Ok);
    replay_records(records, RuleSet::builtin().unwrap()).unwrap()
}

fn day(name: &str, seed: u64, intents: bool, volume: f64) -> SimConfig {
    let mut c = preset(name, seed).unwrap();
    c.intents = intents;
    c.volume = volume;
    c
}

fn score(r: &Replay) -> &Score {
    r.report
        .score
        .as_ref()
        .expect("generated days are labelled")
}

fn describe(r: &Replay) -> String {
    r.report
        .freezes
        .iter()
        .map(|f| format!("{} {}", f.t, f.reason))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Five seeds, 0.1x to 10x normal volume, with and without a connected
/// withdrawal system.
fn matrix() -> impl Iterator<Item = (u64, f64, bool)> {
    (1..=5u64).flat_map(|seed| {
        [0.1, 1.0, 10.0]
            .into_iter()
            .flat_map(move |v| [true, false].into_iter().map(move |i| (seed, v, i)))
    })
}

#[test]
fn normal_days_raise_no_freeze_at_any_volume() {
    for (seed, volume, intents) in matrix() {
        let r = run(&day("normal", seed, intents, volume));
        assert!(
            r.report.freezes.is_empty(),
            "normal day, seed {seed}, volume {volume}, intents {intents}: false freezes:\n{}",
            describe(&r)
        );
    }
}

#[test]
fn withdrawal_rushes_page_but_never_freeze() {
    for (seed, volume, intents) in matrix() {
        let r = run(&day("rush", seed, intents, volume));
        assert!(
            r.report.freezes.is_empty(),
            "6x rush, seed {seed}, volume {volume}, intents {intents}: false freezes:\n{}",
            describe(&r)
        );
    }
}

#[test]
fn stolen_key_drain_freezes_at_the_first_theft() {
    for (seed, volume, intents) in matrix() {
        let r = run(&day("coinex", seed, intents, volume));
        let s = score(&r);
        let case = format!("seed {seed}, volume {volume}, intents {intents}");
        assert_eq!(s.false_freezes, 0, "{case}:\n{}", describe(&r));
        let delay = s.detection_delay_seconds.unwrap_or(f64::INFINITY);
        assert!(delay < 1.0, "{case}: delay {delay}\n{}", describe(&r));
        assert_eq!(
            s.attack_usd_before_freeze, 0.0,
            "{case}: the first stolen transaction is stopped at its pending record"
        );
        assert!(s.attack_usd_total > 1e5, "{case}");
        assert!(
            r.report.freezes.iter().any(|f| f.scope == "global"),
            "{case}: several chains drained: a global freeze"
        );
    }
}

#[test]
fn withdrawal_system_abuse_freezes_before_a_tenth_leaves() {
    for (seed, volume, intents) in matrix() {
        let r = run(&day("abuse", seed, intents, volume));
        let s = score(&r);
        let case = format!("seed {seed}, volume {volume}, intents {intents}");
        assert_eq!(s.false_freezes, 0, "{case}:\n{}", describe(&r));
        assert!(s.detection_delay_seconds.is_some(), "{case}: never frozen");
        let share = s.attack_usd_before_freeze / s.attack_usd_total;
        assert!(
            share < 0.10,
            "{case}: {:.1}% left before the freeze",
            share * 100.0
        );
    }
}

#[test]
fn a_generated_day_is_large_and_replays_deterministically() {
    let mut c = preset("normal", 9).unwrap();
    c.duration = Duration::from_secs(24 * 3600);
    let a = run(&c);
    let b = run(&c);
    assert!(a.stats.records >= 100_000, "{} records", a.stats.records);
    assert_eq!(a.report, b.report);
}

#[test]
fn giant_withdrawal_is_held_at_its_intent() {
    for (seed, volume, intents) in matrix() {
        let r = run(&day("giant", seed, intents, volume));
        let s = score(&r);
        let case = format!("seed {seed}, volume {volume}, intents {intents}");
        assert_eq!(s.false_freezes, 0, "{case}:\n{}", describe(&r));
        assert_eq!(
            s.attack_usd_before_freeze,
            0.0,
            "{case}: nothing lost\n{}",
            describe(&r)
        );
        assert_eq!(
            s.detection_delay_seconds,
            Some(0.0),
            "{case}: at the first attack record"
        );
        if intents {
            assert!(
                r.report.freezes[0].scope.starts_with("intent:"),
                "{case}: held at its intent: {}",
                describe(&r)
            );
        }
    }
}

#[test]
fn approval_to_unknown_spender_freezes_at_the_approval() {
    for (seed, volume, intents) in matrix() {
        let r = run(&day("approval", seed, intents, volume));
        let s = score(&r);
        let case = format!("seed {seed}, volume {volume}, intents {intents}");
        assert_eq!(s.false_freezes, 0, "{case}");
        assert_eq!(
            s.detection_delay_seconds,
            Some(0.0),
            "{case}: {}",
            describe(&r)
        );
        assert!(
            r.report.freezes[0].reason.starts_with("unknown-approval"),
            "{case}: {}",
            describe(&r)
        );
        assert_eq!(s.attack_usd_before_freeze, 0.0, "{case}");
    }
}
