//! The traffic generator: determinism, order, strict round trips, exact
//! balances, and the shape of every preset's incident.

#![allow(clippy::unwrap_used, reason = "an integration test binary")]

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::OnceLock,
    time::Duration,
};

use drainguard_model::{
    Address, Amount, ApprovalStandard, Asset, Chain, EventKind, Stage, Transfer, WalletRole,
};
use drainguard_sim::{
    Label, PRESETS, Record, ScenarioReader, ScenarioWriter, SimConfig, generate, preset,
};

/// Every preset at seed 1, generated once for the whole binary.
fn day(name: &str) -> &'static [Record] {
    static DAYS: OnceLock<Vec<(&'static str, Vec<Record>)>> = OnceLock::new();
    let days = DAYS.get_or_init(|| {
        PRESETS
            .iter()
            .map(|&p| (p, generate(&preset(p, 1).unwrap())))
            .collect()
    });
    &days.iter().find(|(p, _)| *p == name).unwrap().1
}

fn transfers(records: &[Record]) -> impl Iterator<Item = (&Record, &Transfer)> {
    records.iter().filter_map(|r| match &r.kind {
        EventKind::Transfer(t) => Some((r, t)),
        _ => None,
    })
}

/// A wallet's key: one EVM address is a wallet on several chains.
type WalletKey = (Chain, Address);

/// The exchange's wallets: (chain, address) → (name, role).
fn wallets(records: &[Record]) -> HashMap<WalletKey, (String, WalletRole)> {
    records
        .iter()
        .filter_map(|r| match &r.kind {
            EventKind::Wallet(w) => Some((
                (w.chain.clone(), w.address.clone()),
                (w.name.clone(), w.role),
            )),
            _ => None,
        })
        .collect()
}

/// The sender's and receiver's keys of a transfer.
fn from(t: &Transfer) -> WalletKey {
    (t.chain.clone(), t.from.clone())
}
fn to(t: &Transfer) -> WalletKey {
    (t.chain.clone(), t.to.clone())
}

type Balances = HashMap<(Chain, Address, Asset), Amount>;

/// Replays balances the way replay does: start balances from `wallet`
/// records, moved by `included` transfers. Calls `visit` before applying
/// each record, with the balances so far.
fn replay_balances(
    records: &[Record],
    mut visit: impl FnMut(&Record, &Balances),
) -> Result<(), String> {
    let mut balances: Balances = HashMap::new();
    for r in records {
        visit(r, &balances);
        match &r.kind {
            EventKind::Wallet(w) => {
                for b in &w.balances {
                    balances.insert(
                        (b.chain.clone(), b.wallet.clone(), b.asset.clone()),
                        b.amount,
                    );
                }
            }
            EventKind::Transfer(t) if t.stage == Stage::Included => {
                if let Some(b) =
                    balances.get_mut(&(t.chain.clone(), t.from.clone(), t.asset.clone()))
                {
                    if *b < t.amount {
                        return Err(format!(
                            "{} {} {}: balance {} < {}",
                            r.t, t.from, t.asset, b, t.amount
                        ));
                    }
                    *b = b.saturating_sub(t.amount);
                }
                if let Some(b) = balances.get_mut(&(t.chain.clone(), t.to.clone(), t.asset.clone()))
                {
                    *b = b.saturating_add(t.amount);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[test]
fn same_seed_same_records_other_seed_other_records() {
    let config = preset("coinex", 42).unwrap();
    let a = generate(&config);
    let b = generate(&config);
    assert_eq!(a, b);
    let c = generate(&SimConfig { seed: 43, ..config });
    assert_ne!(a, c);
    // The topology's addresses follow the seed too.
    assert_ne!(
        wallets(&a).keys().collect::<BTreeSet<_>>(),
        wallets(&c).keys().collect()
    );
}

#[test]
fn records_are_in_time_order_and_stages_in_stage_order() {
    for &name in PRESETS {
        let records = day(name);
        assert!(records.windows(2).all(|w| w[0].t <= w[1].t), "{name}");
        let mut last: HashMap<(String, u32), Stage> = HashMap::new();
        for (_, t) in transfers(records) {
            let key = (t.tx_hash.to_string(), t.index);
            let prev = last.insert(key, t.stage);
            let expected = match t.stage {
                Stage::Pending => None,
                Stage::Included => Some(Stage::Pending),
                Stage::Confirmed => Some(Stage::Included),
                Stage::Retracted => panic!("no reorgs are generated"),
            };
            assert_eq!(prev, expected, "{name}: {} #{}", t.tx_hash, t.index);
        }
    }
}

/// The records to round-trip. The strict reader and the writer are slow
/// unoptimized (about 7 s a day), so debug builds take a sample holding
/// every kind: the first two hours and everything within half an hour of
/// an attack record. Release builds take every record.
fn round_trip_sample(records: &[Record]) -> Vec<Record> {
    if !cfg!(debug_assertions) {
        return records.to_vec();
    }
    let start = records[0].t;
    let attacks: Vec<_> = attack_records(records).iter().map(|r| r.t).collect();
    let near_attack = |r: &Record| {
        let (lo, hi) = (
            r.t.minus(Duration::from_secs(1_800)),
            r.t.plus(Duration::from_secs(1_800)),
        );
        attacks.iter().any(|&a| lo <= a && a <= hi)
    };
    records
        .iter()
        .filter(|r| r.t.seconds_since(start) < 7_200.0 || near_attack(r))
        .cloned()
        .collect()
}

fn round_trip(name: &str) {
    let records = round_trip_sample(day(name));
    let mut w = ScenarioWriter::new(Vec::new());
    for r in &records {
        w.write(r).unwrap();
    }
    let bytes = w.finish().unwrap();
    let back: Vec<Record> = ScenarioReader::new(bytes.as_slice())
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(back.len(), records.len(), "{name}");
    for (a, b) in back.iter().zip(&records) {
        assert_eq!(a, b, "{name}");
    }
}

#[test]
fn every_preset_survives_the_strict_reader() {
    std::thread::scope(|s| {
        for &name in PRESETS {
            s.spawn(move || round_trip(name));
        }
    });
}

#[test]
fn a_normal_day_is_large_and_has_no_attack() {
    let records = day("normal");
    assert!(records.len() >= 100_000, "{}", records.len());
    assert!(records.iter().all(|r| r.label != Some(Label::Attack)));
    let count = |kind: &str| records.iter().filter(|r| r.kind.name() == kind).count();
    assert_eq!(count("wallet"), 10);
    assert!(count("intent") > 10_000);
    assert!(count("head") > 30_000);
    // Hourly: eth-hot-1 and eth-hot-2 (3 assets), tron-hot and
    // polygon-hot (2), btc-hot (1).
    assert_eq!(count("balance"), 23 * 11);
    assert_eq!(count("price"), 144 * 6);
    // Refills from cold storage happen on a normal day.
    let roles = wallets(records);
    let refills = transfers(records)
        .filter(|(_, t)| {
            t.stage == Stage::Pending && roles.get(&from(t)).map(|w| w.1) == Some(WalletRole::Cold)
        })
        .count();
    assert!(refills >= 1);
}

#[test]
fn tx_hashes_are_never_reused_and_keys_are_unique() {
    for &name in PRESETS {
        let records = day(name);
        // One pending record per (chain, tx, index); one sender per tx.
        let mut keys = HashSet::new();
        let mut senders: HashMap<String, (Address, i64)> = HashMap::new();
        for (r, t) in transfers(records).filter(|(_, t)| t.stage == Stage::Pending) {
            assert!(keys.insert((t.chain.to_string(), t.tx_hash.to_string(), t.index)));
            let prev = senders.insert(t.tx_hash.to_string(), (t.from.clone(), r.t.0));
            if let Some(prev) = prev {
                // Only a bitcoin transaction has two outputs.
                assert_eq!(t.chain.as_str(), "bitcoin", "{name}: {}", t.tx_hash);
                assert_eq!(prev, (t.from.clone(), r.t.0));
            }
        }
    }
}

#[test]
fn intents_come_before_their_transfers() {
    let records = day("normal");
    // Two withdrawals may share wallet, destination, asset and amount.
    type Key = (Address, Address, Asset, Amount);
    let mut intents: HashMap<Key, Vec<(i64, Option<String>)>> = HashMap::new();
    let mut ids = HashSet::new();
    for r in records {
        if let EventKind::Intent(i) = &r.kind {
            assert!(ids.insert(i.id.clone()));
            assert!(i.id.starts_with("wd-"));
            let key = (i.wallet.clone(), i.to.clone(), i.asset.clone(), i.amount);
            let hash = i.tx_hash.as_ref().map(ToString::to_string);
            intents.entry(key).or_default().push((r.t.0, hash));
        }
    }
    let total = ids.len();
    let with_hash = intents
        .values()
        .flatten()
        .filter(|(_, h)| h.is_some())
        .count();
    let share = with_hash as f64 / total as f64;
    assert!((0.25..0.35).contains(&share), "{share}");
    let mut matched = 0;
    for (r, t) in transfers(records).filter(|(_, t)| t.stage == Stage::Pending) {
        let key = (t.from.clone(), t.to.clone(), t.asset.clone(), t.amount);
        let Some(candidates) = intents.get_mut(&key) else {
            continue;
        };
        // A bitcoin withdrawal is announced when accepted and signed with
        // the next batch, at most 30 minutes later; the others 1-20 s
        // before they are sent.
        let lead = if t.chain.as_str() == "bitcoin" {
            0..=1_800_000_000_000
        } else {
            1_000_000_000..=20_000_000_000
        };
        let lead_ok = |at: i64| lead.contains(&(r.t.0 - at));
        let fits = |(at, hash): &(i64, Option<String>)| {
            lead_ok(*at) && hash.as_ref().is_none_or(|h| h == t.tx_hash.as_str())
        };
        let i = candidates
            .iter()
            .position(fits)
            .unwrap_or_else(|| panic!("{} {}: no intent in time before", r.t, t.tx_hash));
        candidates.remove(i);
        matched += 1;
    }
    assert_eq!(matched, total);
}

#[test]
fn no_intents_when_the_withdrawal_system_is_not_connected() {
    let records = generate(&SimConfig {
        intents: false,
        duration: Duration::from_secs(3 * 3_600),
        incidents: vec![(
            drainguard_sim::Incident::WithdrawalAbuse,
            Duration::from_secs(3_600),
        )],
        ..SimConfig::default()
    });
    assert!(records.iter().all(|r| r.kind.name() != "intent"));
    let thefts = transfers(&records)
        .filter(|(r, t)| r.label == Some(Label::Attack) && t.stage == Stage::Pending)
        .count();
    assert_eq!(thefts, 16);
}

#[test]
fn balances_never_go_negative_and_balance_records_are_exact() {
    for &name in PRESETS {
        let records = day(name);
        let mut checked = 0;
        replay_balances(records, |r, balances| {
            if let EventKind::Balance(b) = &r.kind {
                let running = balances[&(b.chain.clone(), b.wallet.clone(), b.asset.clone())];
                assert_eq!(running, b.amount, "{name} {} {} {}", r.t, b.wallet, b.asset);
                checked += 1;
            }
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(checked, 23 * 11, "{name}");
    }
}

fn attack_records(records: &[Record]) -> Vec<&Record> {
    records
        .iter()
        .filter(|r| r.label == Some(Label::Attack))
        .collect()
}

#[test]
fn coinex_starts_with_an_unannounced_eth_transfer_and_ends_with_a_sweep() {
    let records = day("coinex");
    let roles = wallets(records);
    let attack = attack_records(records);
    let first = attack[0];
    let EventKind::Transfer(t) = &first.kind else {
        panic!("first attack record is {}", first.kind.name())
    };
    assert_eq!(t.stage, Stage::Pending);
    assert_eq!(t.asset.as_str(), "ETH");
    assert_eq!(t.chain.as_str(), "ethereum");
    assert_eq!(roles[&from(t)].0, "eth-hot-1");
    assert_eq!(first.t.to_rfc3339(), "2023-09-12T14:10:00Z");
    // No intent announces it, before or after.
    for r in records {
        if let EventKind::Intent(i) = &r.kind {
            assert_ne!(i.to, t.to);
            assert_ne!(i.tx_hash.as_ref(), Some(&t.tx_hash));
        }
    }
    assert!(attack.iter().all(|r| r.kind.name() == "transfer"));
    // Every hot wallet is robbed.
    let robbed: BTreeSet<&str> = attack
        .iter()
        .filter_map(|r| match &r.kind {
            EventKind::Transfer(t) => Some(roles[&from(t)].0.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        robbed,
        BTreeSet::from([
            "btc-hot",
            "eth-hot-1",
            "eth-hot-2",
            "polygon-hot",
            "tron-hot"
        ])
    );
    // The bitcoin theft returns change to btc-hot.
    assert!(
        attack.iter().any(|r| matches!(&r.kind,
        EventKind::Transfer(t) if t.index == 1 && t.from == t.to && roles[&from(t)].0 == "btc-hot"))
    );
    // The exchange's sweep to cold storage, 20 minutes in, is normal.
    let sweep_at = first.t.plus(Duration::from_secs(20 * 60));
    let sweeps: Vec<_> = transfers(records)
        .filter(|(r, t)| {
            r.t >= sweep_at
                && t.stage == Stage::Pending
                && roles.get(&to(t)).map(|w| w.1) == Some(WalletRole::Cold)
        })
        .collect();
    assert!(sweeps.len() >= 7, "{}", sweeps.len());
    assert!(sweeps.iter().all(|(r, _)| r.label == Some(Label::Normal)));
    // Withdrawals stop after the sweep.
    let last_sweep = sweeps.iter().map(|(r, _)| r.t).max().unwrap();
    let late_withdrawals = transfers(records)
        .filter(|(r, t)| {
            r.t > last_sweep
                && t.stage == Stage::Pending
                && roles.get(&from(t)).map(|w| w.1) == Some(WalletRole::Hot)
                && !roles.contains_key(&to(t))
        })
        .count();
    assert_eq!(late_withdrawals, 0);
}

#[test]
fn abuse_is_announced_thefts_to_few_shared_addresses() {
    let records = day("abuse");
    let roles = wallets(records);
    let attack = attack_records(records);
    let intents: Vec<_> = attack
        .iter()
        .filter(|r| r.kind.name() == "intent")
        .collect();
    let pendings: Vec<&Transfer> = attack
        .iter()
        .filter_map(|r| match &r.kind {
            EventKind::Transfer(t) if t.stage == Stage::Pending => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(intents.len(), 16);
    assert_eq!(pendings.len(), 16);
    assert_eq!(attack[0].kind.name(), "intent");
    assert_eq!(pendings[0].to, pendings[1].to);
    assert_ne!(pendings[0].from, pendings[1].from);
    let evm: BTreeSet<_> = pendings
        .iter()
        .filter(|t| t.chain.as_str() == "ethereum")
        .map(|t| &t.to)
        .collect();
    let tron: BTreeSet<_> = pendings
        .iter()
        .filter(|t| t.chain.as_str() == "tron")
        .map(|t| &t.to)
        .collect();
    assert_eq!(evm.len(), 3);
    assert_eq!(tron.len(), 2);
    let span = attack.last().unwrap().t.seconds_since(attack[0].t);
    assert!(span < 20.0 * 60.0, "{span}");
    let from: BTreeSet<&str> = pendings
        .iter()
        .map(|t| roles[&from(t)].0.as_str())
        .collect();
    assert_eq!(from, BTreeSet::from(["eth-hot-1", "eth-hot-2", "tron-hot"]));
}

#[test]
fn a_rush_is_legitimate_and_busy() {
    let rush = day("rush");
    let normal = day("normal");
    assert!(attack_records(rush).is_empty());
    let start = normal[0].t;
    let window = |records: &[Record]| {
        let from = start.plus(Duration::from_secs(12 * 3_600));
        let until = start.plus(Duration::from_secs(16 * 3_600));
        records
            .iter()
            .filter(|r| r.t >= from && r.t < until && r.kind.name() == "intent")
            .count()
    };
    let (busy, calm) = (window(rush), window(normal));
    assert!(busy > 4 * calm, "{busy} vs {calm}");
}

#[test]
fn a_giant_withdrawal_is_announced_and_takes_sixty_percent() {
    let records = day("giant");
    let roles = wallets(records);
    let attack = attack_records(records);
    assert_eq!(attack[0].kind.name(), "intent");
    assert_eq!(attack[0].t.to_rfc3339(), "2023-09-12T11:00:00Z");
    let mut share = None;
    replay_balances(records, |r, balances| {
        let EventKind::Transfer(t) = &r.kind else {
            return;
        };
        if r.label == Some(Label::Attack) && t.stage == Stage::Pending && t.index == 0 {
            assert_eq!(roles[&from(t)].0, "btc-hot");
            let b = balances[&(t.chain.clone(), t.from.clone(), t.asset.clone())];
            share = Some(t.amount.0.to::<u128>() as f64 / b.0.to::<u128>() as f64);
        }
    })
    .unwrap();
    let share = share.unwrap();
    assert!((0.57..=0.63).contains(&share), "{share}");
    assert!(attack.iter().any(|r| matches!(&r.kind,
        EventKind::Transfer(t) if t.index == 1 && t.from == t.to)));
}

#[test]
fn an_unknown_approval_is_followed_by_a_transfer_from() {
    let records = day("approval");
    let roles = wallets(records);
    let attack = attack_records(records);
    let EventKind::Approval(a) = &attack[0].kind else {
        panic!("first attack record is {}", attack[0].kind.name())
    };
    assert_eq!(a.amount, Amount::MAX);
    assert_eq!(a.standard, ApprovalStandard::Erc20);
    assert_eq!(a.asset.as_str(), "USDT");
    assert_eq!(roles[&(a.chain.clone(), a.owner.clone())].0, "eth-hot-1");
    assert!(!roles.contains_key(&(a.chain.clone(), a.spender.clone())));
    let EventKind::Transfer(t) = &attack[1].kind else {
        panic!("second attack record is {}", attack[1].kind.name())
    };
    assert_eq!(attack[1].t, attack[0].t.plus(Duration::from_secs(120)));
    assert_eq!(t.from, a.owner);
    assert_eq!(t.asset.as_str(), "USDT");
    assert!(t.token.is_some());
    assert!(
        !records
            .iter()
            .any(|r| matches!(&r.kind, EventKind::Intent(i) if i.to == t.to))
    );
}

#[test]
fn volume_scales_the_traffic() {
    let hours = |volume: f64| SimConfig {
        volume,
        duration: Duration::from_secs(6 * 3_600),
        ..SimConfig::default()
    };
    let count = |records: &[Record]| records.iter().filter(|r| r.kind.name() == "intent").count();
    let low = count(&generate(&hours(0.5)));
    let high = count(&generate(&hours(2.0)));
    assert!(high > 3 * low, "{high} vs {low}");
    assert_eq!(count(&generate(&hours(0.0))), 0);
}

#[test]
fn presets_are_known_by_name() {
    for &name in PRESETS {
        assert!(preset(name, 9).is_some(), "{name}");
    }
    assert!(preset("bybit", 1).is_none());
    assert_eq!(preset("normal", 5).unwrap().seed, 5);
    assert_eq!(preset("normal", 1).unwrap(), SimConfig::default());
}

/// A day must generate well under a second in release builds.
#[cfg(not(debug_assertions))]
#[test]
fn a_day_generates_in_well_under_a_second() {
    let config = preset("normal", 3).unwrap();
    let t = std::time::Instant::now();
    let records = generate(&config);
    let elapsed = t.elapsed();
    assert!(records.len() >= 100_000);
    assert!(elapsed < Duration::from_millis(700), "{elapsed:?}");
}

#[test]
fn other_seeds_keep_balances_exact_and_non_negative() {
    for seed in 2..=3 {
        for name in ["coinex", "rush", "giant"] {
            let records = generate(&preset(name, seed).unwrap());
            replay_balances(&records, |r, balances| {
                if let EventKind::Balance(b) = &r.kind {
                    let running = balances[&(b.chain.clone(), b.wallet.clone(), b.asset.clone())];
                    assert_eq!(running, b.amount, "{name} seed {seed} {}", r.t);
                }
            })
            .unwrap_or_else(|e| panic!("{name} seed {seed}: {e}"));
        }
    }
}

// What real traffic holds (../shared/REALISM.md), asserted because real
// exchanges show it, not because a rule needs it.

/// Legitimate outflows of a day from the exchange's wallets to others,
/// with their USD value at the price of the moment and whether the
/// destination was paid before that day.
fn legit_withdrawals(records: &[Record]) -> Vec<(f64, bool)> {
    let roles = wallets(records);
    let mut prices: HashMap<Asset, f64> = HashMap::new();
    let mut paid: HashSet<WalletKey> = HashSet::new();
    let mut out = Vec::new();
    for r in records {
        match &r.kind {
            EventKind::Price(p) => {
                prices.insert(p.asset.clone(), p.usd.0);
            }
            EventKind::Transfer(t)
                if t.stage == Stage::Pending
                    && r.label != Some(Label::Attack)
                    && roles.contains_key(&from(t))
                    && !roles.contains_key(&to(t)) =>
            {
                let usd = t.amount.to_f64_units(t.decimals) * prices[&t.asset];
                out.push((usd, paid.insert(to(t))));
            }
            _ => {}
        }
    }
    out
}

/// Twelve normal days, generated once for the tests that need more than
/// one day to see a rare event.
fn twelve_days() -> &'static [Vec<Record>] {
    static DAYS: OnceLock<Vec<Vec<Record>>> = OnceLock::new();
    DAYS.get_or_init(|| {
        std::thread::scope(|s| {
            let handles: Vec<_> = (1..=12)
                .map(|seed| s.spawn(move || generate(&preset("normal", seed).unwrap())))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    })
}

#[test]
fn whales_take_100k_or_more_to_new_addresses_several_times_a_day() {
    // REALISM: customers, funds, market makers and other exchanges withdraw
    // $100k-$1M+ in one transaction several times a day at a large
    // exchange, usually to an address never paid before.
    let (mut whales, mut to_new, mut million) = (0, 0, 0);
    let days = twelve_days();
    for records in days {
        for (usd, new) in legit_withdrawals(records) {
            if usd >= 100_000.0 {
                whales += 1;
                to_new += usize::from(new);
            }
            million += usize::from(usd >= 1_000_000.0);
        }
    }
    assert!(whales >= 3 * days.len(), "{whales} in {} days", days.len());
    assert!(to_new * 2 > whales, "{to_new} of {whales} to new addresses");
    assert!(
        million >= 1,
        "no withdrawal of $1M or more in {} days",
        days.len()
    );
}

#[test]
fn one_withdrawal_can_take_a_large_share_of_a_minor_chains_hot_wallet() {
    // REALISM: on a minor chain the hot wallet holds only a few times its
    // largest daily withdrawal, so one legitimate withdrawal can take a
    // large share of it, and then the wallet is refilled.
    let mut largest = 0.0f64;
    for records in twelve_days() {
        let roles = wallets(records);
        replay_balances(records, |r, balances| {
            let EventKind::Transfer(t) = &r.kind else {
                return;
            };
            if t.stage != Stage::Pending
                || t.chain.as_str() != "polygon"
                || roles.get(&from(t)).map(|w| w.1) != Some(WalletRole::Hot)
                || roles.contains_key(&to(t))
            {
                return;
            }
            let b = balances[&(t.chain.clone(), t.from.clone(), t.asset.clone())];
            largest = largest.max(t.amount.to_f64_units(0) / b.to_f64_units(0));
        })
        .unwrap();
    }
    assert!(largest > 0.25, "largest share of polygon-hot: {largest}");
}

#[test]
fn regular_counterparties_are_paid_by_several_wallets_and_chains() {
    // A market maker or another exchange withdraws wherever it trades: its
    // one EVM address is paid by both ethereum hot wallets and by polygon.
    let records = day("normal");
    let roles = wallets(records);
    let mut payers: HashMap<Address, BTreeSet<(String, String)>> = HashMap::new();
    for (_, t) in transfers(records) {
        if t.stage == Stage::Pending
            && roles.get(&from(t)).map(|w| w.1) == Some(WalletRole::Hot)
            && !roles.contains_key(&to(t))
        {
            payers
                .entry(t.to.clone())
                .or_default()
                .insert((t.chain.to_string(), roles[&from(t)].0.clone()));
        }
    }
    let across_chains = payers
        .values()
        .filter(|p| p.iter().map(|(c, _)| c).collect::<BTreeSet<_>>().len() >= 2)
        .count();
    let across_wallets = payers.values().filter(|p| p.len() >= 3).count();
    assert!(across_chains >= 10, "{across_chains}");
    assert!(across_wallets >= 10, "{across_wallets}");
}

#[test]
fn bitcoin_withdrawals_go_out_in_batches_with_change() {
    // REALISM: one bitcoin transaction pays tens to hundreds of customers,
    // with change back to the exchange.
    let records = day("normal");
    let roles = wallets(records);
    let mut outputs: HashMap<String, (usize, bool)> = HashMap::new();
    for (_, t) in transfers(records) {
        if t.stage == Stage::Pending
            && t.chain.as_str() == "bitcoin"
            && roles.get(&from(t)).map(|w| w.1) == Some(WalletRole::Hot)
        {
            let e = outputs.entry(t.tx_hash.to_string()).or_default();
            e.0 += 1;
            e.1 |= t.from == t.to;
        }
    }
    let batches: Vec<_> = outputs.values().filter(|(n, _)| *n >= 10).collect();
    assert!(batches.len() >= 20, "{} batches", batches.len());
    assert!(batches.iter().all(|(_, change)| *change));
    let busy = generate(&preset("busy", 1).unwrap());
    let most = transfers(&busy)
        .filter(|(_, t)| t.stage == Stage::Pending && t.chain.as_str() == "bitcoin")
        .fold(HashMap::<String, usize>::new(), |mut m, (_, t)| {
            *m.entry(t.tx_hash.to_string()).or_default() += 1;
            m
        })
        .into_values()
        .max()
        .unwrap();
    assert!(most >= 100, "largest batch on a busy day: {most}");
}

#[test]
fn deposits_are_consolidated_in_bursts_within_hours() {
    // REALISM: thousands of deposit addresses swept into one hot wallet
    // within hours; a token sweep needs its fee topped up first.
    let records = day("normal");
    let roles = wallets(records);
    let mut inflows_by_hour: HashMap<(String, i64), usize> = HashMap::new();
    let mut topups = 0;
    for (r, t) in transfers(records) {
        if t.stage != Stage::Pending {
            continue;
        }
        if !roles.contains_key(&from(t)) && roles.contains_key(&to(t)) {
            *inflows_by_hour
                .entry((t.chain.to_string(), r.t.0 / 3_600_000_000_000))
                .or_default() += 1;
        }
        topups += usize::from(
            t.chain.as_str() == "ethereum"
                && t.asset.as_str() == "ETH"
                && t.amount == Amount::parse_decimal("0.004", 18).unwrap(),
        );
    }
    let mut hours: Vec<usize> = inflows_by_hour.into_values().collect();
    hours.sort_unstable();
    let median = hours[hours.len() / 2];
    let peak = *hours.last().unwrap();
    assert!(peak >= 3 * median, "busiest hour {peak}, median {median}");
    assert!(topups >= 100, "{topups} fee top-ups");
}

#[test]
fn the_exchange_moves_its_own_money_in_large_amounts() {
    // REALISM: cold-to-hot refills, hot-to-cold sweeps and hot-to-hot
    // rebalancing, each far larger than a customer's usual withdrawal.
    let (mut refills, mut sweeps, mut hot_to_hot) = (Vec::new(), 0, 0);
    let busy2 = generate(&preset("busy", 2).unwrap());
    for records in [day("normal"), day("busy"), &busy2, &twelve_days()[1]] {
        let roles = wallets(records);
        for (_, t) in transfers(records) {
            if t.stage != Stage::Pending || t.from == t.to {
                continue;
            }
            let role = |k: &WalletKey| roles.get(k).map(|w| w.1);
            match (role(&from(t)), role(&to(t))) {
                (Some(WalletRole::Cold), Some(WalletRole::Hot)) => {
                    refills.push((t.asset.clone(), t.amount.to_f64_units(t.decimals)));
                }
                (Some(WalletRole::Hot), Some(WalletRole::Cold)) => sweeps += 1,
                (Some(WalletRole::Hot), Some(WalletRole::Hot)) => hot_to_hot += 1,
                _ => {}
            }
        }
    }
    assert!(refills.len() >= 10, "{} refills", refills.len());
    assert!(sweeps >= 1, "{sweeps} sweeps");
    assert!(hot_to_hot >= 1, "{hot_to_hot} hot-to-hot moves");
    // An ETH refill is at least a whole coin, most far more.
    let eth: Vec<f64> = refills
        .iter()
        .filter(|(a, _)| a.as_str() == "ETH")
        .map(|(_, v)| *v)
        .collect();
    assert!(!eth.is_empty() && eth.iter().all(|v| *v >= 1.0), "{eth:?}");
}

#[test]
fn a_busy_day_is_six_times_a_normal_one_all_day() {
    let count = |records: &[Record], hour: i64| {
        records
            .iter()
            .filter(|r| r.kind.name() == "intent" && r.t.0 / 3_600_000_000_000 % 24 == hour)
            .count()
    };
    for hour in [3, 9, 15, 21] {
        let (busy, calm) = (count(day("busy"), hour), count(day("normal"), hour));
        assert!(busy > 4 * calm, "hour {hour}: {busy} vs {calm}");
    }
}

#[test]
fn a_tripwire_is_swept_first_and_then_a_hot_wallet() {
    let records = day("tripwire");
    let roles = wallets(records);
    let attack = attack_records(records);
    let froms: Vec<&str> = attack
        .iter()
        .filter_map(|r| match &r.kind {
            EventKind::Transfer(t) if t.stage == Stage::Pending => Some(roles[&from(t)].0.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(froms, ["eth-tripwire", "eth-hot-1"]);
    assert_eq!(attack[0].t.to_rfc3339(), "2023-09-12T13:00:00Z");
    assert!(attack.iter().all(|r| r.kind.name() == "transfer"));
    // The exchange itself never touches its tripwire on any day.
    for &name in PRESETS {
        for (r, t) in transfers(day(name)) {
            if roles.get(&from(t)).map(|w| w.1) == Some(WalletRole::Tripwire) {
                assert_eq!(r.label, Some(Label::Attack), "{name} {}", r.t);
            }
        }
    }
}

#[test]
fn one_hot_key_serves_ethereum_and_polygon() {
    // Phemex's hot EOA served about 16 EVM chains: a stolen key drains
    // them all, and a theft on one names the same address on the others.
    let roles = wallets(day("normal"));
    let address = |name: &str| {
        roles
            .iter()
            .find(|(_, (n, _))| n == name)
            .map(|((_, a), _)| a.clone())
            .unwrap()
    };
    assert_eq!(address("eth-hot-1"), address("polygon-hot"));
    assert_ne!(address("eth-hot-1"), address("eth-hot-2"));
}
