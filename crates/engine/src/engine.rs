//! The engine: events in, findings and freezes out.
//!
//! Hot path: every key is an interned integer, windows with the same shape
//! are shared by the rules that read them, and a transfer's state shrinks
//! to a fingerprint once it is confirmed.

use std::{collections::VecDeque, time::Duration};

use drainguard_model::{
    Address, Amount, Asset, Chain, Event, EventKind, Evidence, Finding, Freeze, FreezeId, Intent,
    Scope, Stage, Timestamp, Transfer, TxHash, U256, Usd,
};
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

use crate::{
    config::{Action, BlindParams, IntentsMode, Level, Mode, Rule, RuleKind, RuleSet},
    rules::{DestWindow, RuleState},
    state::{
        Direction, HeadTrack, IntentKey, Refs, State, TransferState, WalletIdx, WindowKey,
        WindowRef, paid_at,
    },
    window::{Seq, SlidingWindow},
    windows::WindowStore,
};

/// What the engine concludes from an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A rule fired.
    Finding(Finding),
    /// Withdrawals in a scope must halt. Always follows the finding that
    /// raised it.
    Freeze(Freeze),
    /// A condition that fired has cleared: a blind chain moves again. It
    /// lifts nothing (freezes are only ever lifted by a human); it lets
    /// the pager resolve the incident.
    Recovered(Recovery),
}

/// A cleared condition (see [`Output::Recovered`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Recovery {
    /// When it cleared.
    pub t: Timestamp,
    /// The kind of rule whose condition cleared (`blind`).
    pub kind: String,
    /// The chain.
    pub chain: Chain,
    /// One line for a human.
    pub summary: String,
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

/// Learned baseline state, as saved in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LearnedState {
    /// One entry per baseline rule and scope.
    pub entries: Vec<LearnedEntry>,
}

/// What one baseline rule learned about one scope.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LearnedEntry {
    /// The rule id.
    pub rule: String,
    /// The scope (`asset:…`, `chain:…` or `global`).
    pub scope: String,
    /// Its samples.
    pub learned: crate::baseline::Learned,
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
    /// What the rule allows in the same unit as `sum` (the tightest of its
    /// limits), once the scope's balance is known.
    pub limit: Option<u128>,
    /// `sum` in micro-dollars, for display (none for velocity).
    pub sum_usd: Option<Usd>,
    /// `limit` in micro-dollars, for display.
    pub limit_usd: Option<Usd>,
}

/// What a window sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    /// Exact base units of one asset.
    Units,
    /// Micro-dollars.
    Usd,
    /// One per outflow.
    Count,
}

/// The shape of a window; rules with the same shape share its windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spec {
    level: Level,
    per_asset: bool,
    length: Duration,
    value: Value,
}

#[derive(Debug)]
struct SpecState {
    spec: Spec,
    windows: WindowStore,
    /// Whether a rule measures these windows against a balance, which
    /// needs the part of each window already in a block (its applied
    /// sum). Other windows are not told when a transfer is included: a
    /// lookup saved per window on every transfer in a block.
    applied: bool,
}

/// The rule id of pre-signing holds in findings and freezes.
pub(crate) const PRESIGN_RULE: &str = "pre-signing";

/// Marks a [`WindowRef`] slot as a destination window of rule `slot & !DEST`.
const DEST: u16 = 0x8000;

/// What a finding is about, with the strings it reports.
struct Subject {
    chain: Chain,
    wallet: Address,
    asset: Asset,
    evidence: Evidence,
    key: String,
}

impl Subject {
    fn of_transfer(tr: &Transfer, usd: Usd) -> Subject {
        Subject {
            chain: tr.chain.clone(),
            wallet: tr.from.clone(),
            asset: tr.asset.clone(),
            evidence: Evidence {
                chain: tr.chain.clone(),
                tx_hash: tr.tx_hash.clone(),
                index: tr.index,
                stage: tr.stage.as_str().to_string(),
                from: tr.from.clone(),
                to: tr.to.clone(),
                asset: tr.asset.clone(),
                amount: tr.amount.to_decimal_string(tr.decimals),
                usd: usd.to_f64(),
            },
            key: format!("{}:{}:{}", tr.chain, tr.tx_hash, tr.index),
        }
    }
}

/// A finding with the freeze scope its rule asks for.
struct Pending {
    finding: Finding,
    freeze_scope: Option<Scope>,
    evidence_key: String,
}

impl Pending {
    /// The finding of a single-transaction rule about an outflow a
    /// withdrawal intent announced: the withdrawal system asked for it, so
    /// its risk was the pre-signing verdict's to judge. It alerts; it
    /// neither freezes nor counts towards a correlation.
    fn authorised(mut self, intent_matched: bool) -> Pending {
        if intent_matched {
            if self.finding.wants_freeze {
                self.finding
                    .summary
                    .push_str(" (authorised by a withdrawal intent: alert only)");
                self.finding
                    .figures
                    .push(("authorised".to_string(), "intent".to_string()));
            }
            self.freeze_scope = None;
            self.finding.wants_freeze = false;
        }
        self
    }
}

/// The rules engine. Pure and synchronous: feed it events in time order.
#[derive(Debug)]
pub struct Engine {
    rules: RuleSet,
    rule_state: Vec<RuleState>,
    specs: Vec<SpecState>,
    state: State,
    freezes: Vec<Freeze>,
    now: Timestamp,
    stats: EngineStats,
    longest_window: Duration,
    since_prune: u32,
    last_prune: Timestamp,
    has_floors: bool,
    has_blind: bool,
    /// By chain, what the blind rules know of it.
    watch: Vec<ChainWatch>,
    /// When the blind check may next run (about once a second of event
    /// time): one comparison per event.
    next_blind_check: i64,
    /// The earliest `due` of any chain: the check runs about once a
    /// second and nearly always finds nothing, so it is skipped until then.
    blind_next: i64,
    /// The indices of the blind rules.
    blind_rules: Vec<usize>,
    /// Which rules each kind of event can concern.
    index: RuleIndex,
    /// Block times the sources know from their configuration: used by the
    /// blind rules before a learned one (a catch-up after a restart sends
    /// heads milliseconds apart, which would teach a wrong block time).
    known_block_times: Vec<(Chain, std::time::Duration)>,
    /// Entries ever pushed into any window. A new window numbers its
    /// entries from here, so a transfer's reference into a window that
    /// emptied and was dropped can never name an entry of a later window
    /// for the same key.
    pushes: Seq,
}

/// What the blind rules know of one chain, in one place: a head reads
/// and writes only this.
#[derive(Debug, Clone)]
struct ChainWatch {
    /// Whether it is blind now and why (one finding per outage).
    blind: Blind,
    /// Since when every endpoint of its source has failed and on which
    /// call, as the source last said.
    outage: Option<(Timestamp, String)>,
    /// No blind check can fire here before this time (`i64::MIN`: any
    /// time). It may be early: a head that can only move it later leaves
    /// it, and the check, finding nothing, works it out again.
    due: i64,
    /// Each blind rule watching it, worked out once per chain, rule set
    /// and known block time (`None`: not yet).
    plan: Option<SmallVec<[BlindTerm; 1]>>,
}

impl Default for ChainWatch {
    fn default() -> Self {
        ChainWatch {
            blind: Blind::Seen,
            outage: None,
            due: i64::MAX,
            plan: None,
        }
    }
}

impl ChainWatch {
    /// The first time at which [`Engine::check_blind_now`] could find
    /// this chain blind. It fires once `(now − last head) as f64 > k ×
    /// expected`, which cannot hold while `now − last head ≤ ⌊k ×
    /// expected⌋`: an integer at most a representable one stays at most
    /// it as an `f64`.
    fn due(&self, track: Option<&HeadTrack>) -> i64 {
        let Some(plan) = &self.plan else {
            return i64::MAX;
        };
        if plan.is_empty() || self.blind != Blind::Seen {
            return i64::MAX;
        }
        let mut due = i64::MAX;
        if let Some((since, _)) = &self.outage {
            for term in plan {
                due = due.min(since.0.saturating_add(term.down_for));
            }
        }
        let Some(track) = track.filter(|t| t.last_t.0 != 0) else {
            return due;
        };
        for term in plan {
            let Some(expected) = term.expected(track) else {
                continue;
            };
            if expected <= 0.0 {
                continue;
            }
            // Non-negative, so truncation is the floor.
            let limit = term.k * expected;
            let at = if (0.0..1e18).contains(&limit) {
                track.last_t.0.checked_add(limit as i64 + 1)
            } else {
                None
            };
            due = due.min(at.unwrap_or(i64::MIN));
        }
        due
    }
}

/// One blind rule as it applies to one chain.
#[derive(Debug, Clone, Copy)]
struct BlindTerm {
    k: f64,
    /// The configured block time in nanoseconds, if any (else learned).
    configured: Option<f64>,
    warmup_heads: u32,
    /// `endpoints_down_for` in nanoseconds.
    down_for: i64,
}

impl BlindTerm {
    /// A blind rule's terms for `chain`: its expected block time is the
    /// rule's own for the chain, else the one its source is configured
    /// with (`known`), else learned from the heads.
    fn of(p: &BlindParams, known: &[(Chain, std::time::Duration)], chain: &Chain) -> BlindTerm {
        let configured = p
            .block_times
            .iter()
            .chain(known)
            .find(|(ch, _)| ch == chain)
            .map(|(_, d)| d.as_nanos() as f64);
        BlindTerm {
            k: p.k,
            configured,
            warmup_heads: p.warmup_heads,
            down_for: i64::try_from(p.endpoints_down_for.as_nanos()).unwrap_or(i64::MAX),
        }
    }

    /// The expected block time in nanoseconds: configured, else the median
    /// of the last heads once `warmup_heads` are known.
    fn expected(&self, track: &HeadTrack) -> Option<f64> {
        match self.configured {
            Some(ns) => Some(ns),
            None if track.interval_count() >= self.warmup_heads as usize => {
                Some(track.median_interval() as f64)
            }
            None => None,
        }
    }
}

/// What the pre-signing checks found about one intent.
struct PresignCheck {
    /// Reasons to hold it.
    reasons: Vec<String>,
    /// The freeze already covering its wallet, if any.
    frozen: Option<String>,
    /// Why it is unusual though allowed (the learned limit), if it is.
    unusual: Option<String>,
}

/// The pre-signing verdict on one withdrawal intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Sign it.
    Allow,
    /// Do not sign it; the reasons say why. A hold is also a freeze of
    /// scope `intent:<id>`.
    Hold {
        /// Every reason that applied.
        reasons: Vec<String>,
    },
}

fn units(a: Amount) -> u128 {
    u128::try_from(a.0).unwrap_or(u128::MAX)
}

fn bps(part: u128, whole: u128) -> u64 {
    if whole == 0 {
        return u64::MAX;
    }
    if let Some(p) = part.checked_mul(10_000) {
        return u64::try_from(p / whole).unwrap_or(u64::MAX);
    }
    let scaled = U256::from(part) * U256::from(10_000u32) / U256::from(whole);
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

/// Whether `bps(part, whole) > limit`, without dividing: floor(p × 10⁴ / w)
/// exceeds `limit` exactly when p × 10⁴ ≥ (limit + 1) × w. Every outflow
/// asks it of every share window.
fn bps_over(part: u128, whole: u128, limit: u64) -> bool {
    if whole == 0 {
        return true;
    }
    let bar = u128::from(limit) + 1;
    match (part.checked_mul(10_000), bar.checked_mul(whole)) {
        (Some(p), Some(b)) => p >= b,
        _ => U256::from(part) * U256::from(10_000u32) >= U256::from(bar) * U256::from(whole),
    }
}

/// Whether `amount` is at least `multiple` times `of`, to a thousandth of
/// the multiple, in exact integers.
fn at_least(amount: Amount, of: Amount, multiple: f64) -> bool {
    let scaled = (multiple * 1000.0).round() as u128;
    U256::from(units(amount)) * U256::from(1000u32) >= U256::from(units(of)) * U256::from(scaled)
}

fn pct(bps: u64) -> String {
    format!("{:.1}%", bps as f64 / 100.0)
}

fn rule_window(rule: &Rule) -> Duration {
    match &rule.kind {
        RuleKind::OutflowWindow(p) => p.window,
        RuleKind::Velocity(p) => p.window,
        RuleKind::NewDestination(p) => p.window,
        RuleKind::Correlation(p) => p.window,
        RuleKind::UnmatchedOutflow(_)
        | RuleKind::Denylist(_)
        | RuleKind::BalanceDrain(_)
        | RuleKind::Approval(_)
        | RuleKind::Tripwire
        | RuleKind::Blind(_) => Duration::ZERO,
        RuleKind::Baseline(_) => Duration::from_secs(3600),
    }
}

fn spec_of(rule: &Rule) -> Option<Spec> {
    let (per_asset, length, value) = match &rule.kind {
        RuleKind::OutflowWindow(p) if p.per_asset => (true, p.window, Value::Units),
        RuleKind::OutflowWindow(p) => (false, p.window, Value::Usd),
        RuleKind::Velocity(p) => (false, p.window, Value::Count),
        RuleKind::Baseline(_) => (false, Duration::from_secs(3600), Value::Usd),
        _ => return None,
    };
    Some(Spec {
        level: rule.scope,
        per_asset,
        length,
        value,
    })
}

fn key_of(spec: &Spec, s: &TransferState, from: WalletIdx) -> WindowKey {
    let asset = spec.per_asset.then_some(s.asset);
    match spec.level {
        Level::Wallet => WindowKey::Wallet(from, asset),
        Level::Asset => WindowKey::Asset(s.chain, s.asset),
        Level::Chain => WindowKey::Chain(s.chain, asset),
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

/// A finding of `rule` about `subject`, with the freeze its rule asks for.
fn pending(
    t: Timestamp,
    rule: &Rule,
    scope: Scope,
    subject: &Subject,
    summary: String,
    figures: Vec<(String, String)>,
) -> Pending {
    let freeze_scope = (rule.action == Action::Freeze && rule.mode == Mode::Enforce).then(|| {
        scope_of(
            rule.freeze_scope,
            &subject.chain,
            &subject.wallet,
            &subject.asset,
        )
    });
    Pending {
        finding: Finding {
            t,
            rule: rule.id.clone(),
            kind: rule.kind.name().to_string(),
            severity: rule.severity,
            scope,
            chain: Some(subject.chain.clone()),
            wallet: Some(subject.wallet.clone()),
            summary,
            shadow: rule.mode == Mode::Shadow,
            wants_freeze: rule.action == Action::Freeze,
            figures,
            evidence: vec![subject.evidence.clone()],
        },
        freeze_scope,
        evidence_key: subject.key.clone(),
    }
}

/// The most transactions a window finding lists as its evidence.
pub const MAX_WINDOW_EVIDENCE: usize = 20;

/// The evidence of a window finding: every transfer still in the window,
/// oldest first (the last [`MAX_WINDOW_EVIDENCE`] of them, the figures
/// saying how many there are), the one that crossed the limit (slot
/// `current`) as its subject spells it, at the stage it was seen.
fn window_evidence(
    state: &State,
    w: &SlidingWindow,
    current: u32,
    subject: &Subject,
    figures: &mut Vec<(String, String)>,
) -> Vec<Evidence> {
    // Walked from the newest end: a busy window holds thousands of
    // entries, and only the last few are listed.
    let total = usize::try_from(w.count()).unwrap_or(usize::MAX);
    let skip = total.saturating_sub(MAX_WINDOW_EVIDENCE);
    let mut evidence: Vec<Evidence> = w
        .live()
        .rev()
        .take(MAX_WINDOW_EVIDENCE)
        .filter_map(|(slot, _)| {
            if slot == current {
                Some(subject.evidence.clone())
            } else {
                state.evidence_of(slot)
            }
        })
        .collect();
    evidence.reverse();
    figures.push(("transactions_in_window".to_string(), total.to_string()));
    if skip > 0 {
        figures.push((
            "evidence_listed".to_string(),
            format!("the last {} of {total}", evidence.len()),
        ));
    }
    evidence
}

/// The rules each kind of event can concern, by index: an outflow or an
/// intent goes through those alone, not every rule of the set (each rule
/// passed over still cost a match per outflow).
#[derive(Debug, Default)]
struct RuleIndex {
    /// Rules that judge outflows.
    outflow: Vec<usize>,
    /// `denylist` rules.
    denylist: Vec<usize>,
    /// `outflow_window` rules.
    windows: Vec<usize>,
    /// `new_destination` rules.
    destinations: Vec<usize>,
}

impl RuleIndex {
    fn of(rules: &RuleSet) -> RuleIndex {
        let mut index = RuleIndex::default();
        for (i, rule) in rules.rules.iter().enumerate() {
            let judges_outflows = match &rule.kind {
                RuleKind::UnmatchedOutflow(_)
                | RuleKind::Tripwire
                | RuleKind::Baseline(_)
                | RuleKind::BalanceDrain(_)
                | RuleKind::Velocity(_) => true,
                RuleKind::Denylist(_) => {
                    index.denylist.push(i);
                    true
                }
                RuleKind::OutflowWindow(_) => {
                    index.windows.push(i);
                    true
                }
                RuleKind::NewDestination(_) => {
                    index.destinations.push(i);
                    true
                }
                _ => false,
            };
            if judges_outflows {
                index.outflow.push(i);
            }
        }
        index
    }
}

/// The indices of a rule set's blind rules.
fn blind_rules(rules: &RuleSet) -> Vec<usize> {
    (0..rules.rules.len())
        .filter(|&i| matches!(rules.rules[i].kind, RuleKind::Blind(_)))
        .collect()
}

/// Fresh per-rule state and shared window specs for a rule set.
fn rule_states(rules: &RuleSet) -> (Vec<RuleState>, Vec<SpecState>) {
    let mut specs: Vec<SpecState> = Vec::new();
    let mut rule_state = Vec::with_capacity(rules.rules.len());
    for rule in &rules.rules {
        rule_state.push(match (&rule.kind, spec_of(rule)) {
            (_, Some(spec)) => {
                let idx = specs
                    .iter()
                    .position(|s| s.spec == spec)
                    .unwrap_or_else(|| {
                        specs.push(SpecState {
                            spec,
                            windows: WindowStore::default(),
                            applied: false,
                        });
                        specs.len() - 1
                    });
                if let (RuleKind::OutflowWindow(p), Some(ss)) = (&rule.kind, specs.get_mut(idx)) {
                    ss.applied |= p.max_share_bps.is_some();
                }
                let spec = u16::try_from(idx).unwrap_or(u16::MAX);
                if matches!(rule.kind, RuleKind::Baseline(_)) {
                    RuleState::Baseline {
                        spec,
                        learned: FxHashMap::default(),
                        fired: FxHashSet::default(),
                    }
                } else {
                    RuleState::Windows {
                        spec,
                        fired: FxHashSet::default(),
                    }
                }
            }
            (RuleKind::NewDestination(_), None) => RuleState::Destinations {
                windows: FxHashMap::default(),
                fired: FxHashSet::default(),
            },
            (RuleKind::Correlation(_), None) => RuleState::Correlation {
                recent: VecDeque::new(),
                fired: false,
            },
            (RuleKind::BalanceDrain(_), None) => RuleState::Floors {
                fired: FxHashSet::default(),
            },
            _ => RuleState::Stateless,
        });
    }
    (rule_state, specs)
}

/// Whether a rule's window is over its limit now, with the figures and a
/// one-line summary.
fn window_exceeded(
    w: &mut SlidingWindow,
    state: &State,
    rule: &Rule,
    key: &WindowKey,
    now: Timestamp,
) -> Option<(Vec<(String, String)>, String)> {
    if !window_over(w, state, rule, key, now) {
        return None;
    }
    describe_window(w, state, rule, key)
}

/// Whether a window's outflow is concentrated on few new destinations:
/// the top `max_destinations` addresses first paid after `since` and paid
/// at least `min_payments` times in the window, and their share of it
/// (basis points), when it reaches `min_share_bps`. Walks the window: only
/// once it is over its limit.
fn concentration(
    w: &SlidingWindow,
    state: &State,
    c: crate::config::Concentration,
    since: Timestamp,
    current: u32,
    current_to: crate::intern::AddrId,
) -> Option<(usize, u64)> {
    let since = paid_at(since);
    let mut by_to: FxHashMap<crate::intern::AddrId, (u128, u32)> = FxHashMap::default();
    for (slot, value) in w.live() {
        // The outflow being judged is in the window, not yet marked.
        let to = if slot == current {
            current_to
        } else {
            match state.slab.get(slot as usize) {
                Some(s) if s.counted => s.to,
                _ => continue,
            }
        };
        let e = by_to.entry(to).or_default();
        e.0 = e.0.saturating_add(value);
        e.1 += 1;
    }
    let mut top: Vec<u128> = by_to
        .into_iter()
        .filter(|(to, (_, n))| {
            *n >= c.min_payments
                && state
                    .first_paid
                    .get(to.0 as usize)
                    .is_none_or(|&fp| fp == 0 || fp >= since)
        })
        .map(|(_, (v, _))| v)
        .collect();
    top.sort_unstable_by(|a, b| b.cmp(a));
    top.truncate(c.max_destinations as usize);
    let n = top.len();
    let sum = top.iter().fold(0u128, |a, v| a.saturating_add(*v));
    let share = bps(sum, w.sum());
    (n > 0 && share >= u64::from(c.min_share_bps)).then_some((n, share))
}

/// The cheap test of [`window_exceeded`]: no figures, no words, so a
/// window that stays over its limit through a drain costs nothing more.
fn window_over(
    w: &mut SlidingWindow,
    state: &State,
    rule: &Rule,
    key: &WindowKey,
    now: Timestamp,
) -> bool {
    w.advance(now);
    let (sum, applied, count) = (w.sum(), w.sum_applied(), w.count());
    match &rule.kind {
        RuleKind::Velocity(p) => count > p.max_count,
        RuleKind::OutflowWindow(p) if p.per_asset => p
            .max_share_bps
            .zip(state.scope_balance(key))
            .is_some_and(|(limit, bal)| {
                bps_over(sum, units(bal).saturating_add(applied), u64::from(limit))
            }),
        RuleKind::OutflowWindow(p) => {
            p.max_usd.is_some_and(|m| sum > m)
                || p.max_share_bps
                    .zip(state.scope_balance_usd(key))
                    .is_some_and(|(limit, bal)| {
                        bps_over(sum, bal.0.saturating_add(applied), u64::from(limit))
                    })
        }
        _ => false,
    }
}

/// What a window's rule allows, in the window's unit (the tightest of its
/// limits), once the scope's balance is known. Uses [`window_over`]'s
/// balances, so the rule fires where the total passes it (to within a
/// basis point).
fn window_limit(w: &SlidingWindow, state: &State, rule: &Rule, key: &WindowKey) -> Option<u128> {
    let applied = w.sum_applied();
    let share_of = |whole: u128, limit_bps: u32| {
        let l = U256::from(whole) * U256::from(limit_bps) / U256::from(10_000u32);
        u128::try_from(l).unwrap_or(u128::MAX)
    };
    match &rule.kind {
        RuleKind::Velocity(p) => Some(u128::from(p.max_count)),
        RuleKind::OutflowWindow(p) if p.per_asset => p
            .max_share_bps
            .zip(state.scope_balance(key))
            .map(|(l, bal)| share_of(units(bal).saturating_add(applied), l)),
        RuleKind::OutflowWindow(p) => {
            let by_share = p
                .max_share_bps
                .zip(state.scope_balance_usd(key))
                .map(|(l, bal)| share_of(bal.0.saturating_add(applied), l));
            match (p.max_usd, by_share) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        _ => None,
    }
}

/// A window's total and limit in dollars, where they have a price (not
/// for velocity, which counts).
fn window_usd(
    w: &SlidingWindow,
    state: &State,
    rule: &Rule,
    key: &WindowKey,
    limit: Option<u128>,
) -> (Option<Usd>, Option<Usd>) {
    match &rule.kind {
        RuleKind::OutflowWindow(p) if p.per_asset => {
            let Some((asset, decimals)) = state.scope_asset_decimals(key) else {
                return (None, None);
            };
            let usd = |v: u128| Usd::of(Amount::from_base_units(v), decimals, state.price(asset));
            (Some(usd(w.sum())), limit.map(usd))
        }
        RuleKind::OutflowWindow(_) => (Some(Usd(w.sum())), limit.map(Usd)),
        _ => (None, None),
    }
}

/// How full a window is: its total over its limit (0 without a limit).
/// For display and ranking only: the rules compare the exact integers.
fn usage(sum: u128, limit: Option<u128>) -> f64 {
    match limit {
        Some(l) if l > 0 => sum as f64 / l as f64,
        _ => 0.0,
    }
}

impl WindowFigure {
    /// Its total over its limit (1 at the limit), once the limit is known.
    pub fn usage(&self) -> Option<f64> {
        self.limit
            .filter(|l| *l > 0)
            .map(|l| usage(self.sum, Some(l)))
    }
}

/// Whether a chain is blind, and why: the reason says what clears it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Blind {
    /// Not blind.
    #[default]
    Seen,
    /// No head for k block times: cleared by the next head.
    SilentHead,
    /// Every endpoint failing: cleared when one answers again.
    Outage,
}

/// Records chain `c`'s blind state (a free function, so it can run while
/// the rules are borrowed).
fn set_blind(watch: &mut Vec<ChainWatch>, c: usize, b: Blind) {
    if watch.len() <= c {
        watch.resize_with(c + 1, ChainWatch::default);
    }
    watch[c].blind = b;
}

/// A blind rule's finding on a chain: chain scope, no transaction as
/// evidence, a freeze where the rule fails closed.
fn blind_finding(
    now: Timestamp,
    rule: &Rule,
    chain: &Chain,
    summary: String,
    figures: Vec<(String, String)>,
    evidence_key: String,
) -> Pending {
    let scope = Scope::Chain(chain.clone());
    let freeze_scope =
        (rule.action == Action::Freeze && rule.mode == Mode::Enforce).then(|| scope.clone());
    Pending {
        finding: Finding {
            t: now,
            rule: rule.id.clone(),
            kind: rule.kind.name().to_string(),
            severity: rule.severity,
            scope,
            chain: Some(chain.clone()),
            wallet: None,
            summary,
            shadow: rule.mode == Mode::Shadow,
            wants_freeze: rule.action == Action::Freeze,
            figures,
            evidence: Vec::new(),
        },
        freeze_scope,
        evidence_key,
    }
}

/// The figures and summary of a window over its limit.
fn describe_window(
    w: &SlidingWindow,
    state: &State,
    rule: &Rule,
    key: &WindowKey,
) -> Option<(Vec<(String, String)>, String)> {
    let (sum, applied, count) = (w.sum(), w.sum_applied(), w.count());
    let window = humantime::format_duration(w.length()).to_string();
    match &rule.kind {
        RuleKind::Velocity(p) => (count > p.max_count).then(|| {
            let figures = vec![
                ("outflows".to_string(), count.to_string()),
                ("max_count".to_string(), p.max_count.to_string()),
                ("window".to_string(), window.clone()),
            ];
            (
                figures,
                format!("{count} outflows in {window} (limit {})", p.max_count),
            )
        }),
        RuleKind::OutflowWindow(p) => {
            let mut figures = vec![("window".to_string(), window.clone())];
            let mut reasons = Vec::new();
            if p.per_asset {
                figures.push(("outflow_base_units".to_string(), sum.to_string()));
                if let (Some(limit), Some(bal)) = (p.max_share_bps, state.scope_balance(key)) {
                    let start = units(bal).saturating_add(applied);
                    let share = bps(sum, start);
                    figures.push((
                        "balance_at_window_start_base_units".to_string(),
                        start.to_string(),
                    ));
                    figures.push(("share".to_string(), pct(share)));
                    figures.push(("max_share".to_string(), pct(u64::from(limit))));
                    if share > u64::from(limit) {
                        let asset = match key {
                            WindowKey::Wallet(_, Some(a))
                            | WindowKey::Chain(_, Some(a))
                            | WindowKey::Asset(_, a) => state
                                .assets
                                .get(usize::from(*a))
                                .map(ToString::to_string)
                                .unwrap_or_default(),
                            _ => String::new(),
                        };
                        reasons.push(format!(
                            "{} of the {asset} balance left in {window} (limit {})",
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
                        reasons.push(format!(
                            "{} left in {window} (limit {})",
                            Usd(sum),
                            Usd(max)
                        ));
                    }
                }
                if let (Some(limit), Some(bal)) = (p.max_share_bps, state.scope_balance_usd(key)) {
                    let share = bps(sum, bal.0.saturating_add(applied));
                    figures.push(("share".to_string(), pct(share)));
                    figures.push(("max_share".to_string(), pct(u64::from(limit))));
                    if share > u64::from(limit) {
                        reasons.push(format!(
                            "{} of the balance ({}) left in {window} (limit {})",
                            pct(share),
                            Usd(sum),
                            pct(u64::from(limit))
                        ));
                    }
                }
            }
            (!reasons.is_empty()).then(|| (figures, reasons.join("; ")))
        }
        _ => None,
    }
}

impl Engine {
    /// An engine with a validated rule set and no history.
    pub fn new(rules: RuleSet) -> Self {
        let (rule_state, specs) = rule_states(&rules);
        let has_blind = rules
            .rules
            .iter()
            .any(|r| matches!(r.kind, RuleKind::Blind(_)));
        let blind_rules = blind_rules(&rules);
        let index = RuleIndex::of(&rules);
        let has_floors = rules
            .rules
            .iter()
            .any(|r| matches!(&r.kind, RuleKind::BalanceDrain(p) if !p.floors.is_empty()));
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
            specs,
            state: State::new(),
            freezes: Vec::new(),
            now: Timestamp(i64::MIN),
            stats: EngineStats::default(),
            longest_window,
            since_prune: 0,
            pushes: 0,
            last_prune: Timestamp(i64::MIN),
            has_floors,
            has_blind,
            watch: Vec::new(),
            next_blind_check: i64::MIN,
            blind_next: i64::MAX,
            blind_rules,
            index,
            known_block_times: Vec::new(),
        }
    }

    /// Puts a new, already validated rule set in force without losing what
    /// the engine knows: wallets, balances, intents, histories and freezes
    /// stay; every window is rebuilt from the transfers still tracked, and
    /// a window already over a limit counts as already reported, so a
    /// reload neither forgets a drain in progress nor reports it twice.
    pub fn reload(&mut self, rules: RuleSet) {
        let learned = self.learned_state();
        let (rule_state, specs) = rule_states(&rules);
        self.rules = rules;
        self.rule_state = rule_state;
        self.specs = specs;
        self.has_floors = self
            .rules
            .rules
            .iter()
            .any(|r| matches!(&r.kind, RuleKind::BalanceDrain(p) if !p.floors.is_empty()));
        self.longest_window = self
            .rules
            .rules
            .iter()
            .map(rule_window)
            .chain([self.rules.intents.match_window])
            .max()
            .unwrap_or_default();
        // Slots freed by pruning are marked neither counted nor judged, so
        // they are passed over: their transfers left the windows for good.
        let mut live: Vec<u32> = (0..self.state.slab.len() as u32)
            .filter(|&i| {
                let s = &self.state.slab[i as usize];
                s.counted && s.judged && s.direction == Direction::Outflow && s.from.is_some()
            })
            .collect();
        live.sort_by_key(|&i| self.state.slab[i as usize].first_seen);
        for i in live {
            let s = self.state.slab[i as usize];
            let Some(from) = s.from else { continue };
            let mut refs = Refs::new();
            for (slot, ss) in self.specs.iter_mut().enumerate() {
                let value = match ss.spec.value {
                    Value::Units => units(s.amount),
                    Value::Usd => s.usd().0,
                    Value::Count => 1,
                };
                let (len, first) = (ss.spec.length, self.pushes);
                let w = ss.windows.get_or_insert(key_of(&ss.spec, &s, from), || {
                    SlidingWindow::starting_at(len, first)
                });
                let seq = w.push(s.first_seen, value, i);
                self.pushes += 1;
                if ss.applied {
                    w.set_applied(seq, s.applied);
                }
                refs.push(WindowRef::new(u16::try_from(slot).unwrap_or(u16::MAX), seq));
            }
            for (idx, (rule, rs)) in self
                .rules
                .rules
                .iter()
                .zip(self.rule_state.iter_mut())
                .enumerate()
            {
                if let (RuleKind::NewDestination(p), RuleState::Destinations { windows, .. }) =
                    (&rule.kind, rs)
                    && (p.min_sources.is_some() || p.repeat_count.is_some())
                {
                    let first = self.pushes;
                    let seq = windows
                        .entry(s.to)
                        .or_insert_with(|| DestWindow::starting_at(first))
                        .push(s.first_seen, (from, s.asset), s.share_bps, p.window);
                    self.pushes += 1;
                    refs.push(WindowRef::new(DEST | u16::try_from(idx).unwrap_or(0), seq));
                }
            }
            self.state.refs[i as usize] = refs;
        }
        self.restore_learned(learned);
        // New blind rules, or other block times: when a chain could next
        // be blind is worked out again.
        self.blind_rules = blind_rules(&self.rules);
        self.index = RuleIndex::of(&self.rules);
        for w in &mut self.watch {
            w.plan = None;
        }
        self.refresh_all_blind();
        let now = self.now;
        for (rule, rs) in self.rules.rules.iter().zip(self.rule_state.iter_mut()) {
            match rs {
                RuleState::Windows { spec, fired } => {
                    let Some(ss) = self.specs.get_mut(usize::from(*spec)) else {
                        continue;
                    };
                    for (key, w) in ss.windows.iter_mut() {
                        if window_exceeded(w, &self.state, rule, key, now).is_some() {
                            fired.insert(*key);
                        }
                    }
                }
                RuleState::Destinations { windows, fired } => {
                    let RuleKind::NewDestination(p) = &rule.kind else {
                        continue;
                    };
                    for (to, w) in windows.iter_mut() {
                        let sum = w.summary(now, p.window, p.min_source_share_bps);
                        if p.min_sources.is_some_and(|m| sum.sources >= m)
                            || p.repeat_count.is_some_and(|r| sum.payments >= r)
                        {
                            fired.insert(*to);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// What the baseline rules have learned, keyed by rule id and scope,
    /// for the store (learned state survives restarts and reloads).
    pub fn learned_state(&self) -> LearnedState {
        let mut entries = Vec::new();
        for (rule, rs) in self.rules.rules.iter().zip(&self.rule_state) {
            let RuleState::Baseline { learned, .. } = rs else {
                continue;
            };
            for (key, l) in learned {
                let scope = match *key {
                    WindowKey::Asset(c, a) => format!(
                        "asset:{}:{}",
                        self.state.chains[usize::from(c)],
                        self.state.assets[usize::from(a)]
                    ),
                    WindowKey::Chain(c, _) => {
                        format!("chain:{}", self.state.chains[usize::from(c)])
                    }
                    WindowKey::Global => "global".to_string(),
                    WindowKey::Wallet(..) => continue,
                };
                entries.push(LearnedEntry {
                    rule: rule.id.clone(),
                    scope,
                    learned: l.clone(),
                });
            }
        }
        entries.sort_by(|a, b| (&a.rule, &a.scope).cmp(&(&b.rule, &b.scope)));
        LearnedState { entries }
    }

    /// Restores learned state saved by [`Engine::learned_state`]; entries
    /// of rules no longer configured are dropped. Returns how many were
    /// restored.
    pub fn restore_learned(&mut self, saved: LearnedState) -> usize {
        let mut restored = 0;
        for e in saved.entries {
            let Some(idx) = self.rules.rules.iter().position(|r| r.id == e.rule) else {
                continue;
            };
            let key = match Scope::parse(&e.scope) {
                Ok(Scope::Asset(c, a)) => {
                    WindowKey::Asset(self.state.chain_id(&c), self.state.asset_id(&a))
                }
                Ok(Scope::Chain(c)) => WindowKey::Chain(self.state.chain_id(&c), None),
                Ok(Scope::Global) => WindowKey::Global,
                _ => continue,
            };
            let level_ok = matches!(
                (self.rules.rules[idx].scope, key),
                (Level::Asset, WindowKey::Asset(..))
                    | (Level::Chain, WindowKey::Chain(..))
                    | (Level::Global, WindowKey::Global)
            );
            if let (true, Some(RuleState::Baseline { learned, .. })) =
                (level_ok, self.rule_state.get_mut(idx))
                && e.learned.hours.len() == crate::baseline::HOURS
            {
                learned.insert(key, e.learned);
                restored += 1;
            }
        }
        restored
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

    /// Open intents not yet matched.
    pub fn open_intents(&self) -> usize {
        self.state.intents.open
    }

    /// The totals of every window with something in it, advanced to the
    /// engine's current time, next to their limits.
    pub fn window_figures(&mut self) -> Vec<WindowFigure> {
        self.nearest_window_figures(usize::MAX)
    }

    /// The same for the `n` windows nearest their limits (by total over
    /// limit), for a metrics page that must stay small and cheap: every
    /// window is measured with integers first, and only those `n` are
    /// spelled out (addresses, dollars). Sorted by rule, scope and asset.
    pub fn nearest_window_figures(&mut self, n: usize) -> Vec<WindowFigure> {
        let now = self.now;
        let mut chosen: Vec<(f64, usize, WindowKey)> = Vec::new();
        for (r, (rule, rs)) in self.rules.rules.iter().zip(&self.rule_state).enumerate() {
            let RuleState::Windows { spec, .. } = rs else {
                continue;
            };
            let Some(ss) = self.specs.get_mut(usize::from(*spec)) else {
                continue;
            };
            for (key, w) in ss.windows.iter_mut() {
                w.advance(now);
                let limit = window_limit(w, &self.state, rule, key);
                chosen.push((usage(w.sum(), limit), r, *key));
            }
        }
        if chosen.len() > n {
            chosen.select_nth_unstable_by(n, |a, b| b.0.total_cmp(&a.0));
            chosen.truncate(n);
        }
        let st = &self.state;
        let chain = |c: u16| st.chains[usize::from(c)].clone();
        let asset = |a: u16| st.assets[usize::from(a)].clone();
        let mut out = Vec::with_capacity(chosen.len());
        for (_, r, key) in chosen {
            let (Some(rule), Some(RuleState::Windows { spec, .. })) =
                (self.rules.rules.get(r), self.rule_state.get(r))
            else {
                continue;
            };
            let Some(w) = self
                .specs
                .get(usize::from(*spec))
                .and_then(|ss| ss.windows.get(&key))
            else {
                continue;
            };
            let (scope, asset) = match key {
                WindowKey::Wallet(w, a) => {
                    let wl = &st.wallets[w as usize];
                    (
                        Scope::Wallet(chain(wl.chain), st.wallet_address(wl)),
                        a.map(asset),
                    )
                }
                WindowKey::Asset(c, a) => (Scope::Asset(chain(c), asset(a)), Some(asset(a))),
                WindowKey::Chain(c, a) => (Scope::Chain(chain(c)), a.map(asset)),
                WindowKey::Global => (Scope::Global, None),
            };
            let limit = window_limit(w, st, rule, &key);
            let (sum_usd, limit_usd) = window_usd(w, st, rule, &key, limit);
            out.push(WindowFigure {
                rule: rule.id.clone(),
                scope,
                asset,
                sum: w.sum(),
                count: w.count(),
                limit,
                sum_usd,
                limit_usd,
            });
        }
        out.sort_by(|a, b| (&a.rule, &a.scope, &a.asset).cmp(&(&b.rule, &b.scope, &b.asset)));
        out
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
            EventKind::Balance(b) => {
                self.state.set_balance(b);
                if let Some(w) = self.state.wallet_of(&b.chain, &b.wallet) {
                    self.check_floors(event.t, w, &b.asset, &mut found);
                }
            }
            EventKind::Price(p) => self.state.set_price(&p.asset, p.usd),
            EventKind::Intent(i) => {
                self.on_intent(event.t, i, &mut found);
            }
            EventKind::Transfer(tr) => self.on_transfer(event.t, tr, &mut found),
            EventKind::Approval(a) => self.on_approval(event.t, a, &mut found),
            EventKind::Admin(a) => self.on_admin(event.t, a, &mut found),
            EventKind::Head(h) => {
                let c = self.state.chain_id(&h.chain);
                let mut earlier = self.state.head(c, h.block, event.t);
                // A blind finding of an outage clears when an endpoint
                // answers again, not with a head pushed meanwhile.
                if self.blind_of(usize::from(c)) == Blind::SilentHead {
                    earlier = true;
                    set_blind(&mut self.watch, usize::from(c), Blind::Seen);
                    out.push(Output::Recovered(Recovery {
                        t: event.t,
                        kind: "blind".to_string(),
                        chain: h.chain.clone(),
                        summary: format!("{} has a new head again (block {})", h.chain, h.block),
                    }));
                }
                // Otherwise the chain's due time only moved later: the one
                // kept is early, which costs at most a check that finds
                // nothing and works every due time out again.
                if self.has_blind && earlier {
                    self.refresh_blind(usize::from(c));
                }
            }
        }
        if self.has_blind && event.t.0 >= self.next_blind_check {
            self.check_blind(event.t, &mut found);
        }
        if !found.is_empty() {
            self.correlate(event.t, &mut found);
            self.emit(found, out);
        }
        // Prune every few thousand events, and not more than once every
        // ten minutes of event time: a scan of the tracked transfers is not
        // free, and what it frees is held for hours anyway.
        self.since_prune += 1;
        if self.since_prune >= 4096
            && self.now.0.saturating_sub(self.last_prune.0) >= 600_000_000_000
        {
            self.prune();
        }
    }

    fn prune(&mut self) {
        self.since_prune = 0;
        self.last_prune = self.now;
        let now = self.now;
        // A transfer is kept while any window may still hold it, and an hour
        // more for late stages and deep reorgs.
        self.state.prune(
            now,
            self.longest_window + Duration::from_secs(3600),
            &self.rules.intents,
        );
        for ss in &mut self.specs {
            ss.windows.retain(|_, w| {
                w.advance(now);
                !w.is_empty()
            });
        }
        for (rule, rs) in self.rules.rules.iter().zip(self.rule_state.iter_mut()) {
            match rs {
                RuleState::Windows { spec, fired } => {
                    let windows = &self.specs[usize::from(*spec)].windows;
                    fired.retain(|k| windows.contains_key(k));
                }
                RuleState::Destinations { windows, fired } => {
                    let len = match &rule.kind {
                        RuleKind::NewDestination(p) => p.window,
                        _ => Duration::ZERO,
                    };
                    windows.retain(|_, w| w.last_t().is_some_and(|t| t > now.minus(len)));
                    fired.retain(|d| windows.contains_key(d));
                }
                RuleState::Baseline { fired, .. } => {
                    let hour = now.0.div_euclid(3_600_000_000_000);
                    fired.retain(|(_, h)| *h >= hour - 1);
                }
                RuleState::Correlation { .. } | RuleState::Stateless | RuleState::Floors { .. } => {
                }
            }
        }
    }

    fn on_transfer(&mut self, t: Timestamp, tr: &Transfer, found: &mut Vec<Pending>) {
        let Some(i) = self.state.track(t, tr) else {
            return;
        };
        let s = self.state.slab[i as usize];
        match tr.stage {
            Stage::Pending | Stage::Included | Stage::Confirmed => {
                if !s.counted {
                    if s.direction == Direction::Outflow {
                        self.count_outflow(t, i, tr, found);
                    }
                    self.state.slab[i as usize].counted = true;
                }
                if tr.stage != Stage::Pending && !s.applied {
                    self.set_applied(i, true);
                    self.floors_after(t, &s, tr, found);
                }
            }
            Stage::Retracted => {
                self.retract(t, i, &tr.tx_hash);
                if s.applied {
                    self.floors_after(t, &s, tr, found);
                }
            }
        }
    }

    /// Moves balances for a transfer now in a block (or undoes that) and
    /// tells its windows, so shares are measured against the balance at the
    /// window's start.
    fn set_applied(&mut self, i: u32, applied: bool) {
        let s = &mut self.state.slab[i as usize];
        if s.applied == applied {
            return;
        }
        s.applied = applied;
        let s = *s;
        self.state.apply_balance(&s, !applied);
        let Some(from) = s.from else { return };
        for r in &self.state.refs[i as usize] {
            if r.slot & DEST != 0 {
                continue;
            }
            if let Some(ss) = self.specs.get_mut(usize::from(r.slot))
                && ss.applied
                && let Some(w) = ss.windows.get_mut(&key_of(&ss.spec, &s, from))
            {
                w.set_applied(r.seq(), applied);
            }
        }
    }

    fn retract(&mut self, t: Timestamp, i: u32, tx: &TxHash) {
        self.set_applied(i, false);
        let s = &mut self.state.slab[i as usize];
        if !s.counted {
            return;
        }
        s.counted = false;
        let s = *s;
        let refs = std::mem::take(&mut self.state.refs[i as usize]);
        let Some(from) = s.from else { return };
        if s.direction == Direction::Outflow {
            self.stats.retracted += 1;
            // The withdrawal did not happen (yet): its intent is open
            // again, or the same withdrawal included again in the new
            // branch (another log index, or re-signed) would be judged
            // unmatched.
            if s.matched {
                self.state.reopen_intent(&s, tx);
            }
        }
        for r in refs {
            if r.slot & DEST != 0 {
                if let Some(RuleState::Destinations { windows, .. }) =
                    self.rule_state.get_mut(usize::from(r.slot & !DEST))
                    && let Some(w) = windows.get_mut(&s.to)
                {
                    w.remove(r.seq());
                }
                continue;
            }
            let spec_idx = r.slot;
            let Some(ss) = self.specs.get_mut(usize::from(spec_idx)) else {
                continue;
            };
            let wkey = key_of(&ss.spec, &s, from);
            let Some(w) = ss.windows.get_mut(&wkey) else {
                continue;
            };
            w.remove(r.seq());
            // Re-arm every rule reading this window that is now under its
            // limit: the next crossing is a new incident.
            for (rule, rs) in self.rules.rules.iter().zip(self.rule_state.iter_mut()) {
                if let RuleState::Windows { spec, fired } = rs
                    && *spec == spec_idx
                    && fired.contains(&wkey)
                    && window_exceeded(w, &self.state, rule, &wkey, t).is_none()
                {
                    fired.remove(&wkey);
                }
            }
        }
    }

    /// Counts a newly seen (or re-included) outflow in every window and
    /// judges it, once, against every rule.
    fn count_outflow(&mut self, t: Timestamp, i: u32, tr: &Transfer, found: &mut Vec<Pending>) {
        let s = self.state.slab[i as usize];
        let Some(from) = s.from else { return };
        let first_time = !s.judged;
        self.stats.outflows += u64::from(first_time);
        // A re-inclusion after a retraction takes back the intent the
        // retraction re-opened, so no other outflow can match it too. It
        // is not judged again: a transfer is judged once, whatever its
        // stages.
        let taken = if first_time || s.matched {
            self.state
                .take_intent(t, &s, &tr.tx_hash, &self.rules.intents)
        } else {
            None
        };
        let matched = taken.is_some();
        if first_time {
            self.stats.matched += u64::from(matched);
        }
        let balance_before = self.state.balance(from, s.asset);
        let share_bps = balance_before.and_then(|b| s.amount.bps_of(b)).unwrap_or(0);
        let first_paid = self
            .state
            .first_paid
            .get(s.to.0 as usize)
            .copied()
            .unwrap_or(0);
        if self.state.watching_since == 0 {
            self.state.watching_since = paid_at(t);
        }
        let watching_since = self.state.watching_since;
        let history = self
            .state
            .history
            .get(&(from, s.asset))
            .copied()
            .unwrap_or_default();

        // Every shared window first, so each rule reads a complete total.
        // The rules below read these windows by spec index: looked up once.
        let mut refs = Refs::new();
        let mut windows: SmallVec<[(WindowKey, &mut SlidingWindow); 4]> = SmallVec::new();
        for (slot, ss) in self.specs.iter_mut().enumerate() {
            let value = match ss.spec.value {
                Value::Units => units(s.amount),
                Value::Usd => s.usd().0,
                Value::Count => 1,
            };
            let wkey = key_of(&ss.spec, &s, from);
            let (len, first) = (ss.spec.length, self.pushes);
            let w = ss
                .windows
                .get_or_insert(wkey, || SlidingWindow::starting_at(len, first));
            let seq = w.push(t, value, i);
            self.pushes += 1;
            refs.push(WindowRef::new(u16::try_from(slot).unwrap_or(u16::MAX), seq));
            windows.push((wkey, w));
        }

        for &idx in &self.index.outflow {
            let Some(rule) = self.rules.rules.get(idx) else {
                continue;
            };
            if !rule.applies_to(&tr.chain) {
                continue;
            }
            let scope = || scope_of(rule.scope, &tr.chain, &tr.from, &tr.asset);
            // On the rule's kind alone: its state is taken in the arm that
            // needs it (one jump, not a match on two enums per rule).
            match &rule.kind {
                RuleKind::UnmatchedOutflow(p) => {
                    let applies =
                        p.intents == IntentsMode::Always || self.state.wallet_connected(from);
                    if first_time && !matched && applies {
                        let summary = format!(
                            "{} {} ({}) left {} to {} with no matching withdrawal intent",
                            tr.amount.to_decimal_string(tr.decimals),
                            tr.asset,
                            s.usd(),
                            tr.from,
                            tr.to
                        );
                        let figures = vec![
                            ("usd".to_string(), format!("{:.2}", s.usd().to_f64())),
                            ("stage".to_string(), tr.stage.as_str().to_string()),
                        ];
                        let sub = Subject::of_transfer(tr, s.usd());
                        found.push(pending(t, rule, scope(), &sub, summary, figures));
                    }
                }
                RuleKind::Denylist(p) if first_time && p.addresses.contains(&tr.to) => {
                    let summary = format!(
                        "{} {} ({}) sent to denylisted {}",
                        tr.amount.to_decimal_string(tr.decimals),
                        tr.asset,
                        s.usd(),
                        tr.to
                    );
                    let sub = Subject::of_transfer(tr, s.usd());
                    found.push(pending(
                        t,
                        rule,
                        scope(),
                        &sub,
                        summary,
                        vec![("destination".to_string(), tr.to.to_string())],
                    ));
                }
                RuleKind::Baseline(p) => {
                    let Some(RuleState::Baseline {
                        spec,
                        learned,
                        fired,
                    }) = self.rule_state.get_mut(idx)
                    else {
                        continue;
                    };
                    let Some((wkey, w)) = windows.get_mut(usize::from(*spec)) else {
                        continue;
                    };
                    let wkey = *wkey;
                    let hour = t.0.div_euclid(3_600_000_000_000);
                    let l = learned.entry(wkey).or_default();
                    if first_time {
                        l.add(hour, s.usd().0);
                    }
                    let (median, mad, samples) = l.baseline(hour);
                    w.advance(t);
                    let volume = w.sum();
                    if samples < p.warmup_weeks as usize || volume < p.min_usd {
                        continue;
                    }
                    // A deviation floor of a tenth of the median keeps a
                    // perfectly regular hour from alarming on any change.
                    let spread = (mad as f64 * 1.4826).max(median as f64 * 0.1).max(1.0);
                    let limit = median as f64 + p.k * spread;
                    let dollars = volume as f64 / 1e6;
                    if dollars > limit && fired.insert((wkey, hour)) {
                        let summary = format!(
                            "{} left in the last hour, {:.1} robust deviations above this hour of the week's median of ${median} (limit {} deviations, {samples} weeks learned)",
                            Usd(volume),
                            (dollars - median as f64) / spread,
                            p.k
                        );
                        let mut figures = vec![
                            ("outflow_usd".to_string(), format!("{dollars:.2}")),
                            ("median_usd".to_string(), median.to_string()),
                            ("mad_usd".to_string(), mad.to_string()),
                            ("limit_usd".to_string(), format!("{limit:.2}")),
                            ("weeks".to_string(), samples.to_string()),
                        ];
                        let sub = Subject::of_transfer(tr, s.usd());
                        let evidence = window_evidence(&self.state, w, i, &sub, &mut figures);
                        let mut p = pending(t, rule, scope(), &sub, summary, figures);
                        p.finding.evidence = evidence;
                        found.push(p);
                    }
                }
                RuleKind::BalanceDrain(p)
                    if first_time
                        && p.max_tx_share_bps.is_some_and(|l| share_bps > l)
                        && p.history_multiple.is_none_or(|m| {
                            history.count >= p.history_min && at_least(s.amount, history.max, m)
                        }) =>
                {
                    let limit = u64::from(p.max_tx_share_bps.unwrap_or(0));
                    let mut summary = format!(
                        "one transaction takes {} of {}'s {} balance: {} {} ({}) to {} (limit {})",
                        pct(u64::from(share_bps)),
                        tr.from,
                        tr.asset,
                        tr.amount.to_decimal_string(tr.decimals),
                        tr.asset,
                        s.usd(),
                        tr.to,
                        pct(limit)
                    );
                    let mut figures = vec![
                        ("share".to_string(), pct(u64::from(share_bps))),
                        ("max_tx_share".to_string(), pct(limit)),
                    ];
                    if let Some(m) = p.history_multiple {
                        summary.push_str(&format!(
                            ", {:.1}x the largest of its {} earlier payments ({})",
                            units(s.amount) as f64 / units(history.max).max(1) as f64,
                            history.count,
                            history.max.to_decimal_string(tr.decimals)
                        ));
                        figures.push((
                            "largest_earlier".to_string(),
                            history.max.to_decimal_string(tr.decimals),
                        ));
                        figures.push(("history_multiple".to_string(), format!("{m}")));
                    }
                    let sub = Subject::of_transfer(tr, s.usd());
                    found.push(
                        pending(t, rule, scope(), &sub, summary, figures).authorised(matched),
                    );
                }
                // Only a real movement of what the decoy holds: a
                // zero-value transferFrom or a stranger's token naming it
                // must not halt the exchange.
                RuleKind::Tripwire
                    if first_time
                        && self.state.is_tripwire(from)
                        && !s.amount.is_zero()
                        && self.state.holds_known(from, s.asset) =>
                {
                    let summary = format!(
                        "tripwire {} moved {} {} ({}) to {}: its key is in an attacker's hands, and the keys kept beside it with it",
                        tr.from,
                        tr.amount.to_decimal_string(tr.decimals),
                        tr.asset,
                        s.usd(),
                        tr.to
                    );
                    let figures = vec![("stage".to_string(), tr.stage.as_str().to_string())];
                    let sub = Subject::of_transfer(tr, s.usd());
                    found.push(pending(t, rule, scope(), &sub, summary, figures));
                }
                RuleKind::OutflowWindow(_) | RuleKind::Velocity(_) => {
                    let Some(RuleState::Windows { spec, fired }) = self.rule_state.get_mut(idx)
                    else {
                        continue;
                    };
                    let Some((wkey, w)) = windows.get_mut(usize::from(*spec)) else {
                        continue;
                    };
                    let wkey = *wkey;
                    if !window_over(w, &self.state, rule, &wkey, t) {
                        // Nearly always nothing has fired: no key to hash.
                        if !fired.is_empty() {
                            fired.remove(&wkey);
                        }
                    } else if !fired.contains(&wkey) {
                        let concentrated = match &rule.kind {
                            RuleKind::OutflowWindow(p) => p.concentration.map(|c| {
                                // Concentration only grows when an address
                                // first paid within the window is paid
                                // again: only then is the window walked, so
                                // a rush (every payee new, each paid once)
                                // costs one comparison an outflow.
                                let since = t.minus(p.window);
                                let repeat = first_paid != 0 && first_paid >= paid_at(since);
                                if repeat {
                                    concentration(w, &self.state, c, since, i, s.to)
                                } else {
                                    None
                                }
                            }),
                            _ => None,
                        };
                        if concentrated.as_ref().is_some_and(Option::is_none) {
                            // Over its share but spread over many or known
                            // destinations: a rush, not a theft. Judged
                            // again on the next outflow.
                            continue;
                        }
                        match describe_window(w, &self.state, rule, &wkey) {
                            None => {
                                fired.remove(&wkey);
                            }
                            Some((mut figures, mut summary)) => {
                                if let Some(Some((n, share))) = concentrated {
                                    summary.push_str(&format!(
                                        "; {} of it to {n} new address(es) paid repeatedly",
                                        pct(share)
                                    ));
                                    figures.push(("concentrated_share".to_string(), pct(share)));
                                    figures.push((
                                        "concentrated_destinations".to_string(),
                                        n.to_string(),
                                    ));
                                }
                                fired.insert(wkey);
                                let sub = Subject::of_transfer(tr, s.usd());
                                let evidence =
                                    window_evidence(&self.state, w, i, &sub, &mut figures);
                                let mut p = pending(t, rule, scope(), &sub, summary, figures);
                                p.finding.evidence = evidence;
                                found.push(p);
                            }
                        }
                    }
                }
                RuleKind::NewDestination(p) => {
                    let paid_first = if first_paid == 0 {
                        paid_at(t)
                    } else {
                        first_paid
                    };
                    let fresh = paid_at(t.minus(p.fresh_for)) < paid_first
                        && (p.warm_up.is_zero() || {
                            let known_from = i64::from(watching_since)
                                + i64::try_from(p.warm_up.as_secs()).unwrap_or(i64::MAX);
                            i64::from(paid_first) >= known_from
                        });
                    if first_time
                        && fresh
                        && let Some(large) = p.large_share_bps
                    {
                        let multiple_ok = history.count < p.history_min
                            || at_least(s.amount, history.max, p.large_multiple);
                        if share_bps >= large && multiple_ok {
                            let summary = format!(
                                "{} {} ({}, {} of the wallet's balance) sent to {}, an address never paid before",
                                tr.amount.to_decimal_string(tr.decimals),
                                tr.asset,
                                s.usd(),
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
                            let sub = Subject::of_transfer(tr, s.usd());
                            found.push(
                                pending(t, rule, scope(), &sub, summary, figures)
                                    .authorised(matched),
                            );
                        }
                    }
                    if p.min_sources.is_none() && p.repeat_count.is_none() {
                        continue;
                    }
                    let Some(RuleState::Destinations { windows, fired }) =
                        self.rule_state.get_mut(idx)
                    else {
                        continue;
                    };
                    let first = self.pushes;
                    let dw = windows
                        .entry(s.to)
                        .or_insert_with(|| DestWindow::starting_at(first));
                    let seq = dw.push(t, (from, s.asset), share_bps, p.window);
                    self.pushes += 1;
                    refs.push(WindowRef::new(DEST | u16::try_from(idx).unwrap_or(0), seq));
                    let sum = dw.summary(t, p.window, p.min_source_share_bps);
                    let converging = fresh
                        && sum.total_share_bps >= u64::from(p.min_total_share_bps)
                        && (p.min_sources.is_some_and(|m| sum.sources >= m)
                            || p.repeat_count.is_some_and(|r| sum.payments >= r));
                    if !converging {
                        if !fired.is_empty() {
                            fired.remove(&s.to);
                        }
                    } else if fired.insert(s.to) {
                        let summary = format!(
                            "{} received {} payments from {} source(s) (wallet, asset or chain) in {}, {} of their balances, within {} of first being paid",
                            tr.to,
                            sum.payments,
                            sum.sources,
                            humantime::format_duration(p.window),
                            pct(sum.total_share_bps),
                            humantime::format_duration(p.fresh_for)
                        );
                        let figures = vec![
                            ("payments".to_string(), sum.payments.to_string()),
                            ("sources".to_string(), sum.sources.to_string()),
                            ("total_share".to_string(), pct(sum.total_share_bps)),
                        ];
                        let sub = Subject::of_transfer(tr, s.usd());
                        found.push(pending(t, rule, scope(), &sub, summary, figures));
                    }
                }
                _ => {}
            }
        }
        if first_time {
            if let Some(fp) = self.state.first_paid.get_mut(s.to.0 as usize)
                && *fp == 0
            {
                *fp = paid_at(t);
            }
            let h = self.state.history.entry((from, s.asset)).or_default();
            h.count += 1;
            if s.amount > h.max {
                h.max = s.amount;
            }
        }
        let st = &mut self.state.slab[i as usize];
        st.judged = true;
        st.share_bps = share_bps;
        st.matched = matched;
        if let Some((intent_t, by_hash)) = taken {
            st.intent_t = intent_t;
            st.intent_by_hash = by_hash;
        }
        self.state.refs[i as usize] = refs;
    }

    fn on_approval(
        &mut self,
        t: Timestamp,
        a: &drainguard_model::Approval,
        found: &mut Vec<Pending>,
    ) {
        let chain = self.state.chain_id(&a.chain);
        let owner = self
            .state
            .addrs
            .get(&a.owner)
            .and_then(|id| self.state.wallet(chain, id));
        let Some(owner) = owner.filter(|&w| self.state.is_watched(w)) else {
            return;
        };
        let tripwire = self.state.is_tripwire(owner)
            && self
                .state
                .asset_lookup(&a.asset)
                .is_some_and(|asset| self.state.holds_known(owner, asset));
        let subject = Subject {
            chain: a.chain.clone(),
            wallet: a.owner.clone(),
            asset: a.asset.clone(),
            evidence: Evidence {
                chain: a.chain.clone(),
                tx_hash: a.tx_hash.clone(),
                index: 0,
                stage: "approval".to_string(),
                from: a.owner.clone(),
                to: a.spender.clone(),
                asset: a.asset.clone(),
                amount: a.amount.to_string(),
                usd: 0.0,
            },
            key: format!("{}:{}:approval", a.chain, a.tx_hash),
        };
        let unlimited = a.amount == Amount::MAX;
        let standard = match a.standard {
            drainguard_model::ApprovalStandard::Erc20 => "approve",
            drainguard_model::ApprovalStandard::Permit => "permit",
            drainguard_model::ApprovalStandard::Erc721All => "setApprovalForAll",
        };
        for rule in &self.rules.rules {
            if !rule.applies_to(&a.chain) {
                continue;
            }
            let scope = || scope_of(rule.scope, &a.chain, &a.owner, &a.asset);
            let (summary, figures) = match &rule.kind {
                RuleKind::Tripwire if tripwire => (
                    format!(
                        "tripwire {} signed an approval of {} over its {}: its key is in an attacker's hands",
                        a.owner, a.spender, a.asset
                    ),
                    vec![("spender".to_string(), a.spender.to_string())],
                ),
                RuleKind::Denylist(p) if p.addresses.contains(&a.spender) => (
                    format!(
                        "{} approved denylisted spender {} for {}",
                        a.owner, a.spender, a.asset
                    ),
                    vec![("spender".to_string(), a.spender.to_string())],
                ),
                RuleKind::Approval(p) if p.approvals && !p.allowlist.contains(&a.spender) => (
                    format!(
                        "{} gave {} ({standard}) {} allowance over its {}: spender not on the allowlist",
                        a.owner,
                        a.spender,
                        if unlimited {
                            "an unlimited".to_string()
                        } else {
                            format!("a {} base-unit", a.amount)
                        },
                        a.asset
                    ),
                    vec![
                        ("spender".to_string(), a.spender.to_string()),
                        ("standard".to_string(), standard.to_string()),
                        (
                            "amount".to_string(),
                            if unlimited {
                                "unlimited".to_string()
                            } else {
                                a.amount.to_string()
                            },
                        ),
                    ],
                ),
                _ => continue,
            };
            found.push(pending(t, rule, scope(), &subject, summary, figures));
        }
    }

    fn on_admin(
        &mut self,
        t: Timestamp,
        a: &drainguard_model::AdminChange,
        found: &mut Vec<Pending>,
    ) {
        let chain = self.state.chain_id(&a.chain);
        if self
            .state
            .addrs
            .get(&a.wallet)
            .and_then(|id| self.state.wallet(chain, id))
            .is_none()
        {
            return;
        }
        let action = format!("{:?}", a.action);
        let subject = Subject {
            chain: a.chain.clone(),
            wallet: a.wallet.clone(),
            asset: Asset::new("*"),
            evidence: Evidence {
                chain: a.chain.clone(),
                tx_hash: a.tx_hash.clone(),
                index: 0,
                stage: "admin".to_string(),
                from: a.wallet.clone(),
                to: a.target.clone(),
                asset: Asset::new("*"),
                amount: "0".to_string(),
                usd: 0.0,
            },
            key: format!("{}:{}:admin", a.chain, a.tx_hash),
        };
        for rule in &self.rules.rules {
            let RuleKind::Approval(p) = &rule.kind else {
                continue;
            };
            if !rule.applies_to(&a.chain) || !p.admin || p.allowlist.contains(&a.target) {
                continue;
            }
            let summary = format!(
                "contract wallet {} changed its control: {action} {} (not on the allowlist)",
                a.wallet, a.target
            );
            let figures = vec![
                ("action".to_string(), action.clone()),
                ("target".to_string(), a.target.to_string()),
            ];
            let scope = scope_of(rule.scope, &a.chain, &a.wallet, &subject.asset);
            found.push(pending(t, rule, scope, &subject, summary, figures));
        }
    }

    fn floors_after(
        &mut self,
        t: Timestamp,
        s: &TransferState,
        tr: &Transfer,
        found: &mut Vec<Pending>,
    ) {
        if !self.has_floors {
            return;
        }
        for w in [s.from, s.to_wallet].into_iter().flatten() {
            self.check_floors(t, w, &tr.asset, found);
        }
    }

    /// Checks balance floors after a balance of `wallet` in `asset` moved:
    /// one finding per fall under the floor, re-armed once it is back over.
    fn check_floors(
        &mut self,
        t: Timestamp,
        w: WalletIdx,
        asset: &drainguard_model::Asset,
        found: &mut Vec<Pending>,
    ) {
        let Some(wallet) = self.state.wallets.get(w as usize) else {
            return;
        };
        if wallet.role != drainguard_model::WalletRole::Hot {
            return;
        }
        let (chain, address) = (
            self.state.chains[usize::from(wallet.chain)].clone(),
            self.state.wallet_address(wallet),
        );
        let Some(asset_id) = self.state.asset_lookup(asset) else {
            return;
        };
        let Some((balance, decimals)) = self.state.balances.get(&(w, asset_id)).copied() else {
            return;
        };
        for (rule, rs) in self.rules.rules.iter().zip(self.rule_state.iter_mut()) {
            let (RuleKind::BalanceDrain(p), RuleState::Floors { fired }) = (&rule.kind, rs) else {
                continue;
            };
            let Some((_, floor)) = p.floors.iter().find(|(a, _)| a == asset) else {
                continue;
            };
            if !rule.applies_to(&chain) {
                continue;
            }
            let Ok(floor_units) = Amount::parse_decimal(floor, decimals) else {
                continue;
            };
            if balance >= floor_units {
                fired.remove(&(w, asset_id));
                continue;
            }
            if !fired.insert((w, asset_id)) {
                continue;
            }
            let shown = balance.to_decimal_string(decimals);
            let subject = Subject {
                chain: chain.clone(),
                wallet: address.clone(),
                asset: asset.clone(),
                evidence: Evidence {
                    chain: chain.clone(),
                    tx_hash: TxHash::new(""),
                    index: 0,
                    stage: "balance".to_string(),
                    from: address.clone(),
                    to: address.clone(),
                    asset: asset.clone(),
                    amount: shown.clone(),
                    usd: Usd::of(balance, decimals, self.state.price(asset_id)).to_f64(),
                },
                key: format!("{chain}:{address}:{asset}:floor:{}", t.0),
            };
            let summary = format!("{address} holds {shown} {asset}, under its floor of {floor}");
            let figures = vec![
                ("balance".to_string(), shown.clone()),
                ("floor".to_string(), floor.clone()),
            ];
            found.push(pending(
                t,
                rule,
                scope_of(rule.scope, &chain, &address, asset),
                &subject,
                summary,
                figures,
            ));
        }
    }

    /// The pre-signing verdict on a withdrawal intent: the reasons to hold
    /// it, and the freeze already covering its wallet, if any (`None`:
    /// verdicts are off, or the wallet is not the exchange's).
    fn verdict(&mut self, i: &Intent, key: IntentKey) -> Option<PresignCheck> {
        let p = &self.rules.presign;
        if !p.enabled {
            return None;
        }
        let (chain, wallet, to, asset) = key;
        let w = self.state.wallet(chain, wallet)?;
        let mut reasons = Vec::new();
        let mut unusual = None;
        let balance = self.state.balance(w, asset);
        let share = balance.and_then(|b| i.amount.bps_of(b)).unwrap_or(0);
        if balance.is_some() && share >= p.max_share_bps {
            reasons.push(format!(
                "{} {} would take {} of the wallet's balance in one withdrawal (limit {}): review it and pay it from cold storage",
                i.amount.to_decimal_string(i.decimals),
                i.asset,
                pct(u64::from(share)),
                pct(u64::from(p.max_share_bps))
            ));
        }
        let history = self
            .state
            .history
            .get(&(w, asset))
            .copied()
            .unwrap_or_default();
        // The learned limit: what this wallet's customers withdraw. Until
        // `history_min` withdrawals are known it is not judged (the share
        // limit above applies alone); after, a withdrawal far above them
        // alerts. It never holds: a whale is many times a wallet's usual
        // largest, and a held legitimate withdrawal is a false freeze.
        if history.count >= p.history_min
            && share >= p.min_share_bps
            && at_least(i.amount, history.max, p.history_multiple)
        {
            unusual = Some(format!(
                "{} {} is {:.1}x the wallet's largest of {} earlier withdrawals ({}) and {} of its balance",
                i.amount.to_decimal_string(i.decimals),
                i.asset,
                units(i.amount) as f64 / units(history.max).max(1) as f64,
                history.count,
                history.max.to_decimal_string(i.decimals),
                pct(u64::from(share))
            ));
        }
        for rule in self
            .index
            .denylist
            .iter()
            .filter_map(|&r| self.rules.rules.get(r))
        {
            if !rule.applies_to(&i.chain) {
                continue;
            }
            if let RuleKind::Denylist(d) = &rule.kind
                && p.denylist
                && d.addresses.contains(&i.to)
            {
                reasons.push(format!("destination {} is denylisted ({})", i.to, rule.id));
            }
        }
        if p.window {
            // Would this withdrawal push a freezing share window over its
            // limit?
            for (rule, rs) in self
                .index
                .windows
                .iter()
                .filter_map(|&r| self.rules.rules.get(r).zip(self.rule_state.get(r)))
            {
                let (RuleKind::OutflowWindow(op), RuleState::Windows { spec, .. }) =
                    (&rule.kind, rs)
                else {
                    continue;
                };
                // A joined window freezes only with its concentration,
                // which one intent cannot show.
                if rule.action != Action::Freeze
                    || rule.mode != Mode::Enforce
                    || !op.per_asset
                    || op.concentration.is_some()
                    || !rule.applies_to(&i.chain)
                {
                    continue;
                }
                let (Some(limit), Some(ss)) =
                    (op.max_share_bps, self.specs.get(usize::from(*spec)))
                else {
                    continue;
                };
                let key = match ss.spec.level {
                    Level::Wallet => WindowKey::Wallet(w, Some(asset)),
                    Level::Asset => WindowKey::Asset(chain, asset),
                    Level::Chain => WindowKey::Chain(chain, Some(asset)),
                    Level::Global => continue,
                };
                let (sum, applied) = ss
                    .windows
                    .get(&key)
                    .map_or((0, 0), |w| (w.sum(), w.sum_applied()));
                let Some(bal) = self.state.scope_balance(&key) else {
                    continue;
                };
                let after = bps(
                    sum.saturating_add(units(i.amount)),
                    units(bal).saturating_add(applied),
                );
                if after > u64::from(limit) {
                    reasons.push(format!(
                        "it would take {} of the balance out within the window of {} (limit {})",
                        pct(after),
                        rule.id,
                        pct(u64::from(limit))
                    ));
                }
            }
        }
        if p.converging {
            for (rule, rs) in self
                .index
                .destinations
                .iter()
                .filter_map(|&r| self.rules.rules.get(r).zip(self.rule_state.get(r)))
            {
                let (RuleKind::NewDestination(np), RuleState::Destinations { fired, .. }) =
                    (&rule.kind, rs)
                else {
                    continue;
                };
                if np.min_sources.is_some() && fired.contains(&to) {
                    reasons.push(format!("destination {} is a new address already collecting from several hot wallets ({})", i.to, rule.id));
                }
            }
        }
        // A frozen wallet's withdrawals are held too, but that is the
        // existing incident, not a new one: it adds a reason, never a
        // finding of its own.
        let frozen = (p.frozen && !self.freezes.is_empty()).then(|| {
            let scope = Scope::Wallet(i.chain.clone(), i.wallet.clone());
            self.freezes
                .iter()
                .find(|f| f.scope.covers(&scope))
                .map(|f| format!("its wallet is frozen ({}, {})", f.id, f.scope))
        });
        Some(PresignCheck {
            reasons,
            frozen: frozen.flatten(),
            unusual,
        })
    }

    /// Handles an intent: its verdict first; an allowed intent joins the
    /// book, a held one does not (an outflow signed for it anyway is then
    /// unmatched).
    fn on_intent(&mut self, t: Timestamp, i: &Intent, found: &mut Vec<Pending>) -> Verdict {
        let key = self.state.intent_key(i);
        let check = self.verdict(i, key);
        if let Some(note) = check.as_ref().and_then(|c| c.unusual.clone()) {
            found.push(self.presign_finding(t, i, note, None));
        }
        match check {
            None => self.state.add_intent(t, key, i),
            Some(PresignCheck {
                reasons,
                frozen: None,
                ..
            }) if reasons.is_empty() => self.state.add_intent(t, key, i),
            // The wallet is already frozen: the hold belongs to that
            // incident (no new finding), and the intent stays matchable so
            // withdrawals the exchange signed before the freeze took effect
            // are not reported as thefts.
            Some(PresignCheck {
                mut reasons,
                frozen: Some(frozen),
                ..
            }) => {
                self.state.add_intent(t, key, i);
                reasons.push(frozen);
                return Verdict::Hold { reasons };
            }
            Some(PresignCheck { reasons, .. }) => {
                let summary = format!(
                    "held withdrawal {}: {} {} from {} to {}: {}",
                    i.id,
                    i.amount.to_decimal_string(i.decimals),
                    i.asset,
                    i.wallet,
                    i.to,
                    reasons.join("; ")
                );
                found.push(self.presign_finding(t, i, summary, Some(&reasons)));
                return Verdict::Hold { reasons };
            }
        }
        Verdict::Allow
    }

    /// A pre-signing finding about intent `i`: a hold (critical, a freeze
    /// of scope `intent:<id>`) when `reasons` are given, else a warning
    /// that lets it through.
    fn presign_finding(
        &self,
        t: Timestamp,
        i: &Intent,
        summary: String,
        reasons: Option<&[String]>,
    ) -> Pending {
        let evidence = Evidence {
            chain: i.chain.clone(),
            tx_hash: i.tx_hash.clone().unwrap_or_else(|| TxHash::new("")),
            index: 0,
            stage: "intent".to_string(),
            from: i.wallet.clone(),
            to: i.to.clone(),
            asset: i.asset.clone(),
            amount: i.amount.to_decimal_string(i.decimals),
            usd: Usd::of(
                i.amount,
                i.decimals,
                self.state
                    .price(self.state.asset_lookup(&i.asset).unwrap_or(0)),
            )
            .to_f64(),
        };
        let scope = Scope::Intent(i.id.clone());
        let hold = reasons.is_some();
        let figures = match reasons {
            Some(reasons) => reasons
                .iter()
                .enumerate()
                .map(|(n, r)| (format!("reason_{}", n + 1), r.clone()))
                .collect(),
            None => vec![("verdict".to_string(), "allow".to_string())],
        };
        Pending {
            finding: Finding {
                t,
                rule: PRESIGN_RULE.to_string(),
                kind: "presign".to_string(),
                severity: if hold {
                    drainguard_model::Severity::Critical
                } else {
                    drainguard_model::Severity::Warning
                },
                scope: scope.clone(),
                chain: Some(i.chain.clone()),
                wallet: Some(i.wallet.clone()),
                summary: if hold {
                    summary
                } else {
                    format!("allowed withdrawal {}, unusually large: {summary}", i.id)
                },
                shadow: false,
                wants_freeze: hold,
                figures,
                evidence: vec![evidence],
            },
            freeze_scope: hold.then_some(scope),
            evidence_key: format!("intent:{}", i.id),
        }
    }

    /// Advances the engine's clock without an event, for the checks that
    /// depend on time passing (a blind chain). The daemon calls it every
    /// second; replay needs no ticks, its events carry the time.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<Output>) {
        if now > self.now {
            self.now = now;
        }
        let mut found = Vec::new();
        if self.has_blind {
            self.check_blind(self.now, &mut found);
        }
        if !found.is_empty() {
            self.correlate(self.now, &mut found);
            self.emit(found, out);
        }
    }

    /// A chain is blind when its head has not moved for k expected block
    /// times: one finding per outage, re-armed by the next head.
    fn check_blind(&mut self, now: Timestamp, found: &mut Vec<Pending>) {
        self.next_blind_check = now.0.saturating_add(1_000_000_000);
        if now.0 < self.blind_next {
            return;
        }
        // The due times kept may be early (heads since only moved them
        // later): worked out again first, the whole check runs only once
        // one of them has truly come.
        self.refresh_all_blind();
        if now.0 < self.blind_next {
            return;
        }
        self.check_blind_now(now, found);
        self.refresh_all_blind();
    }

    /// Works every chain's due time out again: chains with heads, and
    /// chains known only from an outage.
    fn refresh_all_blind(&mut self) {
        for c in 0..self.state.heads.len().max(self.watch.len()) {
            self.refresh_blind(c);
        }
    }

    /// Tells the blind rules whether every endpoint of a chain's source is
    /// failing: since when and on which call, or `None` once one answers.
    /// The rules find the chain blind once an outage has lasted their
    /// `endpoints_down_for`, without waiting for k block times; the
    /// finding clears when an endpoint answers again.
    pub fn set_outage(
        &mut self,
        now: Timestamp,
        chain: &Chain,
        outage: Option<(Timestamp, String)>,
        out: &mut Vec<Output>,
    ) {
        let c = usize::from(self.state.chain_id(chain));
        if self.watch.len() <= c {
            self.watch.resize_with(c + 1, ChainWatch::default);
        }
        // A source repeats its outage each second: the first start stands.
        let began = outage.is_some() && self.watch[c].outage.is_none();
        let ended = outage.is_none() && self.watch[c].outage.is_some();
        if !began && !ended {
            return;
        }
        self.watch[c].outage = outage;
        if ended && self.blind_of(c) == Blind::Outage {
            set_blind(&mut self.watch, c, Blind::Seen);
            out.push(Output::Recovered(Recovery {
                t: now,
                kind: "blind".to_string(),
                chain: chain.clone(),
                summary: format!("{chain}: an endpoint answers again"),
            }));
        }
        if self.has_blind {
            self.refresh_blind(c);
        }
    }

    /// Tells the blind rules a chain's expected block time, as its
    /// source is configured with it; a rule's own `block_times` still
    /// come first.
    pub fn set_block_time(&mut self, chain: &Chain, block_time: std::time::Duration) {
        match self.known_block_times.iter_mut().find(|(c, _)| c == chain) {
            Some((_, d)) => *d = block_time,
            None => self.known_block_times.push((chain.clone(), block_time)),
        }
        for w in &mut self.watch {
            w.plan = None;
        }
        self.refresh_all_blind();
    }

    /// The terms of the blind rules that watch `chain`.
    fn plan_blind(&self, chain: &Chain) -> SmallVec<[BlindTerm; 1]> {
        let mut terms = SmallVec::new();
        for rule in self
            .blind_rules
            .iter()
            .filter_map(|&r| self.rules.rules.get(r))
        {
            let RuleKind::Blind(p) = &rule.kind else {
                continue;
            };
            if !rule.applies_to(chain) {
                continue;
            }
            terms.push(BlindTerm::of(p, &self.known_block_times, chain));
        }
        terms
    }

    fn blind_of(&self, c: usize) -> Blind {
        self.watch.get(c).map_or(Blind::Seen, |w| w.blind)
    }

    /// Recomputes when chain `c` could next be found blind: on every head,
    /// so it touches only the chain's own [`ChainWatch`].
    fn refresh_blind(&mut self, c: usize) {
        if self.watch.len() <= c {
            self.watch.resize_with(c + 1, ChainWatch::default);
        }
        if self.watch[c].plan.is_none() {
            let plan = self
                .state
                .chains
                .get(c)
                .map(|chain| self.plan_blind(chain))
                .unwrap_or_default();
            self.watch[c].plan = Some(plan);
        }
        let w = &mut self.watch[c];
        let new = w.due(self.state.heads.get(c));
        let old = std::mem::replace(&mut w.due, new);
        self.blind_next = if new <= self.blind_next {
            new
        } else if old == self.blind_next {
            self.watch.iter().map(|w| w.due).min().unwrap_or(i64::MAX)
        } else {
            self.blind_next
        };
    }

    fn check_blind_now(&mut self, now: Timestamp, found: &mut Vec<Pending>) {
        for rule in &self.rules.rules {
            let RuleKind::Blind(p) = &rule.kind else {
                continue;
            };
            for c in 0..self.watch.len() {
                let (Some((since, call)), Some(chain)) =
                    (self.watch[c].outage.clone(), self.state.chains.get(c))
                else {
                    continue;
                };
                let down =
                    Duration::from_nanos(u64::try_from(now.0.saturating_sub(since.0)).unwrap_or(0));
                if down < p.endpoints_down_for
                    || !rule.applies_to(chain)
                    || self.blind_of(c) != Blind::Seen
                {
                    continue;
                }
                set_blind(&mut self.watch, c, Blind::Outage);
                let summary = format!(
                    "{chain} is blind: every endpoint has failed for {:.0} s (limit {:.0} s), last on {call}",
                    down.as_secs_f64(),
                    p.endpoints_down_for.as_secs_f64()
                );
                let last_block = self.state.heads.get(c).map_or(0, |t| t.last_block);
                let figures = vec![
                    ("last_block".to_string(), last_block.to_string()),
                    (
                        "seconds_every_endpoint_failing".to_string(),
                        format!("{:.0}", down.as_secs_f64()),
                    ),
                    (
                        "endpoints_down_for".to_string(),
                        humantime::format_duration(p.endpoints_down_for).to_string(),
                    ),
                ];
                found.push(blind_finding(
                    now,
                    rule,
                    chain,
                    summary,
                    figures,
                    format!("{chain}:blind:outage:{}", since.0),
                ));
            }
            for (c, track) in self.state.heads.iter().enumerate() {
                let chain = &self.state.chains[c];
                if track.last_t.0 == 0 || !rule.applies_to(chain) || self.blind_of(c) != Blind::Seen
                {
                    continue;
                }
                let Some(expected) =
                    BlindTerm::of(p, &self.known_block_times, chain).expected(track)
                else {
                    continue;
                };
                let silent = now.0.saturating_sub(track.last_t.0) as f64;
                if expected <= 0.0 || silent <= p.k * expected {
                    continue;
                }
                set_blind(&mut self.watch, c, Blind::SilentHead);
                let summary = format!(
                    "{chain} is blind: no new head for {:.0} s, {:.1} expected block times of {:.1} s (limit {})",
                    silent / 1e9,
                    silent / expected,
                    expected / 1e9,
                    p.k
                );
                let figures = vec![
                    ("last_block".to_string(), track.last_block.to_string()),
                    (
                        "seconds_without_head".to_string(),
                        format!("{:.0}", silent / 1e9),
                    ),
                    (
                        "expected_block_seconds".to_string(),
                        format!("{:.1}", expected / 1e9),
                    ),
                ];
                found.push(blind_finding(
                    now,
                    rule,
                    chain,
                    summary,
                    figures,
                    format!("{chain}:blind:{}", track.last_block),
                ));
            }
        }
    }

    /// Processes a withdrawal intent as [`Engine::process`] does and
    /// returns its pre-signing verdict, for the intents API.
    pub fn process_intent(
        &mut self,
        t: Timestamp,
        intent: &Intent,
        out: &mut Vec<Output>,
    ) -> Verdict {
        if t > self.now {
            self.now = t;
        }
        self.stats.events += 1;
        let mut found = Vec::new();
        let verdict = self.on_intent(t, intent, &mut found);
        if !found.is_empty() {
            self.correlate(t, &mut found);
            self.emit(found, out);
        }
        verdict
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
                // Only findings that freeze on their own merit escalate:
                // volume alerts on several chains during a withdrawal rush,
                // authorised outflows, and one withdrawal held before it is
                // signed must not halt everything.
                if !f.shadow
                    && f.wants_freeze
                    && f.severity >= p.min_severity
                    && f.kind != "correlation"
                    && f.kind != "presign"
                {
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
                if let Some(c) = c.as_ref().filter(|c| !chains.contains(c)) {
                    chains.push(c);
                }
                if let Some(w) = w.as_ref().filter(|w| !wallets.contains(w)) {
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
                let supersedes = self
                    .freezes
                    .iter()
                    .filter(|f| scope.covers(&f.scope))
                    .map(|f| f.id.clone())
                    .collect();
                Some(Freeze {
                    id,
                    t: p.finding.t,
                    scope,
                    reason: format!("{}: {}", p.finding.rule, p.finding.summary),
                    rule: p.finding.rule.clone(),
                    severity: p.finding.severity,
                    findings: vec![p.finding.clone()],
                    supersedes,
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The division-free share test agrees with the share itself, at
        /// the edges of 128 bits too.
        #[test]
        fn bps_over_is_bps_greater_than_the_limit(
            part in prop_oneof![any::<u128>(), 0u128..1_000_000],
            whole in prop_oneof![any::<u128>(), 0u128..1_000_000],
            limit in prop_oneof![any::<u32>().prop_map(u64::from), Just(u64::MAX - 1)],
        ) {
            prop_assert_eq!(bps_over(part, whole, limit), bps(part, whole) > limit);
        }
    }
}
