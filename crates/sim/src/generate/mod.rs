//! The traffic generator: realistic, labelled days of an exchange's
//! on-chain traffic, deterministic for a seed.
//!
//! The exchange has hot and cold wallets on ethereum (12 s blocks), tron
//! (3 s) and bitcoin (exponential blocks, 10 minutes on average). Users
//! withdraw (Poisson arrivals with a daily rhythm, heavy-tailed amounts,
//! each announced by an intent when the withdrawal system is connected) and
//! deposit; the exchange refills its hot wallets from cold storage and
//! sweeps surpluses back. [`Incident`]s inject drains modelled on real
//! ones, every record of the attack labelled `attack`.
//!
//! Everything random comes from ChaCha8 streams seeded by
//! [`SimConfig::seed`]; amounts are exact integers of 10⁻¹⁸ units and
//! balances are tracked exactly, so the hourly `balance` records equal the
//! balances replay computes from the `included` transfers.

mod exchange;
mod incidents;
mod market;
mod topology;

use std::time::Duration;

use drainguard_model::{
    Address, Amount, Asset, BalanceObs, Chain, EventKind, Head, Price, PriceObs, Stage, Timestamp,
    Transfer, WalletDecl, WalletRole,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use self::{
    exchange::{Action, BATCH_EVERY, CONSOLIDATIONS_PER_DAY, Exchange, Scheduled},
    market::{PRICE_STEP, PricePath, Rush, SEC, arrivals, block_times, e8_to_usd},
    topology::{CHAINS, Family, Ids, PRICES, Topology},
};
use crate::{Record, SCENARIO_DECIMALS};

/// An incident to inject into the traffic.
#[derive(Debug, Clone, PartialEq)]
pub enum Incident {
    /// CoinEx, Sept 2023: an attacker holding the hot-wallet keys drains
    /// eth-hot-1, eth-hot-2, tron-hot and btc-hot within minutes, with no
    /// intent for any transfer; 20 minutes in, the exchange sweeps what is
    /// left to cold storage (label `normal`) and stops withdrawals.
    StolenKeyDrain,
    /// The withdrawal system itself is abused: 16 thefts over about 12
    /// minutes, each announced by its own intent, from both ethereum hot
    /// wallets and the tron hot wallet to five attacker addresses.
    WithdrawalAbuse,
    /// Legitimate: every chain's withdrawal rate is multiplied by `factor`
    /// for `hours` hours (a bank run, a market crash).
    WithdrawalRush {
        /// Rate multiplier.
        factor: f64,
        /// Length in hours.
        hours: u32,
    },
    /// DMM Bitcoin, May 2024: one announced withdrawal of 60% of btc-hot.
    GiantWithdrawal,
    /// eth-hot-1 approves an unknown spender for unlimited USDT; two
    /// minutes later the spender moves 95% of it out.
    UnknownApproval,
    /// An attacker holding the keys kept beside the hot keys sweeps the
    /// decoy eth-tripwire, then eth-hot-1's ETH a minute later.
    TripwireSweep,
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Seeds every random choice: the same config gives the same records.
    pub seed: u64,
    /// The scenario's first instant.
    pub start: Timestamp,
    /// Its length; records fall in `[start, start + duration)`.
    pub duration: Duration,
    /// Multiplier of the normal withdrawal (and deposit) rate; 1.0 is
    /// normal.
    pub volume: f64,
    /// Whether to emit intent records (false: an exchange whose withdrawal
    /// system is not connected).
    pub intents: bool,
    /// Incidents and their offsets from `start`.
    pub incidents: Vec<(Incident, Duration)>,
}

impl Default for SimConfig {
    /// A normal day from 2023-09-12T00:00:00Z, seed 1.
    fn default() -> Self {
        SimConfig {
            seed: 1,
            start: Timestamp::from_unix_secs(1_694_476_800),
            duration: Duration::from_secs(24 * 3_600),
            volume: 1.0,
            intents: true,
            incidents: Vec::new(),
        }
    }
}

/// The names [`preset`] knows.
pub const PRESETS: &[&str] = &[
    "normal", "busy", "coinex", "abuse", "rush", "giant", "approval", "tripwire",
];

/// A named day (see [`PRESETS`]) with the given seed: `normal`; `busy`
/// (6× the normal volume all day: a market crash's day); `coinex` (a
/// stolen-key drain at 14:10); `abuse` (withdrawal abuse at 15:00); `rush`
/// (a 6× withdrawal rush for 4 hours at 12:00); `giant` (a giant
/// withdrawal at 11:00); `approval` (an unknown approval at 16:00);
/// `tripwire` (the decoy wallet swept at 13:00, then a hot wallet).
pub fn preset(name: &str, seed: u64) -> Option<SimConfig> {
    let at = |h: u64, m: u64| Duration::from_secs(h * 3_600 + m * 60);
    let mut volume = 1.0;
    let incidents = match name {
        "normal" => Vec::new(),
        "busy" => {
            volume = 6.0;
            Vec::new()
        }
        "tripwire" => vec![(Incident::TripwireSweep, at(13, 0))],
        "coinex" => vec![(Incident::StolenKeyDrain, at(14, 10))],
        "abuse" => vec![(Incident::WithdrawalAbuse, at(15, 0))],
        "rush" => vec![(
            Incident::WithdrawalRush {
                factor: 6.0,
                hours: 4,
            },
            at(12, 0),
        )],
        "giant" => vec![(Incident::GiantWithdrawal, at(11, 0))],
        "approval" => vec![(Incident::UnknownApproval, at(16, 0))],
        _ => return None,
    };
    Some(SimConfig {
        seed,
        volume,
        incidents,
        ..SimConfig::default()
    })
}

/// Independent random streams, so that one part's draws never shift
/// another's.
mod stream {
    pub(super) const IDS: u64 = 1;
    pub(super) const BLOCKS: u64 = 2;
    pub(super) const PRICES: u64 = 3;
    pub(super) const EXCHANGE: u64 = 4;
    pub(super) const INCIDENTS: u64 = 5;
    pub(super) const WITHDRAWALS: u64 = 10;
    pub(super) const DEPOSITS: u64 = 20;
    pub(super) const CONSOLIDATIONS: u64 = 30;
}

fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// User arrivals start this long after the start, so that every intent
/// (up to 20 s before its transfer) falls inside the scenario.
const WARM_UP: i64 = 30 * SEC;

/// Direct deposits per withdrawal, drawn from the same amounts (whales
/// deposit too); with the consolidation bursts on top, a normal day's
/// deposits about match its withdrawals in value, as an exchange's
/// customer assets change little from one day to the next.
const DEPOSIT_RATIO: f64 = 0.8;

/// Generates a scenario: records in non-decreasing time order (equal times
/// keep generation order, so a transfer's stages come pending, included,
/// confirmed), deterministic for `config`.
pub fn generate(config: &SimConfig) -> Vec<Record> {
    let start = config.start.0;
    let end = config.start.plus(config.duration).0;
    let volume = if config.volume.is_finite() {
        config.volume.max(0.0)
    } else {
        0.0
    };
    let mut ids = Ids::new(rng(config.seed, stream::IDS));
    let topo = Topology::build(&mut ids);
    let mut block_rng = rng(config.seed, stream::BLOCKS);
    let blocks: Vec<Vec<i64>> = CHAINS
        .iter()
        .map(|c| block_times(&mut block_rng, c.clock, start, end))
        .collect();
    let prices = PricePath::walk(&mut rng(config.seed, stream::PRICES), start, end);

    let mut records = opening_records(&topo, &prices, start);
    price_records(&mut records, &topo, &prices, start, end);
    head_records(&mut records, &topo, &blocks, &mut ids);

    let actions = schedule(config, volume, &mut ids, start, end);
    let exchange = Exchange::new(
        config,
        &topo,
        &blocks,
        &prices,
        &mut ids,
        rng(config.seed, stream::EXCHANGE),
        end,
    );
    records.extend(exchange.run(actions));
    // Stable: equal times keep generation order.
    records.sort_by_key(|r| r.t);
    with_balances(records, &topo, start, end)
}

/// Withdrawals, deposits and incident steps, in time order.
fn schedule(
    config: &SimConfig,
    volume: f64,
    ids: &mut Ids,
    start: i64,
    end: i64,
) -> Vec<Scheduled> {
    let offset =
        |d: Duration| start.saturating_add(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let rushes: Vec<Rush> = config
        .incidents
        .iter()
        .filter_map(|(incident, at)| match incident {
            Incident::WithdrawalRush { factor, hours } => {
                let from = offset(*at);
                Some(Rush {
                    from,
                    until: from.saturating_add(i64::from(*hours) * 3_600 * SEC),
                    factor: if factor.is_finite() {
                        factor.max(0.0)
                    } else {
                        1.0
                    },
                })
            }
            _ => None,
        })
        .collect();
    let mut actions = Vec::new();
    let mut seq = 0u64;
    let mut add = |actions: &mut Vec<Scheduled>, t: i64, action: Action| {
        actions.push(Scheduled { t, seq, action });
        seq += 1;
    };
    let from = start.saturating_add(WARM_UP);
    for (c, def) in CHAINS.iter().enumerate() {
        let c64 = c as u64;
        let per_day = def.withdrawals_per_day * volume;
        let mut r = rng(config.seed, stream::WITHDRAWALS + c64);
        for t in arrivals(&mut r, per_day, from, end, &rushes) {
            add(&mut actions, t, Action::Withdrawal(c));
        }
        let mut r = rng(config.seed, stream::DEPOSITS + c64);
        for t in arrivals(&mut r, per_day * DEPOSIT_RATIO, from, end, &[]) {
            add(&mut actions, t, Action::Deposit(c));
        }
        if def.gas_topup > 0 {
            let mut r = rng(config.seed, stream::CONSOLIDATIONS + c64);
            for t in arrivals(&mut r, CONSOLIDATIONS_PER_DAY, from, end, &[]) {
                add(&mut actions, t, Action::Consolidation(c));
            }
        }
        if def.family == Family::Bitcoin {
            let mut t = start.saturating_add(BATCH_EVERY);
            while t < end {
                add(&mut actions, t, Action::Batch(c));
                t = t.saturating_add(BATCH_EVERY);
            }
        }
    }
    let mut incident_rng = rng(config.seed, stream::INCIDENTS);
    for (incident, at) in &config.incidents {
        for (t, step) in incidents::steps(incident, offset(*at), ids, &mut incident_rng) {
            add(&mut actions, t, Action::Step(step));
        }
    }
    actions.sort_by_key(|a| (a.t, a.seq));
    actions
}

/// A `wallet` record for every wallet and a `price` record for every asset.
fn opening_records(topo: &Topology, prices: &PricePath, start: i64) -> Vec<Record> {
    let t = Timestamp(start);
    let mut out = Vec::new();
    for w in &topo.wallets {
        let chain = &topo.chains[w.def.chain];
        let balances = w
            .start
            .iter()
            .zip(&chain.assets)
            .map(|(&amount, asset)| BalanceObs {
                chain: chain.id.clone(),
                wallet: w.address.clone(),
                asset: asset.clone(),
                amount: Amount::from_base_units(amount),
                decimals: SCENARIO_DECIMALS,
            })
            .collect();
        out.push(Record {
            t,
            kind: EventKind::Wallet(WalletDecl {
                chain: chain.id.clone(),
                address: w.address.clone(),
                name: w.def.name.to_string(),
                role: w.def.role,
                balances,
            }),
            label: None,
        });
    }
    for (p, asset) in topo.price_assets.iter().enumerate() {
        out.push(price_record(t, asset, prices.at_step(p, 0)));
    }
    out
}

fn price_record(t: Timestamp, asset: &Asset, e8: u64) -> Record {
    Record {
        t,
        kind: EventKind::Price(PriceObs {
            asset: asset.clone(),
            usd: Price(e8_to_usd(e8)),
        }),
        label: None,
    }
}

/// A `price` record for every asset every 10 minutes after the start.
fn price_records(out: &mut Vec<Record>, topo: &Topology, prices: &PricePath, start: i64, end: i64) {
    for k in 1..prices.steps() {
        let t = start + PRICE_STEP * k as i64;
        if t >= end {
            break;
        }
        for (p, asset) in topo.price_assets.iter().enumerate() {
            out.push(price_record(Timestamp(t), asset, prices.at_step(p, k)));
        }
    }
    debug_assert_eq!(topo.price_assets.len(), PRICES.len());
}

/// A `head` record for every block of every chain.
fn head_records(out: &mut Vec<Record>, topo: &Topology, blocks: &[Vec<i64>], ids: &mut Ids) {
    for (chain, times) in topo.chains.iter().zip(blocks) {
        for (i, &t) in times.iter().enumerate() {
            let block = chain.def.first_height + i as u64;
            out.push(Record {
                t: Timestamp(t),
                kind: EventKind::Head(Head {
                    chain: chain.id.clone(),
                    block,
                    hash: ids.block_hash(chain.def.family, block),
                }),
                label: None,
            });
        }
    }
}

/// Interleaves a `balance` record for every hot wallet and asset every
/// hour: the running balance from the start balances and every `included`
/// transfer up to and including that instant.
fn with_balances(sorted: Vec<Record>, topo: &Topology, start: i64, end: i64) -> Vec<Record> {
    let hour = 3_600 * SEC;
    let hours = usize::try_from((end - start).max(0) / hour).unwrap_or(0);
    let mut out = Vec::with_capacity(sorted.len() + hours * 10);
    // By chain and address: one EVM address is a wallet on several chains.
    let wallet_of = |c: &Chain, a: &Address| {
        topo.wallets
            .iter()
            .position(|w| &w.address == a && &topo.chains[w.def.chain].id == c)
    };
    let mut balances: Vec<Vec<u128>> = topo.wallets.iter().map(|w| w.start.clone()).collect();
    let mut next = start + hour;
    let emit = |out: &mut Vec<Record>, t: i64, balances: &[Vec<u128>]| {
        for (w, wallet) in topo.wallets.iter().enumerate() {
            if wallet.def.role != WalletRole::Hot {
                continue;
            }
            let chain = &topo.chains[wallet.def.chain];
            for (a, asset) in chain.assets.iter().enumerate() {
                out.push(Record {
                    t: Timestamp(t),
                    kind: EventKind::Balance(BalanceObs {
                        chain: chain.id.clone(),
                        wallet: wallet.address.clone(),
                        asset: asset.clone(),
                        amount: Amount::from_base_units(balances[w][a]),
                        decimals: SCENARIO_DECIMALS,
                    }),
                    label: None,
                });
            }
        }
    };
    for r in sorted {
        while r.t.0 > next && next < end {
            emit(&mut out, next, &balances);
            next += hour;
        }
        match &r.kind {
            EventKind::Transfer(tr) if tr.stage == Stage::Included => {
                apply(&mut balances, topo, tr, &wallet_of);
            }
            _ => {}
        }
        out.push(r);
    }
    while next < end {
        emit(&mut out, next, &balances);
        next += hour;
    }
    out
}

/// Moves the running balances by one included transfer.
fn apply(
    balances: &mut [Vec<u128>],
    topo: &Topology,
    tr: &Transfer,
    wallet_of: &impl Fn(&Chain, &Address) -> Option<usize>,
) {
    let amount = u128::try_from(tr.amount.0).unwrap_or(u128::MAX);
    let asset_of = |w: usize| {
        topo.chains[topo.wallets[w].def.chain]
            .assets
            .iter()
            .position(|a| a == &tr.asset)
    };
    let slot =
        |address: &Address| wallet_of(&tr.chain, address).and_then(|w| Some((w, asset_of(w)?)));
    if let Some((w, a)) = slot(&tr.from) {
        debug_assert!(balances[w][a] >= amount, "negative balance");
        balances[w][a] = balances[w][a].saturating_sub(amount);
    }
    if let Some((w, a)) = slot(&tr.to) {
        balances[w][a] += amount;
    }
}
