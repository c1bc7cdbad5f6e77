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
    TxHash, WalletRole,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{
    SimConfig,
    market::{PricePath, SEC, millis, pick_weighted, std_normal},
    topology::{BITCOIN, COUNTERPARTIES, Family, Ids, Topology, WHOLE},
};
use crate::{Label, Record, SCENARIO_DECIMALS};

// Every parameter below says where its value comes from; none is chosen to
// keep traffic under a rule's limit (see ../shared/REALISM.md).

/// Median USD value of a retail withdrawal or deposit: a few hundred
/// dollars, as exchanges' published averages of retail transfers are.
const MEDIAN_USD: f64 = 400.0;
/// Log-normal spread of retail amounts: σ = 1.6 puts the 99th percentile
/// near $17k, a retail trader's large withdrawal.
const SIGMA: f64 = 1.6;
/// The smallest withdrawal exchanges accept, about $10 of any asset.
const MIN_USD: f64 = 10.0;
/// Share of withdrawals made by funds, market makers, OTC desks and
/// whales: one in 1,500, which with the retail tail gives about ten
/// withdrawals of $100k or more a day at this exchange's volume
/// ("several times a day at a large exchange", REALISM.md).
const WHALE_RATE: f64 = 1.0 / 1_500.0;
/// Where the whale tail starts, in USD.
const WHALE_MIN_USD: f64 = 50_000.0;
/// The whale tail's Pareto exponent: 1.16, the 80/20 law; values of
/// on-chain transfers follow power laws with exponents near 1 (Kondor et
/// al. 2014 for Bitcoin). No bound but the account's own: a whale may take
/// more than a hot wallet holds, and is then paid from cold storage.
const WHALE_ALPHA: f64 = 1.16;
/// No account holds more than a twentieth of what the exchange holds of
/// an asset on a chain (customer assets spread over millions of accounts,
/// as proof-of-reserves reports show): a larger draw is no customer's.
const MAX_ACCOUNT_DIV: u128 = 20;
/// Share of retail withdrawals to a regular counterparty (an account at
/// another exchange the customer uses again).
const REGULAR_SHARE: f64 = 0.2;
/// Share of whale withdrawals to a regular counterparty: the rest go to an
/// address never paid before ("usually", REALISM.md).
const WHALE_REGULAR_SHARE: f64 = 0.2;
/// Share of intents that carry the transaction hash.
const INTENT_HASH_SHARE: f64 = 0.3;
/// A hot wallet's per-transaction limit, as a divisor of its target
/// balance: custody platforms enforce per-transaction limits on hot
/// wallets (BitGo and Fireblocks policies), and a hot wallet holds "a few
/// times its largest daily withdrawal" (REALISM.md), so a third. Larger
/// withdrawals, and those the hot wallet cannot cover, are reviewed by
/// hand and paid from cold storage.
const HOT_TX_LIMIT_DIV: u128 = 3;
/// A hot wallet's low-water mark, in tenths of its target: under it the
/// wallet is refilled, and a withdrawal that would take it under it waits
/// for that top-up before it is signed. Exchanges keep a floor in a hot
/// wallet so that the next customers are served while a whale is paid
/// ("insufficient hot wallet balance: pending replenishment").
const LOW_WATER_TENTHS: u128 = 6;
/// Manual review of a withdrawal paid from cold storage: 10 to 60 minutes
/// (exchanges tell customers that large withdrawals take longer).
const REVIEW_MS: (i64, i64) = (600_000, 3_600_000);
/// Bitcoin withdrawals wait for the next batch, every 30 minutes: one
/// transaction pays tens (at 1×) to hundreds (at 6×) of customers, with
/// change back (REALISM.md).
pub(crate) const BATCH_EVERY: i64 = 30 * 60 * SEC;
/// Deposit consolidation bursts a day on each account chain (where every
/// customer has a deposit address), at any volume.
pub(crate) const CONSOLIDATIONS_PER_DAY: f64 = 3.0;
/// Deposit addresses swept in one burst at volume 1 (scaled by the
/// volume): Binance received ~150,000 deposits a day in Sept 2023
/// (REALISM.md); this exchange a few thousand.
const CONSOLIDATION_ADDRESSES: (u32, u32) = (150, 600);
/// How long one burst lasts, in seconds: the sweeps of a burst are spread
/// over one to three hours ("within hours", REALISM.md).
const CONSOLIDATION_SECS: (i64, i64) = (3_600, 3 * 3_600);

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
    /// A burst of deposit-address sweeps into a hot wallet of a chain.
    Consolidation(usize),
    /// The pending withdrawals of a chain go out in one transaction.
    Batch(usize),
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

/// A withdrawal waiting for its hot wallet's top-up.
#[derive(Debug)]
struct Waiting {
    to: Address,
    amount: u128,
    since: i64,
}

/// A withdrawal waiting for its chain's next batch.
#[derive(Debug)]
struct Queued {
    wallet: usize,
    asset: usize,
    to: Address,
    amount: u128,
    intent_at: Option<i64>,
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
    /// Withdrawals waiting for their batch, by chain.
    queued: Vec<Vec<Queued>>,
    /// The deposit sweeps of consolidation bursts still to come: (time,
    /// order, chain, hot wallet).
    sweeps: BinaryHeap<Reverse<(i64, u64, usize, usize)>>,
    /// Withdrawals waiting for a top-up, by wallet and asset, oldest
    /// first, and their sum.
    waiting: Vec<Vec<std::collections::VecDeque<Waiting>>>,
    waiting_sum: Vec<Vec<u128>>,
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
            queued: topo.chains.iter().map(|_| Vec::new()).collect(),
            sweeps: BinaryHeap::new(),
            waiting: topo
                .wallets
                .iter()
                .map(|w| w.start.iter().map(|_| Default::default()).collect())
                .collect(),
            waiting_sum: topo
                .wallets
                .iter()
                .map(|w| vec![0; w.start.len()])
                .collect(),
            out: Vec::new(),
        }
    }

    /// Plays the actions (sorted by time) and returns the records made,
    /// in generation order.
    pub(crate) fn run(mut self, actions: Vec<Scheduled>) -> Vec<Record> {
        for a in actions {
            while let Some(&Reverse((t, _, c, w))) = self.sweeps.peek()
                && t <= a.t
            {
                self.sweeps.pop();
                self.apply_moves(t);
                self.sweep_deposit(c, w, t);
            }
            self.apply_moves(a.t);
            match a.action {
                Action::Withdrawal(c) => self.withdrawal(c, a.t),
                Action::Deposit(c) => self.deposit(c, a.t),
                Action::Consolidation(c) => self.consolidation(c, a.t),
                Action::Batch(c) => self.batch(c, a.t),
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
                self.pay_waiting(w, a, m.t);
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

    /// A retail amount in dollars: log-normal.
    fn retail_usd(&mut self) -> f64 {
        (MEDIAN_USD * (SIGMA * std_normal(&mut self.rng)).exp()).max(MIN_USD)
    }

    /// A withdrawal's amount in dollars, and whether a whale made it.
    fn withdrawal_usd(&mut self) -> (f64, bool) {
        if self.rng.gen_bool(WHALE_RATE) {
            let u = 1.0 - self.rng.r#gen::<f64>(); // (0, 1]
            (WHALE_MIN_USD * u.powf(-1.0 / WHALE_ALPHA), true)
        } else {
            (self.retail_usd(), false)
        }
    }

    /// A regular counterparty's address on chain `c`: a few get most of
    /// the flow.
    fn counterparty(&mut self, c: usize) -> Address {
        let u: f64 = self.rng.r#gen();
        let i = ((u * u * COUNTERPARTIES as f64) as usize).min(COUNTERPARTIES - 1);
        self.topo.counterparties[i][self.topo.chains[c].def.family.index()].clone()
    }

    /// A dollar amount in the asset's quanta at the price of the moment,
    /// sometimes rounded the way people round.
    fn quanta(&mut self, c: usize, a: usize, t: i64, usd: f64) -> u128 {
        let def = &self.topo.chains[c].def.assets[a];
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

    /// A customer's withdrawal: paid by a hot wallet within its
    /// per-transaction limit and balance, else reviewed and paid from cold
    /// storage; on bitcoin, queued for the next batch.
    fn withdrawal(&mut self, c: usize, t: i64) {
        if self.withdrawals_suspended {
            return;
        }
        let a = self.pick_asset(c);
        let w = self.pick_hot(c);
        let unit = self.topo.chains[c].def.assets[a].unit();
        let (usd, whale) = self.withdrawal_usd();
        let q = self.quanta(c, a, t, usd);
        if q == 0 {
            return;
        }
        let amount = q * unit;
        if amount > self.topo.chains[c].holdings[a] / MAX_ACCOUNT_DIV {
            return;
        }
        let regular = if whale {
            WHALE_REGULAR_SHARE
        } else {
            REGULAR_SHARE
        };
        let to = if self.rng.gen_bool(regular) {
            self.counterparty(c)
        } else {
            self.ids.address(self.topo.chains[c].def.family)
        };
        let limit = self.topo.wallets[w].start[a] / HOT_TX_LIMIT_DIV;
        if amount > limit || amount > self.committed[w][a] {
            let cold = self.topo.chains[c].cold;
            if amount > self.committed[cold][a] {
                // More than the exchange holds on this chain: refused.
                return;
            }
            let pending = t + millis(&mut self.rng, REVIEW_MS.0, REVIEW_MS.1);
            let intent_at = self
                .config
                .intents
                .then(|| pending - millis(&mut self.rng, 1_000, 20_000));
            self.send(Send {
                chain: c,
                asset: a,
                from: Party::Wallet(cold),
                to: Party::External(to),
                amount,
                pending,
                label: Label::Normal,
                intent_at,
                change: true,
            });
            return;
        }
        let low = self.topo.wallets[w].start[a] / 10 * LOW_WATER_TENTHS;
        if self.committed[w][a] >= amount.saturating_add(low) {
            self.pay(c, w, a, to, amount, t);
        } else {
            self.waiting[w][a].push_back(Waiting {
                to,
                amount,
                since: t,
            });
            self.waiting_sum[w][a] += amount;
        }
        self.check_levels(w, a, t);
    }

    /// Pays a withdrawal from hot wallet `w` at `t`: on bitcoin it joins
    /// the next batch (announced now, signed with the batch).
    fn pay(&mut self, c: usize, w: usize, a: usize, to: Address, amount: u128, t: i64) {
        if c == BITCOIN {
            self.committed[w][a] -= amount;
            let intent_at = self.config.intents.then_some(t);
            self.queued[c].push(Queued {
                wallet: w,
                asset: a,
                to,
                amount,
                intent_at,
            });
            return;
        }
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
            amount,
            pending: t,
            label: Label::Normal,
            intent_at,
            change: true,
        });
    }

    /// Pays the withdrawals waiting for wallet `w`'s top-up that it can now
    /// pay above its low-water mark, oldest first, just after `now`.
    fn pay_waiting(&mut self, w: usize, a: usize, now: i64) {
        let low = self.topo.wallets[w].start[a] / 10 * LOW_WATER_TENTHS;
        let c = self.topo.wallets[w].def.chain;
        while let Some(front) = self.waiting[w][a].front() {
            if self.committed[w][a] < front.amount.saturating_add(low) {
                break;
            }
            let Some(wt) = self.waiting[w][a].pop_front() else {
                break;
            };
            self.waiting_sum[w][a] -= wt.amount;
            if self.withdrawals_suspended {
                continue;
            }
            // Signed once the top-up is in: its intent (up to 20 s before
            // it) comes after the top-up too.
            let at = now.max(wt.since) + millis(&mut self.rng, 21_000, 40_000);
            self.pay(c, w, a, wt.to, wt.amount, at);
        }
    }

    /// Pays every queued withdrawal of chain `c` from one hot wallet and
    /// asset in one transaction: output k pays the k-th customer, the last
    /// output returns the change.
    fn batch(&mut self, c: usize, t: i64) {
        let queued = std::mem::take(&mut self.queued[c]);
        let Some(first) = queued.first() else {
            return;
        };
        let (w, a) = (first.wallet, first.asset);
        let chain = &self.topo.chains[c];
        let tx_hash = self.ids.tx_hash(chain.def.family);
        let from = self.topo.wallets[w].address.clone();
        let mut total = 0u128;
        for (k, q) in queued.iter().enumerate() {
            // Every queued withdrawal is from the chain's one hot wallet
            // and asset (bitcoin has one of each).
            debug_assert_eq!((q.wallet, q.asset), (w, a));
            // A withdrawal paid out of a top-up landing just before the
            // batch is announced with it.
            if let Some(at) = q.intent_at {
                let at = at.min(t);
                self.intent(at, c, a, &from, &q.to, q.amount, None, Label::Normal);
            }
            let transfer = self.transfer(c, a, &tx_hash, k, &from, &q.to, q.amount);
            if let Some(ti) = self.stages(c, &transfer, t, Label::Normal) {
                self.book(ti, Some(w), None, a, q.amount);
            }
            total += q.amount;
        }
        let unit = chain.def.assets[a].unit();
        let max_q = (self.committed[w][a] / unit).min(total / unit);
        if max_q == 0 {
            return;
        }
        let change = self.rng.gen_range(max_q.div_ceil(20).max(1)..=max_q) * unit;
        self.committed[w][a] -= change;
        let output = self.transfer(c, a, &tx_hash, queued.len(), &from, &from, change);
        if let Some(ti) = self.stages(c, &output, t, Label::Normal) {
            self.book(ti, Some(w), Some(w), a, change);
        }
    }

    /// A burst of deposit-address sweeps into a hot wallet: customers'
    /// deposits gathered within hours. A token sweep needs the native coin
    /// for its fee, so the hot wallet first sends each such deposit
    /// address a little of it (announced like any transaction it signs).
    fn consolidation(&mut self, c: usize, t: i64) {
        let w = self.pick_hot(c);
        let (lo, hi) = CONSOLIDATION_ADDRESSES;
        let n = (f64::from(self.rng.gen_range(lo..=hi)) * self.config.volume.max(0.0)) as u32;
        let span = self
            .rng
            .gen_range(CONSOLIDATION_SECS.0..=CONSOLIDATION_SECS.1)
            * SEC;
        for _ in 0..n {
            let at = t + self.rng.gen_range(0..span);
            self.sweeps.push(Reverse((at, self.seq, c, w)));
            self.seq += 1;
        }
    }

    /// One deposit address of a burst swept into hot wallet `w`, its fee
    /// topped up first where it holds a token; nothing once the exchange
    /// has stopped signing.
    fn sweep_deposit(&mut self, c: usize, w: usize, at: i64) {
        if self.withdrawals_suspended {
            return;
        }
        let def = self.topo.chains[c].def;
        let a = self.pick_asset(c);
        let unit = def.assets[a].unit();
        let usd = self.retail_usd();
        let q = self.quanta(c, a, at, usd);
        if q == 0 {
            return;
        }
        let deposit = self.ids.address(def.family);
        let mut sweep_at = at;
        if def.assets[a].token.is_some() && self.committed[w][0] >= def.gas_topup {
            let intent_at = self
                .config
                .intents
                .then(|| at - millis(&mut self.rng, 1_000, 5_000));
            self.send(Send {
                chain: c,
                asset: 0,
                from: Party::Wallet(w),
                to: Party::External(deposit.clone()),
                amount: def.gas_topup,
                pending: at,
                label: Label::Normal,
                intent_at,
                change: false,
            });
            self.check_levels(w, 0, at);
            sweep_at += millis(&mut self.rng, 30_000, 120_000);
        }
        self.send(Send {
            chain: c,
            asset: a,
            from: Party::External(deposit),
            to: Party::Wallet(w),
            amount: q * unit,
            pending: sweep_at,
            label: Label::Normal,
            intent_at: None,
            change: false,
        });
    }

    fn deposit(&mut self, c: usize, t: i64) {
        let a = self.pick_asset(c);
        let w = self.pick_hot(c);
        let unit = self.topo.chains[c].def.assets[a].unit();
        let (usd, _) = self.withdrawal_usd();
        let q = self.quanta(c, a, t, usd);
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

    /// Refills a hot wallet from cold storage when it falls under its
    /// low-water mark, 60% of its target (counting what is on its way and
    /// the withdrawals waiting for it), and sweeps it back to 100% when it
    /// holds more than 150%. Amounts are whole units.
    fn check_levels(&mut self, w: usize, a: usize, now: i64) {
        let wallet = &self.topo.wallets[w];
        if wallet.def.role != WalletRole::Hot {
            return;
        }
        let c = wallet.def.chain;
        let cold = self.topo.chains[c].cold;
        let start = wallet.start[a];
        let committed = self.committed[w][a].saturating_sub(self.waiting_sum[w][a]);
        let level = committed + self.incoming[w][a];
        let (from, to, amount) = if level < start / 10 * LOW_WATER_TENTHS {
            if self.refills_halted {
                return;
            }
            let want = (start - level) / WHOLE * WHOLE;
            // A sibling hot wallet with that much over its own target
            // gives it instead (hot-to-hot rebalancing): no cold signing.
            let topo = self.topo;
            let sibling = topo.chains[c].hot.iter().copied().find(|&s| {
                s != w && self.committed[s][a] >= topo.wallets[s].start[a].saturating_add(want)
            });
            match sibling {
                Some(s) => (s, w, want),
                None => (cold, w, want.min(self.committed[cold][a] / WHOLE * WHOLE)),
            }
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
                // Withdrawals waiting for a batch are not signed: their
                // amounts are the wallet's again, and swept with the rest.
                for queue in &mut self.queued {
                    for q in queue.drain(..) {
                        self.committed[q.wallet][q.asset] += q.amount;
                    }
                }
                for (w, sums) in self.waiting_sum.iter_mut().enumerate() {
                    for (a, sum) in sums.iter_mut().enumerate() {
                        *sum = 0;
                        self.waiting[w][a].clear();
                    }
                }
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
        let tx_hash = self.ids.tx_hash(family);
        let token = chain.tokens[asset].is_some();
        let index: usize = match family {
            Family::Evm if token => self.rng.gen_range(0..=180),
            Family::Tron if token => self.rng.gen_range(0..=3),
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
            let hash = self
                .rng
                .gen_bool(INTENT_HASH_SHARE)
                .then(|| tx_hash.clone());
            self.intent(at, c, asset, &from, &to, amount, hash, label);
        }
        let transfer = self.transfer(c, asset, &tx_hash, index, &from, &to, amount);
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

    /// Emits a withdrawal intent.
    #[allow(clippy::too_many_arguments)]
    fn intent(
        &mut self,
        at: i64,
        c: usize,
        asset: usize,
        from: &Address,
        to: &Address,
        amount: u128,
        tx_hash: Option<TxHash>,
        label: Label,
    ) {
        let chain = &self.topo.chains[c];
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
            tx_hash,
        };
        self.push(at, EventKind::Intent(intent), Some(label));
    }

    /// A pending transfer of `asset` on chain `c`.
    #[allow(clippy::too_many_arguments)]
    fn transfer(
        &self,
        c: usize,
        asset: usize,
        tx_hash: &TxHash,
        index: usize,
        from: &Address,
        to: &Address,
        amount: u128,
    ) -> Transfer {
        let chain = &self.topo.chains[c];
        Transfer {
            chain: chain.id.clone(),
            tx_hash: tx_hash.clone(),
            index: u32::try_from(index).unwrap_or(u32::MAX),
            stage: Stage::Pending,
            block: None,
            from: from.clone(),
            to: to.clone(),
            asset: chain.assets[asset].clone(),
            token: chain.tokens[asset].clone(),
            amount: Amount::from_base_units(amount),
            decimals: SCENARIO_DECIMALS,
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
