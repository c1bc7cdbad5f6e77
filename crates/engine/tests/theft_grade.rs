//! What may freeze: tripwires, authorised outflows, the joined signal of
//! a new address collecting from two sources, the unprecedented payment,
//! and a correlation fed only by findings that freeze on their own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{HOT, HOT2, THIEF, USER, exchange};
use drainguard_model::{Scope, Stage, WalletRole};

const DECOY: &str = "0x00000000000000000000000000000000000000d1";

const TRIPWIRE: &str = r#"
[[rule]]
id = "tripwire"
kind = "tripwire"
scope = "global"
severity = "critical"
action = "freeze"
"#;

#[test]
fn any_outflow_from_a_tripwire_freezes_everything_at_once() {
    let mut d = exchange(TRIPWIRE);
    d.wallet("ethereum", DECOY, WalletRole::Tripwire, &[("ETH", "30")]);
    // Hot wallets' outflows are no tripwire's business.
    d.at(1).eth("0x01", Stage::Pending, HOT, THIEF, "900");
    assert!(d.findings().is_empty());
    // The decoy moves a hundredth of a coin, even to the exchange's own
    // wallet, at the pending stage.
    d.at(2).eth("0x02", Stage::Pending, DECOY, HOT, "0.01");
    let f = d.findings_of("tripwire");
    assert_eq!(f.len(), 1);
    assert!(f[0].summary.starts_with("tripwire"), "{}", f[0].summary);
    assert_eq!(d.freezes().len(), 1);
    assert_eq!(d.freezes()[0].scope, Scope::Global);
    // Judged once per transfer, whatever its stages.
    d.at(3).eth("0x02", Stage::Included, DECOY, HOT, "0.01");
    assert_eq!(d.findings_of("tripwire").len(), 1);
}

#[test]
fn what_a_stranger_can_forge_never_trips_the_tripwire() {
    let mut d = exchange(TRIPWIRE);
    d.wallet("ethereum", DECOY, WalletRole::Tripwire, &[("ETH", "30")]);
    // A zero-value transfer "from" the decoy (transferFrom(decoy, x, 0)
    // succeeds on any token).
    d.at(1).eth("0x01", Stage::Pending, DECOY, THIEF, "0");
    // A token no wallet of the exchange holds: a contract a stranger
    // deployed, emitting Transfer and Approval logs that name the decoy.
    let fake = "0x00000000000000000000000000000000000000fa";
    d.at(2).transfer(
        "ethereum",
        "0x02",
        0,
        Stage::Pending,
        DECOY,
        THIEF,
        fake,
        "1000",
    );
    d.send(drainguard_model::EventKind::Approval(
        drainguard_model::Approval {
            chain: drainguard_model::Chain::new("ethereum"),
            tx_hash: drainguard_model::TxHash::new("0x03"),
            owner: drainguard_model::Address::new(DECOY),
            spender: drainguard_model::Address::new(THIEF),
            asset: drainguard_model::Asset::new(fake),
            amount: drainguard_model::Amount::MAX,
            standard: drainguard_model::ApprovalStandard::Erc20,
        },
    ));
    assert!(d.findings().is_empty(), "{:?}", d.findings());
    assert!(d.freezes().is_empty());
}

#[test]
fn an_approval_signed_by_a_tripwire_freezes_everything() {
    let mut d = exchange(TRIPWIRE);
    // USDT is a configured token: the watcher reads the decoy's balance.
    d.wallet(
        "ethereum",
        DECOY,
        WalletRole::Tripwire,
        &[("ETH", "30"), ("USDT", "1000")],
    );
    d.at(1).approval("ethereum", "0x09", HOT, THIEF);
    assert!(d.findings().is_empty(), "a hot wallet's approval is not");
    d.at(2).approval("ethereum", "0x0a", DECOY, THIEF);
    assert_eq!(d.findings_of("tripwire").len(), 1);
    assert_eq!(d.freezes()[0].scope, Scope::Global);
}

// The pre-signing verdict would hold an intent of 90% of the balance (it
// is on by default): off here, the exchange signed it anyway.
const SINGLE: &str = r#"
[presign]
enabled = false

[[rule]]
id = "unmatched"
kind = "unmatched_outflow"
scope = "wallet"
severity = "critical"
action = "freeze"

[[rule]]
id = "drain"
kind = "balance_drain"
scope = "wallet"
severity = "critical"
action = "freeze"
[rule.params]
max_tx_share = 0.8

[[rule]]
id = "correlation"
kind = "correlation"
scope = "global"
severity = "critical"
action = "freeze"
[rule.params]
min_chains = 2
min_wallets = 2
"#;

#[test]
fn an_outflow_an_intent_announced_alerts_but_never_freezes_or_escalates() {
    let mut d = exchange(SINGLE);
    // Both wallets announce 900 ETH (90% of each) and send it.
    d.at(0)
        .intent("a", "ethereum", HOT, USER, "ETH", "900", None)
        .intent("b", "ethereum", HOT2, USER, "ETH", "900", None);
    d.at(1).eth("0x01", Stage::Pending, HOT, USER, "900");
    d.at(2).eth("0x02", Stage::Pending, HOT2, USER, "900");
    let f = d.findings_of("drain");
    assert_eq!(f.len(), 2, "the size is still reported");
    assert!(f.iter().all(|f| !f.wants_freeze));
    assert!(
        f[0].summary.contains("authorised by a withdrawal intent"),
        "{}",
        f[0].summary
    );
    assert!(d.freezes().is_empty(), "{:?}", d.freezes());
    assert!(d.findings_of("correlation").is_empty());
    // The same without intents freezes, and two such wallets escalate.
    let mut d = exchange(SINGLE);
    d.at(1).eth("0x01", Stage::Pending, HOT, THIEF, "900");
    d.at(2).eth("0x02", Stage::Pending, HOT2, THIEF, "900");
    assert!(d.findings_of("drain").iter().all(|f| f.wants_freeze));
    assert_eq!(d.findings_of("correlation").len(), 1);
    assert!(d.freezes().iter().any(|f| f.scope == Scope::Global));
}

const JOIN: &str = r#"
[[rule]]
id = "join"
kind = "new_destination"
scope = "wallet"
severity = "critical"
action = "freeze"
[rule.params]
fresh_for = "1h"
window = "10m"
min_sources = 2
min_source_share = 0.03
"#;

#[test]
fn a_new_address_taking_large_shares_of_two_sources_freezes() {
    // Another wallet.
    let mut d = exchange(JOIN);
    d.at(0).eth("0x01", Stage::Pending, HOT, THIEF, "40");
    assert!(d.findings().is_empty(), "one large payment is ambiguous");
    d.at(30).eth("0x02", Stage::Pending, HOT2, THIEF, "40");
    assert_eq!(d.findings_of("join").len(), 1);
    assert_eq!(d.freezes().len(), 1);
    // Another asset of the same wallet.
    let mut d = exchange(JOIN);
    d.hot("ethereum", HOT, &[("ETH", "1000"), ("USDT", "1000000")]);
    d.at(0).eth("0x01", Stage::Pending, HOT, THIEF, "40");
    d.at(30).transfer(
        "ethereum",
        "0x02",
        0,
        Stage::Pending,
        HOT,
        THIEF,
        "USDT",
        "40000",
    );
    assert_eq!(d.findings_of("join").len(), 1, "another asset is a source");
    // A small second payment is no second source: customers send a large
    // sum and a small one to the same new account.
    let mut d = exchange(JOIN);
    d.at(0).eth("0x01", Stage::Pending, HOT, THIEF, "40");
    d.at(30).eth("0x02", Stage::Pending, HOT2, THIEF, "29");
    assert!(d.findings().is_empty(), "2.9% is under 3%");
    // Minutes, not hours: the window is ten minutes.
    let mut d = exchange(JOIN);
    d.at(0).eth("0x01", Stage::Pending, HOT, THIEF, "40");
    d.at(601).eth("0x02", Stage::Pending, HOT2, THIEF, "40");
    assert!(d.findings().is_empty());
}

#[test]
fn no_address_is_new_until_the_engine_has_watched_long_enough() {
    let warm = format!("{JOIN}warm_up = \"6h\"\n");
    let mut d = exchange(&warm);
    // In the first six hours the engine has not yet met the exchange's
    // regular counterparties: the join does not fire.
    d.at(0).eth("0x00", Stage::Pending, HOT, USER, "1");
    d.at(3_600).eth("0x01", Stage::Pending, HOT, THIEF, "40");
    d.at(3_630).eth("0x02", Stage::Pending, HOT2, THIEF, "40");
    assert!(d.findings().is_empty());
    // An address first paid after that is new.
    let other = "0x00000000000000000000000000000000000000ef";
    d.at(6 * 3_600 + 1)
        .eth("0x03", Stage::Pending, HOT, other, "40");
    d.at(6 * 3_600 + 30)
        .eth("0x04", Stage::Pending, HOT2, other, "40");
    assert_eq!(d.findings_of("join").len(), 1);
}

const UNPRECEDENTED: &str = r#"
[[rule]]
id = "unprecedented"
kind = "balance_drain"
scope = "wallet"
severity = "critical"
action = "freeze"
[rule.params]
max_tx_share = 0.5
history_multiple = 10.0
history_min = 3
"#;

#[test]
fn half_the_balance_and_ten_times_the_largest_freezes_once_history_is_known() {
    let mut d = exchange(UNPRECEDENTED);
    // Cold start: no history, no judgement.
    d.at(0).eth("0x00", Stage::Included, HOT2, USER, "600");
    assert!(d.findings().is_empty());
    for i in 1..=3 {
        d.at(i)
            .eth(&format!("0x0{i}"), Stage::Included, HOT, USER, "10");
    }
    // 970 left: 490 is over half of it and 49 times the largest earlier.
    d.at(10).eth("0x10", Stage::Pending, HOT, THIEF, "490");
    let f = d.findings_of("unprecedented");
    assert_eq!(f.len(), 1);
    assert!(
        f[0].summary.contains("49.0x the largest of its 3"),
        "{}",
        f[0].summary
    );
    assert_eq!(d.freezes().len(), 1);
    // Over half, but a wallet that paid 50 before: under 10x, silent.
    let mut d = exchange(UNPRECEDENTED);
    for (i, a) in ["10", "10", "50"].iter().enumerate() {
        d.at(i as i64)
            .eth(&format!("0x0{i}"), Stage::Included, HOT, USER, a);
    }
    d.at(10).eth("0x10", Stage::Pending, HOT, THIEF, "490");
    assert!(d.findings().is_empty());
}

const CONCENTRATED: &str = r#"
[[rule]]
id = "concentrated"
kind = "outflow_window"
scope = "wallet"
severity = "critical"
action = "freeze"
[rule.params]
window = "1h"
per_asset = true
max_share = 0.5
concentration_destinations = 3
concentration_payments = 2
concentration_share = 0.5
"#;

fn user(i: u32) -> String {
    format!("0x{:040x}", 0x1000 + i)
}

#[test]
fn a_drain_share_freezes_only_when_few_new_addresses_collect_it() {
    // A rush: 60% of the balance to sixty customers. Over the share, not
    // concentrated: silent.
    let mut d = exchange(CONCENTRATED);
    for i in 0..60 {
        d.at(i64::from(i) * 10)
            .eth(&format!("0x{i:02x}"), Stage::Pending, HOT, &user(i), "10");
    }
    assert!(d.findings().is_empty(), "{:?}", d.findings());
    // A whale paid once and a crowd: over the share, but the whale's
    // address was paid once.
    let mut d = exchange(CONCENTRATED);
    d.at(0).eth("0xw0", Stage::Pending, HOT, THIEF, "450");
    for i in 0..20 {
        d.at(10 + i64::from(i))
            .eth(&format!("0x{i:02x}"), Stage::Pending, HOT, &user(i), "5");
    }
    assert!(d.findings().is_empty(), "{:?}", d.findings());
    // Three payments of 20% to one new address: at the third the window
    // holds 60%, all of it there.
    let mut d = exchange(CONCENTRATED);
    for i in 0..3 {
        d.at(i64::from(i) * 60)
            .eth(&format!("0x{i:02x}"), Stage::Pending, HOT, THIEF, "200");
        if i < 2 {
            assert!(d.findings().is_empty());
        }
    }
    let f = d.findings_of("concentrated");
    assert_eq!(f.len(), 1);
    assert!(
        f[0].summary.contains("100.0% of it to 1 new address"),
        "{}",
        f[0].summary
    );
    assert_eq!(d.freezes().len(), 1);
}
