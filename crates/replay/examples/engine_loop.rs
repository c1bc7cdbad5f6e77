//! Runs the engine over a generated day many times, for profilers.
#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

use drainguard_engine::{Engine, RuleSet};
use drainguard_model::Event;
use drainguard_sim::{generate, preset};

fn main() {
    let records = generate(&preset("coinex", 1).unwrap());
    let events: Vec<Event> = records
        .iter()
        .map(|r| Event {
            t: r.t,
            kind: r.kind.clone(),
        })
        .collect();
    let rules = RuleSet::builtin().unwrap();
    let mut n = 0;
    for _ in 0..30 {
        let mut engine = Engine::new(rules.clone());
        let mut out = Vec::new();
        for e in &events {
            engine.process(e, &mut out);
        }
        n += out.len();
    }
    println!("{n}");
}
