//! `drainguard sim`: writes a generated scenario.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, bail};
use drainguard_model::Timestamp;
use drainguard_sim::{PRESETS, ScenarioWriter, generate, preset};

/// Arguments of `sim`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The day to generate: normal, busy, coinex, abuse, rush, giant,
    /// approval or tripwire.
    #[arg(long, default_value = "normal")]
    preset: String,
    /// Random seed; the same seed gives the same file.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Hours of traffic.
    #[arg(long, default_value_t = 24.0)]
    hours: f64,
    /// Withdrawal volume as a multiple of a normal day (default: the
    /// preset's, 6 for busy and 1 for the others).
    #[arg(long)]
    volume: Option<f64>,
    /// Leave out withdrawal intents (an exchange whose withdrawal system is
    /// not connected).
    #[arg(long)]
    no_intents: bool,
    /// Move the preset's incident to this offset from the start ("20m").
    #[arg(long)]
    incident_at: Option<String>,
    /// Scenario start (RFC 3339).
    #[arg(long)]
    start: Option<String>,
    /// Output file (default: standard output).
    #[arg(long, short)]
    out: Option<PathBuf>,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let Some(mut config) = preset(&args.preset, args.seed) else {
        bail!(
            "unknown preset {:?}: expected one of {}",
            args.preset,
            PRESETS.join(", ")
        );
    };
    if !(args.hours > 0.0 && args.hours <= 24.0 * 31.0) {
        bail!("--hours must be in (0, 744], not {}", args.hours);
    }
    if let Some(volume) = args.volume {
        if !(volume > 0.0 && volume <= 1000.0) {
            bail!("--volume must be in (0, 1000], not {volume}");
        }
        config.volume = volume;
    }
    config.duration = Duration::from_secs_f64(args.hours * 3600.0);
    config.intents = !args.no_intents;
    if let Some(at) = &args.incident_at {
        let at = humantime::parse_duration(at).with_context(|| format!("--incident-at {at:?}"))?;
        for (_, offset) in &mut config.incidents {
            *offset = at;
        }
    }
    if let Some(s) = &args.start {
        config.start = Timestamp::parse_rfc3339(s).context("--start")?;
    }
    let records = generate(&config);
    let sink: Box<dyn Write> = match &args.out {
        Some(p) => {
            Box::new(File::create(p).with_context(|| format!("cannot create {}", p.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut w = ScenarioWriter::new(BufWriter::with_capacity(1 << 20, sink));
    for r in &records {
        w.write(r).context("writing the scenario")?;
    }
    w.finish().context("writing the scenario")?;
    tracing::info!(message = "scenario written", preset = %args.preset, seed = args.seed, records = records.len());
    Ok(ExitCode::SUCCESS)
}
