//! `drainguard freeze list|raise|lift`: operate the freezes of a running
//! daemon through its API (admin token from `DRAINGUARD_ADMIN_TOKEN`).

use std::process::ExitCode;

use serde_json::{Value, json};

use super::client::Target;

/// Arguments of `freeze`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// List freezes (active ones unless --all).
    List {
        /// Lifted freezes too.
        #[arg(long)]
        all: bool,
        /// Print the daemon's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Freeze a scope by hand: global, chain:<chain>, asset:<chain>:<asset>
    /// or wallet:<chain>:<address>.
    Raise {
        /// What to freeze.
        scope: String,
        /// Why (recorded in the audit log and sent to the exchange).
        #[arg(long)]
        reason: String,
        /// Who is acting.
        #[arg(long)]
        by: String,
    },
    /// Lift a freeze: a human decision, with a reason.
    Lift {
        /// The freeze id (fz-...).
        id: String,
        /// Why it is safe to resume.
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
        Command::List { all, json } => {
            let status = if *all { "all" } else { "active" };
            let v = args
                .target
                .call("GET", &format!("/v1/freezes?status={status}"), None)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(ExitCode::SUCCESS);
            }
            let freezes = v["freezes"].as_array().cloned().unwrap_or_default();
            if freezes.is_empty() {
                println!("no {} freezes", if *all { "" } else { "active" });
            }
            for f in &freezes {
                let fz = &f["freeze"];
                let s = |v: &Value| v.as_str().unwrap_or("").to_string();
                println!(
                    "{}  {:7} {}  {}  rule={}  {}",
                    s(&fz["t"]),
                    s(&f["status"]),
                    s(&fz["id"]),
                    s(&fz["scope"]),
                    s(&fz["rule"]),
                    s(&fz["reason"]),
                );
                if f["status"] == "lifted" {
                    println!(
                        "    lifted {} by {}: {}",
                        s(&f["lifted_at"]),
                        s(&f["lifted_by"]),
                        s(&f["lift_reason"])
                    );
                }
            }
        }
        Command::Raise { scope, reason, by } => {
            let v = args.target.call(
                "POST",
                "/v1/freezes",
                Some(&json!({"scope": scope, "reason": reason, "by": by})),
            )?;
            println!(
                "raised {} on {}",
                v["freeze"]["id"].as_str().unwrap_or("?"),
                v["freeze"]["scope"].as_str().unwrap_or("?")
            );
        }
        Command::Lift { id, reason, by } => {
            args.target.call(
                "POST",
                &format!("/v1/freezes/{id}/lift"),
                Some(&json!({"reason": reason, "by": by})),
            )?;
            println!("lifted {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
