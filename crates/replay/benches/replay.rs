//! Replay throughput: a generated CoinEx-style day through the default
//! rules, in memory (engine only) and from its JSON Lines text (reader and
//! engine), as `drainguard replay` does it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use drainguard_engine::RuleSet;
use drainguard_replay::{replay, replay_records};
use drainguard_sim::{ScenarioWriter, generate, preset};

fn bench(c: &mut Criterion) {
    let records = generate(&preset("coinex", 1).unwrap());
    let mut w = ScenarioWriter::new(Vec::new());
    for r in &records {
        w.write(r).unwrap();
    }
    let text = w.finish().unwrap();
    let rules = RuleSet::builtin().unwrap();
    let mut g = c.benchmark_group("replay_day");
    g.sample_size(10);
    g.throughput(Throughput::Elements(records.len() as u64));
    g.bench_function("engine_only", |b| {
        b.iter(|| replay_records(records.iter().cloned().map(Ok), rules.clone()).unwrap())
    });
    g.bench_function("parse_and_engine", |b| {
        b.iter(|| replay(text.as_slice(), rules.clone()).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
