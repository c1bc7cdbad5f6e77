//! The outflow timeline of a replay: cumulative USD outflow per chain,
//! attack and the rest apart, collected record by record as the engine
//! runs, for `drainguard replay --plot`.
//!
//! Collected only when a plot is asked for: [`crate::replay_observed`]
//! takes the timeline as its [`Observer`], and a plain replay passes `()`,
//! whose empty hook the compiler removes.
//!
//! What counts as outflow: a transfer from one of the exchange's declared
//! wallets (hot or cold) to an address that is not one of them on that
//! chain — the same "outside address" the score uses. Each transfer
//! (chain, tx hash, index) counts once, at its first record of any stage
//! but `retracted`, valued at the price in force at its first record (as
//! the score values attack transfers), so that at the end of a file with
//! no reorgs the attack series reaches the score's `attack_usd_total`. A
//! `retracted` record takes the value back out until a later record of the
//! transfer brings it back in. A transfer counts as attack from the first
//! record of it labelled `attack` on (its value moves over from the other
//! series at that time); everything else — labelled `normal` or not
//! labelled — is the other series.

use std::collections::{BTreeMap, HashMap, HashSet};

use drainguard_model::{
    Address, Asset, Chain, EventKind, Price, Stage, Timestamp, TransferKey, Usd,
};
use drainguard_sim::{Label, Record};

/// Sees every record of a replay before the engine does. Replay calls it
/// once a record, in file order.
pub trait Observer {
    /// One record, before it becomes the engine's event.
    fn record(&mut self, record: &Record);
}

/// Observes nothing: the plain replay, at no cost.
impl Observer for () {
    #[inline(always)]
    fn record(&mut self, _record: &Record) {}
}

/// Which of a chain's two series a value belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flow {
    /// Transfers labelled `attack`.
    Attack,
    /// Everything else: labelled `normal`, or not labelled.
    Other,
}

/// One step of a cumulative series: from `t` on, the total is `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Scenario time of the change.
    pub t: Timestamp,
    /// Cumulative outflow from `t` on, in integer micro-dollars.
    pub total: Usd,
}

/// The cumulative outflow of one chain and flow, as the steps where it
/// changed (no step before the first outflow: the total is zero there).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Series {
    /// The changes, in time order.
    pub steps: Vec<Step>,
}

impl Series {
    /// The total at the end (zero for an empty series).
    pub fn last(&self) -> Usd {
        self.steps.last().map_or(Usd::ZERO, |s| s.total)
    }

    /// The total in force at `t` (after every step at or before `t`).
    pub fn at(&self, t: Timestamp) -> Usd {
        let n = self.steps.partition_point(|s| s.t <= t);
        n.checked_sub(1)
            .and_then(|i| self.steps.get(i))
            .map_or(Usd::ZERO, |s| s.total)
    }

    fn set(&mut self, t: Timestamp, total: Usd) {
        // Several changes at one time keep only the last: a plot cannot
        // tell them apart and the series stays one step per time.
        match self.steps.last_mut() {
            Some(last) if last.t == t => last.total = total,
            _ => self.steps.push(Step { t, total }),
        }
    }
}

#[derive(Debug)]
struct Counted {
    usd: Usd,
    flow: Flow,
    /// Whether its value is in the series now (not retracted).
    counted: bool,
}

/// Collects the outflow timeline of a replay (see the module docs).
#[derive(Debug, Default)]
pub struct Timeline {
    own: HashSet<(Chain, Address)>,
    prices: HashMap<Asset, Price>,
    transfers: HashMap<TransferKey, Counted>,
    series: BTreeMap<(Chain, Flow), Series>,
    chains: Vec<Chain>,
    labelled: bool,
    first_t: Option<Timestamp>,
    last_t: Option<Timestamp>,
}

impl Timeline {
    /// An empty timeline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every chain a `wallet` record declared, in order of first
    /// declaration (a chain with no outflow has no series but is here).
    pub fn chains(&self) -> &[Chain] {
        &self.chains
    }

    /// The series of a chain and flow, if it ever had an outflow.
    pub fn series(&self, chain: &Chain, flow: Flow) -> Option<&Series> {
        self.series.get(&(chain.clone(), flow))
    }

    /// Every non-empty series, by chain name then flow.
    pub fn all_series(&self) -> impl Iterator<Item = (&Chain, Flow, &Series)> {
        self.series.iter().map(|((c, f), s)| (c, *f, s))
    }

    /// Whether any record carried a label (attack and normal are then
    /// known apart; otherwise every outflow is [`Flow::Other`]).
    pub fn labelled(&self) -> bool {
        self.labelled
    }

    /// The scenario time of the first and the last record.
    pub fn span(&self) -> Option<(Timestamp, Timestamp)> {
        self.first_t.zip(self.last_t)
    }

    fn add(&mut self, chain: &Chain, flow: Flow, t: Timestamp, usd: Usd, take: bool) {
        let series = self.series.entry((chain.clone(), flow)).or_default();
        let last = series.last();
        let total = if take {
            last.saturating_sub(usd)
        } else {
            last.saturating_add(usd)
        };
        series.set(t, total);
    }

    fn transfer(&mut self, t: Timestamp, tr: &drainguard_model::Transfer, label: Option<Label>) {
        let outflow = self.own.contains(&(tr.chain.clone(), tr.from.clone()))
            && !self.own.contains(&(tr.chain.clone(), tr.to.clone()));
        if !outflow {
            return;
        }
        let attack = label == Some(Label::Attack);
        let retracted = tr.stage == Stage::Retracted;
        let key = tr.key();
        let Some(entry) = self.transfers.get_mut(&key) else {
            let price = self.prices.get(&tr.asset).copied().unwrap_or_default();
            let usd = Usd::of(tr.amount, tr.decimals, price);
            let flow = if attack { Flow::Attack } else { Flow::Other };
            self.transfers.insert(
                key,
                Counted {
                    usd,
                    flow,
                    counted: !retracted,
                },
            );
            if !retracted {
                self.add(&tr.chain, flow, t, usd, false);
            }
            return;
        };
        let (usd, was_counted, old_flow) = (entry.usd, entry.counted, entry.flow);
        let flow = if attack { Flow::Attack } else { old_flow };
        entry.flow = flow;
        entry.counted = !retracted;
        if was_counted && (retracted || flow != old_flow) {
            self.add(&tr.chain, old_flow, t, usd, true);
        }
        if !retracted && (!was_counted || flow != old_flow) {
            self.add(&tr.chain, flow, t, usd, false);
        }
    }
}

impl Observer for Timeline {
    fn record(&mut self, r: &Record) {
        self.first_t.get_or_insert(r.t);
        self.last_t = Some(r.t);
        if r.label.is_some() {
            self.labelled = true;
        }
        match &r.kind {
            EventKind::Wallet(w) => {
                if !self.chains.contains(&w.chain) {
                    self.chains.push(w.chain.clone());
                }
                self.own.insert((w.chain.clone(), w.address.clone()));
            }
            EventKind::Price(p) => {
                self.prices.insert(p.asset.clone(), p.usd);
            }
            EventKind::Transfer(tr) => self.transfer(r.t, tr, r.label),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use drainguard_model::{Amount, PriceObs, Transfer, TxHash, WalletDecl, WalletRole};
    use drainguard_sim::{generate, preset};

    fn t(s: i64) -> Timestamp {
        Timestamp::from_unix_secs(1_700_000_000 + s)
    }

    fn wallet(chain: &str, addr: &str) -> Record {
        Record {
            t: t(0),
            kind: EventKind::Wallet(WalletDecl {
                chain: Chain::new(chain),
                address: Address::new(addr),
                name: addr.to_string(),
                role: WalletRole::Hot,
                balances: Vec::new(),
            }),
            label: None,
        }
    }

    fn price(at: i64, asset: &str, usd: f64) -> Record {
        Record {
            t: t(at),
            kind: EventKind::Price(PriceObs {
                asset: Asset::new(asset),
                usd: Price(usd),
            }),
            label: None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn transfer(
        at: i64,
        chain: &str,
        tx: &str,
        stage: Stage,
        from: &str,
        to: &str,
        whole: u128,
        label: Option<Label>,
    ) -> Record {
        Record {
            t: t(at),
            kind: EventKind::Transfer(Transfer {
                chain: Chain::new(chain),
                tx_hash: TxHash::new(tx),
                index: 0,
                stage,
                block: (stage != Stage::Pending).then_some(1),
                from: Address::new(from),
                to: Address::new(to),
                asset: Asset::new("ETH"),
                token: None,
                amount: Amount::from_base_units(whole),
                decimals: 0,
            }),
            label,
        }
    }

    fn run(records: &[Record]) -> Timeline {
        let mut tl = Timeline::new();
        for r in records {
            tl.record(r);
        }
        tl
    }

    const A: Option<Label> = Some(Label::Attack);
    const N: Option<Label> = Some(Label::Normal);

    #[test]
    fn counts_each_outflow_once_apart_by_label_and_chain() {
        let tl = run(&[
            wallet("ethereum", "hot"),
            wallet("ethereum", "cold"),
            wallet("tron", "thot"),
            price(0, "ETH", 2.0),
            transfer(1, "ethereum", "a", Stage::Pending, "hot", "user", 10, N),
            transfer(2, "ethereum", "a", Stage::Included, "hot", "user", 10, N),
            // Internal move: not outflow. Deposit: not outflow.
            transfer(3, "ethereum", "b", Stage::Included, "hot", "cold", 99, N),
            transfer(3, "ethereum", "c", Stage::Included, "user", "hot", 99, N),
            price(4, "ETH", 3.0),
            transfer(5, "ethereum", "d", Stage::Pending, "hot", "thief", 100, A),
            // Priced at its first record, not at the price in force now.
            price(6, "ETH", 1000.0),
            transfer(7, "ethereum", "d", Stage::Included, "hot", "thief", 100, A),
            transfer(8, "tron", "e", Stage::Included, "thot", "user", 7, None),
        ]);
        let eth = Chain::new("ethereum");
        let other = tl.series(&eth, Flow::Other).unwrap();
        assert_eq!(
            other.steps,
            [Step {
                t: t(1),
                total: Usd(20_000_000)
            }]
        );
        let attack = tl.series(&eth, Flow::Attack).unwrap();
        assert_eq!(
            attack.steps,
            [Step {
                t: t(5),
                total: Usd(300_000_000)
            }]
        );
        assert_eq!(attack.at(t(4)), Usd::ZERO);
        assert_eq!(attack.at(t(5)), Usd(300_000_000));
        assert_eq!(attack.at(t(100)), Usd(300_000_000));
        let tron = tl.series(&Chain::new("tron"), Flow::Other).unwrap();
        assert_eq!(tron.last(), Usd(7_000_000_000));
        assert!(tl.series(&Chain::new("tron"), Flow::Attack).is_none());
        assert_eq!(tl.chains(), [eth, Chain::new("tron")]);
        assert!(tl.labelled());
        assert_eq!(tl.span(), Some((t(0), t(8))));
    }

    #[test]
    fn retraction_takes_value_out_until_it_comes_back_and_a_late_attack_label_moves_it() {
        let tl = run(&[
            wallet("ethereum", "hot"),
            price(0, "ETH", 1.0),
            transfer(1, "ethereum", "a", Stage::Included, "hot", "x", 5, None),
            transfer(2, "ethereum", "a", Stage::Retracted, "hot", "x", 5, None),
            transfer(3, "ethereum", "a", Stage::Included, "hot", "x", 5, None),
            transfer(4, "ethereum", "b", Stage::Pending, "hot", "y", 2, None),
            transfer(5, "ethereum", "b", Stage::Included, "hot", "y", 2, A),
        ]);
        let eth = Chain::new("ethereum");
        let totals = |flow| {
            tl.series(&eth, flow)
                .unwrap()
                .steps
                .iter()
                .map(|s| (s.t, s.total.0 / 1_000_000))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            totals(Flow::Other),
            [(t(1), 5), (t(2), 0), (t(3), 5), (t(4), 7), (t(5), 5)]
        );
        assert_eq!(totals(Flow::Attack), [(t(5), 2)]);
    }

    #[test]
    fn unlabelled_file_and_undeclared_senders() {
        let tl = run(&[
            price(0, "ETH", 1.0),
            // Before its wallet is declared, a sender is not the exchange's.
            transfer(1, "ethereum", "a", Stage::Included, "hot", "x", 5, None),
            wallet("ethereum", "hot"),
            transfer(2, "ethereum", "b", Stage::Included, "hot", "x", 5, None),
        ]);
        assert!(!tl.labelled());
        let s = tl.series(&Chain::new("ethereum"), Flow::Other).unwrap();
        assert_eq!(s.last(), Usd(5_000_000));
        assert_eq!(s.steps.len(), 1);
    }

    /// A direct computation over a generated CoinEx-style day: every
    /// transfer from a declared wallet to an outside address, once, at the
    /// price of its first record, summed per chain and label.
    #[test]
    fn generated_day_totals_match_a_direct_sum() {
        let records = generate(&preset("coinex", 3).unwrap());
        let tl = run(&records);
        let mut own = HashSet::new();
        let mut prices = HashMap::new();
        let mut first: HashMap<TransferKey, (Chain, Usd)> = HashMap::new();
        let mut attack: HashSet<TransferKey> = HashSet::new();
        let mut retracted_last: HashMap<TransferKey, bool> = HashMap::new();
        for r in &records {
            match &r.kind {
                EventKind::Wallet(w) => {
                    own.insert((w.chain.clone(), w.address.clone()));
                }
                EventKind::Price(p) => {
                    prices.insert(p.asset.clone(), p.usd);
                }
                EventKind::Transfer(tr)
                    if own.contains(&(tr.chain.clone(), tr.from.clone()))
                        && !own.contains(&(tr.chain.clone(), tr.to.clone())) =>
                {
                    let p = prices.get(&tr.asset).copied().unwrap_or_default();
                    first
                        .entry(tr.key())
                        .or_insert_with(|| (tr.chain.clone(), Usd::of(tr.amount, tr.decimals, p)));
                    if r.label == Some(Label::Attack) {
                        attack.insert(tr.key());
                    }
                    retracted_last.insert(tr.key(), tr.stage == Stage::Retracted);
                }
                _ => {}
            }
        }
        let mut want: BTreeMap<(Chain, Flow), u128> = BTreeMap::new();
        for (key, (chain, usd)) in &first {
            if retracted_last[key] {
                continue;
            }
            let flow = if attack.contains(key) {
                Flow::Attack
            } else {
                Flow::Other
            };
            *want.entry((chain.clone(), flow)).or_default() += usd.0;
        }
        let got: BTreeMap<(Chain, Flow), u128> = tl
            .all_series()
            .map(|(c, f, s)| ((c.clone(), f), s.last().0))
            .filter(|(_, v)| *v > 0)
            .collect();
        want.retain(|_, v| *v > 0);
        assert_eq!(got, want);
        assert!(
            want.keys().filter(|(_, f)| *f == Flow::Attack).count() >= 3,
            "the CoinEx day drains several chains: {want:?}"
        );
        // The attack series end where the score's attack value does: the
        // same transfers, valued the same way.
        let attack_sum: u128 = tl
            .all_series()
            .filter(|(_, f, _)| *f == Flow::Attack)
            .map(|(_, _, s)| s.last().0)
            .sum();
        let replayed = crate::replay_records(
            records.iter().cloned().map(Ok),
            drainguard_engine::RuleSet::builtin().unwrap(),
        )
        .unwrap();
        let score = replayed.report.score.unwrap();
        assert!(
            (Usd(attack_sum).to_f64() - score.attack_usd_total).abs() < 0.01,
            "{attack_sum} µ$ against {}",
            score.attack_usd_total
        );
        // Every series is in time order and never jumps back in time.
        for (_, _, s) in tl.all_series() {
            assert!(s.steps.windows(2).all(|w| w[0].t < w[1].t));
        }
    }
}
