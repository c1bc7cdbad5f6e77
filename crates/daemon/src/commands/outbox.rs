//! `drainguard outbox list|redrive`: see what the daemon has delivered
//! and put a failed action back in the queue once its cause is fixed.

use std::process::ExitCode;

use serde_json::json;

use super::client::Target;

/// Arguments of `outbox`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// List outbox actions.
    List {
        /// pending, delivered, failed or all.
        #[arg(long, default_value = "all")]
        status: String,
    },
    /// Re-drive a failed action.
    Redrive {
        /// The action's id.
        id: i64,
        /// What was fixed.
        #[arg(long)]
        reason: String,
        /// Who is acting.
        #[arg(long)]
        by: String,
    },
}

#[allow(clippy::print_stdout, reason = "the command's output")]
pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    match &args.command {
        Command::List { status } => {
            let v = args
                .target
                .call("GET", &format!("/v1/outbox?status={status}"), None)?;
            for a in v["actions"].as_array().cloned().unwrap_or_default() {
                println!(
                    "{:>5} {:9} {:9} {:14} attempts={} {}{}",
                    a["id"],
                    a["channel"].as_str().unwrap_or(""),
                    a["status"].as_str().unwrap_or(""),
                    a["kind"].as_str().unwrap_or(""),
                    a["attempts"],
                    a["key"].as_str().unwrap_or(""),
                    a["last_error"]
                        .as_str()
                        .map(|e| format!("  last error: {e}"))
                        .unwrap_or_default()
                );
            }
        }
        Command::Redrive { id, reason, by } => {
            args.target.call(
                "POST",
                &format!("/v1/outbox/{id}/redrive"),
                Some(&json!({"reason": reason, "by": by})),
            )?;
            println!("re-driven {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
