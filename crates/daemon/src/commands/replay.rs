//! `drainguard replay FILE [--config C] [--json] [--plot OUT.svg]`.

use std::{
    fs::File,
    io::{BufReader, IsTerminal, Read, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context;
use drainguard_replay::{Replay, Timeline};
use drainguard_sim::ScenarioReader;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config;

/// Arguments of `replay`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
A progress bar (bytes of the file read) shows on standard error when it is a \
terminal and --json is not given.

Example: draw the CoinEx-style day of the README
  drainguard sim --preset coinex --seed 1 --out /tmp/day.jsonl
  drainguard replay /tmp/day.jsonl --plot day.svg")]
pub(crate) struct Args {
    /// The scenario (JSON Lines).
    file: PathBuf,
    /// A rules file, or a daemon configuration whose `[rules]` names one
    /// (default: the built-in rules).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print exactly one JSON object (logs go to standard error).
    #[arg(long)]
    json: bool,
    /// Also draw the timeline as an SVG picture at this path: cumulative
    /// outflow in USD per chain (attack and normal apart where the file
    /// has labels), findings by severity, and every freeze.
    #[arg(long, value_name = "OUT.svg")]
    plot: Option<PathBuf>,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let rules = match &args.config {
        None => drainguard_engine::RuleSet::builtin().map_err(|e| anyhow::anyhow!("{e}"))?,
        Some(path) => config::load_rules_for_replay(path)?,
    };
    let file = File::open(&args.file)
        .with_context(|| format!("cannot open scenario {}", args.file.display()))?;
    // A bar only for a person watching; a pipe, a log or a JSON consumer
    // gets nothing. It counts bytes as the 1 MiB buffer refills, so a
    // replay pays for it once a megabyte, not once a record.
    let bar = (!args.json && std::io::stderr().is_terminal()).then(|| progress_bar(&file));
    let input: Box<dyn Read> = match &bar {
        Some(b) => Box::new(b.wrap_read(file)),
        None => Box::new(file),
    };
    let records = ScenarioReader::new(BufReader::with_capacity(1 << 20, input));
    // The timeline is collected only when a picture is asked for.
    let mut timeline = args.plot.as_ref().map(|_| Timeline::new());
    let result = match &mut timeline {
        Some(tl) => drainguard_replay::replay_observed(records, rules, tl),
        None => drainguard_replay::replay_records(records, rules),
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let result = result.with_context(|| format!("{}", args.file.display()))?;
    let stats = result.stats;
    tracing::info!(
        message = "replay finished",
        records = stats.records,
        seconds = format!("{:.3}", stats.seconds),
        records_per_second = format!("{:.0}", stats.records as f64 / stats.seconds.max(1e-9)),
        findings = result.findings.len(),
        freezes = result.freezes.len(),
    );
    if let (Some(path), Some(tl)) = (&args.plot, &timeline) {
        write_plot(path, &args.file, tl, &result)?;
        tracing::info!(message = "plot written", path = %path.display());
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &result.report).context("writing the report")?;
        writeln!(out).context("writing the report")?;
    } else {
        write!(out, "{}", result.report.to_text()).context("writing the report")?;
        writeln!(
            out,
            "replayed {} records ({:.0} s of scenario time) in {:.3} s: {:.0} records/s",
            stats.records,
            stats.scenario_seconds,
            stats.seconds,
            stats.records as f64 / stats.seconds.max(1e-9)
        )
        .context("writing the report")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn progress_bar(file: &File) -> ProgressBar {
    // An unknown length (a pipe, a special file) still gets a spinner.
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let (bar, template) = if len > 0 {
        (
            ProgressBar::new(len),
            "replaying {wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
    } else {
        (
            ProgressBar::new_spinner(),
            "replaying {spinner} {binary_bytes} {binary_bytes_per_sec}",
        )
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

fn write_plot(path: &Path, scenario: &Path, tl: &Timeline, result: &Replay) -> anyhow::Result<()> {
    let name = scenario.file_name().map_or_else(
        || scenario.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut title = format!(
        "drainguard replay {name}: {} findings, {} freezes",
        result.findings.len(),
        result.freezes.len()
    );
    if let Some(delay) = result
        .report
        .score
        .as_ref()
        .and_then(|s| s.detection_delay_seconds)
    {
        title.push_str(&format!(
            ", frozen {delay:.1} s after the first attack record"
        ));
    }
    let marks = drainguard_plot::Marks {
        findings: &result.findings,
        freezes: &result.freezes,
    };
    let svg = drainguard_plot::svg(tl, marks, &title)
        .with_context(|| format!("drawing {}", path.display()))?;
    std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))
}
