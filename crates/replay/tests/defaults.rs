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

#[test]
fn quiet_days_raise_no_freeze() {
    for seed in 1..=3 {
        for intents in [true, false] {
            for (name, volume) in [
                ("normal", 1.0),
                ("normal", 0.1),
                ("normal", 3.0),
                ("rush", 1.0),
            ] {
                let r = run(&day(name, seed, intents, volume));
                assert!(
                    r.report.freezes.is_empty(),
                    "{name} day, seed {seed}, intents {intents}, volume {volume}: false freezes:\n{}",
                    describe(&r)
                );
                assert_eq!(score(&r).false_freezes, 0);
            }
        }
    }
}

#[test]
fn stolen_key_drain_freezes_at_the_first_theft() {
    for seed in 1..=3 {
        for intents in [true, false] {
            let r = run(&day("coinex", seed, intents, 1.0));
            let s = score(&r);
            assert_eq!(
                s.false_freezes,
                0,
                "seed {seed} intents {intents}:\n{}",
                describe(&r)
            );
            let delay = s.detection_delay_seconds.unwrap_or(f64::INFINITY);
            assert!(
                delay < 1.0,
                "seed {seed} intents {intents}: delay {delay}\n{}",
                describe(&r)
            );
            assert_eq!(
                s.attack_usd_before_freeze, 0.0,
                "the first stolen transaction is stopped at its pending record"
            );
            assert!(s.attack_usd_total > 1e6);
            assert!(
                r.report.freezes.iter().any(|f| f.scope == "global"),
                "several chains drained: a global freeze"
            );
        }
    }
}

#[test]
fn withdrawal_system_abuse_freezes_before_a_tenth_leaves() {
    for seed in 1..=3 {
        for intents in [true, false] {
            let r = run(&day("abuse", seed, intents, 1.0));
            let s = score(&r);
            assert_eq!(s.false_freezes, 0, "seed {seed}:\n{}", describe(&r));
            assert!(
                s.detection_delay_seconds.is_some(),
                "seed {seed} intents {intents}: never frozen"
            );
            let share = s.attack_usd_before_freeze / s.attack_usd_total;
            assert!(
                share < 0.10,
                "seed {seed} intents {intents}: {:.1}% left before the freeze",
                share * 100.0
            );
        }
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
    for seed in 1..=3 {
        for intents in [true, false] {
            let r = run(&day("giant", seed, intents, 1.0));
            let s = score(&r);
            assert_eq!(s.false_freezes, 0, "seed {seed}:\n{}", describe(&r));
            assert_eq!(
                s.attack_usd_before_freeze,
                0.0,
                "seed {seed} intents {intents}: nothing lost\n{}",
                describe(&r)
            );
            assert_eq!(
                s.detection_delay_seconds,
                Some(0.0),
                "seed {seed} intents {intents}: at the first attack record"
            );
            if intents {
                assert!(
                    r.report.freezes[0].scope.starts_with("intent:"),
                    "held at its intent: {}",
                    describe(&r)
                );
            }
        }
    }
}

#[test]
fn approval_to_unknown_spender_freezes_at_the_approval() {
    for seed in 1..=3 {
        let r = run(&day("approval", seed, true, 1.0));
        let s = score(&r);
        assert_eq!(s.false_freezes, 0);
        assert_eq!(s.detection_delay_seconds, Some(0.0), "{}", describe(&r));
        assert!(
            r.report.freezes[0].reason.starts_with("unknown-approval"),
            "{}",
            describe(&r)
        );
        assert_eq!(s.attack_usd_before_freeze, 0.0);
    }
}
