//! Window sums and counts against a brute-force model, over random event
#![allow(clippy::unwrap_used, clippy::expect_used)]
//! sequences with repeated stages, retractions and re-inclusions.

mod common;

use std::collections::HashMap;

use common::{Driver, T0};
use drainguard_model::{Stage, WalletRole};
use proptest::prelude::*;

const RULES: &str = r#"
[[rule]]
id = "usd"
kind = "outflow_window"
scope = "chain"
severity = "info"
action = "alert"
[rule.params]
window = "10m"
max_usd = 1e15

[[rule]]
id = "units"
kind = "outflow_window"
scope = "wallet"
severity = "info"
action = "alert"
[rule.params]
window = "10m"
per_asset = true
max_share = 1.0

[[rule]]
id = "count"
kind = "velocity"
scope = "wallet"
severity = "info"
action = "alert"
[rule.params]
window = "10m"
max_count = 1000000
"#;

const WALLETS: [&str; 3] = ["0xa1", "0xa2", "0xc0"]; // two hot, one cold
const OTHERS: [&str; 2] = ["0xb1", "0xb2"];

#[derive(Debug, Clone)]
struct Step {
    dt: u16,
    tx: u8,
    stage: Stage,
    from: usize,
    to: usize,
    whole: u16,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0u16..90,
        0u8..12,
        prop_oneof![
            Just(Stage::Pending),
            Just(Stage::Included),
            Just(Stage::Confirmed),
            Just(Stage::Retracted)
        ],
        0usize..5,
        0usize..5,
        1u16..500,
    )
        .prop_map(|(dt, tx, stage, from, to, whole)| Step {
            dt,
            tx,
            stage,
            from,
            to,
            whole,
        })
}

fn addr(i: usize) -> &'static str {
    if i < 3 { WALLETS[i] } else { OTHERS[i - 3] }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn window_totals_match_brute_force(steps in proptest::collection::vec(step(), 1..120)) {
        let mut d = Driver::new(RULES);
        d.price("ETH", 2000.0)
            .hot("ethereum", WALLETS[0], &[("ETH", "1000000")])
            .hot("ethereum", WALLETS[1], &[("ETH", "1000000")])
            .wallet("ethereum", WALLETS[2], WalletRole::Cold, &[]);
        // Model: the first record of a tx fixes its fields (as on chain);
        // it counts from the moment it is seen until it is retracted, and
        // again from a later re-inclusion.
        let mut fields: HashMap<u8, (usize, usize, u16)> = HashMap::new();
        let mut counted_since: HashMap<u8, i64> = HashMap::new();
        let mut now = 0i64;
        for s in &steps {
            now += i64::from(s.dt);
            let (from, to, whole) = *fields.entry(s.tx).or_insert((s.from, s.to, s.whole));
            let tx = format!("0x{:02x}", s.tx);
            d.at(now).eth(&tx, s.stage, addr(from), addr(to), &whole.to_string());
            let is_outflow = from < 2 && to >= 3;
            if is_outflow {
                match s.stage {
                    Stage::Retracted => { counted_since.remove(&s.tx); }
                    _ => { counted_since.entry(s.tx).or_insert(now); }
                }
            }
            let live: Vec<u8> = counted_since.iter().filter(|(_, t)| **t > now - 600).map(|(k, _)| *k).collect();
            let figures = d.engine.window_figures();
            let get = |rule: &str, wallet: Option<&str>| -> (u128, u64) {
                figures.iter()
                    .filter(|f| f.rule == rule && wallet.is_none_or(|w| f.scope.to_string().ends_with(w)))
                    .map(|f| (f.sum, f.count))
                    .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
            };
            let total_whole: u128 = live.iter().map(|k| u128::from(fields[k].2)).sum();
            prop_assert_eq!(get("usd", None), (total_whole * 2000 * 1_000_000, live.len() as u64));
            for (w, wallet) in WALLETS[..2].iter().enumerate() {
                let mine: Vec<&u8> = live.iter().filter(|k| fields[*k].0 == w).collect();
                let units: u128 = mine.iter().map(|k| u128::from(fields[*k].2) * 10u128.pow(18)).sum();
                prop_assert_eq!(get("units", Some(wallet)), (units, mine.len() as u64));
                prop_assert_eq!(get("count", Some(wallet)), (mine.len() as u128, mine.len() as u64));
            }
        }
        let _ = T0;
    }
}
