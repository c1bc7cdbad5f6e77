//! The exchange at work: withdrawals, deposits, refills, sweeps and the
//! steps of incidents, played in time order against exact balances.
//!
//! Each wallet and asset has three running figures, all in base units:
//! `onchain` (the balance as the `included` records so far make it),
//! `committed` (what is surely there: inflows count once included, outflows
//! as soon as they are decided) and `incoming` (inflows decided but not yet
//! included). Every amount sent is taken out of `committed`, which never
//! goes below zero, and `committed` never exceeds `onchain`; so no on-chain
//! balance ever goes negative, and a share of `committed` is at most that
//! share of the on-chain balance.

use std::{cmp::Reverse, collections::BinaryHeap};

use drainguard_model::{
    Address, Amount, Approval, ApprovalStandard, EventKind, Intent, Stage, Timestamp, Transfer,
    WalletRole,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{
    SimConfig,
    market::{PricePath, millis, pick_weighted, std_normal},
    topology::{Family, Ids, POOL_SIZE, Topology, WHOLE},
};
use crate::{Label, Record, SCENARIO_DECIMALS};

/// Median USD value of a user withdrawal or deposit.
const MEDIAN_USD: f64 = 400.0;
/// Log-normal spread of user amounts.
const SIGMA: f64 = 1.6;
/// Largest single withdrawal, in basis points of the wallet's balance.
pub(crate) const WITHDRAWAL_CAP_BPS: u128 = 150;
/// Share of withdrawals to a regular destination.
const REGULAR_SHARE: f64 = 0.2;
/// Share of intents that carry the transaction hash.
const INTENT_HASH_SHARE: f64 = 0.3;

/// One side of a transfer.
#[derive(Debug, Clone)]
pub(crate) enum Party {
    /// A wallet of the exchange (index into the topology's wallets).
    Wallet(usize),
    /// Anyone else.
    External(Address),
}

/// A step of an incident, at its scheduled time.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// Refills stop: the exchange's automation is compromised or halted.
    HaltRefills,
    /// A theft of `share_bps` of a wallet's current balance of an asset.
    Theft {
        /// The robbed wallet.
        wallet: usize,
        /// The chain asset.
        asset: usize,
        /// Share of the current balance, in basis points.
        share_bps: u32,
        /// The attacker's address.
        to: Address,
        /// Whether the withdrawal system announced it (an abused system).
        intent: bool,
    },
    /// A hot wallet approves a spender for unlimited amounts of a token.
    Approval {
        /// The approving wallet.
        wallet: usize,
        /// The chain asset.
        asset: usize,
        /// The spender.
        spender: Address,
    },
    /// The exchange moves everything left in every hot wallet to cold
    /// storage and suspends withdrawals.
    SweepAll,
}

/// What happens at a scheduled time.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// A user withdrawal on a chain.
    Withdrawal(usize),
    /// A user deposit on a chain.
    Deposit(usize),
    /// An incident step.
    Step(Step),
}

/// An action with its time and a tie-breaking sequence number.
#[derive(Debug, Clone)]
pub(crate) struct Scheduled {
    /// When.
    pub(crate) t: i64,
    /// Order among equal times.
    pub(crate) seq: u64,
    /// What.
    pub(crate) action: Action,
}

/// A balance move of a wallet, applied when its transfer is included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Move {
    /// Inclusion time (ordered first).
    t: i64,
    /// Tie-breaker: the order the moves were booked.
    seq: u64,
    wallet: usize,
    asset: usize,
    amount: u128,
    /// An inflow (else an outflow, already out of `committed`).
    credit: bool,
}

/// A transfer to emit.
#[derive(Debug)]
struct Send {
    chain: usize,
    asset: usize,
    from: Party,
    to: Party,
    amount: u128,
    pending: i64,
    label: Label,
    intent_at: Option<i64>,
    /// Bitcoin: return change to the sender as output 1.
    change: bool,
}

/// The exchange's state while a scenario is generated.
#[derive(Debug)]
pub(crate) struct Exchange<'a> {
    config: &'a SimConfig,
    topo: &'a Topology,
    blocks: &'a [Vec<i64>],
    prices: &'a PricePath,
    ids: &'a mut Ids,
    rng: ChaCha8Rng,
    end: i64,
    committed: Vec<Vec<u128>>,
    incoming: Vec<Vec<u128>>,
    onchain: Vec<Vec<u128>>,
    /// Moves by inclusion time.
    moves: BinaryHeap<Reverse<Move>>,
    seq: u64,
    next_intent: u64,
    refills_halted: bool,
    withdrawals_suspended: bool,
    out: Vec<Record>,
}

impl<'a> Exchange<'a> {
    /// An exchange with every wallet at its start balance.
    pub(crate) fn new(
        config: &'a SimConfig,
        topo: &'a Topology,
        blocks: &'a [Vec<i64>],
        prices: &'a PricePath,
        ids: &'a mut Ids,
        rng: ChaCha8Rng,
        end: i64,
    ) -> Self {
        let committed: Vec<Vec<u128>> = topo.wallets.iter().map(|w| w.start.clone()).collect();
        let incoming = committed.iter().map(|v| vec![0; v.len()]).collect();
        let committed_copy = committed.clone();
        Exchange {
            config,
            topo,
            blocks,
            prices,
            ids,
            rng,
            end,
            committed,
            incoming,
            onchain: committed_copy,
            moves: BinaryHeap::new(),
            seq: 0,
            next_intent: 1,
            refills_halted: false,
            withdrawals_suspended: false,
            out: Vec::new(),
        }
    }

    /// Plays the actions (sorted by time) and returns the records made,
    /// in generation order.
    pub(crate) fn run(mut self, actions: Vec<Scheduled>) -> Vec<Record> {
        for a in actions {
            self.apply_moves(a.t);
            match a.action {
                Action::Withdrawal(c) => self.withdrawal(c, a.t),
                Action::Deposit(c) => self.deposit(c, a.t),
                Action::Step(step) => self.step(step, a.t),
            }
        }
        self.apply_moves(self.end);
        self.out
    }

    fn push(&mut self, t: i64, kind: EventKind, label: Option<Label>) {
        if t < self.end {
            self.out.push(Record {
                t: Timestamp(t),
                kind,
                label,
            });
        }
    }

    /// Applies every move included before `t`, refilling or sweeping as
    /// the new balances call for.
    fn apply_moves(&mut self, t: i64) {
        while let Some(&Reverse(m)) = self.moves.peek() {
            if m.t >= t {
                break;
            }
            self.moves.pop();
            let (w, a) = (m.wallet, m.asset);
            if m.credit {
                self.onchain[w][a] += m.amount;
                self.committed[w][a] += m.amount;
                self.incoming[w][a] = self.incoming[w][a].saturating_sub(m.amount);
                self.check_levels(w, a, m.t);
            } else {
                debug_assert!(self.onchain[w][a] >= m.amount);
                self.onchain[w][a] = self.onchain[w][a].saturating_sub(m.amount);
            }
        }
    }

    /// Books the moves of a transfer from `from` to `to` (either may be a
    /// wallet, or both: bitcoin change) included at `t`.
    fn book(&mut self, t: i64, from: Option<usize>, to: Option<usize>, asset: usize, amount: u128) {
        let mut push = |moves: &mut BinaryHeap<Reverse<Move>>, wallet, credit| {
            moves.push(Reverse(Move {
                t,
                seq: self.seq,
                wallet,
                asset,
                amount,
                credit,
            }));
            self.seq += 1;
        };
        if let Some(w) = from {
            push(&mut self.moves, w, false);
        }
        if let Some(w) = to {
            self.incoming[w][asset] += amount;
            push(&mut self.moves, w, true);
        }
    }

    fn address_of(&self, p: &Party) -> Address {
        match p {
            Party::Wallet(w) => self.topo.wallets[*w].address.clone(),
            Party::External(a) => a.clone(),
        }
    }

    /// A user amount: a log-normal dollar value in the asset's quanta at
    /// the price of the moment, sometimes rounded the way people round.
    fn user_quanta(&mut self, c: usize, a: usize, t: i64) -> u128 {
        let def = &self.topo.chains[c].def.assets[a];
        let usd = (MEDIAN_USD * (SIGMA * std_normal(&mut self.rng)).exp()).clamp(10.0, 2e6);
        let price = self.prices.usd(def.price, t);
        let q = usd / price * 10f64.powi(i32::from(def.quantum_decimals));
        if !q.is_finite() || q < 1.0 {
            return 0;
        }
        let mut q = q as u128;
        if self.rng.gen_bool(0.4) && q >= def.round_step {
            q -= q % def.round_step;
        }
        q
    }

    fn pick_hot(&mut self, c: usize) -> usize {
        let topo = self.topo;
        let hot = &topo.chains[c].hot;
        hot[pick_weighted(
            &mut self.rng,
            hot.iter().map(|&w| topo.wallets[w].def.weight),
        )]
    }

    fn pick_asset(&mut self, c: usize) -> usize {
        pick_weighted(
            &mut self.rng,
            self.topo.chains[c].def.assets.iter().map(|a| a.weight),
        )
    }

    fn withdrawal(&mut self, c: usize, t: i64) {
        if self.withdrawals_suspended {
            return;
        }
        let a = self.pick_asset(c);
        let w = self.pick_hot(c);
        let unit = self.topo.chains[c].def.assets[a].unit();
        let cap = self.committed[w][a] * WITHDRAWAL_CAP_BPS / 10_000 / unit;
        let q = self.user_quanta(c, a, t).min(cap);
        if q == 0 {
            return;
        }
        let to = if self.rng.gen_bool(REGULAR_SHARE) {
            // A few regular counterparties get most of the regular flow.
            let u: f64 = self.rng.r#gen();
            let i = ((u * u * POOL_SIZE as f64) as usize).min(POOL_SIZE - 1);
            self.topo.wallets[w].pool[i].clone()
        } else {
            self.ids.address(self.topo.chains[c].def.family)
        };
        let intent_at = if self.config.intents {
            Some(t - millis(&mut self.rng, 1_000, 20_000))
        } else {
            None
        };
        self.send(Send {
            chain: c,
            asset: a,
            from: Party::Wallet(w),
            to: Party::External(to),
            amount: q * unit,
            pending: t,
            label: Label::Normal,
            intent_at,
            change: true,
        });
        self.check_levels(w, a, t);
    }

    fn deposit(&mut self, c: usize, t: i64) {
        let a = self.pick_asset(c);
        let w = self.pick_hot(c);
        let unit = self.topo.chains[c].def.assets[a].unit();
        let q = self.user_quanta(c, a, t);
        if q == 0 {
            return;
        }
        let from = self.ids.address(self.topo.chains[c].def.family);
        self.send(Send {
            chain: c,
            asset: a,
            from: Party::External(from),
            to: Party::Wallet(w),
            amount: q * unit,
            pending: t,
            label: Label::Normal,
            intent_at: None,
            change: false,
        });
    }

    /// Refills a hot wallet from cold storage when it falls under 60% of
    /// its start balance (counting what is on its way), and sweeps it back
    /// to 100% when it holds more than 150%. Amounts are whole units.
    fn check_levels(&mut self, w: usize, a: usize, now: i64) {
        let wallet = &self.topo.wallets[w];
        if wallet.def.role != WalletRole::Hot {
            return;
        }
        let c = wallet.def.chain;
        let cold = self.topo.chains[c].cold;
        let start = wallet.start[a];
        let committed = self.committed[w][a];
        let level = committed + self.incoming[w][a];
        let (from, to, amount) = if level < start / 10 * 6 {
            if self.refills_halted {
                return;
            }
            let want = (start - level) / WHOLE * WHOLE;
            (cold, w, want.min(self.committed[cold][a] / WHOLE * WHOLE))
        } else if committed > start / 2 * 3 {
            (w, cold, (committed - start) / WHOLE * WHOLE)
        } else {
            return;
        };
        if amount == 0 {
            return;
        }
        let pending = now + millis(&mut self.rng, 30_000, 180_000);
        self.send(Send {
            chain: c,
            asset: a,
            from: Party::Wallet(from),
            to: Party::Wallet(to),
            amount,
            pending,
            label: Label::Normal,
            intent_at: None,
            change: true,
        });
    }

    fn step(&mut self, step: Step, t: i64) {
        match step {
            Step::HaltRefills => self.refills_halted = true,
            Step::Theft {
                wallet,
                asset,
                share_bps,
                to,
                intent,
            } => {
                let c = self.topo.wallets[wallet].def.chain;
                let unit = self.topo.chains[c].def.assets[asset].unit();
                // A share of the balance on chain, of which only what is not
                // already spoken for can still be sent.
                let share = self.onchain[wallet][asset] / 10_000 * u128::from(share_bps);
                let amount = share.min(self.committed[wallet][asset]) / unit * unit;
                if amount == 0 {
                    return;
                }
                let (intent_at, pending) = if intent {
                    let pending = t + millis(&mut self.rng, 2_000, 10_000);
                    (self.config.intents.then_some(t), pending)
                } else {
                    (None, t)
                };
                self.send(Send {
                    chain: c,
                    asset,
                    from: Party::Wallet(wallet),
                    to: Party::External(to),
                    amount,
                    pending,
                    label: Label::Attack,
                    intent_at,
                    change: true,
                });
                self.check_levels(wallet, asset, t);
            }
            Step::Approval {
                wallet,
                asset,
                spender,
            } => {
                let c = self.topo.wallets[wallet].def.chain;
                let chain = &self.topo.chains[c];
                let approval = Approval {
                    chain: chain.id.clone(),
                    tx_hash: self.ids.tx_hash(chain.def.family),
                    owner: self.topo.wallets[wallet].address.clone(),
                    spender,
                    asset: chain.assets[asset].clone(),
                    amount: Amount::MAX,
                    standard: ApprovalStandard::Erc20,
                };
                self.push(t, EventKind::Approval(approval), Some(Label::Attack));
            }
            Step::SweepAll => {
                self.withdrawals_suspended = true;
                let mut pending = t;
                for w in 0..self.topo.wallets.len() {
                    let wallet = &self.topo.wallets[w];
                    if wallet.def.role != WalletRole::Hot {
                        continue;
                    }
                    let c = wallet.def.chain;
                    let cold = self.topo.chains[c].cold;
                    for a in 0..self.committed[w].len() {
                        let amount = self.committed[w][a];
                        if amount == 0 {
                            continue;
                        }
                        self.send(Send {
                            chain: c,
                            asset: a,
                            from: Party::Wallet(w),
                            to: Party::Wallet(cold),
                            amount,
                            pending,
                            label: Label::Normal,
                            intent_at: None,
                            change: false,
                        });
                        pending += millis(&mut self.rng, 1_000, 6_000);
                    }
                }
            }
        }
    }

    /// Emits a transfer (and its intent and change output, where there are
    /// any), and books it: the amount leaves the sender's `committed` now,
    /// and reaches a receiving wallet when included.
    fn send(&mut self, s: Send) {
        let Send {
            chain: c,
            asset,
            from: from_party,
            to: to_party,
            amount,
            pending,
            label,
            intent_at,
            change,
        } = s;
        let topo = self.topo;
        let chain = &topo.chains[c];
        let family = chain.def.family;
        let token = chain.tokens[asset].clone();
        let tx_hash = self.ids.tx_hash(family);
        let index = match family {
            Family::Evm if token.is_some() => self.rng.gen_range(0..=180),
            Family::Tron if token.is_some() => self.rng.gen_range(0..=3),
            // A user's transaction pays us in any of its outputs.
            Family::Bitcoin if matches!(from_party, Party::External(_)) => {
                self.rng.gen_range(0..=2)
            }
            _ => 0,
        };
        let from = self.address_of(&from_party);
        let to = self.address_of(&to_party);
        if let Party::Wallet(w) = from_party {
            debug_assert!(self.committed[w][asset] >= amount);
            self.committed[w][asset] = self.committed[w][asset].saturating_sub(amount);
        }
        if let Some(at) = intent_at {
            let id = format!("wd-{}", self.next_intent);
            self.next_intent += 1;
            let intent = Intent {
                id,
                chain: chain.id.clone(),
                wallet: from.clone(),
                to: to.clone(),
                asset: chain.assets[asset].clone(),
                amount: Amount::from_base_units(amount),
                decimals: SCENARIO_DECIMALS,
                tx_hash: self
                    .rng
                    .gen_bool(INTENT_HASH_SHARE)
                    .then(|| tx_hash.clone()),
            };
            self.push(at, EventKind::Intent(intent), Some(label));
        }
        let transfer = Transfer {
            chain: chain.id.clone(),
            tx_hash,
            index,
            stage: Stage::Pending,
            block: None,
            from,
            to,
            asset: chain.assets[asset].clone(),
            token,
            amount: Amount::from_base_units(amount),
            decimals: SCENARIO_DECIMALS,
        };
        let wallet = |p: &Party| match p {
            Party::Wallet(w) => Some(*w),
            Party::External(_) => None,
        };
        if let Some(ti) = self.stages(c, &transfer, pending, label) {
            self.book(ti, wallet(&from_party), wallet(&to_party), asset, amount);
        }
        let Party::Wallet(w) = from_party else {
            return;
        };
        if !(change && family == Family::Bitcoin) {
            return;
        }
        // Output 1: the change back to the sending wallet, up to three times
        // the amount sent, from the rest of its balance (locked until the
        // transaction is included).
        let unit = chain.def.assets[asset].unit();
        let max_q = (self.committed[w][asset] / unit).min(amount / unit * 3);
        if max_q == 0 {
            return;
        }
        let q = self.rng.gen_range(max_q.div_ceil(20).max(1)..=max_q);
        let change_amount = q * unit;
        self.committed[w][asset] -= change_amount;
        let change_output = Transfer {
            index: 1,
            from: transfer.from.clone(),
            to: transfer.from.clone(),
            amount: Amount::from_base_units(change_amount),
            ..transfer
        };
        if let Some(ti) = self.stages(c, &change_output, pending, label) {
            self.book(ti, Some(w), Some(w), asset, change_amount);
        }
    }

    /// Emits the pending, included and confirmed records of a transfer
    /// (those before the end) and returns the inclusion time, if the
    /// transfer is included before the end.
    fn stages(&mut self, c: usize, base: &Transfer, pending: i64, label: Label) -> Option<i64> {
        let blocks = &self.blocks[c];
        let def = self.topo.chains[c].def;
        if pending >= self.end {
            return None;
        }
        self.push(pending, EventKind::Transfer(base.clone()), Some(label));
        let i = blocks.partition_point(|&b| b <= pending);
        let included_at = *blocks.get(i)?;
        let height = def.first_height + i as u64;
        let included = Transfer {
            stage: Stage::Included,
            block: Some(height),
            ..base.clone()
        };
        self.push(included_at, EventKind::Transfer(included), Some(label));
        if let Some(&confirmed_at) = blocks.get(i + def.depth) {
            let confirmed = Transfer {
                stage: Stage::Confirmed,
                block: Some(height),
                ..base.clone()
            };
            self.push(confirmed_at, EventKind::Transfer(confirmed), Some(label));
        }
        Some(included_at)
    }
}
