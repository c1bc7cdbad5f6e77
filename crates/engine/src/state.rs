//! What the engine knows about the world: the exchange's wallets, their
//! balances, prices, open withdrawal intents, and every transfer it is
//! still tracking.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::Duration,
};

use drainguard_model::{
    Address, Amount, Asset, BalanceObs, Chain, Intent, Price, Timestamp, Transfer, TransferKey,
    TxHash, Usd, WalletRole,
};

use crate::{config::IntentMatching, window::Seq};

/// Which way a transfer moves money relative to the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// From a hot wallet to an address that is not the exchange's.
    Outflow,
    /// From outside to a wallet of the exchange.
    Inflow,
    /// Between the exchange's own wallets.
    Internal,
    /// Touches no wallet of the exchange.
    Unrelated,
}

/// A reference to one entry of one rule's window, for retraction.
#[derive(Debug, Clone)]
pub(crate) struct WindowRef {
    pub(crate) rule: usize,
    pub(crate) key: WindowKey,
    pub(crate) seq: Seq,
}

/// The key of one window of one rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum WindowKey {
    Wallet(Chain, Address, Option<Asset>),
    Asset(Chain, Asset),
    Chain(Chain, Option<Asset>),
    Global,
    Destination(Address),
}

/// Everything the engine remembers about one transfer.
#[derive(Debug, Clone)]
pub(crate) struct TransferState {
    pub(crate) transfer: Transfer,
    pub(crate) direction: Direction,
    pub(crate) usd: Usd,
    /// Counted in windows right now (not retracted).
    pub(crate) counted: bool,
    /// Its amount is reflected in the tracked balances.
    pub(crate) balance_applied: bool,
    /// The intent it matched, if any.
    pub(crate) intent: Option<String>,
    /// Per-transaction rules have already judged it (never twice).
    pub(crate) judged: bool,
    pub(crate) windows: Vec<WindowRef>,
}

#[derive(Debug, Clone)]
struct OpenIntent {
    id: String,
    t: Timestamp,
    amount: Amount,
    used: bool,
}

type IntentKey = (Chain, Address, Address, Asset);

/// Open withdrawal intents, indexed for matching.
#[derive(Debug, Default)]
pub(crate) struct IntentBook {
    by_fields: HashMap<IntentKey, VecDeque<OpenIntent>>,
    by_hash: HashMap<(Chain, TxHash), (IntentKey, String)>,
    connected: HashSet<(Chain, Address)>,
    pub(crate) open: usize,
}

impl IntentBook {
    pub(crate) fn add(&mut self, t: Timestamp, i: &Intent) {
        let key = (
            i.chain.clone(),
            i.wallet.clone(),
            i.to.clone(),
            i.asset.clone(),
        );
        if let Some(h) = &i.tx_hash {
            self.by_hash
                .insert((i.chain.clone(), h.clone()), (key.clone(), i.id.clone()));
        }
        self.connected.insert((i.chain.clone(), i.wallet.clone()));
        self.by_fields
            .entry(key)
            .or_default()
            .push_back(OpenIntent {
                id: i.id.clone(),
                t,
                amount: i.amount,
                used: false,
            });
        self.open += 1;
    }

    /// Whether intents have been seen for this wallet.
    pub(crate) fn connected(&self, chain: &Chain, wallet: &Address) -> bool {
        self.connected.contains(&(chain.clone(), wallet.clone()))
    }

    /// Finds and consumes the intent an outflow first seen at `now`
    /// matches: by tx hash, else the earliest open intent with the same
    /// fields and an amount within tolerance.
    pub(crate) fn take_match(
        &mut self,
        now: Timestamp,
        tr: &Transfer,
        m: &IntentMatching,
    ) -> Option<String> {
        let live = |i: &OpenIntent| !i.used && i.t <= now && now <= i.t.plus(m.match_window);
        if let Some((key, id)) = self.by_hash.remove(&(tr.chain.clone(), tr.tx_hash.clone()))
            && let Some(q) = self.by_fields.get_mut(&key)
            && let Some(i) = q.iter_mut().find(|i| i.id == id && live(i))
        {
            i.used = true;
            self.open -= 1;
            return Some(id);
        }
        let key = (
            tr.chain.clone(),
            tr.from.clone(),
            tr.to.clone(),
            tr.asset.clone(),
        );
        let q = self.by_fields.get_mut(&key)?;
        while let Some(front) = q.front() {
            if front.used || front.t.plus(m.match_window) < now {
                if !front.used {
                    self.open -= 1;
                }
                q.pop_front();
            } else {
                break;
            }
        }
        let tolerance = |i: &OpenIntent| {
            let diff = if i.amount > tr.amount {
                i.amount.saturating_sub(tr.amount)
            } else {
                tr.amount.saturating_sub(i.amount)
            };
            diff <= i.amount.share_bps(m.tolerance_bps)
        };
        let found = q.iter_mut().find(|i| live(i) && tolerance(i))?;
        found.used = true;
        self.open -= 1;
        let id = found.id.clone();
        if q.is_empty() {
            self.by_fields.remove(&key);
        }
        Some(id)
    }

    /// Drops intents that can no longer match anything.
    pub(crate) fn prune(&mut self, now: Timestamp, m: &IntentMatching) {
        let mut expired = 0usize;
        self.by_fields.retain(|_, q| {
            q.retain(|i| {
                let keep = !i.used && now <= i.t.plus(m.match_window);
                if !keep && !i.used {
                    expired += 1;
                }
                keep
            });
            !q.is_empty()
        });
        self.open -= expired;
        let fields = &self.by_fields;
        self.by_hash
            .retain(|_, (k, id)| fields.get(k).is_some_and(|q| q.iter().any(|i| &i.id == id)));
    }
}

/// A wallet of the exchange.
#[derive(Debug, Clone)]
pub(crate) struct WalletInfo {
    pub(crate) role: WalletRole,
}

/// The payment history of one wallet in one asset.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct History {
    pub(crate) count: u64,
    pub(crate) max: Amount,
}

/// The world as the engine sees it.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) wallets: HashMap<(Chain, Address), WalletInfo>,
    /// Hot wallets per chain, for scope balances.
    pub(crate) hot_by_chain: HashMap<Chain, Vec<Address>>,
    pub(crate) balances: HashMap<(Chain, Address, Asset), (Amount, u8)>,
    pub(crate) prices: HashMap<Asset, Price>,
    pub(crate) intents: IntentBook,
    pub(crate) transfers: HashMap<TransferKey, TransferState>,
    /// Transfers in the order first seen, for pruning.
    pub(crate) transfer_order: VecDeque<(Timestamp, TransferKey)>,
    /// When each destination was first paid by a hot wallet.
    pub(crate) first_paid: HashMap<Address, Timestamp>,
    pub(crate) history: HashMap<(Chain, Address, Asset), History>,
    pub(crate) heads: HashMap<Chain, (u64, Timestamp)>,
}

impl State {
    pub(crate) fn declare_wallet(&mut self, chain: &Chain, address: &Address, role: WalletRole) {
        let prev = self
            .wallets
            .insert((chain.clone(), address.clone()), WalletInfo { role });
        let hot = self.hot_by_chain.entry(chain.clone()).or_default();
        hot.retain(|a| a != address);
        if role == WalletRole::Hot {
            hot.push(address.clone());
        }
        let _ = prev;
    }

    pub(crate) fn set_balance(&mut self, b: &BalanceObs) {
        self.balances.insert(
            (b.chain.clone(), b.wallet.clone(), b.asset.clone()),
            (b.amount, b.decimals),
        );
    }

    pub(crate) fn is_hot(&self, chain: &Chain, a: &Address) -> bool {
        self.wallets
            .get(&(chain.clone(), a.clone()))
            .is_some_and(|w| w.role == WalletRole::Hot)
    }

    pub(crate) fn is_ours(&self, chain: &Chain, a: &Address) -> bool {
        self.wallets.contains_key(&(chain.clone(), a.clone()))
    }

    pub(crate) fn direction(&self, tr: &Transfer) -> Direction {
        let from_ours = self.is_ours(&tr.chain, &tr.from);
        let to_ours = self.is_ours(&tr.chain, &tr.to);
        match (from_ours, to_ours) {
            (true, true) => Direction::Internal,
            (true, false) if self.is_hot(&tr.chain, &tr.from) => Direction::Outflow,
            (false, true) => Direction::Inflow,
            _ => Direction::Unrelated,
        }
    }

    pub(crate) fn price(&self, asset: &Asset) -> Price {
        self.prices.get(asset).copied().unwrap_or_default()
    }

    pub(crate) fn balance(&self, chain: &Chain, wallet: &Address, asset: &Asset) -> Option<Amount> {
        self.balances
            .get(&(chain.clone(), wallet.clone(), asset.clone()))
            .map(|(a, _)| *a)
    }

    /// Moves the tracked balances of the exchange's wallets by a transfer
    /// (`sign` false undoes it). Unknown balances stay unknown.
    pub(crate) fn apply_balance(&mut self, tr: &Transfer, undo: bool) {
        for (addr, outgoing) in [(&tr.from, true), (&tr.to, false)] {
            let key = (tr.chain.clone(), addr.clone(), tr.asset.clone());
            if let Some((bal, _)) = self.balances.get_mut(&key) {
                *bal = if outgoing != undo {
                    bal.saturating_sub(tr.amount)
                } else {
                    bal.saturating_add(tr.amount)
                };
            }
        }
    }

    /// The balance of an asset over the hot wallets of a scope, exact.
    pub(crate) fn scope_balance(&self, key: &WindowKey) -> Option<Amount> {
        match key {
            WindowKey::Wallet(c, w, Some(a)) => self.balance(c, w, a),
            WindowKey::Asset(c, a) | WindowKey::Chain(c, Some(a)) => {
                let hot = self.hot_by_chain.get(c)?;
                let mut total: Option<Amount> = None;
                for w in hot {
                    if let Some(b) = self.balance(c, w, a) {
                        total = Some(total.unwrap_or_default().saturating_add(b));
                    }
                }
                total
            }
            _ => None,
        }
    }

    /// The USD value of the hot wallets' balances in a scope (every asset).
    pub(crate) fn scope_balance_usd(&self, key: &WindowKey) -> Option<Usd> {
        let mut total = Usd::ZERO;
        let mut any = false;
        for ((c, w, a), (amount, decimals)) in &self.balances {
            let inside = match key {
                WindowKey::Wallet(kc, kw, _) => kc == c && kw == w,
                WindowKey::Asset(kc, ka) => kc == c && ka == a,
                WindowKey::Chain(kc, _) => kc == c,
                WindowKey::Global => true,
                WindowKey::Destination(_) => false,
            };
            if inside && self.is_hot(c, w) {
                any = true;
                total = total.saturating_add(Usd::of(*amount, *decimals, self.price(a)));
            }
        }
        any.then_some(total)
    }

    /// Forgets transfers first seen before `cutoff` (long confirmed or
    /// long dropped), so a daemon that runs for months stays bounded.
    pub(crate) fn prune_transfers(&mut self, cutoff: Timestamp) {
        while let Some((t, _)) = self.transfer_order.front() {
            if *t >= cutoff {
                break;
            }
            if let Some((_, key)) = self.transfer_order.pop_front() {
                self.transfers.remove(&key);
            }
        }
    }

    pub(crate) fn retention(windows: Duration) -> Duration {
        windows + Duration::from_secs(6 * 3600)
    }
}
