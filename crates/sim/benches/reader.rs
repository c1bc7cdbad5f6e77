//! Scenario reader throughput: a generated normal day written to JSON Lines
//! in memory and read back with the strict reader (records per second).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use drainguard_sim::{ScenarioReader, ScenarioWriter, generate, preset};

/// Reads every record, failing on any error: how many there were.
fn decode<R: BufRead>(input: R, expected: usize) -> usize {
    let n = ScenarioReader::new(input)
        .map(|r| r.map(|_| ()))
        .collect::<Result<Vec<()>, _>>()
        .unwrap()
        .len();
    assert_eq!(n, expected);
    n
}

fn bench(c: &mut Criterion) {
    let records = generate(&preset("normal", 1).unwrap());
    let mut w = ScenarioWriter::new(Vec::new());
    for r in &records {
        w.write(r).unwrap();
    }
    let text = w.finish().unwrap();
    let mut g = c.benchmark_group("reader");
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(records.len() as u64));
    // The whole file in memory: every line is decoded where it lies.
    g.bench_function("decode_day", |b| {
        b.iter(|| decode(text.as_slice(), records.len()))
    });
    // Through a default 8 KiB `BufReader`: the lines that straddle its
    // buffer's end are copied first.
    g.bench_function("decode_day_8k_buffer", |b| {
        b.iter(|| decode(BufReader::new(text.as_slice()), records.len()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
