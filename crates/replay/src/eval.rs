//! Many generated days through the engine: how often it freezes an exchange
//! that is not being robbed, and how fast and at what cost it stops the
//! incidents it should.
//!
//! Every day is generated with its own seed and replayed by a fresh engine
//! (a cold start each day, the worst case for anything learned). Normal
//! days run at several volumes, with and without intents; every freeze on
//! them is false, and so is one before the first attack record of an
//! incident day. Alongside, the legitimate withdrawals each day generated
//! are measured, so that a report of no false freezes also says against
//! what: whales of $100k or more, to addresses never paid, some taking a
//! large share of a small hot wallet.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use drainguard_engine::RuleSet;
use drainguard_model::{
    Address, Amount, Asset, Chain, EventKind, Price, Scope, Stage, Usd, WalletRole,
};
use drainguard_sim::{Label, Record, SimConfig, generate, preset};
use serde::Serialize;

use crate::{Observer, Replay, replay_observed};

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalConfig {
    /// Normal days per volume and intents setting.
    pub days: u32,
    /// The first seed; every day gets its own seed from it.
    pub seed: u64,
    /// Withdrawal volumes of the normal days (1.0 is a normal day).
    pub volumes: Vec<f64>,
    /// Days of each incident preset, with and without intents.
    pub incident_days: u32,
    /// Worker threads (days run in parallel).
    pub threads: usize,
}

impl Default for EvalConfig {
    /// What the README reports: 30 days at 0.5×, 1× and 6×, each with and
    /// without intents (180 days), and 5 days of each incident both ways.
    fn default() -> Self {
        EvalConfig {
            days: 30,
            seed: 1,
            volumes: vec![0.5, 1.0, 6.0],
            incident_days: 5,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// The incident presets and what catching each means.
pub const INCIDENTS: &[&str] = &["coinex", "abuse", "giant", "approval", "tripwire"];

/// A legitimate withdrawal of at least this many dollars is a whale's.
const WHALE_USD: f64 = 100_000.0;
/// A "large share" of the minor chain's hot wallet.
const LARGE_SHARE: f64 = 0.25;

/// A freeze on a day nobody was robbing (yet).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FalseFreeze {
    /// The day's preset.
    pub preset: String,
    /// Its seed.
    pub seed: u64,
    /// Its volume.
    pub volume: f64,
    /// Whether it had intents.
    pub intents: bool,
    /// When.
    pub t: String,
    /// What it froze.
    pub scope: String,
    /// Why.
    pub reason: String,
}

/// The legitimate withdrawals of some days.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Withdrawals {
    /// Legitimate outflows from the exchange's wallets to others.
    pub count: u64,
    /// Those of at least $100k.
    pub whales: u64,
    /// Whales to an address the exchange had not paid before that day.
    pub whales_to_new: u64,
    /// The largest, in USD.
    pub largest_usd: f64,
    /// The largest share of the minor chain's hot-wallet balance one
    /// withdrawal took.
    pub largest_minor_share: f64,
    /// Withdrawals taking over 25% of the minor chain's hot-wallet balance.
    pub over_quarter_of_minor: u64,
    /// The largest share of any hot wallet's balance one took.
    pub largest_share: f64,
}

impl Withdrawals {
    fn add(&mut self, o: &Withdrawals) {
        self.count += o.count;
        self.whales += o.whales;
        self.whales_to_new += o.whales_to_new;
        self.largest_usd = self.largest_usd.max(o.largest_usd);
        self.largest_minor_share = self.largest_minor_share.max(o.largest_minor_share);
        self.over_quarter_of_minor += o.over_quarter_of_minor;
        self.largest_share = self.largest_share.max(o.largest_share);
    }
}

/// The normal days of one volume and intents setting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NormalGroup {
    /// Withdrawal volume.
    pub volume: f64,
    /// Whether intents flowed.
    pub intents: bool,
    /// Days run.
    pub days: u32,
    /// Freezes on them (every one false).
    pub false_freezes: u64,
    /// Per 30 days.
    pub false_freezes_per_month: f64,
    /// Alerts (findings that froze nothing) per day.
    pub alerts_per_day: f64,
    /// The legitimate withdrawals they held.
    pub withdrawals: Withdrawals,
}

/// The days of one incident preset, with or without intents.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentGroup {
    /// The preset.
    pub preset: String,
    /// Whether intents flowed.
    pub intents: bool,
    /// Days run.
    pub days: u32,
    /// Days on which it was caught as the preset requires.
    pub caught: u32,
    /// False freezes (before the first attack record).
    pub false_freezes: u64,
    /// The worst detection delay in scenario seconds (none: some day had
    /// no freeze).
    pub worst_delay_seconds: Option<f64>,
    /// The worst share of the attack's value gone before the freeze.
    pub worst_lost_share: f64,
    /// The most value gone before the freeze, in USD.
    pub worst_lost_usd: f64,
    /// What catching means for this preset.
    pub requirement: String,
}

/// The whole evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// Normal days, by volume and intents.
    pub normal: Vec<NormalGroup>,
    /// Incident days, by preset and intents.
    pub incidents: Vec<IncidentGroup>,
    /// Every false freeze.
    pub false_freezes: Vec<FalseFreeze>,
    /// Days simulated in all.
    pub days: u64,
    /// Records replayed in all.
    pub records: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Why the evaluation fails (empty: it passes).
    pub failures: Vec<String>,
}

/// One day to run.
#[derive(Debug, Clone)]
struct Job {
    preset: &'static str,
    seed: u64,
    volume: f64,
    intents: bool,
}

/// What one day gave.
#[derive(Debug)]
struct DayResult {
    job: Job,
    records: u64,
    false_freezes: Vec<FalseFreeze>,
    alerts: u64,
    withdrawals: Withdrawals,
    caught: bool,
    delay: Option<f64>,
    lost_usd: f64,
    lost_share: f64,
}

/// Runs the evaluation with `rules` (the defaults unless the user gave
/// others).
pub fn evaluate(config: &EvalConfig, rules: &RuleSet) -> EvalReport {
    let started = Instant::now();
    let mut jobs = Vec::new();
    let mut seed = config.seed;
    let mut next_seed = || {
        seed = seed.wrapping_add(1);
        seed
    };
    for &volume in &config.volumes {
        for intents in [true, false] {
            for _ in 0..config.days {
                jobs.push(Job {
                    preset: "normal",
                    seed: next_seed(),
                    volume,
                    intents,
                });
            }
        }
    }
    for &preset in INCIDENTS {
        for intents in [true, false] {
            for _ in 0..config.incident_days {
                jobs.push(Job {
                    preset,
                    seed: next_seed(),
                    volume: 1.0,
                    intents,
                });
            }
        }
    }
    // The busiest days first, so that no thread is left with one at the end.
    jobs.sort_by(|a, b| b.volume.total_cmp(&a.volume));
    let results = run_parallel(&jobs, config.threads.max(1), rules);
    summarize(config, &results, started.elapsed())
}

fn run_parallel(jobs: &[Job], threads: usize, rules: &RuleSet) -> Vec<DayResult> {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::with_capacity(jobs.len()));
    std::thread::scope(|s| {
        for _ in 0..threads.min(jobs.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let r = run_day(job, rules.clone());
                    out.lock().unwrap_or_else(PoisonError::into_inner).push(r);
                }
            });
        }
    });
    let mut results = out.into_inner().unwrap_or_else(PoisonError::into_inner);
    results.sort_by_key(|r| r.job.seed);
    results
}

fn run_day(job: &Job, rules: RuleSet) -> DayResult {
    let config = preset(job.preset, job.seed).map(|c| SimConfig {
        volume: job.volume,
        intents: job.intents,
        ..c
    });
    let records = config.map(|c| generate(&c)).unwrap_or_default();
    let count = records.len() as u64;
    let mut measure = Measure::default();
    let replay = match replay_observed(records.into_iter().map(Ok), rules, &mut measure) {
        Ok(r) => r,
        // Generated records are valid: an error here is a bug, reported
        // as a day not caught rather than a panic.
        Err(_) => {
            return DayResult {
                job: job.clone(),
                records: count,
                false_freezes: Vec::new(),
                alerts: 0,
                withdrawals: Withdrawals::default(),
                caught: false,
                delay: None,
                lost_usd: 0.0,
                lost_share: 0.0,
            };
        }
    };
    judge(job, count, &replay, measure.finish())
}

/// Whether an incident day was caught as its preset requires.
fn caught(preset: &str, intents: bool, replay: &Replay) -> bool {
    let Some(score) = &replay.report.score else {
        return false;
    };
    let first = replay.freezes.first();
    let delay = score.detection_delay_seconds;
    match preset {
        // At the first theft: within a second of scenario time.
        "coinex" => delay.is_some_and(|d| d < 1.0),
        // Before a tenth of its value left.
        "abuse" => delay.is_some() && score.attack_usd_before_freeze < 0.1 * score.attack_usd_total,
        // Held at its intent (with intents); without, nothing announces it
        // and one large payment is ambiguous: caught if anything froze
        // before a tenth of it left (nothing did: see the README).
        "giant" if intents => {
            delay == Some(0.0) && first.is_some_and(|f| matches!(f.scope, Scope::Intent(_)))
        }
        "giant" => delay.is_some() && score.attack_usd_before_freeze < 0.1 * score.attack_usd_total,
        // Frozen at the approval, before the spender moves anything.
        "approval" => delay == Some(0.0),
        // Everything frozen at once.
        "tripwire" => delay == Some(0.0) && first.is_some_and(|f| f.scope == Scope::Global),
        _ => false,
    }
}

fn requirement(preset: &str, intents: bool) -> &'static str {
    match preset {
        "coinex" => "frozen at the first theft (delay < 1 s)",
        "abuse" => "frozen before 10% of its value left",
        "giant" if intents => "held at its intent (delay 0, scope intent)",
        "giant" => "no intent to hold: frozen before 10% of its value left",
        "approval" => "frozen at the approval (delay 0)",
        "tripwire" => "frozen globally at the tripwire's outflow (delay 0)",
        _ => "",
    }
}

fn judge(job: &Job, records: u64, replay: &Replay, withdrawals: Withdrawals) -> DayResult {
    let score = replay.report.score.as_ref();
    let first_attack = score.and_then(|s| s.first_attack_t.clone());
    let false_freezes = replay
        .report
        .freezes
        .iter()
        .filter(|f| first_attack.as_ref().is_none_or(|a| f.t < *a))
        .map(|f| FalseFreeze {
            preset: job.preset.to_string(),
            seed: job.seed,
            volume: job.volume,
            intents: job.intents,
            t: f.t.clone(),
            scope: f.scope.clone(),
            reason: f.reason.chars().take(300).collect(),
        })
        .collect();
    let frozen: HashSet<&str> = replay
        .freezes
        .iter()
        .flat_map(|f| f.findings.iter().map(|x| x.rule.as_str()))
        .collect();
    let alerts = replay
        .findings
        .iter()
        .filter(|f| !f.wants_freeze || !frozen.contains(f.rule.as_str()))
        .count() as u64;
    let (lost_usd, lost_share) = score.map_or((0.0, 0.0), |s| {
        let share = if s.attack_usd_total > 0.0 {
            s.attack_usd_before_freeze / s.attack_usd_total
        } else {
            0.0
        };
        (s.attack_usd_before_freeze, share)
    });
    DayResult {
        job: job.clone(),
        records,
        false_freezes,
        alerts,
        withdrawals,
        caught: job.preset == "normal" || caught(job.preset, job.intents, replay),
        delay: score.and_then(|s| s.detection_delay_seconds),
        lost_usd,
        lost_share,
    }
}

fn summarize(config: &EvalConfig, results: &[DayResult], took: Duration) -> EvalReport {
    let mut normal = Vec::new();
    let mut failures = Vec::new();
    for &volume in &config.volumes {
        for intents in [true, false] {
            let days: Vec<&DayResult> = results
                .iter()
                .filter(|r| r.job.preset == "normal" && r.job.volume.to_bits() == volume.to_bits())
                .filter(|r| r.job.intents == intents)
                .collect();
            let mut w = Withdrawals::default();
            let mut false_freezes = 0;
            let mut alerts = 0;
            for d in &days {
                w.add(&d.withdrawals);
                false_freezes += d.false_freezes.len() as u64;
                alerts += d.alerts;
            }
            let n = days.len() as u32;
            normal.push(NormalGroup {
                volume,
                intents,
                days: n,
                false_freezes,
                false_freezes_per_month: false_freezes as f64 * 30.0 / f64::from(n.max(1)),
                alerts_per_day: alerts as f64 / f64::from(n.max(1)),
                withdrawals: w,
            });
        }
    }
    failures.extend(traffic_failures(&normal));
    let mut incidents = Vec::new();
    for &preset in INCIDENTS {
        for intents in [true, false] {
            let days: Vec<&DayResult> = results
                .iter()
                .filter(|r| r.job.preset == preset && r.job.intents == intents)
                .collect();
            if days.is_empty() {
                continue;
            }
            let caught = days.iter().filter(|d| d.caught).count() as u32;
            let worst_delay_seconds = days
                .iter()
                .map(|d| d.delay)
                .try_fold(0.0f64, |acc, d| d.map(|d| acc.max(d)));
            let g = IncidentGroup {
                preset: preset.to_string(),
                intents,
                days: days.len() as u32,
                caught,
                false_freezes: days.iter().map(|d| d.false_freezes.len() as u64).sum(),
                worst_delay_seconds,
                worst_lost_share: days.iter().map(|d| d.lost_share).fold(0.0, f64::max),
                worst_lost_usd: days.iter().map(|d| d.lost_usd).fold(0.0, f64::max),
                requirement: requirement(preset, intents).to_string(),
            };
            // Without intents nothing announces the giant withdrawal: it
            // is reported, not required (one payment of 60% is ambiguous
            // without the withdrawal system's word).
            let required = preset != "giant" || intents;
            if required && g.caught < g.days {
                failures.push(format!(
                    "{preset} ({} intents): caught on {} of {} days ({})",
                    if intents { "with" } else { "without" },
                    g.caught,
                    g.days,
                    g.requirement
                ));
            }
            incidents.push(g);
        }
    }
    let false_freezes: Vec<FalseFreeze> = results
        .iter()
        .flat_map(|r| r.false_freezes.iter().cloned())
        .collect();
    if !false_freezes.is_empty() {
        failures.push(format!(
            "{} false freeze(s) over {} days",
            false_freezes.len(),
            results.len()
        ));
    }
    EvalReport {
        normal,
        incidents,
        false_freezes,
        days: results.len() as u64,
        records: results.iter().map(|r| r.records).sum(),
        seconds: took.as_secs_f64(),
        failures,
    }
}

/// The traffic must hold what real traffic holds, or no false freeze
/// proves anything: at 1×, several whales a day, most to new addresses,
/// and (over ten days or more) some taking over a quarter of the minor
/// chain's hot wallet.
fn traffic_failures(normal: &[NormalGroup]) -> Vec<String> {
    let mut failures = Vec::new();
    for g in normal
        .iter()
        .filter(|g| g.volume.to_bits() == 1.0f64.to_bits() && g.days > 0)
    {
        let w = &g.withdrawals;
        let per_day = w.whales as f64 / f64::from(g.days);
        if per_day < 3.0 {
            failures.push(format!(
                "at 1x ({} intents) only {per_day:.1} withdrawals of $100k or more a day were generated (want several)",
                if g.intents { "with" } else { "without" }
            ));
        }
        if w.whales_to_new * 2 <= w.whales {
            failures.push(format!(
                "at 1x only {} of {} withdrawals of $100k or more went to never-paid addresses (want most)",
                w.whales_to_new, w.whales
            ));
        }
        if g.days >= 10 && w.over_quarter_of_minor == 0 {
            failures.push(format!(
                "at 1x no withdrawal took over 25% of the minor chain's hot wallet in {} days",
                g.days
            ));
        }
    }
    failures
}

/// Measures the legitimate withdrawals of a day as the records go by:
/// the exchange's wallets and their balances from the declarations, the
/// balance records and the included transfers, as replay's engine sees
/// them.
#[derive(Debug, Default)]
struct Measure {
    roles: HashMap<(Chain, Address), WalletRole>,
    balances: HashMap<(Chain, Address, Asset), Amount>,
    prices: HashMap<Asset, Price>,
    paid: HashSet<(Chain, Address)>,
    /// The chain whose hot wallets held the fewest dollars at the start.
    minor: Option<Chain>,
    w: Withdrawals,
}

impl Measure {
    fn finish(self) -> Withdrawals {
        self.w
    }

    fn usd(&self, asset: &Asset, amount: Amount, decimals: u8) -> f64 {
        let price = self.prices.get(asset).copied().unwrap_or_default();
        Usd::of(amount, decimals, price).to_f64()
    }
}

impl Observer for Measure {
    fn record(&mut self, r: &Record) {
        match &r.kind {
            EventKind::Wallet(w) => {
                self.roles
                    .insert((w.chain.clone(), w.address.clone()), w.role);
                for b in &w.balances {
                    self.balances.insert(
                        (b.chain.clone(), b.wallet.clone(), b.asset.clone()),
                        b.amount,
                    );
                }
            }
            EventKind::Balance(b) => {
                self.balances.insert(
                    (b.chain.clone(), b.wallet.clone(), b.asset.clone()),
                    b.amount,
                );
            }
            EventKind::Price(p) => {
                self.prices.insert(p.asset.clone(), p.usd);
            }
            EventKind::Transfer(t) => {
                if self.minor.is_none() && !self.prices.is_empty() {
                    self.pick_minor();
                }
                let from_role = self.roles.get(&(t.chain.clone(), t.from.clone())).copied();
                let to_own = self.roles.contains_key(&(t.chain.clone(), t.to.clone()));
                let key = |a: &Address| (t.chain.clone(), a.clone(), t.asset.clone());
                if t.stage == Stage::Included {
                    for (who, out) in [(&t.from, true), (&t.to, false)] {
                        if let Some(b) = self.balances.get_mut(&key(who)) {
                            *b = if out {
                                b.saturating_sub(t.amount)
                            } else {
                                b.saturating_add(t.amount)
                            };
                        }
                    }
                }
                let legit_withdrawal = t.stage == Stage::Pending
                    && from_role.is_some()
                    && !to_own
                    && r.label != Some(Label::Attack);
                if !legit_withdrawal {
                    return;
                }
                let usd = self.usd(&t.asset, t.amount, t.decimals);
                let new = self.paid.insert((t.chain.clone(), t.to.clone()));
                self.w.count += 1;
                self.w.largest_usd = self.w.largest_usd.max(usd);
                if usd >= WHALE_USD {
                    self.w.whales += 1;
                    self.w.whales_to_new += u64::from(new);
                }
                if from_role == Some(WalletRole::Hot)
                    && let Some(b) = self.balances.get(&key(&t.from)).copied()
                    && !b.is_zero()
                {
                    // For display: the limits compare exact integers.
                    let share = t.amount.to_f64_units(0) / b.to_f64_units(0);
                    self.w.largest_share = self.w.largest_share.max(share);
                    if self.minor.as_ref() == Some(&t.chain) {
                        self.w.largest_minor_share = self.w.largest_minor_share.max(share);
                        self.w.over_quarter_of_minor += u64::from(share > LARGE_SHARE);
                    }
                }
            }
            _ => {}
        }
    }
}

impl Measure {
    /// Picks the minor chain once the opening balances and prices are in.
    fn pick_minor(&mut self) {
        let mut usd: HashMap<Chain, f64> = HashMap::new();
        for ((chain, address, asset), amount) in &self.balances {
            if self.roles.get(&(chain.clone(), address.clone())) == Some(&WalletRole::Hot) {
                *usd.entry(chain.clone()).or_default() +=
                    self.usd(asset, *amount, drainguard_sim::SCENARIO_DECIMALS);
            }
        }
        self.minor = usd
            .iter()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(c, _)| c.clone());
    }
}

impl EvalReport {
    /// Whether every requirement held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(whales: u64, to_new: u64, over_quarter: u64) -> NormalGroup {
        NormalGroup {
            volume: 1.0,
            intents: true,
            days: 10,
            false_freezes: 0,
            false_freezes_per_month: 0.0,
            alerts_per_day: 0.0,
            withdrawals: Withdrawals {
                count: 100_000,
                whales,
                whales_to_new: to_new,
                over_quarter_of_minor: over_quarter,
                ..Withdrawals::default()
            },
        }
    }

    #[test]
    fn tame_traffic_fails_and_real_traffic_passes() {
        assert!(traffic_failures(&[group(80, 60, 3)]).is_empty());
        let few = traffic_failures(&[group(20, 15, 3)]);
        assert!(few[0].contains("2.0 withdrawals of $100k"), "{few:?}");
        let known = traffic_failures(&[group(80, 30, 3)]);
        assert!(known[0].contains("30 of 80"), "{known:?}");
        let small = traffic_failures(&[group(80, 60, 0)]);
        assert!(small[0].contains("over 25%"), "{small:?}");
        // Only the 1x days are held to it.
        let mut half = group(0, 0, 0);
        half.volume = 0.5;
        assert!(traffic_failures(&[half]).is_empty());
    }
}
