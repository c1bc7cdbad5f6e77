//! Each rule fires on the case built for it and stays quiet otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{COLD, HOT, HOT2, THIEF, USER, exchange, units};
use drainguard_model::{Scope, Stage, Usd};

const UNMATCHED: &str = r#"
[[rule]]
id = "unmatched"
kind = "unmatched_outflow"
scope = "wallet"
severity = "critical"
action = "freeze"
"#;

#[test]
fn unmatched_outflow_fires_at_pending_once_across_stages() {
    let mut d = exchange(UNMATCHED);
    // Connect the wallet: one intent, matched.
    d.at(1)
        .intent("w1", "ethereum", HOT, USER, "ETH", "1", None);
    d.at(2).eth("0x01", Stage::Pending, HOT, USER, "1");
    assert!(d.findings().is_empty(), "a matched withdrawal is quiet");
    d.at(10).eth("0x02", Stage::Pending, HOT, THIEF, "900");
    d.at(22).eth("0x02", Stage::Included, HOT, THIEF, "900");
    d.at(200).eth("0x02", Stage::Confirmed, HOT, THIEF, "900");
    let f = d.findings_of("unmatched");
    assert_eq!(f.len(), 1, "one transfer, one finding, whatever its stages");
    assert_eq!(
        f[0].t.0,
        common::T0 * 1_000_000_000 + 10_000_000_000,
        "fires at the pending record"
    );
    assert_eq!(f[0].evidence[0].stage, "pending");
    assert_eq!(f[0].evidence[0].amount, "900");
    assert_eq!(d.freezes().len(), 1);
    assert_eq!(
        d.freezes()[0].scope.to_string(),
        format!("wallet:ethereum:{HOT}")
    );
}

#[test]
fn intent_matching_rules() {
    let mut d = exchange(
        &(UNMATCHED.to_string()
            + r#"
[intents]
match_window = "10m"
tolerance = 0.01
"#),
    );
    d.at(0)
        .intent("a", "ethereum", HOT, USER, "ETH", "10", None);
    // Within 1%: matches.
    d.at(5).eth("0x01", Stage::Pending, HOT, USER, "10.05");
    // The same intent does not match a second outflow.
    d.at(6).eth("0x02", Stage::Pending, HOT, USER, "10");
    assert_eq!(
        d.findings().len(),
        1,
        "each intent matches at most one outflow"
    );
    // By tx hash, whatever the fields say.
    d.at(7)
        .intent("b", "ethereum", HOT, USER, "ETH", "5", Some("0xAbC"));
    d.at(8).eth(
        "0xabc",
        Stage::Pending,
        HOT,
        "0x00000000000000000000000000000000000000f1",
        "5",
    );
    assert_eq!(
        d.findings().len(),
        1,
        "matched by tx hash (case-insensitive)"
    );
    // Outside the tolerance.
    d.at(9)
        .intent("c", "ethereum", HOT, USER, "ETH", "10", None);
    d.at(10).eth("0x03", Stage::Pending, HOT, USER, "10.2");
    assert_eq!(d.findings().len(), 2);
    // An intent that comes after its outflow does not excuse it.
    d.at(11).eth("0x04", Stage::Pending, HOT, USER, "3");
    d.at(12)
        .intent("d", "ethereum", HOT, USER, "ETH", "3", None);
    assert_eq!(d.findings().len(), 3);
    // An intent older than the match window has expired.
    d.at(13)
        .intent("e", "ethereum", HOT, USER, "ETH", "4", None);
    d.at(13 + 601).eth("0x05", Stage::Pending, HOT, USER, "4");
    assert_eq!(d.findings().len(), 4);
    // Another destination, same amount: no match.
    d.at(700)
        .intent("f", "ethereum", HOT, USER, "ETH", "6", None);
    d.at(701).eth("0x06", Stage::Pending, HOT, THIEF, "6");
    assert_eq!(d.findings().len(), 5);
}

#[test]
fn unmatched_outflow_waits_for_intents_to_flow_unless_always() {
    let mut d = exchange(UNMATCHED);
    d.at(1).eth("0x01", Stage::Pending, HOT, THIEF, "900");
    assert!(
        d.findings().is_empty(),
        "no intents ever seen for this wallet: the rule cannot apply"
    );
    let mut d = exchange(&UNMATCHED.replace(
        "action = \"freeze\"",
        "action = \"freeze\"\n[rule.params]\nintents = \"always\"",
    ));
    d.at(1).eth("0x01", Stage::Pending, HOT, THIEF, "900");
    assert_eq!(d.findings().len(), 1);
}

#[test]
fn intents_seen_before_their_wallet_is_declared_still_connect_it() {
    const LATE: &str = "0x00000000000000000000000000000000000000a9";
    let mut d = exchange(UNMATCHED);
    // The withdrawal system speaks of the wallet before the watcher
    // declares it.
    d.at(1)
        .intent("w1", "ethereum", LATE, USER, "ETH", "1", None);
    d.at(2).hot("ethereum", LATE, &[("ETH", "1000")]);
    d.at(3).eth("0x01", Stage::Pending, LATE, USER, "1");
    assert!(d.findings().is_empty(), "the intent matches");
    d.at(4).eth("0x02", Stage::Pending, LATE, THIEF, "900");
    assert_eq!(
        d.findings_of("unmatched").len(),
        1,
        "its intents flow, so an unmatched outflow is judged"
    );
    // And a wallet declared first is connected by its first intent.
    d.at(5)
        .intent("w2", "ethereum", HOT2, USER, "ETH", "1", None);
    d.at(6).eth("0x03", Stage::Pending, HOT2, THIEF, "900");
    assert_eq!(d.findings_of("unmatched").len(), 2);
}

#[test]
fn internal_moves_and_deposits_are_not_outflows() {
    let mut d = exchange(&(UNMATCHED.to_string() + VELOCITY));
    d.at(0).intent("w", "ethereum", HOT, USER, "ETH", "1", None);
    d.at(1).eth("0x01", Stage::Pending, HOT, COLD, "500");
    d.at(2).eth("0x02", Stage::Pending, HOT, HOT2, "100");
    d.at(3).eth("0x03", Stage::Pending, USER, HOT, "50");
    d.at(4).eth("0x04", Stage::Pending, COLD, HOT, "500");
    assert!(d.findings().is_empty());
    assert!(
        d.engine.window_figures().is_empty(),
        "nothing entered an outflow window"
    );
}

const VELOCITY: &str = r#"
[[rule]]
id = "velocity"
kind = "velocity"
scope = "wallet"
severity = "warning"
action = "alert"
[rule.params]
window = "10m"
max_count = 3
"#;

#[test]
fn velocity_counts_each_transfer_once_and_takes_retractions_back() {
    let mut d = exchange(VELOCITY);
    for (i, tx) in ["0x01", "0x02", "0x03"].iter().enumerate() {
        let t = i as i64 * 10;
        d.at(t).eth(tx, Stage::Pending, HOT, USER, "1");
        d.at(t + 1).eth(tx, Stage::Included, HOT, USER, "1");
        d.at(t + 2).eth(tx, Stage::Confirmed, HOT, USER, "1");
    }
    assert!(
        d.findings().is_empty(),
        "3 outflows seen in 9 records is still 3"
    );
    d.at(40).eth("0x03", Stage::Retracted, HOT, USER, "1");
    d.at(41).eth("0x04", Stage::Pending, HOT, USER, "1");
    assert!(
        d.findings().is_empty(),
        "the retracted one no longer counts"
    );
    d.at(42).eth("0x05", Stage::Pending, HOT, USER, "1");
    let f = d.findings_of("velocity");
    assert_eq!(f.len(), 1);
    assert!(f[0].summary.contains("4 outflows"), "{}", f[0].summary);
    // Still over the limit: the same incident, no second finding.
    d.at(43).eth("0x06", Stage::Pending, HOT, USER, "1");
    assert_eq!(d.findings().len(), 1);
    assert!(d.freezes().is_empty(), "an alert rule never freezes");
    // Ten minutes later the window has emptied: a new burst is a new incident.
    for (i, tx) in ["0x11", "0x12", "0x13", "0x14"].iter().enumerate() {
        d.at(1000 + i as i64)
            .eth(tx, Stage::Pending, HOT, USER, "1");
    }
    assert_eq!(d.findings().len(), 2);
}

/// Sends enough heads for the engine to prune (it does every few thousand
/// events, at most every ten minutes of event time).
fn let_it_prune(d: &mut common::Driver, from_block: u64) {
    for b in 0..5000 {
        d.send(drainguard_model::EventKind::Head(drainguard_model::Head {
            chain: drainguard_model::Chain::new("ethereum"),
            block: from_block + b,
            hash: String::new(),
        }));
    }
}

#[test]
fn a_retraction_after_its_window_emptied_takes_nothing_from_a_later_window() {
    let mut d = exchange(VELOCITY);
    // A stuck withdrawal: pending, never included.
    d.at(0).eth("0x01", Stage::Pending, HOT, USER, "1");
    // Its window empties and is dropped.
    d.at(1200);
    let_it_prune(&mut d, 1);
    // A new burst fills a new window for the same wallet: one incident.
    for (i, tx) in ["0x11", "0x12", "0x13", "0x14"].iter().enumerate() {
        d.at(1300 + i as i64)
            .eth(tx, Stage::Pending, HOT, USER, "1");
    }
    assert_eq!(d.findings_of("velocity").len(), 1);
    // The stuck one is dropped from the mempool: it left the window long
    // ago, so the new window keeps its four and stays over its limit.
    d.at(1310).eth("0x01", Stage::Retracted, HOT, USER, "1");
    d.at(1311).eth("0x15", Stage::Pending, HOT, USER, "1");
    let f = d.findings_of("velocity");
    assert_eq!(f.len(), 1, "still the same incident: {f:#?}");
}

const SHARE: &str = r#"
[[rule]]
id = "share"
kind = "outflow_window"
scope = "wallet"
severity = "critical"
action = "freeze"
[rule.params]
window = "1h"
per_asset = true
max_share = 0.5
"#;

#[test]
fn outflow_window_share_of_balance_at_window_start() {
    let mut d = exchange(SHARE);
    // 300 of 1000 leaves and is mined: the balance drops to 700, but the
    // window still measures against the 1000 held at its start.
    d.at(0).eth("0x01", Stage::Pending, HOT, USER, "300");
    d.at(12).eth("0x01", Stage::Included, HOT, USER, "300");
    d.at(20).eth("0x02", Stage::Pending, HOT, USER, "150");
    assert!(d.findings().is_empty(), "45% is under the limit");
    // The dashboard's figures: 450 ETH against half of the 1000 held at
    // the window's start, in base units and in dollars at $2000.
    let figs = d.engine.window_figures();
    assert_eq!(figs.len(), 1);
    assert_eq!(figs[0].sum, units("450").0.to::<u128>());
    assert_eq!(figs[0].limit, Some(units("500").0.to::<u128>()));
    assert_eq!(figs[0].sum_usd, Some(Usd::from_dollars(900_000)));
    assert_eq!(figs[0].limit_usd, Some(Usd::from_dollars(1_000_000)));
    d.at(30).eth("0x03", Stage::Pending, HOT, USER, "60");
    let f = d.findings_of("share");
    assert_eq!(f.len(), 1, "51% crosses it");
    // Its evidence is every transaction in the window, not only the last.
    let listed: Vec<_> = f[0]
        .evidence
        .iter()
        .map(|e| {
            (
                e.tx_hash.as_str(),
                e.amount.as_str(),
                e.stage.as_str(),
                e.to.as_str(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            ("0x01", "300", "included", USER),
            ("0x02", "150", "pending", USER),
            ("0x03", "60", "pending", USER)
        ]
    );
    assert!(
        f[0].figures
            .contains(&("transactions_in_window".into(), "3".into()))
    );
    assert!(
        f[0].summary.contains("51.0% of the ETH balance"),
        "{}",
        f[0].summary
    );
    assert_eq!(d.freezes().len(), 1);
}

#[test]
fn outflow_window_retraction_rearms_and_usd_limits() {
    let mut d = exchange(
        r#"
[[rule]]
id = "usd"
kind = "outflow_window"
scope = "chain"
severity = "warning"
action = "alert"
[rule.params]
window = "1h"
max_usd = 1000000
"#,
    );
    d.at(0).eth("0x01", Stage::Included, HOT, USER, "300"); // $600k
    d.at(1).eth("0x02", Stage::Included, HOT2, USER, "250"); // $500k
    assert_eq!(
        d.findings_of("usd").len(),
        1,
        "chain scope sums both wallets"
    );
    let figs = d.engine.window_figures();
    assert_eq!(figs.len(), 1);
    assert_eq!(figs[0].sum, 1_100_000 * 1_000_000);
    assert_eq!(figs[0].scope, Scope::Chain("ethereum".into()));
    assert_eq!(figs[0].limit, Some(1_000_000 * 1_000_000));
    assert_eq!(figs[0].sum_usd, Some(Usd::from_dollars(1_100_000)));
    assert_eq!(figs[0].limit_usd, Some(Usd::from_dollars(1_000_000)));
    d.at(2).eth("0x02", Stage::Retracted, HOT2, USER, "250");
    assert_eq!(d.engine.window_figures()[0].sum, 600_000 * 1_000_000);
    d.at(3).eth("0x02", Stage::Included, HOT2, USER, "250");
    assert_eq!(
        d.findings_of("usd").len(),
        2,
        "re-included after a reorg: a new crossing"
    );
}

const LARGE_NEW: &str = r#"
[[rule]]
id = "large-new"
kind = "new_destination"
scope = "wallet"
severity = "critical"
action = "freeze"
[rule.params]
large_share = 0.03
large_multiple = 2.0
history_min = 3
"#;

#[test]
fn new_destination_large_payment_to_a_fresh_address() {
    let mut d = exchange(LARGE_NEW);
    d.at(0).eth("0x01", Stage::Pending, HOT, USER, "10");
    assert!(d.findings().is_empty(), "1% of the balance is not large");
    d.at(1).eth("0x02", Stage::Pending, HOT, THIEF, "40");
    assert_eq!(d.findings_of("large-new").len(), 1, "4% to a new address");
    // An address first paid a moment ago is still new...
    d.at(2).eth("0x03", Stage::Pending, HOT2, USER, "100");
    assert_eq!(d.findings().len(), 2);
    // ...but not once it has been known for longer than fresh_for (7 days).
    d.at(8 * 86_400)
        .eth("0x04", Stage::Pending, HOT2, USER, "100");
    assert_eq!(d.findings().len(), 2);
}

#[test]
fn new_destination_respects_the_wallets_own_history() {
    let mut d = exchange(LARGE_NEW);
    // This wallet routinely sends 5% payments.
    for i in 0..4 {
        let to = format!("0x00000000000000000000000000000000000001{i:02}");
        d.at(i)
            .eth(&format!("0x1{i}"), Stage::Included, HOT, &to, "50");
    }
    let before = d.findings().len();
    assert_eq!(
        before, 3,
        "until history_min payments are known, share alone decides"
    );
    d.at(10).eth(
        "0x20",
        Stage::Pending,
        HOT,
        "0x0000000000000000000000000000000000000200",
        "60",
    );
    assert_eq!(
        d.findings().len(),
        before,
        "60 is under twice its largest earlier payment (50)"
    );
    // The 60 raised the largest earlier payment, so the bar is now 120.
    d.at(12).eth(
        "0x22",
        Stage::Pending,
        HOT,
        "0x0000000000000000000000000000000000000202",
        "121",
    );
    assert_eq!(d.findings().len(), before + 1);
}

const CONVERGING: &str = r#"
[[rule]]
id = "converging"
kind = "new_destination"
scope = "wallet"
severity = "critical"
action = "freeze"
[rule.params]
window = "1h"
min_sources = 2
repeat_count = 3
min_total_share = 0.02
"#;

#[test]
fn new_destination_converging_on_one_fresh_address() {
    let mut d = exchange(CONVERGING);
    d.at(0).eth("0x01", Stage::Pending, HOT, THIEF, "15");
    assert!(d.findings().is_empty());
    d.at(1).eth("0x02", Stage::Pending, HOT2, THIEF, "15");
    let f = d.findings_of("converging");
    assert_eq!(f.len(), 1, "two hot wallets paying one new address");
    assert!(f[0].summary.contains("2 source(s)"), "{}", f[0].summary);
    // Across chains: the same EVM address on another chain counts too.
    let mut d = exchange(CONVERGING);
    d.hot("bsc", HOT, &[("ETH", "1000")]);
    d.at(0).eth("0x01", Stage::Pending, HOT, THIEF, "15");
    d.at(1)
        .transfer("bsc", "0x01", 0, Stage::Pending, HOT, THIEF, "ETH", "15");
    assert_eq!(d.findings().len(), 1, "one wallet address, two chains");
}

#[test]
fn new_destination_repeats_and_small_payments() {
    let mut d = exchange(CONVERGING);
    // A user paid twice from two wallets, small amounts: under 2% in total.
    d.at(0).eth("0x01", Stage::Pending, HOT, USER, "1");
    d.at(1).eth("0x02", Stage::Pending, HOT2, USER, "1");
    assert!(d.findings().is_empty(), "small payments do not converge");
    // The same wallet, three times, enough value: repeated.
    for i in 0..3 {
        d.at(10 + i)
            .eth(&format!("0x1{i}"), Stage::Pending, HOT, THIEF, "10");
    }
    assert_eq!(d.findings().len(), 1);
    // A retraction takes a payment back.
    let mut d = exchange(CONVERGING);
    d.at(0).eth("0x01", Stage::Included, HOT, THIEF, "15");
    d.at(1).eth("0x01", Stage::Retracted, HOT, THIEF, "15");
    d.at(2).eth("0x02", Stage::Pending, HOT2, THIEF, "15");
    assert!(d.findings().is_empty(), "the first payment was reorged out");
}

#[test]
fn denylist_outflows_and_approvals() {
    let rules = r#"
[[rule]]
id = "deny"
kind = "denylist"
scope = "wallet"
severity = "critical"
action = "freeze"
[rule.params]
addresses = ["0x00000000000000000000000000000000000000EE"]
"#;
    let mut d = exchange(rules);
    d.at(0).eth("0x01", Stage::Pending, HOT, USER, "1");
    assert!(d.findings().is_empty());
    d.at(1).eth("0x02", Stage::Pending, HOT, THIEF, "0.01");
    assert_eq!(
        d.findings_of("deny").len(),
        1,
        "any amount, case-insensitive"
    );
    d.at(2).approval("ethereum", "0x03", HOT, THIEF);
    assert_eq!(
        d.findings_of("deny").len(),
        2,
        "approving a denylisted spender"
    );
    assert_eq!(d.freezes().len(), 1, "the wallet is already frozen");
}

#[test]
fn correlation_escalates_findings_on_two_chains_to_a_global_freeze() {
    let rules = UNMATCHED.to_string()
        + r#"
[rule.params]
intents = "always"

[[rule]]
id = "corr"
kind = "correlation"
scope = "global"
severity = "critical"
action = "freeze"
[rule.params]
window = "30m"
min_chains = 2
min_wallets = 3
"#;
    let mut d = exchange(&rules);
    d.hot("tron", "TXhot", &[("TRX", "1000000")]);
    d.at(0).eth("0x01", Stage::Pending, HOT, THIEF, "100");
    d.at(60).eth("0x02", Stage::Pending, HOT, THIEF, "100");
    assert!(d.findings_of("corr").is_empty(), "one chain, one wallet");
    d.at(240).transfer(
        "tron",
        "aa",
        0,
        Stage::Pending,
        "TXhot",
        "Tthief",
        "TRX",
        "900000",
    );
    let corr = d.findings_of("corr");
    assert_eq!(corr.len(), 1);
    let scopes: Vec<String> = d.freezes().iter().map(|f| f.scope.to_string()).collect();
    assert_eq!(
        scopes,
        vec![
            format!("wallet:ethereum:{HOT}"),
            "wallet:tron:TXhot".to_string(),
            "global".to_string()
        ]
    );
    let freezes = d.freezes();
    assert_eq!(
        freezes[2].supersedes,
        vec![freezes[0].id.clone(), freezes[1].id.clone()],
        "the global freeze supersedes the wallet freezes inside it"
    );
    assert!(freezes[0].supersedes.is_empty());
    d.at(300).eth("0x03", Stage::Pending, HOT2, THIEF, "100");
    assert_eq!(
        d.freezes().len(),
        3,
        "everything is covered by the global freeze"
    );
    // Outside the window, a lone finding does not escalate.
    let mut d = exchange(&rules);
    d.hot("tron", "TXhot", &[("TRX", "1000000")]);
    d.at(0).eth("0x01", Stage::Pending, HOT, THIEF, "100");
    d.at(3600).transfer(
        "tron",
        "aa",
        0,
        Stage::Pending,
        "TXhot",
        "Tthief",
        "TRX",
        "900000",
    );
    assert!(d.findings_of("corr").is_empty());
}

#[test]
fn shadow_rules_record_but_never_freeze() {
    let mut d = exchange(&UNMATCHED.replace(
        "action = \"freeze\"",
        "action = \"freeze\"\nmode = \"shadow\"\n[rule.params]\nintents = \"always\"",
    ));
    d.at(0).eth("0x01", Stage::Pending, HOT, THIEF, "100");
    assert_eq!(d.findings().len(), 1);
    assert!(d.findings()[0].shadow);
    assert!(d.freezes().is_empty());
}

#[test]
fn balances_follow_included_and_retracted_transfers() {
    let mut d = exchange(LARGE_NEW);
    // 970 leaves and is mined; 30 remain. A 2-ETH payment is now 6.7%.
    d.at(0).eth("0x01", Stage::Included, HOT, COLD, "970");
    d.at(1).eth("0x02", Stage::Pending, HOT, THIEF, "2");
    assert_eq!(d.findings().len(), 1);
    // Reorged out: the balance is 1000 again, and 2 ETH is 0.2%.
    let mut d = exchange(LARGE_NEW);
    d.at(0).eth("0x01", Stage::Included, HOT, COLD, "970");
    d.at(1).eth("0x01", Stage::Retracted, HOT, COLD, "970");
    d.at(2).eth("0x02", Stage::Pending, HOT, THIEF, "2");
    assert!(d.findings().is_empty());
    let _ = units("1");
}

#[test]
fn a_window_finding_lists_the_last_transactions_in_its_window() {
    let mut d = exchange(&VELOCITY.replace("max_count = 3", "max_count = 149"));
    // 150 withdrawals with full 32-byte hashes, one a second.
    let hash = |n: usize| format!("0x{n:064x}");
    for n in 1..=150 {
        d.at(n as i64)
            .eth(&hash(n), Stage::Pending, HOT, USER, "0.1");
    }
    let f = d.findings_of("velocity");
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].evidence.len(), drainguard_engine::MAX_WINDOW_EVIDENCE);
    let hashes: Vec<String> = f[0]
        .evidence
        .iter()
        .map(|e| e.tx_hash.to_string())
        .collect();
    let first = 151 - drainguard_engine::MAX_WINDOW_EVIDENCE;
    let expected: Vec<String> = (first..=150).map(hash).collect();
    assert_eq!(
        hashes, expected,
        "the last ones, oldest first, spelled as received"
    );
    assert!(
        f[0].figures
            .contains(&("transactions_in_window".into(), "150".into()))
    );
    assert!(f[0].figures.contains(&(
        "evidence_listed".into(),
        format!("the last {} of 150", drainguard_engine::MAX_WINDOW_EVIDENCE)
    )));
    assert!(
        f[0].evidence
            .iter()
            .all(|e| e.amount == "0.1" && e.from.as_str() == HOT)
    );
}

#[test]
fn the_nearest_window_figures_are_the_fullest_windows_spelled_out_in_full() {
    let mut d = exchange(SHARE);
    // HOT sends 40% of its balance, HOT2 10%: HOT's window is the fuller.
    d.at(0).eth("0x01", Stage::Pending, HOT, USER, "400");
    d.at(1).eth("0x02", Stage::Pending, HOT2, USER, "100");
    let all = d.engine.window_figures();
    assert_eq!(all.len(), 2);
    let nearest = d.engine.nearest_window_figures(1);
    assert_eq!(nearest.len(), 1);
    assert_eq!(
        nearest[0].scope,
        Scope::Wallet("ethereum".into(), HOT.into()),
        "the fuller window"
    );
    assert!(
        all.contains(&nearest[0]),
        "the same figure as in the full list"
    );
    assert_eq!(nearest[0].limit, Some(units("500").0.to::<u128>()));
    assert_eq!(d.engine.nearest_window_figures(5), all, "all when fewer");
}
