//! Reorgs and withdrawal intents: a retracted outflow gives its intent
//! back, so the same withdrawal included again in the new branch (same
//! key, another log index, or re-signed) still matches, and counts once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Driver, HOT, THIEF, USER, exchange};
use drainguard_model::Stage;
use proptest::prelude::*;

const RULES: &str = r#"
[intents]
match_window = "10m"

[[rule]]
id = "unmatched"
kind = "unmatched_outflow"
scope = "wallet"
severity = "critical"
action = "freeze"

[[rule]]
id = "count"
kind = "velocity"
scope = "wallet"
severity = "info"
action = "alert"
[rule.params]
window = "1h"
max_count = 1000000
"#;

/// Outflows of `HOT` in the velocity window.
fn counted(d: &mut Driver) -> u64 {
    d.engine
        .window_figures()
        .iter()
        .filter(|f| f.rule == "count" && f.scope.to_string().ends_with(HOT))
        .map(|f| f.count)
        .sum()
}

fn withdrawal(d: &mut Driver, tx: &str, index: u32, stage: Stage) {
    d.transfer("ethereum", tx, index, stage, HOT, USER, "ETH", "1");
}

#[test]
fn same_withdrawal_included_again_after_a_reorg_matches_and_counts_once() {
    let mut d = exchange(RULES);
    d.at(0)
        .intent("w1", "ethereum", HOT, USER, "ETH", "1", None);
    withdrawal(d.at(1), "0x01", 0, Stage::Pending);
    withdrawal(d.at(2), "0x01", 0, Stage::Included);
    assert_eq!((d.engine.open_intents(), counted(&mut d)), (0, 1));
    withdrawal(d.at(3), "0x01", 0, Stage::Retracted);
    assert_eq!(
        (d.engine.open_intents(), counted(&mut d)),
        (1, 0),
        "retracted: out of the windows, its intent open again"
    );
    withdrawal(d.at(4), "0x01", 0, Stage::Included);
    withdrawal(d.at(5), "0x01", 0, Stage::Confirmed);
    assert!(d.findings().is_empty(), "{:#?}", d.findings());
    assert_eq!(
        (d.engine.open_intents(), counted(&mut d)),
        (0, 1),
        "included again: its intent taken again, counted once"
    );
    let stats = d.engine.stats();
    assert_eq!((stats.outflows, stats.matched, stats.retracted), (1, 1, 1));
    // The intent is not there a second time for another outflow.
    withdrawal(d.at(6), "0x02", 0, Stage::Pending);
    assert_eq!(d.findings_of("unmatched").len(), 1);
}

#[test]
fn withdrawal_back_under_another_log_index_or_re_signed_matches_again() {
    for (tx, index) in [("0x01", 1), ("0x0b", 0)] {
        let mut d = exchange(RULES);
        d.at(0)
            .intent("w1", "ethereum", HOT, USER, "ETH", "1", None);
        withdrawal(d.at(1), "0x01", 0, Stage::Included);
        withdrawal(d.at(2), "0x01", 0, Stage::Retracted);
        withdrawal(d.at(3), tx, index, Stage::Included);
        assert!(
            d.findings().is_empty(),
            "{tx}:{index}: a false freeze: {:#?}",
            d.findings()
        );
        assert_eq!((d.engine.open_intents(), counted(&mut d)), (0, 1));
        withdrawal(d.at(4), "0x02", 0, Stage::Included);
        assert_eq!(d.findings_of("unmatched").len(), 1, "{tx}:{index}");
    }
}

#[test]
fn retracted_withdrawal_leaves_its_intent_open_with_its_own_time() {
    let mut d = exchange(RULES);
    d.at(0)
        .intent("w1", "ethereum", HOT, USER, "ETH", "1", None);
    withdrawal(d.at(1), "0x01", 0, Stage::Included);
    withdrawal(d.at(2), "0x01", 0, Stage::Retracted);
    withdrawal(d.at(3), "0x01", 0, Stage::Retracted);
    assert_eq!(d.engine.open_intents(), 1, "given back once, not twice");
    // Nothing comes back in the new branch; a later outflow with the
    // same fields matches the open intent.
    withdrawal(d.at(300), "0x05", 0, Stage::Pending);
    assert!(d.findings().is_empty(), "{:#?}", d.findings());
    assert_eq!(d.engine.open_intents(), 0);

    // Its match window still runs from the intent's time, not the
    // retraction's.
    d.at(1000)
        .intent("w2", "ethereum", HOT, USER, "ETH", "1", None);
    withdrawal(d.at(1001), "0x06", 0, Stage::Included);
    withdrawal(d.at(1500), "0x06", 0, Stage::Retracted);
    withdrawal(d.at(1000 + 601), "0x07", 0, Stage::Included);
    assert_eq!(d.findings_of("unmatched").len(), 1);
}

#[test]
fn intent_found_by_tx_hash_is_found_by_it_again() {
    let mut d = exchange(RULES);
    // The hash matches whatever the fields say.
    d.at(0)
        .intent("w1", "ethereum", HOT, USER, "ETH", "5", Some("0xabc"));
    let send = |d: &mut Driver, index: u32, stage: Stage| {
        d.transfer("ethereum", "0xabc", index, stage, HOT, THIEF, "ETH", "5");
    };
    send(d.at(1), 0, Stage::Included);
    send(d.at(2), 0, Stage::Retracted);
    send(d.at(3), 0, Stage::Included);
    send(d.at(4), 0, Stage::Retracted);
    send(d.at(5), 1, Stage::Included);
    assert!(d.findings().is_empty(), "{:#?}", d.findings());
    assert_eq!((d.engine.open_intents(), counted(&mut d)), (0, 1));
}

#[test]
fn re_inclusion_takes_one_intent_and_leaves_the_other_for_its_twin() {
    let mut d = exchange(RULES);
    d.at(0)
        .intent("w1", "ethereum", HOT, USER, "ETH", "1", None)
        .intent("w2", "ethereum", HOT, USER, "ETH", "1", None);
    withdrawal(d.at(1), "0x01", 0, Stage::Included);
    withdrawal(d.at(2), "0x01", 0, Stage::Retracted);
    withdrawal(d.at(3), "0x01", 0, Stage::Included);
    withdrawal(d.at(4), "0x02", 0, Stage::Included);
    assert!(d.findings().is_empty(), "{:#?}", d.findings());
    assert_eq!((d.engine.open_intents(), counted(&mut d)), (0, 2));
    withdrawal(d.at(5), "0x03", 0, Stage::Included);
    assert_eq!(d.findings_of("unmatched").len(), 1, "two intents, three");
}

#[derive(Debug, Clone, Copy)]
enum Op {
    /// Included again under the same key.
    Again,
    /// Retracted.
    Retract,
    /// Included under a new key: another log index, or re-signed.
    NewKey(bool),
    Confirm,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Again),
        Just(Op::Retract),
        any::<bool>().prop_map(Op::NewKey),
        Just(Op::Confirm),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Withdrawals with an intent each, reorganized at random: never
    /// unmatched; an intent is open exactly while its withdrawal is not
    /// counted; the windows hold each counted withdrawal once.
    #[test]
    fn reorgs_never_unmatch_a_withdrawal(
        n in 1usize..5,
        ops in proptest::collection::vec((0usize..5, op(), 1i64..4), 1..80),
    ) {
        let mut d = exchange(RULES);
        for w in 0..n {
            d.at(0).intent(&format!("w{w}"), "ethereum", HOT, USER, "ETH", &(w + 1).to_string(), None);
        }
        // Model: each withdrawal's current key (tx, index) and whether it
        // is counted. Every withdrawal is first seen pending.
        let mut keys: Vec<(String, u32, bool)> = (0..n).map(|w| (format!("0x{w:02x}00"), 0, true)).collect();
        let mut now = 1;
        for (w, (tx, index, _)) in keys.iter().enumerate() {
            d.at(now).transfer("ethereum", tx, *index, Stage::Pending, HOT, USER, "ETH", &(w + 1).to_string());
        }
        let mut resigned = 0u32;
        for (w, op, dt) in ops {
            let w = w % n;
            now += dt;
            let amount = (w + 1).to_string();
            let (tx, index, is_counted) = &mut keys[w];
            let stage = match op {
                Op::Again | Op::Confirm if !*is_counted => Stage::Included,
                Op::Again => Stage::Included,
                Op::Confirm => Stage::Confirmed,
                Op::Retract => Stage::Retracted,
                Op::NewKey(_) if *is_counted => Stage::Included,
                Op::NewKey(by_index) => {
                    if by_index {
                        *index += 1;
                    } else {
                        resigned += 1;
                        *tx = format!("0x{w:02x}{resigned:02x}");
                    }
                    Stage::Included
                }
            };
            *is_counted = stage != Stage::Retracted;
            let (tx, index) = (tx.clone(), *index);
            d.at(now).transfer("ethereum", &tx, index, stage, HOT, USER, "ETH", &amount);
            prop_assert!(d.findings().is_empty(), "{:#?}", d.findings());
            let live = keys.iter().filter(|k| k.2).count();
            prop_assert_eq!(d.engine.open_intents(), n - live);
            prop_assert_eq!(counted(&mut d), live as u64);
        }
    }
}
