//! `drainguard eval`: false freezes per simulated month and what each
//! incident costs before its freeze, over many generated days.

use std::{fmt::Write as _, io::Write as _, path::PathBuf, process::ExitCode};

use anyhow::{Context, bail};
use drainguard_replay::eval::{EvalConfig, EvalReport, evaluate};

use crate::config;

/// Arguments of `eval`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Each day is generated with its own seed and replayed by a fresh engine. \
Exits 1 when a normal day freezes, an incident is not caught as required, \
or the generated traffic lacks the whale withdrawals it must hold.

Example: the README's figures
  drainguard eval --days 30")]
pub(crate) struct Args {
    /// Normal days per volume, each with and without intents.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Volumes of the normal days, as multiples of a normal day.
    #[arg(long, value_delimiter = ',', default_value = "0.5,1,6")]
    volumes: Vec<f64>,
    /// Days of each incident preset (coinex, abuse, giant, approval,
    /// tripwire), each with and without intents.
    #[arg(long, default_value_t = 5)]
    incident_days: u32,
    /// The first seed; every day gets its own from it.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Days run at once (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// A rules file, or a daemon configuration whose `[rules]` names one
    /// (default: the built-in rules).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print exactly one JSON object.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if args.days > 10_000 || args.incident_days > 10_000 {
        bail!("--days and --incident-days are at most 10000");
    }
    if args.volumes.is_empty() {
        bail!("--volumes needs at least one volume");
    }
    if let Some(v) = args.volumes.iter().find(|v| !(**v > 0.0 && **v <= 100.0)) {
        bail!("--volumes: {v} is not in (0, 100]");
    }
    if args.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    let rules = match &args.config {
        None => drainguard_engine::RuleSet::builtin().map_err(|e| anyhow::anyhow!("{e}"))?,
        Some(path) => config::load_rules_for_replay(path)?,
    };
    let mut eval = EvalConfig {
        days: args.days,
        seed: args.seed,
        volumes: args.volumes.clone(),
        incident_days: args.incident_days,
        ..EvalConfig::default()
    };
    if let Some(t) = args.threads {
        eval.threads = t;
    }
    let report = evaluate(&eval, &rules);
    let text = if args.json {
        let mut s = serde_json::to_string(&report).context("encoding the report")?;
        s.push('\n');
        s
    } else {
        to_text(&report)
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing the report")?;
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn to_text(r: &EvalReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "normal days (a fresh engine each day; every freeze on them is false):"
    );
    let _ = writeln!(
        s,
        "  volume intents days false-freezes per-month alerts/day | withdrawals  >=$100k  to-new  largest      minor-chain-max  >25%-of-minor  any-hot-max"
    );
    for g in &r.normal {
        let w = &g.withdrawals;
        let _ = writeln!(
            s,
            "  {:>5}x {:>7} {:>4} {:>13} {:>9.2} {:>10.1} | {:>11} {:>8} {:>7} {:>11} {:>15.1}% {:>14} {:>11.1}%",
            g.volume,
            if g.intents { "yes" } else { "no" },
            g.days,
            g.false_freezes,
            g.false_freezes_per_month,
            g.alerts_per_day,
            w.count,
            w.whales,
            w.whales_to_new,
            format!("${:.0}", w.largest_usd),
            w.largest_minor_share * 100.0,
            w.over_quarter_of_minor,
            w.largest_share * 100.0,
        );
    }
    let _ = writeln!(s, "incidents:");
    let _ = writeln!(
        s,
        "  preset    intents days caught false worst-delay  worst-lost (share)       requirement"
    );
    for g in &r.incidents {
        let _ = writeln!(
            s,
            "  {:<9} {:>7} {:>4} {:>6} {:>5} {:>11} {:>14} ({:>5.1}%)  {}",
            g.preset,
            if g.intents { "yes" } else { "no" },
            g.days,
            g.caught,
            g.false_freezes,
            g.worst_delay_seconds
                .map_or("none".to_string(), |d| format!("{d:.3} s")),
            format!("${:.0}", g.worst_lost_usd),
            g.worst_lost_share * 100.0,
            g.requirement
        );
    }
    if !r.false_freezes.is_empty() {
        let _ = writeln!(s, "false freezes:");
        for f in &r.false_freezes {
            let _ = writeln!(
                s,
                "  {} seed {} {}x intents={} {} {}\n      {}",
                f.preset, f.seed, f.volume, f.intents, f.t, f.scope, f.reason
            );
        }
    }
    let _ = writeln!(
        s,
        "{} days, {} records in {:.1} s",
        r.days, r.records, r.seconds
    );
    if r.failures.is_empty() {
        let _ = writeln!(s, "PASS");
    } else {
        let _ = writeln!(s, "FAIL:");
        for f in &r.failures {
            let _ = writeln!(s, "  {f}");
        }
    }
    s
}
