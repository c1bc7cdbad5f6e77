//! Replays a scenario through the engine in virtual time and scores it.
//!
//! The engine sees only events; labels (ground truth) stay here and feed
//! the score, as DESIGN.md defines it: the detection delay from the first
//! attack record to the first freeze, the attack value and how much of it
//! left before the freeze, and the false freezes.
//!
//! A replay can also hand every record to an [`Observer`] as it goes; the
//! [`Timeline`] is the one that collects the outflow plot's data.

pub mod eval;
mod timeline;

pub use timeline::{Flow, Observer, Series, Step, Timeline};

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    io::BufRead,
    time::Instant,
};

use drainguard_engine::{Engine, Output, RuleSet};
use drainguard_model::{
    Address, Chain, Event, EventKind, Finding, Freeze, Price, Timestamp, TransferKey, Usd,
};
use drainguard_sim::{Label, Record, ScenarioError, ScenarioReader};
use serde::Serialize;

/// One finding as the report prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FindingLine {
    /// Scenario time.
    pub t: String,
    /// Rule id.
    pub rule: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// The scope.
    pub scope: String,
    /// The chain, if any.
    pub chain: Option<String>,
    /// The wallet, if any.
    pub wallet: Option<String>,
    /// One line.
    pub summary: String,
}

/// One freeze as the report prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FreezeLine {
    /// Scenario time.
    pub t: String,
    /// The freeze id.
    pub id: String,
    /// The scope.
    pub scope: String,
    /// One line.
    pub reason: String,
}

/// How well the rules did against the labels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    /// The earliest record labelled `attack`.
    pub first_attack_t: Option<String>,
    /// The first freeze.
    pub first_freeze_t: Option<String>,
    /// Seconds from the first attack record to the first freeze (null when
    /// none, or when the first freeze came before the attack).
    pub detection_delay_seconds: Option<f64>,
    /// USD value of the attack transfers to outside addresses.
    pub attack_usd_total: f64,
    /// The part of it first seen strictly before the first freeze.
    pub attack_usd_before_freeze: f64,
    /// Freezes before the first attack record.
    pub false_freezes: u64,
}

/// The report `drainguard replay --json` prints, exactly.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Every finding, in time order.
    pub findings: Vec<FindingLine>,
    /// Every freeze, in time order.
    pub freezes: Vec<FreezeLine>,
    /// The score, or null for a file without labels.
    pub score: Option<Score>,
}

/// Figures about the run itself (not part of the JSON report).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunStats {
    /// Records read.
    pub records: u64,
    /// Wall-clock seconds spent reading and evaluating.
    pub seconds: f64,
    /// Scenario time covered, in seconds.
    pub scenario_seconds: f64,
}

/// A finished replay: the report and the full findings and freezes.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The report.
    pub report: Report,
    /// Findings with their figures and evidence.
    pub findings: Vec<Finding>,
    /// Freezes with their evidence.
    pub freezes: Vec<Freeze>,
    /// Run figures.
    pub stats: RunStats,
}

#[derive(Debug)]
struct AttackTransfer {
    first_t: Timestamp,
    chain: Chain,
    to: Address,
    usd: Usd,
}

/// Keeps the ground truth the engine must not see.
#[derive(Debug, Default)]
struct Scorer {
    labelled: bool,
    first_attack: Option<Timestamp>,
    own: HashSet<(Chain, Address)>,
    prices: HashMap<drainguard_model::Asset, Price>,
    /// First record time and value of every transfer, in case a later
    /// record of it carries the attack label.
    seen: HashMap<TransferKey, (Timestamp, Usd)>,
    attack: HashMap<TransferKey, AttackTransfer>,
}

impl Scorer {
    fn observe(&mut self, r: &Record) {
        if r.label.is_some() {
            self.labelled = true;
        }
        let attack = r.label == Some(Label::Attack);
        if attack && self.first_attack.is_none() {
            self.first_attack = Some(r.t);
        }
        match &r.kind {
            EventKind::Wallet(w) => {
                self.own.insert((w.chain.clone(), w.address.clone()));
            }
            EventKind::Price(p) => {
                self.prices.insert(p.asset.clone(), p.usd);
            }
            EventKind::Transfer(tr) => {
                let key = tr.key();
                let prices = &self.prices;
                let (first_t, usd) = *self.seen.entry(key.clone()).or_insert_with(|| {
                    let price = prices.get(&tr.asset).copied().unwrap_or_default();
                    (r.t, Usd::of(tr.amount, tr.decimals, price))
                });
                if attack {
                    self.attack.entry(key).or_insert_with(|| AttackTransfer {
                        first_t,
                        chain: tr.chain.clone(),
                        to: tr.to.clone(),
                        usd,
                    });
                }
            }
            _ => {}
        }
    }

    fn score(&self, freezes: &[Freeze]) -> Option<Score> {
        if !self.labelled {
            return None;
        }
        let first_freeze = freezes.first().map(|f| f.t);
        let delay = match (self.first_attack, first_freeze) {
            (Some(a), Some(f)) if f >= a => Some(f.seconds_since(a)),
            _ => None,
        };
        let outside = self
            .attack
            .values()
            .filter(|a| !self.own.contains(&(a.chain.clone(), a.to.clone())));
        let (mut total, mut before) = (Usd::ZERO, Usd::ZERO);
        for a in outside {
            total = total.saturating_add(a.usd);
            if first_freeze.is_none_or(|f| a.first_t < f) {
                before = before.saturating_add(a.usd);
            }
        }
        let false_freezes = freezes
            .iter()
            .filter(|f| self.first_attack.is_none_or(|a| f.t < a))
            .count() as u64;
        Some(Score {
            first_attack_t: self.first_attack.map(|t| t.to_rfc3339()),
            first_freeze_t: first_freeze.map(|t| t.to_rfc3339()),
            detection_delay_seconds: delay,
            attack_usd_total: total.to_f64(),
            attack_usd_before_freeze: before.to_f64(),
            false_freezes,
        })
    }
}

/// Replays a scenario through an engine built from `rules`. Stops at the
/// first bad line: a half-read scenario would give a misleading score.
pub fn replay<R: BufRead>(input: R, rules: RuleSet) -> Result<Replay, ScenarioError> {
    replay_records(ScenarioReader::new(input), rules)
}

/// Replays records from any source (a reader, or a generator in memory).
pub fn replay_records<I>(records: I, rules: RuleSet) -> Result<Replay, ScenarioError>
where
    I: IntoIterator<Item = Result<Record, ScenarioError>>,
{
    replay_observed(records, rules, &mut ())
}

/// Replays records and shows each one to `observer` before the engine sees
/// it (a [`Timeline`] for a plot). Generic, so that the plain replay's `()`
/// observer costs nothing.
pub fn replay_observed<I, O>(
    records: I,
    rules: RuleSet,
    observer: &mut O,
) -> Result<Replay, ScenarioError>
where
    I: IntoIterator<Item = Result<Record, ScenarioError>>,
    O: Observer + ?Sized,
{
    let started = Instant::now();
    let mut engine = Engine::new(rules);
    let mut scorer = Scorer::default();
    let (mut findings, mut freezes) = (Vec::new(), Vec::new());
    let mut out = Vec::new();
    let (mut count, mut first_t, mut last_t) = (0u64, None, None);
    for record in records {
        let record = record?;
        count += 1;
        first_t.get_or_insert(record.t);
        last_t = Some(record.t);
        scorer.observe(&record);
        observer.record(&record);
        let event = Event {
            t: record.t,
            kind: record.kind,
        };
        engine.process(&event, &mut out);
        for o in out.drain(..) {
            match o {
                Output::Finding(f) => findings.push(f),
                Output::Freeze(f) => freezes.push(f),
                Output::Recovered(_) => {}
            }
        }
    }
    let score = scorer.score(&freezes);
    let report = Report {
        findings: findings
            .iter()
            .map(|f| FindingLine {
                t: f.t.to_rfc3339(),
                rule: f.rule.clone(),
                severity: f.severity.as_str().to_string(),
                scope: f.scope.to_string(),
                chain: f.chain.as_ref().map(ToString::to_string),
                wallet: f.wallet.as_ref().map(ToString::to_string),
                summary: f.summary.clone(),
            })
            .collect(),
        freezes: freezes
            .iter()
            .map(|f| FreezeLine {
                t: f.t.to_rfc3339(),
                id: f.id.to_string(),
                scope: f.scope.to_string(),
                reason: f.reason.clone(),
            })
            .collect(),
        score,
    };
    let scenario_seconds = match (first_t, last_t) {
        (Some(a), Some(b)) => b.seconds_since(a),
        _ => 0.0,
    };
    Ok(Replay {
        report,
        findings,
        freezes,
        stats: RunStats {
            records: count,
            seconds: started.elapsed().as_secs_f64(),
            scenario_seconds,
        },
    })
}

impl Report {
    /// The report for a human.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "findings: {}", self.findings.len());
        for f in &self.findings {
            let shown = f.summary.chars().take(200).collect::<String>();
            let _ = writeln!(
                s,
                "  {}  {:<8} {:<28} {}  {}",
                f.t, f.severity, f.rule, f.scope, shown
            );
        }
        let _ = writeln!(s, "freezes: {}", self.freezes.len());
        for f in &self.freezes {
            let _ = writeln!(s, "  {}  {}  {}\n      {}", f.t, f.id, f.scope, f.reason);
        }
        match &self.score {
            None => {
                let _ = writeln!(s, "score: none (the scenario has no labels)");
            }
            Some(sc) => {
                let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".to_string());
                let _ = writeln!(s, "score:");
                let _ = writeln!(s, "  first attack record   {}", or_none(&sc.first_attack_t));
                let _ = writeln!(s, "  first freeze          {}", or_none(&sc.first_freeze_t));
                let _ = writeln!(
                    s,
                    "  detection delay       {}",
                    sc.detection_delay_seconds
                        .map_or("none".to_string(), |d| format!("{d:.3} s"))
                );
                let share = if sc.attack_usd_total > 0.0 {
                    sc.attack_usd_before_freeze / sc.attack_usd_total * 100.0
                } else {
                    0.0
                };
                let _ = writeln!(s, "  attack value          ${:.2}", sc.attack_usd_total);
                let _ = writeln!(
                    s,
                    "  left before freeze    ${:.2} ({share:.1}%)",
                    sc.attack_usd_before_freeze
                );
                let _ = writeln!(s, "  false freezes         {}", sc.false_freezes);
            }
        }
        s
    }
}
