//! Throughput of the engine and of replay on a generated day with the full
//! default rule set:
//! - `engine`: transfers and intents per second through the engine on one
//!   core, events already decoded (heads, prices and balances still go
//!   through the engine but are not counted);
//! - `replay_jsonl`: records per second for JSON Lines replay (decode and
//!   engine), and `decode_only`: the reader alone over the same text, whose
//!   ratio to `replay_jsonl` is the cost of the engine.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use drainguard_engine::{Engine, RuleSet};
use drainguard_model::{Event, EventKind};
use drainguard_replay::replay;
use drainguard_sim::{ScenarioReader, ScenarioWriter, generate, preset};

fn bench(c: &mut Criterion) {
    let records = generate(&preset("coinex", 1).unwrap());
    let mut w = ScenarioWriter::new(Vec::new());
    for r in &records {
        w.write(r).unwrap();
    }
    let text = w.finish().unwrap();
    let rules = RuleSet::builtin().unwrap();
    let events: Vec<Event> = records
        .iter()
        .map(drainguard_sim::Record::to_event)
        .collect();
    let counted = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Transfer(_) | EventKind::Intent(_)))
        .count();

    let mut g = c.benchmark_group("day");
    g.sample_size(10);
    g.throughput(Throughput::Elements(counted as u64));
    g.bench_function("engine", |b| {
        // A fresh engine for each pass, made outside the timing: the figure
        // is the events through it, not its construction.
        b.iter_batched(
            || Engine::new(rules.clone()),
            |mut engine| {
                let mut out = Vec::new();
                for e in &events {
                    engine.process(e, &mut out);
                }
                (engine, out.len())
            },
            BatchSize::PerIteration,
        )
    });
    g.throughput(Throughput::Elements(records.len() as u64));
    g.bench_function("replay_jsonl", |b| {
        b.iter(|| {
            replay(text.as_slice(), rules.clone())
                .unwrap()
                .stats
                .records
        })
    });
    g.bench_function("decode_only", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for r in ScenarioReader::new(text.as_slice()) {
                n += usize::from(r.unwrap().label.is_some());
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
