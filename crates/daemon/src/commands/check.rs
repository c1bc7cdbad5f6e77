//! `drainguard check-config`: validate before you deploy.

use std::{path::PathBuf, process::ExitCode};

use crate::config;

/// Arguments of `check-config`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The daemon configuration.
    #[arg(long, short, default_value = "config/drainguard.toml")]
    config: PathBuf,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    match config::load(&args.config) {
        Ok(loaded) => {
            #[allow(clippy::print_stdout, reason = "the command's output")]
            {
                println!(
                    "{}: ok ({} rules from {})",
                    args.config.display(),
                    loaded.rules.rules.len(),
                    loaded.rules_source
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            eprintln!("{errors}");
            Ok(ExitCode::FAILURE)
        }
    }
}
