//! `drainguard replay FILE [--config C] [--json]`.

use std::{
    fs::File,
    io::{BufReader, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context;

use crate::config;

/// Arguments of `replay`.
#[derive(Debug, clap::Args)]
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
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let rules = match &args.config {
        None => drainguard_engine::RuleSet::builtin().map_err(|e| anyhow::anyhow!("{e}"))?,
        Some(path) => config::load_rules_for_replay(path)?,
    };
    let file = File::open(&args.file)
        .with_context(|| format!("cannot open scenario {}", args.file.display()))?;
    let result = drainguard_replay::replay(BufReader::with_capacity(1 << 20, file), rules)
        .with_context(|| format!("{}", args.file.display()))?;
    let stats = result.stats;
    tracing::info!(
        message = "replay finished",
        records = stats.records,
        seconds = format!("{:.3}", stats.seconds),
        records_per_second = format!("{:.0}", stats.records as f64 / stats.seconds.max(1e-9)),
        findings = result.findings.len(),
        freezes = result.freezes.len(),
    );
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
