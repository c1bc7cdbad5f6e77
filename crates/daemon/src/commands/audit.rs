//! `drainguard audit`: the append-only audit log of the store, read
//! directly (the daemon may be running: the store is in WAL mode).

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use drainguard_store::Store;

use crate::config;

/// Arguments of `audit`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The daemon configuration (its `[store] path` is read).
    #[arg(long, short, default_value = "config/drainguard.toml")]
    config: PathBuf,
    /// Only the most recent entries.
    #[arg(long)]
    limit: Option<usize>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

#[allow(clippy::print_stdout, reason = "the command's output")]
pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let path = config::store_path(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    if !path.exists() {
        anyhow::bail!("no store at {} yet: the daemon has not run", path.display());
    }
    let store = Store::open(&path).with_context(|| format!("opening {}", path.display()))?;
    for e in store.audit(args.limit).context("reading the audit log")? {
        if args.json {
            println!("{}", serde_json::to_string(&e)?);
        } else {
            println!(
                "{:>6} {} {:9} {:18} {}  {}",
                e.seq, e.at, e.actor, e.action, e.subject, e.detail
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
