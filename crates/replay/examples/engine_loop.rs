//! Runs the engine over a generated day many times, for profilers; prints
//! the best time per pass and the transfers and intents per second.
#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

use std::time::Instant;

use drainguard_engine::{Engine, RuleSet};
use drainguard_model::{Event, EventKind};
use drainguard_sim::{ScenarioReader, ScenarioWriter, generate, preset};

fn main() {
    let passes: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    // PRESET=rush (or any simulator preset) runs another generated day.
    let name = std::env::var("PRESET").unwrap_or_else(|_| "coinex".to_string());
    let mut config = preset(&name, 1).unwrap();
    // VOLUME=10 runs the same day at ten times the normal withdrawal rate.
    if let Some(v) = std::env::var("VOLUME").ok().and_then(|v| v.parse().ok()) {
        config.volume = v;
    }
    let records = generate(&config);
    // DECODED=1: the events as the scenario reader decodes them from the
    // day's JSON Lines, each record with its own id blocks (the generator's
    // records share one block between a transfer's stages).
    let events: Vec<Event> = if std::env::var_os("DECODED").is_some() {
        let mut w = ScenarioWriter::new(Vec::new());
        for r in &records {
            w.write(r).unwrap();
        }
        let text = w.finish().unwrap();
        ScenarioReader::new(text.as_slice())
            .map(|r| {
                let r = r.unwrap();
                Event {
                    t: r.t,
                    kind: r.kind,
                }
            })
            .collect()
    } else {
        records
            .iter()
            .map(drainguard_sim::Record::to_event)
            .collect()
    };
    let counted = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Transfer(_) | EventKind::Intent(_)))
        .count();
    let mut rules = RuleSet::builtin().unwrap();
    // RULES_ONLY=id,id keeps only those rules: what each rule costs.
    if let Ok(only) = std::env::var("RULES_ONLY") {
        let keep: Vec<&str> = only.split(',').collect();
        rules.rules.retain(|r| keep.contains(&r.id.as_str()));
    }
    let mut best = f64::MAX;
    let mut n = 0;
    for _ in 0..passes {
        // A fresh engine for each pass, made and dropped outside the
        // timing: the figure is the events through it.
        let mut engine = Engine::new(rules.clone());
        let mut out = Vec::new();
        let start = Instant::now();
        for e in &events {
            engine.process(e, &mut out);
        }
        best = best.min(start.elapsed().as_secs_f64());
        n += out.len();
    }
    if std::env::var_os("BY_KIND").is_some() {
        by_kind(&events, &rules);
    }
    println!(
        "{n} outputs; best pass {:.2} ms: {:.2} M transfers and intents/s",
        best * 1e3,
        counted as f64 / best / 1e6
    );
}

/// Nanoseconds per event by kind (and stage), from one timed pass; the
/// clock's own cost is included, so compare kinds, not totals.
fn by_kind(events: &[Event], rules: &RuleSet) {
    let mut engine = Engine::new(rules.clone());
    let mut out = Vec::new();
    let mut sums: std::collections::BTreeMap<String, (u64, u128)> = Default::default();
    for e in events {
        let name = match &e.kind {
            EventKind::Transfer(t) => format!("transfer/{}", t.stage.as_str()),
            k => format!("{k:?}").split('(').next().unwrap_or("").to_string(),
        };
        let start = Instant::now();
        engine.process(e, &mut out);
        let ns = start.elapsed().as_nanos();
        let s = sums.entry(name).or_default();
        s.0 += 1;
        s.1 += ns;
    }
    for (k, (n, ns)) in sums {
        println!(
            "{k:20} {n:8} events {:8.0} ns each {:6.2} ms",
            ns as f64 / n as f64,
            ns as f64 / 1e6
        );
    }
}
