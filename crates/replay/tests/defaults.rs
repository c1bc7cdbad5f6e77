//! The built-in rules against generated days: every drain caught, no false
//! freeze, with and without a connected withdrawal system.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::float_cmp)]

use std::{collections::HashMap, time::Duration};

use drainguard_engine::RuleSet;
use drainguard_model::{EventKind, Stage, Timestamp, TransferKey, TxHash};
use drainguard_replay::{Replay, Score, replay_records};
use drainguard_sim::{Label, Record, SimConfig, generate, preset};

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
fn withdrawal_system_abuse_freezes_at_the_second_theft() {
    // Each theft has its intent, and the first, a few percent of eth-hot-1
    // to a fresh address, is what a whale does every day: the evidence is
    // the second, from another wallet to the same fresh address. Nothing
    // after the first may leave.
    for (seed, volume, intents) in matrix() {
        let config = day("abuse", seed, intents, volume);
        let records = generate(&config);
        let mut thefts: Vec<(Timestamp, f64)> = Vec::new();
        let mut price: HashMap<String, f64> = HashMap::new();
        for r in &records {
            match &r.kind {
                EventKind::Price(p) => {
                    price.insert(p.asset.to_string(), p.usd.0);
                }
                EventKind::Transfer(t)
                    if r.label == Some(Label::Attack) && t.stage == Stage::Pending =>
                {
                    let usd = t.amount.to_f64_units(t.decimals) * price[t.asset.as_str()];
                    thefts.push((r.t, usd));
                }
                _ => {}
            }
        }
        let r = run(&config);
        let s = score(&r);
        let case = format!("seed {seed}, volume {volume}, intents {intents}");
        assert_eq!(s.false_freezes, 0, "{case}:\n{}", describe(&r));
        assert!(s.detection_delay_seconds.is_some(), "{case}: never frozen");
        let first_freeze = r.freezes[0].t;
        assert!(
            first_freeze <= thefts[1].0,
            "{case}: frozen at {first_freeze}, after the second theft at {}",
            thefts[1].0
        );
        assert!(
            (s.attack_usd_before_freeze - thefts[0].1).abs() < 0.01 * thefts[0].1,
            "{case}: ${:.0} left before the freeze, the first theft was ${:.0}",
            s.attack_usd_before_freeze,
            thefts[0].1
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
        if intents {
            assert_eq!(s.attack_usd_before_freeze, 0.0, "{case}: nothing lost");
            assert_eq!(s.detection_delay_seconds, Some(0.0), "{case}");
            assert!(
                r.report.freezes[0].scope.starts_with("intent:"),
                "{case}: held at its intent: {}",
                describe(&r)
            );
        } else {
            // Nothing announces it: one payment of 60% is frozen when it is
            // also ten times anything the wallet paid (DMM), and always
            // pages a human.
            let at = s.first_attack_t.clone().unwrap();
            let seen: Vec<&str> = r
                .report
                .findings
                .iter()
                .filter(|f| f.t == at)
                .map(|f| f.rule.as_str())
                .collect();
            assert!(
                seen.contains(&"large-to-new-destination") || seen.contains(&"unprecedented-tx"),
                "{case}: {seen:?}"
            );
            if seen.contains(&"unprecedented-tx") {
                assert_eq!(s.detection_delay_seconds, Some(0.0), "{case}");
                assert_eq!(s.attack_usd_before_freeze, 0.0, "{case}");
            }
        }
    }
}

#[test]
fn a_tripwire_freezes_everything_at_its_first_outflow() {
    for (seed, volume, intents) in matrix() {
        let r = run(&day("tripwire", seed, intents, volume));
        let s = score(&r);
        let case = format!("seed {seed}, volume {volume}, intents {intents}");
        assert_eq!(s.false_freezes, 0, "{case}");
        assert_eq!(s.detection_delay_seconds, Some(0.0), "{case}");
        assert_eq!(
            r.report.freezes[0].scope,
            "global",
            "{case}: {}",
            describe(&r)
        );
        assert!(r.report.freezes[0].reason.starts_with("tripwire"), "{case}");
        assert_eq!(s.attack_usd_before_freeze, 0.0, "{case}");
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

/// A generated day in which every 25th legitimate transfer's block is
/// reorganized away as it is included: retracted, then included again in
/// the new branch under the same key, another log index or a re-signed
/// hash (its later records follow the new key).
fn reorganized(config: &SimConfig) -> Vec<Record> {
    let mut moved: HashMap<TransferKey, (TxHash, u32)> = HashMap::new();
    let mut out = Vec::new();
    let mut n = 0u64;
    for mut r in generate(config) {
        let EventKind::Transfer(tr) = &mut r.kind else {
            out.push(r);
            continue;
        };
        let key = TransferKey {
            chain: tr.chain.clone(),
            tx_hash: tr.tx_hash.clone(),
            index: tr.index,
        };
        if let Some((tx, index)) = moved.get(&key) {
            tr.tx_hash = tx.clone();
            tr.index = *index;
        }
        let legit = r.label != Some(Label::Attack);
        if !(legit && tr.stage == Stage::Included && !moved.contains_key(&key)) {
            out.push(r);
            continue;
        }
        n += 1;
        if !n.is_multiple_of(25) {
            out.push(r);
            continue;
        }
        let mut retracted = r.clone();
        if let EventKind::Transfer(t) = &mut retracted.kind {
            t.stage = Stage::Retracted;
        }
        let mut again = r.clone();
        if let EventKind::Transfer(t) = &mut again.kind {
            // A bitcoin batch comes back as it was: an output keeps its
            // number (index + 1 is the batch's next output), and a batch
            // re-signed after a block that took most of an hour would be
            // past its intents' match window.
            match n / 25 % 3 {
                _ if t.chain.as_str() == "bitcoin" => {}
                0 => {}
                1 => t.index += 1,
                _ => t.tx_hash = TxHash::new(&format!("{}ee", t.tx_hash)),
            }
            moved.insert(key, (t.tx_hash.clone(), t.index));
        }
        out.extend([r, retracted, again]);
    }
    out
}

#[test]
fn reorganized_withdrawals_still_match_their_intents() {
    for seed in 1..=2u64 {
        for name in ["normal", "coinex"] {
            let config = day(name, seed, true, 1.0);
            let records = reorganized(&config);
            let retractions = records
                .iter()
                .filter(
                    |r| matches!(&r.kind, EventKind::Transfer(t) if t.stage == Stage::Retracted),
                )
                .count();
            assert!(retractions > 100, "{retractions} retractions");
            let r =
                replay_records(records.into_iter().map(Ok), RuleSet::builtin().unwrap()).unwrap();
            let plain = run(&config);
            let case = format!("{name}, seed {seed}");
            let unmatched = |r: &Replay| {
                r.report
                    .findings
                    .iter()
                    .filter(|f| f.rule == "unmatched-outflow")
                    .count()
            };
            let list = |r: &Replay| {
                r.report
                    .findings
                    .iter()
                    .filter(|f| f.rule == "unmatched-outflow")
                    .map(|f| format!("{} {}", f.t, f.summary))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            assert_eq!(
                unmatched(&r),
                unmatched(&plain),
                "{case}: reorganized\n{}\nplain\n{}",
                list(&r),
                list(&plain)
            );
            assert_eq!(
                r.report.freezes.len(),
                plain.report.freezes.len(),
                "{case}: {}",
                describe(&r)
            );
            if let (Some(a), Some(b)) = (r.report.score.as_ref(), plain.report.score.as_ref()) {
                assert_eq!(a.false_freezes, 0, "{case}: {}", describe(&r));
                assert_eq!(a.first_freeze_t, b.first_freeze_t, "{case}");
            }
        }
    }
}
