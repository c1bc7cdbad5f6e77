//! `drainguard`: stops exchange hot-wallet drains while they happen.
//!
//! One binary: `run` is the whole pipeline on one machine (the simulator
//! as chain source, the in-process bus, the engine, the embedded store and
//! the responders, with `/metrics` and `/healthz`), or through Kafka;
//! `watch` and `engine` are its two sides over Kafka, on different hosts;
//! `replay` runs a scenario file through the engine in virtual time;
//! `sim` writes a
//! generated scenario; `check-config` validates configuration and rules;
//! `freeze`, `outbox` and `audit` are the operator's tools.
//! The running daemon reloads its rules on SIGHUP or an admin call.

mod api;
mod auth;
mod commands;
mod config;
mod declarations;
mod freezes;
mod intents;
mod metrics;
mod pipeline;
mod reload;
mod responders;
mod run;
mod sources;
mod tasks;
mod watch;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "drainguard",
    version,
    about = "Stops exchange hot-wallet drains while they happen"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: watchers, engine, store, responders and HTTP.
    Run {
        /// The daemon configuration.
        #[arg(long, short, default_value = "config/drainguard.toml")]
        config: PathBuf,
    },
    /// Run the chain sources only, publishing their events to Kafka
    /// (`bus.kind = "kafka"`); engines on other hosts evaluate them.
    Watch {
        /// The daemon configuration.
        #[arg(long, short, default_value = "config/drainguard.toml")]
        config: PathBuf,
    },
    /// Run the engine, store, responders and HTTP API on the events in
    /// Kafka (`bus.kind = "kafka"`), as one of the engines of the
    /// consumer group.
    Engine {
        /// The daemon configuration.
        #[arg(long, short, default_value = "config/drainguard.toml")]
        config: PathBuf,
    },
    /// Replay a scenario file through the engine in virtual time.
    Replay(commands::replay::Args),
    /// Write a generated scenario (JSON Lines).
    Sim(commands::sim::Args),
    /// Generate and replay many days: false freezes per simulated month,
    /// and each incident's delay and value lost before its freeze.
    Eval(commands::eval::Args),
    /// Validate the daemon configuration and its rules; exit 1 on errors.
    CheckConfig(commands::check::Args),
    /// List, raise or lift freezes on a running daemon.
    Freeze(commands::freeze::Args),
    /// List the outbox of a running daemon, or re-drive a failed action.
    Outbox(commands::outbox::Args),
    /// Print the audit log of the store.
    Audit(commands::audit::Args),
    /// Measure this machine: engine throughput with the given rules, replay
    /// speed, and how long a freeze takes to become durable in the store.
    Bench(commands::bench::Args),
}

fn init_logging() {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter =
        EnvFilter::try_from_env("DRAINGUARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("DRAINGUARD_LOG_FORMAT").is_ok_and(|v| v == "json");
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Run { config } => run::run(&config, run::Role::All),
        Command::Watch { config } => run::run(&config, run::Role::Watch),
        Command::Engine { config } => run::run(&config, run::Role::Engine),
        Command::Replay(args) => commands::replay::run(&args),
        Command::Sim(args) => commands::sim::run(&args),
        Command::Eval(args) => commands::eval::run(&args),
        Command::CheckConfig(args) => commands::check::run(&args),
        Command::Freeze(args) => commands::freeze::run(&args),
        Command::Outbox(args) => commands::outbox::run(&args),
        Command::Audit(args) => commands::audit::run(&args),
        Command::Bench(args) => commands::bench::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(message = "drainguard failed", error = format!("{e:#}"));
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
