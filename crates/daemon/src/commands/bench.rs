//! `drainguard bench`: how fast this machine runs drainguard, with these
//! rules, on a generated day.
//!
//! An operator sizing a host wants three figures: how many transfers and
//! intents a second the engine evaluates (the engine is one thread, so
//! this is the daemon's ceiling), how fast a scenario file replays
//! (decoding included), and how long the store takes to make a freeze
//! durable on this disk (a freeze is written before it is acted on, so a
//! slow disk delays every freeze). The criterion benches in the
//! repository measure the same paths for developers; this command needs
//! no source tree.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use drainguard_engine::{Engine, Output, RuleSet};
use drainguard_model::{Event, EventKind, Finding, Freeze, FreezeId, Scope, Severity, Timestamp};
use drainguard_respond::webhook;
use drainguard_sim::{PRESETS, ScenarioReader, ScenarioWriter, generate, preset};
use drainguard_store::{Batch, Store};
use serde::Serialize;

use crate::config;

/// Arguments of `bench`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example: the figures of the README, with the rules you run
  drainguard bench --preset coinex --config config/drainguard.toml --store-dir /var/lib/drainguard")]
pub(crate) struct Args {
    /// The generated day to evaluate: normal, coinex, abuse, rush, giant
    /// or approval.
    #[arg(long, default_value = "coinex")]
    preset: String,
    /// Random seed of the day.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Withdrawal volume as a multiple of a normal day.
    #[arg(long, default_value_t = 1.0)]
    volume: f64,
    /// A rules file, or a daemon configuration whose `[rules]` names one
    /// (default: the built-in rules).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Engine passes over the day (each through a fresh engine); the best
    /// and the median are reported.
    #[arg(long, default_value_t = 10)]
    passes: usize,
    /// Freezes to commit to the store, one transaction each, for the
    /// durable-write latency.
    #[arg(long, default_value_t = 200)]
    commits: usize,
    /// Where to put the scratch store: a folder on the disk the daemon's
    /// store will live on (a fresh subfolder is made and removed).
    #[arg(long, value_name = "DIR")]
    store_dir: Option<PathBuf>,
    /// Print exactly one JSON object (logs go to standard error).
    #[arg(long)]
    json: bool,
}

/// What `bench --json` prints.
#[derive(Debug, Serialize)]
struct Figures {
    preset: String,
    seed: u64,
    volume: f64,
    /// `built-in` or the path given.
    rules: String,
    engine: EngineFigures,
    replay: ReplayFigures,
    store: StoreFigures,
}

#[derive(Debug, Serialize)]
struct EngineFigures {
    /// Events of the day, of every kind.
    events: usize,
    /// Transfers and intents among them: the figure of the README.
    transfers_and_intents: usize,
    passes: usize,
    best_seconds: f64,
    median_seconds: f64,
    /// At the best pass.
    transfers_and_intents_per_second: f64,
    /// At the median pass.
    median_transfers_and_intents_per_second: f64,
    /// Found in one pass: a bench whose rules find nothing measures less.
    findings: usize,
    freezes: usize,
}

#[derive(Debug, Serialize)]
struct ReplayFigures {
    /// The day as JSON Lines, read from memory.
    records: u64,
    bytes: usize,
    seconds: f64,
    records_per_second: f64,
}

#[derive(Debug, Serialize)]
struct StoreFigures {
    /// The folder the scratch store was made in.
    dir: PathBuf,
    commits: usize,
    /// Latency of one freeze commit (finding, freeze, audit rows and the
    /// webhook action, in one transaction), in milliseconds.
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    commits_per_second: f64,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let Some(mut day) = preset(&args.preset, args.seed) else {
        bail!(
            "unknown preset {:?}: expected one of {}",
            args.preset,
            PRESETS.join(", ")
        );
    };
    if !(args.volume > 0.0 && args.volume <= 1000.0) {
        bail!("--volume must be in (0, 1000], not {}", args.volume);
    }
    if args.passes == 0 {
        bail!("--passes must be at least 1");
    }
    if args.commits == 0 {
        bail!("--commits must be at least 1");
    }
    let store_dir = args.store_dir.clone().unwrap_or_else(std::env::temp_dir);
    if !store_dir.is_dir() {
        bail!("--store-dir {}: not a folder", store_dir.display());
    }
    let rules = match &args.config {
        None => RuleSet::builtin().map_err(|e| anyhow::anyhow!("{e}"))?,
        Some(path) => config::load_rules_for_replay(path)?,
    };
    day.volume = args.volume;
    tracing::info!(message = "generating the day", preset = %args.preset, seed = args.seed, volume = args.volume);
    let records = generate(&day);
    let events: Vec<Event> = records
        .iter()
        .map(drainguard_sim::Record::to_event)
        .collect();

    tracing::info!(
        message = "timing the engine",
        events = events.len(),
        passes = args.passes
    );
    let (engine, template) = bench_engine(&events, &rules, args.passes);

    let mut writer = ScenarioWriter::new(Vec::new());
    for r in &records {
        writer.write(r).context("writing the day as JSON Lines")?;
    }
    let text = writer.finish().context("writing the day as JSON Lines")?;
    tracing::info!(message = "timing the replay", bytes = text.len());
    let replay = bench_replay(&text, rules)?;

    tracing::info!(message = "timing freeze commits", dir = %store_dir.display(), commits = args.commits);
    let store = bench_store(&store_dir, &template, args.commits)?;

    let figures = Figures {
        preset: args.preset.clone(),
        seed: args.seed,
        volume: args.volume,
        rules: args
            .config
            .as_ref()
            .map_or_else(|| "built-in".to_string(), |p| p.display().to_string()),
        engine,
        replay,
        store,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &figures).context("writing the figures")?;
        std::io::Write::write_all(&mut out, b"\n").context("writing the figures")?;
    } else {
        std::io::Write::write_all(&mut out, to_text(&figures).as_bytes())
            .context("writing the figures")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Times `passes` passes of the day through fresh engines. Returns the
/// figures and the freeze the store bench commits: the day's first, with
/// its findings, or a stand-in when the rules froze nothing.
fn bench_engine(events: &[Event], rules: &RuleSet, passes: usize) -> (EngineFigures, Freeze) {
    let counted = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Transfer(_) | EventKind::Intent(_)))
        .count();
    let mut times = Vec::with_capacity(passes);
    let mut out = Vec::new();
    for _ in 0..passes {
        // Built and dropped outside the clock: the figure is the events.
        let mut engine = Engine::new(rules.clone());
        out.clear();
        let start = Instant::now();
        for e in events {
            engine.process(e, &mut out);
        }
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let best = times.first().copied().unwrap_or_default();
    let median = times.get(times.len() / 2).copied().unwrap_or_default();
    let findings = out
        .iter()
        .filter(|o| matches!(o, Output::Finding(_)))
        .count();
    let freezes: Vec<&Freeze> = out
        .iter()
        .filter_map(|o| match o {
            Output::Freeze(f) => Some(f),
            _ => None,
        })
        .collect();
    let template = freezes
        .first()
        .map_or_else(stand_in_freeze, |f| (*f).clone());
    let per_second = |s: f64| counted as f64 / s.max(1e-9);
    (
        EngineFigures {
            events: events.len(),
            transfers_and_intents: counted,
            passes,
            best_seconds: best,
            median_seconds: median,
            transfers_and_intents_per_second: per_second(best),
            median_transfers_and_intents_per_second: per_second(median),
            findings,
            freezes: freezes.len(),
        },
        template,
    )
}

/// A global freeze with one finding, for rules that froze nothing on the
/// day: the store's cost is the same shape of transaction.
fn stand_in_freeze() -> Freeze {
    let t = Timestamp::now();
    let finding = Finding {
        t,
        rule: "bench".to_string(),
        kind: "bench".to_string(),
        severity: Severity::Critical,
        scope: Scope::Global,
        chain: None,
        wallet: None,
        summary: "drainguard bench: a stand-in finding to time the store".to_string(),
        shadow: false,
        wants_freeze: true,
        figures: Vec::new(),
        evidence: Vec::new(),
    };
    Freeze {
        id: FreezeId("bench".to_string()),
        t,
        scope: Scope::Global,
        reason: finding.summary.clone(),
        rule: finding.rule.clone(),
        severity: Severity::Critical,
        findings: vec![finding],
        supersedes: Vec::new(),
    }
}

/// Replays the day's JSON Lines from memory: decoding and the engine.
fn bench_replay(text: &[u8], rules: RuleSet) -> anyhow::Result<ReplayFigures> {
    let start = Instant::now();
    let result = drainguard_replay::replay_records(ScenarioReader::new(text), rules)
        .context("replaying the day")?;
    let seconds = start.elapsed().as_secs_f64();
    let records = result.stats.records;
    Ok(ReplayFigures {
        records,
        bytes: text.len(),
        seconds,
        records_per_second: records as f64 / seconds.max(1e-9),
    })
}

/// Commits `commits` copies of `template` (each its own id, with its
/// findings and the webhook action, as the daemon commits a freeze) to a
/// scratch store in a fresh folder under `dir`, removed afterwards.
fn bench_store(dir: &Path, template: &Freeze, commits: usize) -> anyhow::Result<StoreFigures> {
    let scratch = tempfile::Builder::new()
        .prefix("drainguard-bench-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot make a scratch folder in {}", dir.display()))?;
    let path = scratch.path().join("bench.sqlite");
    let mut store = Store::open(&path)
        .with_context(|| format!("opening the scratch store {}", path.display()))?;
    let mut times: Vec<Duration> = Vec::with_capacity(commits);
    let started = Instant::now();
    for i in 0..commits {
        let mut freeze = template.clone();
        freeze.id = FreezeId(format!("bench-{i}"));
        let batch = Batch {
            findings: freeze.findings.clone(),
            actions: vec![webhook::raised(&freeze)],
            freezes: vec![freeze],
            ..Batch::default()
        };
        let start = Instant::now();
        store
            .commit(&batch)
            .with_context(|| format!("committing to the scratch store {}", path.display()))?;
        times.push(start.elapsed());
    }
    let total = started.elapsed().as_secs_f64();
    drop(store);
    scratch
        .close()
        .with_context(|| format!("removing the scratch folder in {}", dir.display()))?;
    times.sort();
    let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e3);
    // Nearest rank: the smallest time at or above the share of commits.
    let rank = |p: usize| (commits * p).div_ceil(100).saturating_sub(1);
    Ok(StoreFigures {
        dir: dir.to_path_buf(),
        commits,
        p50_ms: ms(times.get(rank(50))),
        p99_ms: ms(times.get(rank(99))),
        max_ms: ms(times.last()),
        commits_per_second: commits as f64 / total.max(1e-9),
    })
}

fn to_text(f: &Figures) -> String {
    let e = &f.engine;
    let r = &f.replay;
    let s = &f.store;
    format!(
        "drainguard bench: preset {} seed {} volume {}x, rules {}\n\
         engine   {} events ({} transfers and intents), {} passes: best {:.2} ms = {:.2} M/s, median {:.2} ms = {:.2} M/s ({} findings, {} freezes a pass)\n\
         replay   {} records ({:.1} MiB of JSON Lines) in {:.3} s = {:.0} records/s\n\
         store    {} freeze commits in {}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({:.0} commits/s)\n",
        f.preset,
        f.seed,
        f.volume,
        f.rules,
        e.events,
        e.transfers_and_intents,
        e.passes,
        e.best_seconds * 1e3,
        e.transfers_and_intents_per_second / 1e6,
        e.median_seconds * 1e3,
        e.median_transfers_and_intents_per_second / 1e6,
        e.findings,
        e.freezes,
        r.records,
        r.bytes as f64 / (1024.0 * 1024.0),
        r.seconds,
        r.records_per_second,
        s.commits,
        s.dir.display(),
        s.p50_ms,
        s.p99_ms,
        s.max_ms,
        s.commits_per_second,
    )
}
