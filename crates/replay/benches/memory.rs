//! Peak memory of the engine with the default rules after 100,000 watched
//! wallets and 1,000,000 distinct destinations have gone through it: one
//! day of withdrawals (intent, pending, included, confirmed) from random
//! hot wallets on four chains, each to a new address. Events are made on
//! the fly so the figure is the engine's, and printed as the process's
//! VmHWM from /proc/self/status.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs,
    non_snake_case
)]

use std::time::Instant;

use drainguard_engine::{Engine, RuleSet};
use drainguard_model::{
    Address, Amount, Asset, BalanceObs, Chain, Event, EventKind, Intent, Price, PriceObs, Stage,
    Timestamp, Transfer, TxHash, WalletDecl, WalletRole,
};
use rand::{Rng, SeedableRng};

fn wallets() -> usize {
    std::env::var("MEM_WALLETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}
fn destinations() -> usize {
    std::env::var("MEM_DESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn vm(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "n/a".into())
}

fn evm(n: u64, tag: u8) -> Address {
    Address::new(&format!("0x{tag:02x}{n:038x}"))
}

fn main() {
    let (WALLETS, DESTINATIONS) = (wallets(), destinations());
    let chains: Vec<Chain> = ["ethereum", "bsc", "polygon", "arbitrum"]
        .iter()
        .map(|c| Chain::new(c))
        .collect();
    let eth = Asset::new("ETH");
    let mut engine = Engine::new(RuleSet::builtin().unwrap());
    let mut out = Vec::new();
    let start = Timestamp::parse_rfc3339("2024-01-01T00:00:00Z").unwrap();
    let base = vm("VmHWM:");
    engine.process(
        &Event {
            t: start,
            kind: EventKind::Price(PriceObs {
                asset: eth.clone(),
                usd: Price(3000.0),
            }),
        },
        &mut out,
    );
    for w in 0..WALLETS {
        let chain = chains[w % chains.len()].clone();
        let address = evm(w as u64, 0xaa);
        let balances = vec![BalanceObs {
            chain: chain.clone(),
            wallet: address.clone(),
            asset: eth.clone(),
            amount: Amount::parse_decimal("500", 18).unwrap(),
            decimals: 18,
        }];
        let decl = WalletDecl {
            chain,
            address,
            name: format!("hot-{w}"),
            role: WalletRole::Hot,
            balances,
        };
        engine.process(
            &Event {
                t: start,
                kind: EventKind::Wallet(decl),
            },
            &mut out,
        );
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let step = 86_400_000_000_000i64 / DESTINATIONS as i64;
    let started = Instant::now();
    let mut events = 0u64;
    for d in 0..DESTINATIONS {
        let t = Timestamp(start.0 + d as i64 * step);
        let w = rng.gen_range(0..WALLETS);
        let chain = chains[w % chains.len()].clone();
        let from = evm(w as u64, 0xaa);
        let to = evm(d as u64, 0xbb);
        let amount = Amount::from_base_units(rng.gen_range(1u128..2_000_000_000_000_000));
        let tx = TxHash::new(&format!("0x{d:064x}"));
        let intent = Intent {
            id: format!("wd-{d}"),
            chain: chain.clone(),
            wallet: from.clone(),
            to: to.clone(),
            asset: eth.clone(),
            amount,
            decimals: 18,
            tx_hash: None,
        };
        engine.process(
            &Event {
                t,
                kind: EventKind::Intent(intent),
            },
            &mut out,
        );
        for (k, stage) in [Stage::Pending, Stage::Included, Stage::Confirmed]
            .into_iter()
            .enumerate()
        {
            let tr = Transfer {
                chain: chain.clone(),
                tx_hash: tx.clone(),
                index: 0,
                stage,
                block: (stage != Stage::Pending).then_some(d as u64),
                from: from.clone(),
                to: to.clone(),
                asset: eth.clone(),
                token: None,
                amount,
                decimals: 18,
            };
            engine.process(
                &Event {
                    t: Timestamp(t.0 + k as i64 * 1_000_000),
                    kind: EventKind::Transfer(tr),
                },
                &mut out,
            );
        }
        events += 4;
        out.clear();
    }
    let secs = started.elapsed().as_secs_f64();
    println!("wallets {WALLETS}, distinct destinations {DESTINATIONS}, events {events}");
    println!(
        "engine: {secs:.2} s, {:.0} events/s (including making them)",
        events as f64 / secs
    );
    println!(
        "VmHWM before: {base}; after: {}; VmRSS now: {}",
        vm("VmHWM:"),
        vm("VmRSS:")
    );
    println!(
        "findings+freezes emitted: {}",
        engine.stats().findings + engine.stats().freezes
    );
    // After the memory figure: what the daemon's window metrics cost the
    // engine thread with this many wallets.
    let started = Instant::now();
    let nearest = engine.nearest_window_figures(1000);
    println!(
        "nearest_window_figures(1000): {} windows in {:.1} ms",
        nearest.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    let started = Instant::now();
    let figures = engine.window_figures();
    println!(
        "window_figures: {} windows in {:.1} ms",
        figures.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
}
