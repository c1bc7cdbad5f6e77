//! The engine: events in, findings and freezes out.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::Duration,
};

use drainguard_model::{
    Address, Amount, Asset, Chain, Event, EventKind, Evidence, Finding, Freeze, FreezeId, Scope,
    Stage, Timestamp, Transfer, TransferKey, U256, Usd,
};

use crate::{
    config::{Action, IntentsMode, Level, Mode, Rule, RuleKind, RuleSet},
    rules::{DestWindow, RuleState},
    state::{Direction, State, TransferState, WindowKey, WindowRef},
    window::SlidingWindow,
};

/// What the engine concludes from an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A rule fired.
    Finding(Finding),
    /// Withdrawals in a scope must halt. Always follows the finding that
    /// raised it.
    Freeze(Freeze),
}

/// Running counts, for metrics and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Events processed.
    pub events: u64,
    /// Distinct outflows counted.
    pub outflows: u64,
    /// Outflows that matched an intent.
    pub matched: u64,
    /// Transfers taken back out after a retraction.
    pub retracted: u64,
    /// Findings emitted.
    pub findings: u64,
    /// Freezes raised.
    pub freezes: u64,
}

/// The current total of one window, next to what its rule allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowFigure {
    /// The rule id.
    pub rule: String,
    /// The scope the window aggregates.
    pub scope: Scope,
    /// The asset, for per-asset windows.
    pub asset: Option<Asset>,
    /// Sum of the live values: base units for per-asset windows, micro-USD
    /// otherwise, the count for velocity.
    pub sum: u128,
    /// Number of live outflows.
    pub count: u64,
}

/// A finding with the freeze scope its rule asks for.
struct Pending {
    finding: Finding,
    freeze_scope: Option<Scope>,
    evidence_key: String,
}

/// The rules engine. Pure and synchronous: feed it events in time order.
#[derive(Debug)]
pub struct Engine {
    rules: RuleSet,
    rule_state: Vec<RuleState>,
    state: State,
    freezes: Vec<Freeze>,
    now: Timestamp,
    stats: EngineStats,
    longest_window: Duration,
    since_prune: u32,
}

fn amount_u128(a: Amount) -> u128 {
    u128::try_from(a.0).unwrap_or(u128::MAX)
}

fn bps(part: u128, whole: u128) -> u64 {
    if whole == 0 {
        return u64::MAX;
    }
    let scaled = U256::from(part) * U256::from(10_000u32) / U256::from(whole);
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

fn pct(bps: u64) -> String {
    format!("{:.1}%", bps as f64 / 100.0)
}

fn rule_state_for(rule: &Rule) -> RuleState {
    match rule.kind {
        RuleKind::OutflowWindow(_) | RuleKind::Velocity(_) => RuleState::Windows {
            windows: HashMap::new(),
            fired: HashSet::new(),
        },
        RuleKind::NewDestination(_) => RuleState::Destinations {
            windows: HashMap::new(),
            fired: HashSet::new(),
        },
        RuleKind::Correlation(_) => RuleState::Correlation {
            recent: VecDeque::new(),
            fired: false,
        },
        RuleKind::UnmatchedOutflow(_) | RuleKind::Denylist(_) => RuleState::Stateless,
    }
}

fn rule_window(rule: &Rule) -> Duration {
    match &rule.kind {
        RuleKind::OutflowWindow(p) => p.window,
        RuleKind::Velocity(p) => p.window,
        RuleKind::NewDestination(p) => p.window,
        RuleKind::Correlation(p) => p.window,
        RuleKind::UnmatchedOutflow(_) | RuleKind::Denylist(_) => Duration::ZERO,
    }
}

fn window_key(level: Level, tr: &Transfer, per_asset: bool) -> WindowKey {
    let asset = per_asset.then(|| tr.asset.clone());
    match level {
        Level::Wallet => WindowKey::Wallet(tr.chain.clone(), tr.from.clone(), asset),
        Level::Asset => WindowKey::Asset(tr.chain.clone(), tr.asset.clone()),
        Level::Chain => WindowKey::Chain(tr.chain.clone(), asset),
        Level::Global => WindowKey::Global,
    }
}

fn scope_of(level: Level, chain: &Chain, wallet: &Address, asset: &Asset) -> Scope {
    match level {
        Level::Wallet => Scope::Wallet(chain.clone(), wallet.clone()),
        Level::Asset => Scope::Asset(chain.clone(), asset.clone()),
        Level::Chain => Scope::Chain(chain.clone()),
        Level::Global => Scope::Global,
    }
}

fn evidence(ts: &TransferState, stage: Stage) -> Evidence {
    let tr = &ts.transfer;
    Evidence {
        chain: tr.chain.clone(),
        tx_hash: tr.tx_hash.clone(),
        index: tr.index,
        stage: stage.as_str().to_string(),
        from: tr.from.clone(),
        to: tr.to.clone(),
        asset: tr.asset.clone(),
        amount: tr.amount.to_decimal_string(tr.decimals),
        usd: ts.usd.to_f64(),
    }
}

impl Engine {
    /// An engine with a validated rule set and no history.
    pub fn new(rules: RuleSet) -> Self {
        let rule_state = rules.rules.iter().map(rule_state_for).collect();
        let longest_window = rules
            .rules
            .iter()
            .map(rule_window)
            .chain([rules.intents.match_window])
            .max()
            .unwrap_or_default();
        Engine {
            rules,
            rule_state,
            state: State::default(),
            freezes: Vec::new(),
            now: Timestamp(i64::MIN),
            stats: EngineStats::default(),
            longest_window,
            since_prune: 0,
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Running counts.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// The freezes in force (raised here or restored), oldest first.
    pub fn active_freezes(&self) -> &[Freeze] {
        &self.freezes
    }

    /// Reinstates a freeze raised before a restart, so it still covers its
    /// scope. Freezes are never lifted by the engine.
    pub fn restore_freeze(&mut self, freeze: Freeze) {
        if !self.freezes.iter().any(|f| f.id == freeze.id) {
            self.freezes.push(freeze);
        }
    }

    /// Drops a freeze a human lifted through the API.
    pub fn lift_freeze(&mut self, id: &FreezeId) -> bool {
        let before = self.freezes.len();
        self.freezes.retain(|f| &f.id != id);
        before != self.freezes.len()
    }

    /// The totals of every window with something in it, advanced to the
    /// engine's current time.
    pub fn window_figures(&mut self) -> Vec<WindowFigure> {
        let now = self.now;
        let mut out = Vec::new();
        for (rule, rs) in self.rules.rules.iter().zip(self.rule_state.iter_mut()) {
            let RuleState::Windows { windows, .. } = rs else {
                continue;
            };
            for (key, w) in windows.iter_mut() {
                w.advance(now);
                let (scope, asset) = match key {
                    WindowKey::Wallet(c, a, asset) => {
                        (Scope::Wallet(c.clone(), a.clone()), asset.clone())
                    }
                    WindowKey::Asset(c, a) => (Scope::Asset(c.clone(), a.clone()), Some(a.clone())),
                    WindowKey::Chain(c, asset) => (Scope::Chain(c.clone()), asset.clone()),
                    WindowKey::Global => (Scope::Global, None),
                    WindowKey::Destination(_) => continue,
                };
                out.push(WindowFigure {
                    rule: rule.id.clone(),
                    scope,
                    asset,
                    sum: w.sum(),
                    count: w.count(),
                });
            }
        }
        out.sort_by(|a, b| (&a.rule, &a.scope, &a.asset).cmp(&(&b.rule, &b.scope, &b.asset)));
        out
    }

    /// Open intents not yet matched.
    pub fn open_intents(&self) -> usize {
        self.state.intents.open
    }

    /// Processes one event and appends what it concludes to `out`.
    pub fn process(&mut self, event: &Event, out: &mut Vec<Output>) {
        if event.t > self.now {
            self.now = event.t;
        }
        self.stats.events += 1;
        let mut found: Vec<Pending> = Vec::new();
        match &event.kind {
            EventKind::Wallet(w) => {
                self.state.declare_wallet(&w.chain, &w.address, w.role);
                for b in &w.balances {
                    self.state.set_balance(b);
                }
            }
            EventKind::Balance(b) => self.state.set_balance(b),
            EventKind::Price(p) => {
                self.state.prices.insert(p.asset.clone(), p.usd);
            }
            EventKind::Intent(i) => self.state.intents.add(event.t, i),
            EventKind::Transfer(tr) => self.on_transfer(event.t, tr, &mut found),
            EventKind::Approval(a) => self.on_approval(event.t, a, &mut found),
            EventKind::Admin(_) => {}
            EventKind::Head(h) => {
                self.state.heads.insert(h.chain.clone(), (h.block, event.t));
            }
        }
        if !found.is_empty() {
            self.correlate(event.t, &mut found);
            self.emit(found, out);
        }
        self.since_prune += 1;
        if self.since_prune >= 4096 {
            self.prune();
        }
    }

    fn prune(&mut self) {
        self.since_prune = 0;
        let cutoff = self.now.minus(State::retention(self.longest_window));
        self.state.prune_transfers(cutoff);
        self.state.intents.prune(self.now, &self.rules.intents);
        let now = self.now;
        for (rule, rs) in self.rules.rules.iter().zip(self.rule_state.iter_mut()) {
            let len = rule_window(rule);
            match rs {
                RuleState::Windows { windows, fired } => {
                    windows.retain(|k, w| {
                        w.advance(now);
                        !w.is_empty() || fired.contains(k)
                    });
                }
                RuleState::Destinations { windows, .. } => {
                    windows.retain(|_, w| w.last_t().is_some_and(|t| t > now.minus(len)));
                }
                RuleState::Correlation { .. } | RuleState::Stateless => {}
            }
        }
    }

    fn on_transfer(&mut self, t: Timestamp, tr: &Transfer, found: &mut Vec<Pending>) {
        let key = tr.key();
        if !self.state.transfers.contains_key(&key) {
            if tr.stage == Stage::Retracted {
                // Retraction of something never seen: nothing to take back.
                return;
            }
            let direction = self.state.direction(tr);
            let usd = Usd::of(tr.amount, tr.decimals, self.state.price(&tr.asset));
            self.state.transfer_order.push_back((t, key.clone()));
            self.state.transfers.insert(
                key.clone(),
                TransferState {
                    transfer: tr.clone(),
                    direction,
                    usd,
                    counted: false,
                    balance_applied: false,
                    intent: None,
                    judged: false,
                    windows: Vec::new(),
                },
            );
        }
        match tr.stage {
            Stage::Pending | Stage::Included | Stage::Confirmed => {
                let (counted, direction, applied) = match self.state.transfers.get(&key) {
                    Some(s) => (s.counted, s.direction, s.balance_applied),
                    None => return,
                };
                if !counted {
                    if direction == Direction::Outflow {
                        self.count_outflow(t, &key, tr.stage, found);
                    }
                    if let Some(s) = self.state.transfers.get_mut(&key) {
                        s.counted = true;
                    }
                }
                if tr.stage != Stage::Pending && !applied {
                    self.set_applied(&key, true);
                }
            }
            Stage::Retracted => self.retract(t, &key),
        }
    }

    /// Moves balances for a transfer now in a block (or undoes that) and
    /// tells its windows, so shares are measured against the balance at the
    /// window's start.
    fn set_applied(&mut self, key: &TransferKey, applied: bool) {
        let Some(s) = self.state.transfers.get_mut(key) else {
            return;
        };
        if s.balance_applied == applied {
            return;
        }
        s.balance_applied = applied;
        let tr = s.transfer.clone();
        let refs = s.windows.clone();
        self.state.apply_balance(&tr, !applied);
        for r in refs {
            if let Some(RuleState::Windows { windows, .. }) = self.rule_state.get_mut(r.rule)
                && let Some(w) = windows.get_mut(&r.key)
            {
                w.set_applied(r.seq, applied);
            }
        }
    }

    fn retract(&mut self, t: Timestamp, key: &TransferKey) {
        self.set_applied(key, false);
        let Some(s) = self.state.transfers.get_mut(key) else {
            return;
        };
        if !s.counted {
            return;
        }
        s.counted = false;
        let refs = std::mem::take(&mut s.windows);
        if s.direction == Direction::Outflow {
            self.stats.retracted += 1;
        }
        for r in refs {
            match self.rule_state.get_mut(r.rule) {
                Some(rs @ RuleState::Windows { .. }) => {
                    if let RuleState::Windows { windows, .. } = rs
                        && let Some(w) = windows.get_mut(&r.key)
                    {
                        w.remove(r.seq);
                    }
                    // Re-arm: the next crossing is a new incident.
                    let Some(rule) = self.rules.rules.get(r.rule) else {
                        continue;
                    };
                    if !window_exceeded(rs, &self.state, rule, &r.key, t).0
                        && let RuleState::Windows { fired, .. } = rs
                    {
                        fired.remove(&r.key);
                    }
                }
                Some(RuleState::Destinations { windows, .. }) => {
                    if let WindowKey::Destination(d) = &r.key
                        && let Some(w) = windows.get_mut(d)
                    {
                        w.remove(r.seq);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Whether a window of a rule is over its limit now, with the figures and
/// a one-line summary.
fn window_exceeded(
    rs: &mut RuleState,
    state: &State,
    rule: &Rule,
    key: &WindowKey,
    now: Timestamp,
) -> (bool, Vec<(String, String)>, String) {
    let RuleState::Windows { windows, .. } = rs else {
        return (false, Vec::new(), String::new());
    };
    let Some(w) = windows.get_mut(key) else {
        return (false, Vec::new(), String::new());
    };
    w.advance(now);
    let (sum, applied, count) = (w.sum(), w.sum_applied(), w.count());
    let window = humantime::format_duration(w.length()).to_string();
    match &rule.kind {
        RuleKind::Velocity(p) => {
            let hit = count > p.max_count;
            let figures = vec![
                ("outflows".to_string(), count.to_string()),
                ("max_count".to_string(), p.max_count.to_string()),
                ("window".to_string(), window.clone()),
            ];
            (
                hit,
                figures,
                format!("{count} outflows in {window} (limit {})", p.max_count),
            )
        }
        RuleKind::OutflowWindow(p) => {
            let mut figures = vec![("window".to_string(), window.clone())];
            let mut reasons = Vec::new();
            let mut hit = false;
            if p.per_asset {
                let asset = match key {
                    WindowKey::Wallet(_, _, Some(a))
                    | WindowKey::Chain(_, Some(a))
                    | WindowKey::Asset(_, a) => Some(a.clone()),
                    _ => None,
                };
                figures.push(("outflow_base_units".to_string(), sum.to_string()));
                if let (Some(limit), Some(bal)) = (p.max_share_bps, state.scope_balance(key)) {
                    let start = amount_u128(bal).saturating_add(applied);
                    let share = bps(sum, start);
                    figures.push((
                        "balance_at_window_start_base_units".to_string(),
                        start.to_string(),
                    ));
                    figures.push(("share".to_string(), pct(share)));
                    figures.push(("max_share".to_string(), pct(u64::from(limit))));
                    if share > u64::from(limit) {
                        hit = true;
                        let a = asset.map(|a| a.to_string()).unwrap_or_default();
                        reasons.push(format!(
                            "{} of the {a} balance left in {window} (limit {})",
                            pct(share),
                            pct(u64::from(limit))
                        ));
                    }
                }
            } else {
                figures.push((
                    "outflow_usd".to_string(),
                    format!("{:.2}", Usd(sum).to_f64()),
                ));
                if let Some(max) = p.max_usd {
                    figures.push(("max_usd".to_string(), format!("{:.2}", Usd(max).to_f64())));
                    if sum > max {
                        hit = true;
                        reasons.push(format!(
                            "{} left in {window} (limit {})",
                            Usd(sum),
                            Usd(max)
                        ));
                    }
                }
                if let (Some(limit), Some(bal)) = (p.max_share_bps, state.scope_balance_usd(key)) {
                    let start = bal.0.saturating_add(applied);
                    let share = bps(sum, start);
                    figures.push(("share".to_string(), pct(share)));
                    figures.push(("max_share".to_string(), pct(u64::from(limit))));
                    if share > u64::from(limit) {
                        hit = true;
                        reasons.push(format!(
                            "{} of the balance ({}) left in {window} (limit {})",
                            pct(share),
                            Usd(sum),
                            pct(u64::from(limit))
                        ));
                    }
                }
            }
            (hit, figures, reasons.join("; "))
        }
        _ => (false, Vec::new(), String::new()),
    }
}

impl Engine {
    #[allow(
        clippy::too_many_arguments,
        reason = "a finding is made of exactly these parts"
    )]
    fn make_finding(
        &self,
        t: Timestamp,
        rule: &Rule,
        scope: Scope,
        ts: &TransferState,
        stage: Stage,
        summary: String,
        figures: Vec<(String, String)>,
    ) -> Pending {
        let tr = &ts.transfer;
        let freeze_scope = (rule.action == Action::Freeze && rule.mode == Mode::Enforce)
            .then(|| scope_of(rule.freeze_scope, &tr.chain, &tr.from, &tr.asset));
        Pending {
            finding: Finding {
                t,
                rule: rule.id.clone(),
                kind: rule.kind.name().to_string(),
                severity: rule.severity,
                scope,
                chain: Some(tr.chain.clone()),
                wallet: Some(tr.from.clone()),
                summary,
                shadow: rule.mode == Mode::Shadow,
                wants_freeze: rule.action == Action::Freeze,
                figures,
                evidence: vec![evidence(ts, stage)],
            },
            freeze_scope,
            evidence_key: format!("{}:{}:{}", tr.chain, tr.tx_hash, tr.index),
        }
    }

    /// Counts a newly seen (or re-included) outflow in every rule and judges
    /// it once.
    fn count_outflow(
        &mut self,
        t: Timestamp,
        key: &TransferKey,
        stage: Stage,
        found: &mut Vec<Pending>,
    ) {
        let Some(ts) = self.state.transfers.get(key) else {
            return;
        };
        let ts = ts.clone();
        let tr = &ts.transfer;
        let first_time = !ts.judged;
        self.stats.outflows += u64::from(first_time);
        let matched = if first_time {
            let m = self.state.intents.take_match(t, tr, &self.rules.intents);
            self.stats.matched += u64::from(m.is_some());
            m
        } else {
            ts.intent.clone()
        };
        let balance_before = self.state.balance(&tr.chain, &tr.from, &tr.asset);
        let share_bps = balance_before
            .and_then(|b| tr.amount.bps_of(b))
            .unwrap_or(0);
        let fresh_since = self.state.first_paid.get(&tr.to).copied();
        let history = self
            .state
            .history
            .get(&(tr.chain.clone(), tr.from.clone(), tr.asset.clone()))
            .copied()
            .unwrap_or_default();
        let mut refs: Vec<WindowRef> = Vec::new();
        let rules = std::mem::take(&mut self.rules.rules);
        for (idx, rule) in rules.iter().enumerate() {
            if !rule.applies_to(&tr.chain) {
                continue;
            }
            let scope = scope_of(rule.scope, &tr.chain, &tr.from, &tr.asset);
            match &rule.kind {
                RuleKind::UnmatchedOutflow(p) => {
                    let applies = p.intents == IntentsMode::Always
                        || self.state.intents.connected(&tr.chain, &tr.from);
                    if first_time && matched.is_none() && applies {
                        let summary = format!(
                            "{} {} ({}) left {} to {} with no matching withdrawal intent",
                            tr.amount.to_decimal_string(tr.decimals),
                            tr.asset,
                            ts.usd,
                            tr.from,
                            tr.to
                        );
                        let figures = vec![
                            ("usd".to_string(), format!("{:.2}", ts.usd.to_f64())),
                            ("stage".to_string(), stage.as_str().to_string()),
                        ];
                        found.push(self.make_finding(t, rule, scope, &ts, stage, summary, figures));
                    }
                }
                RuleKind::Denylist(p) => {
                    if first_time && p.addresses.contains(&tr.to) {
                        let summary = format!(
                            "{} {} ({}) sent to denylisted {}",
                            tr.amount.to_decimal_string(tr.decimals),
                            tr.asset,
                            ts.usd,
                            tr.to
                        );
                        found.push(self.make_finding(
                            t,
                            rule,
                            scope,
                            &ts,
                            stage,
                            summary,
                            vec![("destination".to_string(), tr.to.to_string())],
                        ));
                    }
                }
                RuleKind::OutflowWindow(_) | RuleKind::Velocity(_) => {
                    let (per_asset, value) = match &rule.kind {
                        RuleKind::OutflowWindow(p) if p.per_asset => (true, amount_u128(tr.amount)),
                        RuleKind::OutflowWindow(_) => (false, ts.usd.0),
                        _ => (false, 1),
                    };
                    let wkey = window_key(rule.scope, tr, per_asset);
                    let len = rule_window(rule);
                    let seq = match self.rule_state.get_mut(idx) {
                        Some(RuleState::Windows { windows, .. }) => windows
                            .entry(wkey.clone())
                            .or_insert_with(|| SlidingWindow::new(len))
                            .push(t, value),
                        _ => continue,
                    };
                    refs.push(WindowRef {
                        rule: idx,
                        key: wkey.clone(),
                        seq,
                    });
                    let Some(rs) = self.rule_state.get_mut(idx) else {
                        continue;
                    };
                    let (hit, figures, summary) = window_exceeded(rs, &self.state, rule, &wkey, t);
                    if let Some(RuleState::Windows { fired, .. }) = self.rule_state.get_mut(idx) {
                        if !hit {
                            fired.remove(&wkey);
                        } else if fired.insert(wkey) {
                            found.push(
                                self.make_finding(t, rule, scope, &ts, stage, summary, figures),
                            );
                        }
                    }
                }
                RuleKind::NewDestination(p) => {
                    let fresh = fresh_since.is_none_or(|t0| t.minus(p.fresh_for) < t0);
                    if first_time
                        && fresh
                        && let Some(large) = p.large_share_bps
                    {
                        let multiple_ok = history.count < p.history_min || {
                            let scaled = (p.large_multiple * 1000.0).round() as u128;
                            U256::from(amount_u128(tr.amount)) * U256::from(1000u32)
                                >= U256::from(amount_u128(history.max)) * U256::from(scaled)
                        };
                        if share_bps >= large && multiple_ok {
                            let summary = format!(
                                "{} {} ({}, {} of the wallet's balance) sent to {}, an address never paid before",
                                tr.amount.to_decimal_string(tr.decimals),
                                tr.asset,
                                ts.usd,
                                pct(u64::from(share_bps)),
                                tr.to
                            );
                            let figures = vec![
                                ("share".to_string(), pct(u64::from(share_bps))),
                                ("large_share".to_string(), pct(u64::from(large))),
                                (
                                    "largest_earlier".to_string(),
                                    history.max.to_decimal_string(tr.decimals),
                                ),
                                ("earlier_outflows".to_string(), history.count.to_string()),
                            ];
                            found.push(self.make_finding(
                                t,
                                rule,
                                scope.clone(),
                                &ts,
                                stage,
                                summary,
                                figures,
                            ));
                        }
                    }
                    if p.min_sources.is_some() || p.repeat_count.is_some() {
                        let Some(RuleState::Destinations { windows, fired }) =
                            self.rule_state.get_mut(idx)
                        else {
                            continue;
                        };
                        let dw = windows
                            .entry(tr.to.clone())
                            .or_insert_with(DestWindow::default);
                        let seq =
                            dw.push(t, (tr.chain.clone(), tr.from.clone()), share_bps, p.window);
                        refs.push(WindowRef {
                            rule: idx,
                            key: WindowKey::Destination(tr.to.clone()),
                            seq,
                        });
                        let s = dw.summary(t, p.window);
                        let converging = fresh
                            && s.total_share_bps >= u64::from(p.min_total_share_bps)
                            && (p.min_sources.is_some_and(|m| s.sources >= m)
                                || p.repeat_count.is_some_and(|r| s.payments >= r));
                        if !converging {
                            fired.remove(&tr.to);
                        } else if fired.insert(tr.to.clone()) {
                            let window = humantime::format_duration(p.window);
                            let summary = format!(
                                "{} received {} payments from {} hot wallet(s) in {window}, {} of their balances, within {} of first being paid",
                                tr.to,
                                s.payments,
                                s.sources,
                                pct(s.total_share_bps),
                                humantime::format_duration(p.fresh_for)
                            );
                            let figures = vec![
                                ("payments".to_string(), s.payments.to_string()),
                                ("sources".to_string(), s.sources.to_string()),
                                ("total_share".to_string(), pct(s.total_share_bps)),
                            ];
                            found.push(
                                self.make_finding(t, rule, scope, &ts, stage, summary, figures),
                            );
                        }
                    }
                }
                RuleKind::Correlation(_) => {}
            }
        }
        self.rules.rules = rules;
        if first_time {
            self.state.first_paid.entry(tr.to.clone()).or_insert(t);
            let h = self
                .state
                .history
                .entry((tr.chain.clone(), tr.from.clone(), tr.asset.clone()))
                .or_default();
            h.count += 1;
            if tr.amount > h.max {
                h.max = tr.amount;
            }
        }
        if let Some(s) = self.state.transfers.get_mut(key) {
            s.judged = true;
            s.intent = matched;
            s.windows = refs;
        }
    }

    fn on_approval(
        &mut self,
        t: Timestamp,
        a: &drainguard_model::Approval,
        found: &mut Vec<Pending>,
    ) {
        if !self.state.is_hot(&a.chain, &a.owner) {
            return;
        }
        for rule in &self.rules.rules {
            if let RuleKind::Denylist(p) = &rule.kind
                && rule.applies_to(&a.chain)
                && p.addresses.contains(&a.spender)
            {
                let ts = TransferState {
                    transfer: Transfer {
                        chain: a.chain.clone(),
                        tx_hash: a.tx_hash.clone(),
                        index: 0,
                        stage: Stage::Pending,
                        block: None,
                        from: a.owner.clone(),
                        to: a.spender.clone(),
                        asset: a.asset.clone(),
                        token: None,
                        amount: a.amount,
                        decimals: 0,
                    },
                    direction: Direction::Outflow,
                    usd: Usd::ZERO,
                    counted: false,
                    balance_applied: false,
                    intent: None,
                    judged: true,
                    windows: Vec::new(),
                };
                let scope = scope_of(rule.scope, &a.chain, &a.owner, &a.asset);
                let summary = format!(
                    "{} approved denylisted spender {} for {}",
                    a.owner, a.spender, a.asset
                );
                found.push(self.make_finding(
                    t,
                    rule,
                    scope,
                    &ts,
                    Stage::Pending,
                    summary,
                    vec![("spender".to_string(), a.spender.to_string())],
                ));
            }
        }
    }

    /// Feeds this event's findings to the correlation rules, which may add
    /// a global finding of their own.
    fn correlate(&mut self, t: Timestamp, found: &mut Vec<Pending>) {
        for (idx, rule) in self.rules.rules.iter().enumerate() {
            let RuleKind::Correlation(p) = &rule.kind else {
                continue;
            };
            let Some(RuleState::Correlation { recent, fired }) = self.rule_state.get_mut(idx)
            else {
                continue;
            };
            for f in found.iter().map(|p| &p.finding) {
                if !f.shadow && f.severity >= p.min_severity && f.kind != "correlation" {
                    let wallet = f.chain.clone().zip(f.wallet.clone());
                    recent.push_back((f.t, f.chain.clone(), wallet));
                }
            }
            let cutoff = t.minus(p.window);
            while recent.front().is_some_and(|(ft, ..)| *ft <= cutoff) {
                recent.pop_front();
            }
            let mut chains: Vec<&Chain> = Vec::new();
            let mut wallets: Vec<&(Chain, Address)> = Vec::new();
            for (_, c, w) in recent.iter() {
                if let Some(c) = c
                    && !chains.contains(&c)
                {
                    chains.push(c);
                }
                if let Some(w) = w
                    && !wallets.contains(&w)
                {
                    wallets.push(w);
                }
            }
            let hit =
                chains.len() >= p.min_chains as usize || wallets.len() >= p.min_wallets as usize;
            if !hit {
                *fired = false;
                continue;
            }
            if *fired {
                continue;
            }
            *fired = true;
            let mut chain_names: Vec<String> = chains.iter().map(|c| c.to_string()).collect();
            chain_names.sort();
            let summary = format!(
                "critical findings on {} chain(s) ({}) and {} wallet(s) within {}: escalating to a global freeze",
                chains.len(),
                chain_names.join(", "),
                wallets.len(),
                humantime::format_duration(p.window)
            );
            let evidence: Vec<Evidence> = found
                .iter()
                .flat_map(|p| p.finding.evidence.clone())
                .collect();
            let evidence_key = found
                .first()
                .map(|p| p.evidence_key.clone())
                .unwrap_or_default();
            let freeze_scope = (rule.action == Action::Freeze && rule.mode == Mode::Enforce)
                .then_some(Scope::Global);
            found.push(Pending {
                finding: Finding {
                    t,
                    rule: rule.id.clone(),
                    kind: rule.kind.name().to_string(),
                    severity: rule.severity,
                    scope: Scope::Global,
                    chain: None,
                    wallet: None,
                    summary,
                    shadow: rule.mode == Mode::Shadow,
                    wants_freeze: rule.action == Action::Freeze,
                    figures: vec![
                        ("chains".to_string(), chains.len().to_string()),
                        ("wallets".to_string(), wallets.len().to_string()),
                        ("min_chains".to_string(), p.min_chains.to_string()),
                        ("min_wallets".to_string(), p.min_wallets.to_string()),
                    ],
                    evidence,
                },
                freeze_scope,
                evidence_key,
            });
        }
    }

    /// Emits findings and the freezes they call for; a scope already
    /// covered by an active freeze is not frozen twice.
    fn emit(&mut self, found: Vec<Pending>, out: &mut Vec<Output>) {
        for p in found {
            self.stats.findings += 1;
            let freeze = p.freeze_scope.and_then(|scope| {
                if self.freezes.iter().any(|f| f.scope.covers(&scope)) {
                    return None;
                }
                let id = FreezeId::derive(&[&p.finding.rule, &scope.to_string(), &p.evidence_key]);
                Some(Freeze {
                    id,
                    t: p.finding.t,
                    scope,
                    reason: format!("{}: {}", p.finding.rule, p.finding.summary),
                    rule: p.finding.rule.clone(),
                    severity: p.finding.severity,
                    findings: vec![p.finding.clone()],
                })
            });
            out.push(Output::Finding(p.finding));
            if let Some(f) = freeze {
                self.stats.freezes += 1;
                self.freezes.push(f.clone());
                out.push(Output::Freeze(f));
            }
        }
    }
}
